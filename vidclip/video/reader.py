"""What every decoding backend shares: :class:`VideoInfo`, the :class:`VideoReader` interface,
the definition of a video's extent, the pixel limit and the silencing of FFmpeg's own log.

Imports no torch at module level: only reading frames needs it (``import vidclip.video`` and
``vidclip probe`` stay light).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from vidclip.core.errors import ConfigError, VidclipError, VideoDecodeError, display_path

__all__ = [
    "VideoInfo",
    "VideoReader",
    "FrameIndexError",
    "video_end",
    "DEFAULT_MAX_PIXELS",
    "max_pixels_limit",
    "check_frame_size",
]

# Largest picture (width x height) decoded without being asked: 8K UHD (7680 x 4320). One RGB
# frame of that size is 100 MB and FFmpeg keeps several reference frames per decoder thread, so
# a bigger picture (a 198 KB file can declare 8192 x 8192) is refused before anything is decoded.
# Raise it with ``max_pixels=`` or the environment variable VIDCLIP_MAX_PIXELS.
DEFAULT_MAX_PIXELS = 7680 * 4320


class FrameIndexError(VidclipError, IndexError):
    """A requested frame index is outside ``[0, num_frames)``."""


@dataclass
class VideoInfo:
    """What ``probe`` reports about a video (the stream actually decoded).

    ``width``/``height`` are the displayed (upright) size; ``rotation`` the display rotation in
    degrees counter-clockwise applied to the coded picture; ``duration`` runs from the first
    frame to the end of the last one (see :func:`video_end`); ``num_frames`` counts the
    decodable frames of the index; ``backend`` is the backend that reads it ("auto" when the
    reader chooses per request, see :func:`~vidclip.video.decode.open_video`); ``warnings``
    are one-line notes about the file (e.g. it decodes to less than the container states).
    """

    path: str
    duration: float
    fps: float
    num_frames: int
    width: int
    height: int
    codec: str
    rotation: int
    has_audio: bool
    backend: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def video_end(timestamps: np.ndarray) -> float:
    """End time (s) of the last frame: its pts plus the median frame gap.

    The single definition of a video's extent used by ``VideoInfo.duration`` (= end - first
    pts) and by every sampler. A one-frame video is taken to last 1/30 s.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.size == 0:
        raise ValueError("timestamps: empty")
    gap = float(np.median(np.diff(ts))) if ts.size > 1 else 1.0 / 30.0
    return float(ts[-1] + gap)


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels``, else $VIDCLIP_MAX_PIXELS, else DEFAULT_MAX_PIXELS."""
    if max_pixels is None:
        env = os.environ.get("VIDCLIP_MAX_PIXELS", "").strip()
        if not env:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(env)
        except ValueError:
            raise ConfigError(f"VIDCLIP_MAX_PIXELS: expected a whole number of pixels, got {env!r}") from None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise ConfigError(f"max_pixels: expected an int >= 1, got {max_pixels!r}")
    return int(max_pixels)


def check_frame_size(path, width: int, height: int, max_pixels: int | None = None) -> None:
    """Raise VideoDecodeError when a ``width x height`` picture is over the pixel limit."""
    limit = max_pixels_limit(max_pixels)
    if width * height > limit:
        raise VideoDecodeError(path, f"frame size {width}x{height} ({width * height / 1e6:.1f} Mpixel) is over "
                               f"the decoding limit of {limit / 1e6:.1f} Mpixel (raise it with max_pixels= or "
                               "VIDCLIP_MAX_PIXELS)")


_quiet_done: set[str] = set()


def quiet_libav(which: str) -> None:
    """Silence the FFmpeg log of ``which`` ("pyav" or "decord"): vidclip reports problems itself.

    Without this, decord's bundled FFmpeg prints lines such as ``[matroska,webm @ 0x...] Read
    error`` that name no file; the reasons reach the user as our one-line VideoDecodeError.
    """
    if which in _quiet_done:
        return
    if which == "pyav":
        import av.logging

        av.logging.set_level(None)  # PyAV's default since 13; keep it so if someone raised it
    elif which == "decord":
        import decord

        decord.logging.set_level(decord.logging.QUIET)
    _quiet_done.add(which)


def short_duration_warning(path, decoded: float, stated: float | None) -> str | None:
    """A one-line warning when a file decodes to well under the duration its container states
    (a file cut mid-stream): more than 0.5 s and 10% short."""
    if not stated or stated <= 0 or decoded <= 0:
        return None
    missing = stated - decoded
    if missing > 0.5 and missing > 0.1 * stated:
        return (f"{display_path(path)}: has {decoded:.2f} s of decodable video but its header states "
                f"{stated:.2f} s (file cut short or damaged?); only the decodable part is used")
    return None


class VideoReader:
    """Random access to the frames of one video. Use as a context manager.

    Attributes:
        info: :class:`VideoInfo`.
        timestamps: float64 ``[F]`` presentation time (s, first frame = 0) of every frame.
        device: torch device the frames are returned on.
    """

    info: VideoInfo
    timestamps: np.ndarray

    def get_frames(self, indices: Sequence[int]):
        """Decode frames ``indices`` (any order, repeats allowed).

        Returns:
            torch.uint8 ``[N, H, W, 3]`` RGB, upright, on ``self.device``; row j is frame
            ``indices[j]``. Each distinct frame is decoded once.
        """
        import torch

        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self.timestamps)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = int(idx[(idx < 0) | (idx >= n)][0])
            raise FrameIndexError(f"{display_path(self.info.path)}: frame index {bad} out of range [0, {n})")
        h, w = self.info.height, self.info.width
        if idx.size == 0:
            return torch.empty((0, h, w, 3), dtype=torch.uint8, device=self.device)
        uniq, inverse = np.unique(idx, return_inverse=True)
        frames = self._decode_sorted(uniq)  # uint8 [U, H, W, 3], upright, on device
        if tuple(frames.shape[1:]) != (h, w, 3):
            raise VideoDecodeError(self.info.path, f"{self.info.backend} returned frames of shape "
                                   f"{tuple(frames.shape[1:])}, expected {(h, w, 3)}")
        if np.array_equal(uniq, idx):  # already sorted and distinct: no gather copy
            return frames
        return frames[torch.as_tensor(inverse.reshape(-1), device=frames.device)]

    def _decode_sorted(self, indices: np.ndarray):  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self) -> int:
        return len(self.timestamps)


def rotate_upright(frames, rotation: int):
    """Turn torch ``[N, H, W, 3]`` frames counter-clockwise by ``rotation`` degrees (multiple of 90)."""
    k = (rotation // 90) % 4
    if k == 0:
        return frames
    import torch

    # torch.rot90 with k > 0 turns from the H axis towards the W axis = counter-clockwise on
    # screen (same convention as np.rot90 and FFmpeg's display matrix).
    return torch.rot90(frames, k=k, dims=(1, 2)).contiguous()
