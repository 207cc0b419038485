"""vidclip.video: decoding backends, samplers and torch preprocessing of frames.

Frames are ``torch.uint8 [T, H, W, 3]`` RGB, upright (rotation flags applied); timestamps are
float64 seconds of each frame's pts, first frame = 0. See docs/architecture.md.
"""

from .._lazy import lazy_getattr
from .decode import VideoInfo, VideoReader, available_backends, open_video, probe
from .frames import write_frames
from .sample import Sample, SampledFrames, SamplerConfig, Window, plan_sample, sample_video

__all__ = [
    "VideoInfo",
    "VideoReader",
    "available_backends",
    "open_video",
    "probe",
    "SamplerConfig",
    "Sample",
    "SampledFrames",
    "Window",
    "plan_sample",
    "sample_video",
    "write_frames",
    "preprocess_frames",
]


# preprocess (torch) is imported on first use only.
__getattr__ = lazy_getattr(globals(), {"preprocess_frames": "preprocess"})
