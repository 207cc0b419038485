"""The PyAV reader: the reference backend, and the frame index every backend shares.

Frame indexing
--------------
PyAV demuxes the chosen video stream once (no decoding) and sorts the packets' pts: frame
``i`` is the i-th frame in presentation order and ``timestamps[i]`` its pts in seconds
*since the first frame* (so the first frame is at 0.0). Variable-frame-rate video is
therefore exact. Containers whose decoded frames carry no usable pts (AVI: ``pts`` there is
a decode-order tick) are read in "count" mode: sequential decoding from the start, frame
``i`` = the i-th frame the decoder outputs.

Frames are located by presentation timestamp: the reader seeks to the keyframe at or before
each target and decodes forward, reusing one forward pass for targets that are close (no
keyframe in between), and asks the decoder to skip non-reference frames it only passes
through (``skip_frame=NONREF``).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from vidclip.core.errors import VideoDecodeError
from vidclip.video.files import check_video_file
from vidclip.video.reader import (
    VideoInfo,
    VideoReader,
    check_frame_size,
    quiet_libav,
    rotate_upright,
    short_duration_warning,
    video_end,
)

__all__ = ["PyAVReader", "open_container", "pick_video_stream", "av_reason"]

# Containers whose packet/frame pts do not identify decoded frames (AVI stores one tick per
# packet in decode order; decoded frames of B-frame streams get permuted ticks).
COUNT_MODE_FORMATS = ("avi",)


def av_reason(e: Exception) -> str:
    """A short reason from a PyAV/FFmpeg exception (includes FFmpeg's own log line when kept)."""
    msg = getattr(e, "strerror", None) or str(e)
    log = getattr(e, "log", None)
    if log and isinstance(log, tuple) and len(log) >= 3 and log[2]:
        msg = f"{msg}: {str(log[2]).strip()}"
    return msg


def open_container(path: Path):
    """``av.open`` with our error messages (the path is checked first: a FIFO is never opened)."""
    import av

    quiet_libav("pyav")
    check_video_file(path)
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"not a readable media file ({av_reason(e)})") from e
    except (OSError, ValueError) as e:
        raise VideoDecodeError(path, f"cannot open: {e}") from e


def pick_video_stream(container, path, stream_index: int | None = None):
    """The video stream to read: FFmpeg's "best" one (as decord and torchcodec choose), never
    an attached picture (cover art)."""
    import av

    videos = [s for s in container.streams.video
              if not (int(s.disposition) & int(av.stream.Disposition.attached_pic))]
    if not videos:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)}; audio-only file?)")
    if stream_index is not None:
        return next(s for s in videos if s.index == stream_index)
    best = container.streams.best("video")
    stream = best if best in videos else videos[0]
    if stream.codec_context is None:
        raise VideoDecodeError(path, f"no decoder for video codec {stream.codec.name!r}")
    return stream


def stated_duration(container, stream) -> float | None:
    """The duration (s) the container's header states for ``stream`` (None when it states none).

    AVI: the larger of that and the stream header's frame count (``strh`` length) in time-base
    ticks, one per frame. The AVI index (``idx1``) sits at the end of the file, and without it
    FFmpeg re-estimates the duration from the file's size, so a file cut short would state what
    is left of it and pass as a complete, shorter video; the frame count in the header is kept.
    """
    stated = None
    if stream.duration and stream.time_base:
        stated = float(stream.duration * stream.time_base)
    elif container.duration:
        stated = container.duration / 1e6  # AV_TIME_BASE
    if stream.frames and stream.time_base and any(f in COUNT_MODE_FORMATS for f in _format_names(container)):
        stated = max(stated or 0.0, float(stream.frames * stream.time_base))
    return stated


def _format_names(container) -> list[str]:
    return (container.format.name or "").split(",")


