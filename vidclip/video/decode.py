"""Video decoding: probe a file, index its frames, decode chosen frames sparsely.

Three backends sit behind one :class:`VideoReader` interface:

* ``"pyav"``  - the reference. Frames are located by presentation timestamp: the reader
  seeks to the keyframe at or before each target and decodes forward, reusing one forward
  pass for targets that are close (no keyframe in between), and asks the decoder to skip
  non-reference frames it only passes through (``skip_frame=NONREF``).
* ``"decord"`` - decord's own C++ seek-and-skip ``get_batch`` (CPU, or CUDA when decord was
  built with it).
* ``"torchcodec"`` - when importable (CPU or CUDA, ``seek_mode="exact"``).

``"auto"`` = decord when it opens the file *and* decodes it consistently with PyAV, else
PyAV. GPU decoding (``device="cuda"``) never falls back silently: an unavailable GPU decoder
raises :class:`~vidclip.errors.BackendUnavailableError`.

Frame indexing (all backends share it, so indices mean the same thing everywhere)
---------------------------------------------------------------------------------
PyAV demuxes the chosen video stream once (no decoding) and sorts the packets' pts: frame
``i`` is the i-th frame in presentation order and ``timestamps[i]`` its pts in seconds
*since the first frame* (so the first frame is at 0.0). Variable-frame-rate video is
therefore exact. Containers whose decoded frames carry no usable pts (AVI: ``pts`` there is
a decode-order tick) are read in "count" mode: sequential decoding from the start, frame
``i`` = the i-th frame the decoder outputs.

Rotation
--------
``VideoInfo.rotation`` is the container's display-matrix rotation in degrees
counter-clockwise (0/90/180/270; PyAV's ``frame.rotation``; a file re-muxed with ffmpeg 5.1
``-metadata:s:v:0 rotate=R`` reports R). Every backend returns the *upright* picture:
PyAV frames are turned here; decord 0.6 already turns frames on CPU (but not on GPU) and
the reader checks which case applies by comparing one frame with PyAV's.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from vidclip.errors import BackendUnavailableError, ConfigError, VidclipError, VideoDecodeError

__all__ = [
    "VideoInfo",
    "VideoReader",
    "FrameIndexError",
    "available_backends",
    "probe",
    "open_video",
    "video_end",
]

BACKENDS = ("decord", "pyav", "torchcodec")

# Mean absolute difference (grey levels) under which two backends' decodes of the same frame
# count as the same picture. Different FFmpeg builds convert YUV->RGB with slightly different
# rounding/filters (observed <= ~2 on real clips); a wrong frame or orientation gives tens.
_SAME_FRAME_MAD = 6.0

# Containers whose packet/frame pts do not identify decoded frames (AVI stores one tick per
# packet in decode order; decoded frames of B-frame streams get permuted ticks).
_COUNT_MODE_FORMATS = ("avi",)


class FrameIndexError(VidclipError, IndexError):
    """A requested frame index is outside ``[0, num_frames)``."""


class _BackendMismatch(Exception):
    """Internal: a non-reference backend cannot read this file consistently with PyAV."""


@dataclass
class VideoInfo:
    """What ``probe`` reports about a video (the stream actually decoded).

    ``width``/``height`` are the displayed (upright) size; ``rotation`` the display rotation in
    degrees counter-clockwise applied to the coded picture; ``duration`` runs from the first
    frame to the end of the last one (see :func:`video_end`); ``num_frames`` counts the
    decodable frames of the index; ``backend`` is the backend that reads it.
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


# ----------------------------------------------------------------------------- reader base


