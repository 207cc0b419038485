"""The non-reference backends, decord and torchcodec, behind the VideoReader interface.

Both take the frame index and metadata from a :class:`~vidclip.video.pyav_reader.PyAVReader`
(so frame ``i`` means the same frame everywhere) and are checked against it on one frame:
a backend that decodes a different picture or orientation raises :class:`BackendMismatch`,
which ``open_video(backend="auto")`` answers by decoding with PyAV.

Rotation: decord 0.6 already turns frames upright on CPU (but not on GPU); torchcodec's
handling differs between releases. Which extra turn is needed is decided by comparing the
first frame with PyAV's upright one.
"""

from __future__ import annotations

import re

import numpy as np

from vidclip.core.errors import BackendUnavailableError, VideoDecodeError
from vidclip.video.pyav_reader import PyAVReader
from vidclip.video.reader import VideoInfo, VideoReader, quiet_libav, rotate_upright

__all__ = ["BackendMismatch", "DecordReader", "TorchCodecReader"]

# Mean absolute difference (grey levels) under which two backends' decodes of the same frame
# count as the same picture. Different FFmpeg builds convert YUV->RGB with slightly different
# rounding/filters (observed <= ~2 on real clips); a wrong frame or orientation gives tens.
SAME_FRAME_MAD = 6.0


class BackendMismatch(Exception):
    """A non-reference backend cannot read this file consistently with PyAV."""


def _same_picture(a: np.ndarray, b: np.ndarray) -> tuple[bool, float]:
    if a.shape != b.shape:
        return False, float("inf")
    mad = float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
    return mad <= SAME_FRAME_MAD, mad


