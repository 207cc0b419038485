"""vidclip.video: decoding backends, samplers, subtitles; no module here imports torch at import time.

CLIP's preprocessing of frames (torch) is :mod:`vidclip.models.clip.preprocess`.

Frames are ``torch.uint8 [T, H, W, 3]`` RGB, upright (rotation flags applied); timestamps are
float64 seconds of each frame's pts, first frame = 0. See docs/architecture.md.
"""

from vidclip.video.decode import VideoInfo, VideoReader, available_backends, open_video, probe
from vidclip.video.frames import write_frames
from vidclip.video.sample import (
    Sample,
    SampledFrames,
    SamplerConfig,
    Window,
    plan_sample,
    sample_video,
)

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
]