class VideoReader:
    """Random access to the frames of one video. Use as a context manager.

    Attributes:
        info: :class:`VideoInfo`.
        timestamps: float64 ``[F]`` presentation time (s, first frame = 0) of every frame.
        device: torch device the frames are returned on.
    """

    info: VideoInfo
    timestamps: np.ndarray
    device: torch.device

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """Decode frames ``indices`` (any order, repeats allowed).

        Returns:
            uint8 ``[N, H, W, 3]`` RGB, upright, on ``self.device``; row j is frame
            ``indices[j]``. Each distinct frame is decoded once.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self.timestamps)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = int(idx[(idx < 0) | (idx >= n)][0])
            raise FrameIndexError(f"{self.info.path}: frame index {bad} out of range [0, {n})")
        h, w = self.info.height, self.info.width
        if idx.size == 0:
            return torch.empty((0, h, w, 3), dtype=torch.uint8, device=self.device)
        uniq, inverse = np.unique(idx, return_inverse=True)
        frames = self._decode_sorted(uniq)  # uint8 [U, H, W, 3], upright, on device
        if frames.shape[1:] != (h, w, 3):
            raise VideoDecodeError(self.info.path, f"{self.info.backend} returned frames of shape "
                                   f"{tuple(frames.shape[1:])}, expected {(h, w, 3)}")
        if np.array_equal(uniq, idx):  # already sorted and distinct: no gather copy
            return frames
        return frames[torch.as_tensor(inverse.reshape(-1), device=frames.device)]

    def _decode_sorted(self, indices: np.ndarray) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self) -> int:
        return len(self.timestamps)


def _rotate_upright(frames: torch.Tensor, rotation: int) -> torch.Tensor:
    """Turn ``[N, H, W, 3]`` frames counter-clockwise by ``rotation`` degrees (multiple of 90)."""
    k = (rotation // 90) % 4
    if k == 0:
        return frames
    # torch.rot90 with k > 0 turns from the H axis towards the W axis = counter-clockwise on
    # screen (same convention as np.rot90 and FFmpeg's display matrix).
    return torch.rot90(frames, k=k, dims=(1, 2)).contiguous()


# ----------------------------------------------------------------------------- PyAV (reference)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if path.is_dir():
        raise VideoDecodeError(path, "is a directory, not a video file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise VideoDecodeError(path, f"cannot stat file: {e}") from e
    if size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoDecodeError(path, "file is not readable (permission denied)")


def _av_reason(e: Exception) -> str:
    """A short reason from a PyAV/FFmpeg exception (includes FFmpeg's own log line when kept)."""
    msg = getattr(e, "strerror", None) or str(e)
    log = getattr(e, "log", None)
    if log and isinstance(log, tuple) and len(log) >= 3 and log[2]:
        msg = f"{msg}: {str(log[2]).strip()}"
    return msg


class _Overshoot(Exception):
    """Internal: after a seek the first decoded frame was already past the target."""


class _Unreliable(Exception):
    """Internal: decoded frames' pts do not identify index entries; switch to count mode."""


class PyAVReader(VideoReader):
    """The reference reader (see module docstring). Also supplies metadata to other backends."""

    def __init__(self, path, threads: int = 0, skip_nonref: bool = True):
        import av

        self._av = av
        self.path = Path(path)
        self.device = torch.device("cpu")
        self._threads = threads
        self._skip_nonref = skip_nonref
        self._container = None
        _check_file(self.path)
        self._open()
        try:
            self._build_index()
            self._decode_first()
        except BaseException:
            self.close()
            raise

    # -- opening and indexing

    def _open(self) -> None:
        av = self._av
        try:
            container = av.open(str(self.path), metadata_errors="ignore")
        except av.error.FFmpegError as e:
            raise VideoDecodeError(self.path, f"not a readable media file ({_av_reason(e)})") from e
        except (OSError, ValueError) as e:
            raise VideoDecodeError(self.path, f"cannot open: {e}") from e
        self._container = container
        videos = [s for s in container.streams.video
                  if not (int(s.disposition) & int(av.stream.Disposition.attached_pic))]
        if not videos:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoDecodeError(self.path, f"no video stream (streams: {', '.join(kinds)}; audio-only file?)")
        if getattr(self, "_stream_index", None) is not None:
            stream = next(s for s in videos if s.index == self._stream_index)
        else:
            # FFmpeg's av_find_best_stream, the choice decord and torchcodec make as well.
            best = container.streams.best("video")
            stream = best if best in videos else videos[0]
        if stream.codec_context is None:
            raise VideoDecodeError(self.path, f"no decoder for video codec {stream.codec.name!r}")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self._threads
        self._stream = stream
        self._stream_index = stream.index

    def _build_index(self) -> None:
        av = self._av
        stream = self._stream
        pts_list: list[int | None] = []
        keys: list[bool] = []
        try:
            for pkt in self._container.demux(stream):
                if pkt.size == 0:  # the demuxer's end-of-stream flush packet, or an empty chunk
                    continue
                pts_list.append(pkt.pts if pkt.pts is not None else pkt.dts)
                keys.append(bool(pkt.is_keyframe))
                if pkt.is_corrupt:  # e.g. the cut-off last packet of a truncated file
                    self._damaged_tail = True
        except av.error.FFmpegError:
            # Damaged tail (e.g. a truncated file): index what could be read; _decode_first
            # then drops the frames of the last GOP that do not decode.
            self._damaged_tail = True
        if not pts_list:
            raise VideoDecodeError(self.path, "video stream has no frames")
        n = len(pts_list)
        if stream.frames and n < stream.frames:  # the header promises more frames than exist
            self._damaged_tail = True
        tb = stream.time_base or Fraction(1, 1)
        rate = stream.average_rate or stream.guessed_rate
        self._rate = float(rate) if rate else 0.0
        have_pts = all(p is not None for p in pts_list) and len(set(pts_list)) == n
        fmt = (self._container.format.name or "").split(",")
        self._count_mode = not have_pts or any(f in _COUNT_MODE_FORMATS for f in fmt)
        if have_pts:
            raw = np.asarray(pts_list, dtype=np.int64)
            order = np.argsort(raw, kind="stable")
            pts = raw[order]
            key = np.asarray(keys, dtype=bool)[order]
        else:
            # No usable timestamps: frames are evenly spaced at the stream's nominal rate.
            step = 1 / Fraction(rate) if rate else Fraction(1, 25)
            pts = np.round(np.arange(n) * float(step / tb)).astype(np.int64)
            key = np.zeros(n, dtype=bool)
        key[0] = True
        self._set_index(pts, key, tb)

    def _set_index(self, pts: np.ndarray, key: np.ndarray, tb: Fraction) -> None:
        self._pts = pts                          # int64 [F] stream ticks, presentation order
        self._tb = tb
        # Exact rational -> float: (pts - pts0) * num / den rounds once.
        self.timestamps = (pts - pts[0]).astype(np.float64) * tb.numerator / tb.denominator
        self._raw_seconds = pts.astype(np.float64) * tb.numerator / tb.denominator
        self._pts_index = {int(p): i for i, p in enumerate(pts.tolist())}
        # key_before[i] = the last keyframe at or before frame i (presentation order).
        kidx = np.flatnonzero(key)
        self._key_before = kidx[np.searchsorted(kidx, np.arange(len(pts)), side="right") - 1]
        self._it = None      # active forward pass (generator of decoded frames)
        self._pos = None     # index of the last frame that pass produced (None: none yet)
        self._target = -1    # frames before this index may be skipped if non-reference

    def _decode_first(self) -> None:
        """Decode the first frame: checks the stream decodes, reads rotation and coded size."""
        try:
            if self._count_mode:
                frame = self._count_decode(0)
                idx = 0
            else:
                self._start_pass(None)
                frame = next(self._it, None)
                if frame is None:
                    raise VideoDecodeError(self.path, "video stream could not be decoded" + self._last_error_text())
                idx = self._pts_index.get(frame.pts)
                if idx is None:
                    # decoded pts do not name index entries: fall back to counting
                    self._count_mode = True
                    self._it = None
                    frame, idx = self._count_decode(0), 0
                else:
                    self._pos = idx
                    if idx > 0:
                        # Leading frames the decoder cannot produce from the start of the file
                        # (open-GOP B-frames before the first keyframe) are not decodable frames.
                        keep = slice(idx, None)
                        self._set_index(self._pts[keep], self._key_before_mask()[keep], self._tb)
                        self._start_pass(None)
                        frame = next(self._it)
                        idx = 0
                        self._pos = 0
        except VideoDecodeError:
            raise
        except self._av.error.FFmpegError as e:
            raise VideoDecodeError(self.path, f"video stream could not be decoded ({_av_reason(e)})") from e
        rot = int(round((frame.rotation or 0) / 90.0)) * 90 % 360
        self.rotation = rot
        self._coded_w, self._coded_h = frame.width, frame.height
        first = self._to_rgb(frame)
        self._first = (idx, first)
        if getattr(self, "_damaged_tail", False) and not self._count_mode:
            self._trim_undecodable_tail()
        self.first_upright = np.ascontiguousarray(np.rot90(first, k=rot // 90))
        self.first_index = idx
        w, h = (self._coded_h, self._coded_w) if rot in (90, 270) else (self._coded_w, self._coded_h)
        n = len(self.timestamps)
        duration = video_end(self.timestamps) - float(self.timestamps[0])
        fps = self._rate if self._rate > 0 else n / duration
        self.info = VideoInfo(
            path=str(self.path), duration=duration, fps=fps, num_frames=n, width=w, height=h,
            codec=self._stream.codec_context.name, rotation=rot,
            has_audio=len(self._container.streams.audio) > 0, backend="pyav",
        )

    def _trim_undecodable_tail(self) -> None:
        """Decode the last GOP of a damaged file; keep only the frames before the first gap."""
        n = len(self._pts)
        kf = int(self._key_before[n - 1])
        self._target = -1  # decode everything in this pass
        self._start_pass(kf)
        produced = set()
        for frame in self._it:
            i = self._pts_index.get(frame.pts)
            if i is not None and i >= kf:
                produced.add(i)
        missing = [i for i in range(kf, n) if i not in produced]
        if missing:
            keep = slice(0, max(missing[0], 1))
            self._set_index(self._pts[keep], self._key_before_mask()[keep], self._tb)
        self._it, self._pos = None, None

    def _key_before_mask(self) -> np.ndarray:
        mask = np.zeros(len(self._pts), dtype=bool)
        mask[np.unique(self._key_before)] = True
        return mask

    @property
    def count_mode(self) -> bool:
        """True when frames are identified by counting decoder output (no usable pts)."""
        return self._count_mode

    @property
    def stream_index(self) -> int:
        return self._stream_index

    @property
    def raw_seconds(self) -> np.ndarray:
        """float64 [F] pts in seconds as the container states them (not shifted to 0)."""
        return self._raw_seconds

    # -- decoding

    def _last_error_text(self) -> str:
        e = getattr(self, "_last_error", None)
        return f" ({_av_reason(e)})" if e is not None else ""

    def _frames(self):
        """Generator: decoded frames of the current pass, in output (presentation) order."""
        av = self._av
        cc = self._stream.codec_context
        skip = self._skip_nonref and not self._count_mode
        try:
            for pkt in self._container.demux(self._stream):
                if pkt.size == 0:
                    continue
                if skip:
                    # Non-reference frames before the target are never output and never needed:
                    # let the decoder drop them (the setting applies per submitted packet).
                    i = self._pts_index.get(pkt.pts)
                    cc.skip_frame = "NONREF" if (i is not None and i < self._target) else "DEFAULT"
                try:
                    frames = cc.decode(pkt)
                except av.error.EOFError:
                    break
                except av.error.FFmpegError as e:  # a damaged packet: keep going, like ffmpeg does
                    self._last_error = e
                    continue
                yield from frames
        except av.error.FFmpegError as e:  # demuxing failed mid-file (truncated/damaged)
            self._last_error = e
        cc.skip_frame = "DEFAULT"
        try:
            yield from cc.decode(None)  # drain the frames still buffered for reordering
        except av.error.FFmpegError as e:
            self._last_error = e

    def _start_pass(self, key_index: int | None) -> None:
        """Begin a forward pass at the keyframe ``key_index`` (None: the file start, fresh open)."""
        self._it = None
        self._pos = None
        if key_index is None:
            self._container.close()
            self._open()
        else:
            self._container.seek(int(self._pts[key_index]), stream=self._stream, backward=True, any_frame=False)
            self._stream.codec_context.flush_buffers()
        self._it = self._frames()

    def _advance_to(self, t: int):
        """Decode forward in the current pass until frame ``t``; returns that av.VideoFrame."""
        first = self._pos is None
        for frame in self._it:
            idx = self._pts_index.get(frame.pts)
            if idx is None or (self._pos is not None and idx <= self._pos):
                raise _Unreliable
            self._pos = idx
            if idx == t:
                return frame
            if idx > t:
                if first:
                    raise _Overshoot
                raise VideoDecodeError(self.path, f"frame {t} (t={self.timestamps[t]:.3f} s) was not "
                                       "produced by the decoder" + self._last_error_text())
            first = False
        self._it = None
        raise VideoDecodeError(self.path, f"frame {t} (t={self.timestamps[t]:.3f} s) could not be decoded: "
                               "stream ended" + self._last_error_text())

    def _seek_decode(self, t: int):
        kf = int(self._key_before[t])
        self._target = t
        reuse = self._it is not None and self._pos is not None and self._pos < t and kf <= self._pos + 1
        if not reuse:
            self._start_pass(kf)
        tried_start = False
        while True:
            try:
                return self._advance_to(t)
            except _Overshoot:
                # The demuxer landed after the requested keyframe: step one keyframe back,
                # finally restart from the beginning of the file.
                if kf > 0:
                    kf = int(self._key_before[kf - 1])
                    self._start_pass(kf)
                elif not tried_start:
                    tried_start = True
                    self._start_pass(None)
                else:
                    raise VideoDecodeError(self.path, f"cannot reach frame {t}: decoding starts past it") from None

    def _count_decode(self, t: int):
        if self._it is None or self._pos is None or self._pos >= t:
            self._start_pass(None)
            self._pos = -1
        for frame in self._it:
            self._pos += 1
            if self._pos == t:
                return frame
        self._it = None
        raise VideoDecodeError(self.path, f"frame {t} could not be decoded: the decoder produced only "
                               f"{self._pos + 1} of {len(self._pts)} frames" + self._last_error_text())

    def _to_rgb(self, frame) -> np.ndarray:
        # Reformat to the first frame's coded size so a mid-stream size change cannot break stacking.
        w = getattr(self, "_coded_w", frame.width)
        h = getattr(self, "_coded_h", frame.height)
        return frame.to_ndarray(format="rgb24", width=w, height=h)

    def _decode_sorted(self, indices: np.ndarray) -> torch.Tensor:
        try:
            return self._decode_sorted_once(indices)
        except _Unreliable:
            # Decoded pts turned out not to identify frames: count frames from the start instead.
            self._count_mode = True
            self._it = None
            return self._decode_sorted_once(indices)

    def _decode_sorted_once(self, indices: np.ndarray) -> torch.Tensor:
        out = np.empty((len(indices), self._coded_h, self._coded_w, 3), dtype=np.uint8)
        step = self._count_decode if self._count_mode else self._seek_decode
        try:
            for j, t in enumerate(indices.tolist()):
                if t == self._first[0] and self._first[1] is not None:
                    out[j] = self._first[1]
                    continue
                out[j] = self._to_rgb(step(t))
        except self._av.error.FFmpegError as e:
            raise VideoDecodeError(self.path, f"decoding failed ({_av_reason(e)})") from e
        return _rotate_upright(torch.from_numpy(out), self.rotation)

    def close(self) -> None:
        self._it = None
        if self._container is not None:
            self._container.close()
            self._container = None

    def release_container(self) -> None:
        """Close the file but keep index and metadata (used when another backend decodes)."""
        self.close()
        self._first = (self._first[0], None)


# ----------------------------------------------------------------------------- decord


def _same_picture(a: np.ndarray, b: np.ndarray) -> tuple[bool, float]:
    if a.shape != b.shape:
        return False, float("inf")
    mad = float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
    return mad <= _SAME_FRAME_MAD, mad


class _CalibratedReader(VideoReader):
    """Shared logic of non-reference backends: index from PyAV, orientation checked against it."""

    backend = ""

    def _setup(self, meta: PyAVReader, device: torch.device, applies_rotation: bool) -> None:
        self.path = meta.path
        self.device = device
        self.timestamps = meta.timestamps
        self.info = VideoInfo(**{**meta.info.to_dict(), "backend": self.backend})
        rot = meta.rotation
        try:
            raw = self._raw_batch(np.asarray([meta.first_index]))[0].cpu().numpy()
        except VideoDecodeError as e:
            raise _BackendMismatch(e.reason) from e
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
        raise _BackendMismatch(f"frame {meta.first_index} decoded by {self.backend} differs from PyAV's "
                               f"(shape {raw.shape} vs {meta.first_upright.shape}, mean |diff| {min(mads):.1f})")

    def _raw_batch(self, indices: np.ndarray) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode_sorted(self, indices: np.ndarray) -> torch.Tensor:
        return _rotate_upright(self._raw_batch(indices), self._extra_rotation)


class DecordReader(_CalibratedReader):
    backend = "decord"

    def __init__(self, meta: PyAVReader, device: torch.device, threads: int = 0):
        try:
            import decord
        except Exception as e:  # installed but its native library does not load
            raise BackendUnavailableError(f"decord is installed but cannot be imported: {e}") from e

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
                    f"{str(e).strip().splitlines()[-1]}") from e
            raise _BackendMismatch(f"decord cannot open the file: {str(e).strip().splitlines()[-1]}") from e
        if len(self._vr) != len(meta.timestamps):
            raise _BackendMismatch(f"decord counts {len(self._vr)} frames, the container index "
                                   f"{len(meta.timestamps)}")
        # decord locates frames after a seek by their decoded pts; in count-mode containers
        # (AVI) those are not frame identities and decord returns wrong frames after any seek
        # (verified on h264 and mpeg4 AVI). There it is only read strictly sequentially.
        self._sequential = meta.count_mode
        self._next = 0  # decord's current position (sequential mode)
        self._ctx, self._threads = ctx, threads
        # decord 0.6 applies the rotation flag itself on CPU, not on GPU (its video_reader.cc).
        self._setup(meta, device, applies_rotation=not gpu)

    def _get_batch(self, indices: list[int]) -> torch.Tensor:
        try:
            arr = self._vr.get_batch(indices)
        except Exception as e:
            raise VideoDecodeError(self.path, f"decord failed: {str(e).strip().splitlines()[-1]}") from e
        if self.device.type == "cuda":
            return torch.from_dlpack(arr.to_dlpack())
        out = torch.from_numpy(arr.asnumpy())
        if out.ndim != 4 or out.shape[-1] != 3:
            # decord 0.6 returns padded 4-channel garbage for some widths (dmlc/decord#336)
            raise VideoDecodeError(self.path, f"decord returned malformed frames of shape {tuple(out.shape)}")
        return out

    def _raw_batch(self, indices: np.ndarray) -> torch.Tensor:
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
        return torch.cat(kept)

    def close(self) -> None:
        self._vr = None


# ----------------------------------------------------------------------------- torchcodec


class TorchCodecReader(_CalibratedReader):
    backend = "torchcodec"

    def __init__(self, meta: PyAVReader, device: torch.device, threads: int = 0):
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
            raise _BackendMismatch(f"torchcodec cannot open the file: {e}") from e
        if len(self._dec) != len(meta.timestamps):
            raise _BackendMismatch(f"torchcodec counts {len(self._dec)} frames, the container index "
                                   f"{len(meta.timestamps)}")
        self._raw_seconds = meta.raw_seconds
        # torchcodec's rotation handling differs between releases: calibration decides.
        self._setup(meta, device, applies_rotation=False)

    def _raw_batch(self, indices: np.ndarray) -> torch.Tensor:
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


# ----------------------------------------------------------------------------- entry points


def _parse_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device: invalid device {device!r} ({e})") from e
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device: expected 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


def open_video(path, backend: str = "auto", device: str = "cpu", threads: int = 0) -> VideoReader:
    """Open ``path`` for frame access.

    Args:
        path: video file.
        backend: "auto" (decord when it reads the file consistently with PyAV, else PyAV),
            "pyav", "decord" or "torchcodec".
        device: "cpu", or "cuda[:N]" for GPU decoding (decord built with CUDA, or torchcodec;
            "auto" tries torchcodec then decord). Raises BackendUnavailableError when the GPU
            decoder is not available; PyAV cannot decode on a GPU.
        threads: decoder threads (0 = FFmpeg's automatic choice).
    Raises:
        VideoDecodeError: the file is missing, empty, not a video, or not decodable.
        BackendUnavailableError: the requested backend / GPU decoder is not usable here.
        ConfigError: unknown backend or device string.
    """
    if backend not in ("auto", *BACKENDS):
        raise ConfigError(f"backend: unknown backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    dev = _parse_device(device)
    have = available_backends()
    if dev.type == "cuda":
        if backend == "pyav":
            raise BackendUnavailableError("backend 'pyav' decodes on the CPU only; GPU decoding needs "
                                          "backend 'decord' (built with CUDA) or 'torchcodec'")
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"GPU decoding on {device!r} requested, but torch sees no CUDA device")
    elif backend != "auto" and backend not in have:
        raise BackendUnavailableError(f"backend {backend!r} is not installed here (available: {', '.join(have)})")
    if "pyav" not in have:
        raise BackendUnavailableError("PyAV (package 'av') is required for indexing and metadata")

    meta = PyAVReader(path, threads=threads)
    if dev.type == "cpu" and backend == "pyav":
        return meta
    if dev.type == "cpu" and backend == "auto" and ("decord" not in have or meta.count_mode):
        # Count-mode containers (AVI) can only be read sequentially by decord, which then
        # converts every frame to RGB; PyAV decodes sequentially but converts only the wanted.
        return meta

    if dev.type == "cuda":
        order = ["torchcodec", "decord"] if backend == "auto" else [backend]
    else:
        order = ["decord"] if backend == "auto" else [backend]
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
        except _BackendMismatch as e:
            if backend == "auto" and dev.type == "cpu":
                return meta  # decord cannot read this file faithfully: PyAV is the fallback
            meta.close()
            raise VideoDecodeError(meta.path, f"{name}: {e}; PyAV reads it (backend='pyav' or 'auto')") from e
        except BaseException:
            meta.close()
            raise
        meta.release_container()
        return reader
    meta.close()
    raise BackendUnavailableError(f"no GPU decoder available for device {device!r}: " + "; ".join(reasons))


def probe(path, backend: str = "auto") -> VideoInfo:
    """Metadata of ``path`` (see :class:`VideoInfo`); ``backend`` is the one that would decode it."""
    with open_video(path, backend=backend) as reader:
        return reader.info
