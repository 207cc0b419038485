"""Video decoding: open a file for frame access, with the backend that suits the request.

Three backends sit behind one :class:`~vidclip.video.reader.VideoReader` interface:

* ``"pyav"``  - the reference (:mod:`vidclip.video.pyav_reader`): it builds the frame index
  every backend shares, seeks to the keyframe before each target, decodes forward and skips
  non-reference frames it only passes through.
* ``"decord"`` - decord's own C++ seek-and-skip ``get_batch`` (CPU, or CUDA when decord was
  built with it); see :mod:`vidclip.video.backends`.
* ``"torchcodec"`` - when importable (CPU or CUDA, ``seek_mode="exact"``).

``"auto"`` on the CPU decides per request, from tools/bench_decode.py (BENCHMARKS.md,
Decoding): PyAV for sparse requests (what the samplers ask: it skips non-reference frames on
the way to a target, decord decodes them all), decord for dense ones - at least half of the
frames between each keyframe and its last target wanted, and at least 32 frames - where
decord's threaded batch decoding is faster in wall time. Both return the same frames (decord
is checked against PyAV on the first frame and never used where it differs). Count-mode
containers (AVI) are always read by PyAV. GPU decoding (``device="cuda"``) never falls back
silently: an unavailable GPU decoder raises :class:`~vidclip.core.errors.BackendUnavailableError`.

Rotation flags are applied: every backend returns the *upright* picture. ``probe`` reads the
header only (:mod:`vidclip.video.header`). Nothing here imports torch at module level.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from vidclip.core.errors import BackendUnavailableError, ConfigError, VideoDecodeError
from vidclip.video.backends import BackendMismatch, DecordReader, TorchCodecReader
from vidclip.video.header import BACKEND_CHOICES, probe
from vidclip.video.pyav_reader import PyAVReader
from vidclip.video.reader import FrameIndexError, VideoInfo, VideoReader, video_end

__all__ = [
    "VideoInfo",
    "VideoReader",
    "FrameIndexError",
    "PyAVReader",
    "AutoReader",
    "available_backends",
    "probe",
    "open_video",
    "video_end",
]

BACKENDS = BACKEND_CHOICES[1:]

# backend="auto": a request goes to decord when at least this fraction of the frames a forward
# decode passes through is wanted, and it wants at least DENSE_MIN_FRAMES frames. Measured on
# the 3-minute 320x240 H.264 clip of tools/bench_decode.py (1,500 frames, every k-th wanted):
# k=1 decord 1.7 s vs PyAV 2.7 s, k=2 1.3 vs 1.5 s, k=4 1.3 vs 1.1 s, k=8 1.1 vs 1.0 s (wall).
DENSE_FRACTION = 0.5
DENSE_MIN_FRAMES = 32


def available_backends() -> list[str]:
    """The decoding backends installed here, in preference order (subset of BACKENDS).

    Checked without importing them: importing decord loads its own bundled FFmpeg libraries,
    which is left to the moment it is used. A backend that is installed but fails to load
    raises BackendUnavailableError when opened.
    """
    found = []
    for name, module in (("decord", "decord"), ("pyav", "av"), ("torchcodec", "torchcodec")):
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            found.append(name)
    return found


class AutoReader(VideoReader):
    """``backend="auto"`` on the CPU: PyAV for sparse requests, decord for dense ones (module
    docstring). ``info.backend`` is "auto"; ``last_backend`` names the one that decoded the last
    request."""

    def __init__(self, meta: PyAVReader, threads: int = 0, decord_ok: bool = True):
        self._meta = meta
        self._threads = threads
        self._decord: DecordReader | None | bool = None if decord_ok else False  # False: unusable
        self.timestamps = meta.timestamps
        self.device = meta.device
        self.info = VideoInfo(**{**meta.info.to_dict(), "backend": "auto"})
        self.last_backend: str | None = None

    def _dense(self, indices: np.ndarray) -> bool:
        if self._decord is False or len(indices) < DENSE_MIN_FRAMES:
            return False
        return len(indices) >= DENSE_FRACTION * self._meta.frames_passed(indices)

    def _decode_sorted(self, indices: np.ndarray):
        if self._dense(indices):
            if self._decord is None:
                try:
                    self._decord = DecordReader(self._meta, self.device, threads=self._threads)
                except (BackendMismatch, BackendUnavailableError):
                    self._decord = False  # decord cannot read this file faithfully: PyAV does
            if self._decord:
                self.last_backend = "decord"
                return self._decord._decode_sorted(indices)
        self.last_backend = "pyav"
        return self._meta._decode_sorted(indices)

    def close(self) -> None:
        if self._decord:
            self._decord.close()
        self._meta.close()


def _parse_device(device):
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device: invalid device {device!r} ({e})") from e
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device: expected 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


def open_video(path, backend: str = "auto", device: str = "cpu", threads: int = 0,
               max_pixels: int | None = None) -> VideoReader:
    """Open ``path`` for frame access.

    Args:
        path: video file.
        backend: "auto" (CPU: PyAV or decord per request, see the module docstring), "pyav",
            "decord" or "torchcodec".
        device: "cpu", or "cuda[:N]" for GPU decoding (decord built with CUDA, or torchcodec;
            "auto" tries torchcodec then decord). Raises BackendUnavailableError when the GPU
            decoder is not available; PyAV cannot decode on a GPU.
        threads: decoder threads (0 = FFmpeg's automatic choice).
        max_pixels: largest coded picture (width x height) to decode; default
            $VIDCLIP_MAX_PIXELS or :data:`~vidclip.video.reader.DEFAULT_MAX_PIXELS` (8K UHD).
    Raises:
        VideoDecodeError: the file is missing, not a regular file, empty, not a video, over the
            pixel limit, or not decodable.
        BackendUnavailableError: the requested backend / GPU decoder is not usable here.
        ConfigError: unknown backend or device string.
    """
    if backend not in BACKEND_CHOICES:
        raise ConfigError(f"backend: unknown backend {backend!r}; choose {', '.join(BACKEND_CHOICES)}")
    dev = _parse_device(device)
    have = available_backends()
    if dev.type == "cuda":
        import torch

        if backend == "pyav":
            raise BackendUnavailableError("backend 'pyav' decodes on the CPU only; GPU decoding needs "
                                          "backend 'decord' (built with CUDA) or 'torchcodec'")
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"GPU decoding on {device!r} requested, but torch sees no CUDA device")
    elif backend != "auto" and backend not in have:
        raise BackendUnavailableError(f"backend {backend!r} is not installed here (available: {', '.join(have)})")
    if "pyav" not in have:
        raise BackendUnavailableError("PyAV (package 'av') is required for indexing and metadata")

    meta = PyAVReader(path, threads=threads, max_pixels=max_pixels)
    if dev.type == "cpu" and backend == "pyav":
        return meta
    if dev.type == "cpu" and backend == "auto":
        # Count-mode containers (AVI) can only be read sequentially by decord, which then
        # converts every frame to RGB; PyAV decodes sequentially but converts only the wanted.
        return AutoReader(meta, threads=threads, decord_ok="decord" in have and not meta.count_mode)

    order = (["torchcodec", "decord"] if backend == "auto" else [backend]) if dev.type == "cuda" else [backend]
    reasons = []
    for name in order:
        cls = DecordReader if name == "decord" else TorchCodecReader
        try:
            if name not in have:
                raise BackendUnavailableError(f"{name} is not installed here")
            reader = cls(meta, dev, threads=threads)
        except BackendUnavailableError as e:
            reasons.append(str(e))
            continue
        except BackendMismatch as e:
            meta.close()
            raise VideoDecodeError(meta.path, f"{name}: {e}; PyAV reads it (backend='pyav' or 'auto')") from e
        except BaseException:
            meta.close()
            raise
        meta.release_container()
        return reader
    meta.close()
    raise BackendUnavailableError(f"no GPU decoder available for device {device!r}: " + "; ".join(reasons))
