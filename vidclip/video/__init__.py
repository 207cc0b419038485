"""vidclip.video: decoding backends, samplers and torch preprocessing of frames.

Frames are ``torch.uint8 [T, H, W, 3]`` RGB, upright (rotation flags applied); timestamps are
float64 seconds of each frame's pts, first frame = 0. See docs/architecture.md.
"""

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


def __getattr__(name):
    # preprocess is owned by the models package author; imported on first use only.
    if name == "preprocess_frames":
        from .preprocess import preprocess_frames

        return preprocess_frames
    raise AttributeError(f"module 'vidclip.video' has no attribute {name!r}")
