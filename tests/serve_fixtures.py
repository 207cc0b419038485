"""Tiny generated videos for the serve tests (not a test module itself).

Frame ``i`` is a flat grey of level ``level(i)``, so a thumbnail's mean brightness says which
frame it shows; keyframes come every ``gop`` frames, so a seek to a time between keyframes
proves the player seeks exactly rather than snapping to a keyframe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CODECS = {  # extension -> (container format, codec, pixel format)
    ".mp4": ("mp4", "libx264", "yuv420p"),
    ".webm": ("webm", "libvpx-vp9", "yuv420p"),
    ".avi": ("avi", "mpeg4", "yuv420p"),
    ".mkv": ("matroska", "libx264", "yuv420p"),
}


def level(i: int) -> int:
    return 20 + 5 * (i % 40)


def make_video(path: Path, *, seconds: float = 6.0, fps: int = 10, size: tuple[int, int] = (96, 64),
               gop: int = 25) -> Path:
    import av

    fmt, codec, pix_fmt = CODECS[path.suffix]
    w, h = size
    n = int(round(seconds * fps))
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.gop_size = gop
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast", "bf": "0"}
        for i in range(n):
            img = np.full((h, w, 3), level(i), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def build_real_index(library: Path, index_dir: Path, clip=None):
    """Index ``library`` with a tiny RANDOMLY initialised CLIP and open it.

    Random weights make rankings arbitrary: tests using this check plumbing (ids, spans,
    thumbnails, streams), never which video ranks first. Windows of 2 s every 1 s at 2 fps give
    span starts of 1, 2, 3 ... s, between the keyframes (every 2.5 s) of ``make_video``'s files.
    Returns (VideoIndex, IndexReport, clip).
    """
    from vidclip.index import VideoIndex, index_library
    from vidclip.models.clip.load import load_clip
    from vidclip.video.sample import SamplerConfig

    clip = clip or load_clip("tiny-vit", None)
    sampler = SamplerConfig(name="windows", fps=2.0, window=2.0, stride=1.0)
    report = index_library(library, index_dir, clip, sampler, workers=0, progress=False)
    return VideoIndex.open(index_dir, clip=clip), report, clip