class _CalibratedReader(VideoReader):
    """Shared logic of non-reference backends: index from PyAV, orientation checked against it."""

    backend = ""

    def _setup(self, meta: PyAVReader, device, applies_rotation: bool) -> None:
        self.path = meta.path
        self.device = device
        self.timestamps = meta.timestamps
        self.info = VideoInfo(**{**meta.info.to_dict(), "backend": self.backend})
        rot = meta.rotation
        try:
            raw = self._raw_batch(np.asarray([meta.first_index]))[0].cpu().numpy()
        except VideoDecodeError as e:
            raise BackendMismatch(e.reason) from e
        # Which extra turn (if any) makes this backend's frame equal PyAV's upright frame?
        # Try the documented behaviour first, then the alternative.
        candidates = [0, rot] if applies_rotation else [rot, 0]
        mads = []
        for k in dict.fromkeys(candidates):
            ok, mad = _same_picture(np.ascontiguousarray(np.rot90(raw, k=k // 90)), meta.first_upright)
            mads.append(mad)
            if ok:
                self._extra_rotation = k
                return
        raise BackendMismatch(f"frame {meta.first_index} decoded by {self.backend} differs from PyAV's "
                               f"(shape {raw.shape} vs {meta.first_upright.shape}, mean |diff| {min(mads):.1f})")

    def _raw_batch(self, indices: np.ndarray):  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode_sorted(self, indices: np.ndarray):
        return rotate_upright(self._raw_batch(indices), self._extra_rotation)


class DecordReader(_CalibratedReader):
    backend = "decord"

    def __init__(self, meta: PyAVReader, device, threads: int = 0):
        try:
            import decord
        except Exception as e:  # installed but its native library does not load
            raise BackendUnavailableError(f"decord is installed but cannot be imported: {e}") from e
        quiet_libav("decord")

        self._decord = decord
        self.path = meta.path
        gpu = device.type == "cuda"
        ctx = decord.gpu(device.index or 0) if gpu else decord.cpu(0)
        try:
            self._vr = decord.VideoReader(str(meta.path), ctx=ctx, num_threads=threads)
        except Exception as e:  # decord raises DECORDError (RuntimeError) with a C++ log line
            if gpu:
                raise BackendUnavailableError(
                    f"decord cannot decode on {device} (decord must be built with CUDA / NVDEC): "
                    f"{decord_reason(e)}") from e
            raise BackendMismatch(f"decord cannot open the file: {decord_reason(e)}") from e
        if len(self._vr) != len(meta.timestamps):
            raise BackendMismatch(f"decord counts {len(self._vr)} frames, the container index "
                                   f"{len(meta.timestamps)}")
        # decord locates frames after a seek by their decoded pts; in count-mode containers
        # (AVI) those are not frame identities and decord returns wrong frames after any seek
        # (verified on h264 and mpeg4 AVI). There it is only read strictly sequentially.
        self._sequential = meta.count_mode
        self._next = 0  # decord's current position (sequential mode)
        self._ctx, self._threads = ctx, threads
        # decord 0.6 applies the rotation flag itself on CPU, not on GPU (its video_reader.cc).
        self._setup(meta, device, applies_rotation=not gpu)

    def _get_batch(self, indices: list[int]):
        import torch

        try:
            arr = self._vr.get_batch(indices)
        except Exception as e:
            raise VideoDecodeError(self.path, f"decord failed: {decord_reason(e)}") from e
        if self.device.type == "cuda":
            return torch.from_dlpack(arr.to_dlpack())
        out = torch.from_numpy(arr.asnumpy())
        if out.ndim != 4 or out.shape[-1] != 3:
            # decord 0.6 returns padded 4-channel garbage for some widths (dmlc/decord#336)
            raise VideoDecodeError(self.path, f"decord returned malformed frames of shape {tuple(out.shape)}")
        return out

    def _raw_batch(self, indices: np.ndarray):
        if not self._sequential:
            return self._get_batch(indices.tolist())
        # Sequential mode: ask for every frame from the current position on (a request for
        # decord's current frame never seeks), in chunks, keeping the wanted ones.
        if indices[0] < self._next:
            self._vr = self._decord.VideoReader(str(self.path), ctx=self._ctx, num_threads=self._threads)
            self._next = 0
        wanted = set(indices.tolist())
        kept = []
        last = int(indices[-1])
        while self._next <= last:
            stop = min(self._next + 32, last + 1)
            chunk = self._get_batch(list(range(self._next, stop)))
            sel = [i - self._next for i in range(self._next, stop) if i in wanted]
            if sel:
                kept.append(chunk[sel])
            self._next = stop
        import torch

        return torch.cat(kept)

    def close(self) -> None:
        self._vr = None


_DECORD_LOG_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\]\s*\S+:\d+:\s*")
_DECORD_CHECK = re.compile(r"Check failed: .*? vs\. -?\d+\)\s*")


def decord_reason(e: Exception) -> str:
    """decord's exception text without its log prefixes (``[12:00:00] /path/file.cc:218:``) and
    internal check expressions: the reason only, e.g. "Thread worker: Error sending packet."."""
    last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    text = _DECORD_CHECK.sub("", _DECORD_LOG_PREFIX.sub("", last)).strip()
    return text or last


# ----------------------------------------------------------------------------- torchcodec


class TorchCodecReader(_CalibratedReader):
    backend = "torchcodec"

    def __init__(self, meta: PyAVReader, device, threads: int = 0):
        try:
            from torchcodec.decoders import VideoDecoder
        except Exception as e:
            raise BackendUnavailableError(f"torchcodec is not installed/usable here ({e}); "
                                          "pip install torchcodec") from e
        self.path = meta.path
        try:
            self._dec = VideoDecoder(str(meta.path), stream_index=meta.stream_index, dimension_order="NHWC",
                                     num_ffmpeg_threads=threads, device=str(device), seek_mode="exact")
        except Exception as e:
            if device.type == "cuda":
                raise BackendUnavailableError(f"torchcodec cannot decode on {device}: {e}") from e
            raise BackendMismatch(f"torchcodec cannot open the file: {e}") from e
        if len(self._dec) != len(meta.timestamps):
            raise BackendMismatch(f"torchcodec counts {len(self._dec)} frames, the container index "
                                   f"{len(meta.timestamps)}")
        self._raw_seconds = meta.raw_seconds
        # torchcodec's rotation handling differs between releases: calibration decides.
        self._setup(meta, device, applies_rotation=False)

    def _raw_batch(self, indices: np.ndarray):
        try:
            batch = self._dec.get_frames_at(indices=indices.tolist())
        except Exception as e:
            raise VideoDecodeError(self.path, f"torchcodec failed: {e}") from e
        got = batch.pts_seconds.double().cpu().numpy()
        if not np.allclose(got, self._raw_seconds[indices], atol=1e-3):
            raise VideoDecodeError(self.path, "torchcodec returned frames at other timestamps than requested")
        return batch.data

    def close(self) -> None:
        self._dec = None