def demux_index(container, stream) -> tuple[list[int | None], list[bool], bool]:
    """Demux ``stream`` once, decoding nothing: each packet's pts (dts when it has none) and
    keyframe flag in file order, and whether the stream ended damaged (truncated or corrupt)."""
    import av

    pts_list: list[int | None] = []
    keys: list[bool] = []
    damaged = False
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0:  # the demuxer's end-of-stream flush packet, or an empty chunk
                continue
            pts_list.append(pkt.pts if pkt.pts is not None else pkt.dts)
            keys.append(bool(pkt.is_keyframe))
            if pkt.is_corrupt:  # e.g. the cut-off last packet of a truncated file
                damaged = True
    except av.error.FFmpegError:
        damaged = True
    return pts_list, keys, damaged


class _Overshoot(Exception):
    """Internal: after a seek the first decoded frame was already past the target."""


class _Unreliable(Exception):
    """Internal: decoded frames' pts do not identify index entries; switch to count mode."""


class PyAVReader(VideoReader):
    """The reference reader (see module docstring). Also supplies metadata to other backends."""

    def __init__(self, path, threads: int = 0, skip_nonref: bool = True, max_pixels: int | None = None):
        import av
        import torch

        self._av = av
        self.path = Path(path)
        self.device = torch.device("cpu")
        self._threads = threads
        self._skip_nonref = skip_nonref
        self._max_pixels = max_pixels
        self._container = None
        self._open()
        try:
            self._build_index()
            self._decode_first()
        except BaseException:
            self.close()
            raise

    # -- opening and indexing

    def _open(self) -> None:
        self._container = open_container(self.path)
        stream = pick_video_stream(self._container, self.path, getattr(self, "_stream_index", None))
        if getattr(self, "_stream_index", None) is None:
            # Refuse a huge picture before decoding anything (the limit is checked on the
            # coded size, which is what the decoder allocates).
            cc = stream.codec_context
            check_frame_size(self.path, cc.width, cc.height, self._max_pixels)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self._threads
        self._stream = stream
        self._stream_index = stream.index

    def _build_index(self) -> None:
        stream = self._stream
        pts_list, keys, damaged = demux_index(self._container, stream)
        if damaged:
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
        self._count_mode = not have_pts or any(f in COUNT_MODE_FORMATS for f in fmt)
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
            raise VideoDecodeError(self.path, f"video stream could not be decoded ({av_reason(e)})") from e
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
        short = short_duration_warning(self.path, duration, stated_duration(self._container, self._stream))
        if short:
            self.info.warnings.append(short)

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

    def frames_passed(self, indices: np.ndarray) -> int:
        """How many frames a seek-and-decode-forward read of sorted ``indices`` passes through:
        for each keyframe interval touched, from its keyframe to the last target in it."""
        kb = self._key_before[indices]
        last = np.maximum.reduceat(indices, np.flatnonzero(np.r_[True, kb[1:] != kb[:-1]]))
        return int((last - np.unique(kb) + 1).sum())

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
        return f" ({av_reason(e)})" if e is not None else ""

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

    def _decode_sorted(self, indices: np.ndarray):
        try:
            return self._decode_sorted_once(indices)
        except _Unreliable:
            # Decoded pts turned out not to identify frames: count frames from the start instead.
            self._count_mode = True
            self._it = None
            return self._decode_sorted_once(indices)

    def _decode_sorted_once(self, indices: np.ndarray):
        import torch

        out = np.empty((len(indices), self._coded_h, self._coded_w, 3), dtype=np.uint8)
        step = self._count_decode if self._count_mode else self._seek_decode
        try:
            for j, t in enumerate(indices.tolist()):
                if t == self._first[0] and self._first[1] is not None:
                    out[j] = self._first[1]
                    continue
                out[j] = self._to_rgb(step(t))
        except self._av.error.FFmpegError as e:
            raise VideoDecodeError(self.path, f"decoding failed ({av_reason(e)})") from e
        return rotate_upright(torch.from_numpy(out), self.rotation)

    def close(self) -> None:
        self._it = None
        if self._container is not None:
            self._container.close()
            self._container = None

    def release_container(self) -> None:
        """Close the file but keep index and metadata (used when another backend decodes)."""
        self.close()
        self._first = (self._first[0], None)
