"""``probe``: a video's metadata from its container header, decoding nothing.

The frame count and timestamps come from the container's sample table when it has a complete
one (MP4/MOV/AVI: no packet is read), else from one demuxing pass over the packets (Matroska,
WebM, ...; still no decoding). Rotation comes from the MP4/MOV track header's display matrix;
other containers keep it in places PyAV only exposes on decoded frames, so there the first
frame is decoded, on one thread and only within the pixel limit (above it, rotation 0 is
reported). So probing a 198 KB file that declares 8192 x 8192 pixels stays small and fast,
and decoding it is refused with a clear error (see ``max_pixels``).
"""

from __future__ import annotations

import math
import os
import struct
from fractions import Fraction

import numpy as np

from vidclip.core.errors import ConfigError, VideoDecodeError, display_path
from vidclip.video.pyav_reader import (
    av_reason,
    demux_index,
    open_container,
    pick_video_stream,
    stated_duration,
)
from vidclip.video.reader import VideoInfo, max_pixels_limit, short_duration_warning, video_end

__all__ = ["probe"]

BACKEND_CHOICES = ("auto", "decord", "pyav", "torchcodec")
_ISO_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2")


def _boxes(f, start: int, end: int):
    """ISO-BMFF boxes in ``[start, end)``: (type, payload start, box end)."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        hdr = f.read(8)
        if len(hdr) < 8:
            return
        size, typ = struct.unpack(">I4s", hdr)
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", f.read(8))[0], 16
        elif size == 0:
            size = end - pos
        if size < head:
            return
        yield typ, pos + head, min(pos + size, end)
        pos += size


def iso_rotation(path, track_id: int) -> int | None:
    """Counter-clockwise display rotation (0/90/180/270) from the ``tkhd`` matrix of MP4/MOV
    track ``track_id`` (= PyAV's ``stream.id``), the value FFmpeg reports as ``frame.rotation``;
    None when the header cannot be read."""
    try:
        with open(path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            for typ, a, b in _boxes(f, 0, end):
                if typ != b"moov":
                    continue
                for t2, a2, b2 in _boxes(f, a, b):
                    if t2 != b"trak":
                        continue
                    for t3, a3, b3 in _boxes(f, a2, b2):
                        if t3 != b"tkhd":
                            continue
                        f.seek(a3)
                        data = f.read(min(b3 - a3, 120))
                        wide = 8 if data[0] == 1 else 4  # version 1: 64-bit times and duration
                        tid = struct.unpack(">I", data[4 + 2 * wide: 8 + 2 * wide])[0]
                        if tid != track_id:
                            continue
                        off = 4 + 2 * wide + 4 + 4 + wide + 16  # ... reserved, layer, group, volume
                        m = struct.unpack(">9i", data[off:off + 36])
                        # FFmpeg: rotation = -atan2(b, a) (av_display_rotation_get), CCW.
                        deg = -math.degrees(math.atan2(m[1], m[0]))
                        return int(round(deg / 90.0)) * 90 % 360
    except (OSError, struct.error, IndexError):
        return None
    return None


def _first_frame_rotation(path, stream_index: int) -> int:
    import av

    with open_container(path) as container:  # a fresh one: the caller's has been demuxed to the end
        stream = pick_video_stream(container, path, stream_index)
        stream.codec_context.thread_count = 1  # one thread: one set of reference frames in memory
        try:
            frame = next(container.decode(stream), None)
        except av.error.FFmpegError as e:
            raise VideoDecodeError(path, f"video stream could not be decoded ({av_reason(e)})") from e
    if frame is None:
        raise VideoDecodeError(path, "video stream could not be decoded")
    return int(round((frame.rotation or 0) / 90.0)) * 90 % 360


def probe(path, backend: str = "auto", max_pixels: int | None = None) -> VideoInfo:
    """Metadata of ``path`` from its header (see the module docstring); decodes nothing in
    MP4/MOV/AVI, at most the first frame elsewhere.

    ``backend`` names the decoder that would read frames ("auto" chooses per request when
    reading) and is only checked for validity here. ``info.warnings`` notes a file whose
    sample table points past its end (cut short) or whose packets cover well under the stated
    duration. ``max_pixels``: above it the picture is reported, never decoded.

    Raises:
        VideoDecodeError: missing / not a regular file / empty / no video stream / unreadable.
        ConfigError: unknown backend.
    """
    if backend not in BACKEND_CHOICES:
        raise ConfigError(f"backend: unknown backend {backend!r}; choose {', '.join(BACKEND_CHOICES)}")
    limit = max_pixels_limit(max_pixels)
    container = open_container(path)
    try:
        stream = pick_video_stream(container, path)
        cc = stream.codec_context
        tb = stream.time_base or Fraction(1, 1)
        warnings: list[str] = []
        entries = stream.index_entries or []
        file_size = os.path.getsize(path)
        complete = bool(stream.frames) and len(entries) == stream.frames
        if complete and entries[-1].pos + entries[-1].size > file_size:
            warnings.append(f"{display_path(path)}: the container's sample table points past the end of the file "
                            "(file cut short?); frames there cannot be decoded")
            complete = False
        if complete:
            ticks = [e.timestamp for e in entries]
        else:
            ticks, _, _ = demux_index(container, stream)
            ticks = [t for t in ticks if t is not None]
        if not ticks:
            raise VideoDecodeError(path, "video stream has no frames")
        pts = np.unique(np.asarray(ticks, dtype=np.int64))
        if pts.size < len(ticks):  # pts that do not identify frames (count-mode files)
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            pts = np.round(np.arange(len(ticks)) / float(rate) / float(tb)).astype(np.int64)
        ts = (pts - pts[0]).astype(np.float64) * tb.numerator / tb.denominator
        duration = video_end(ts)
        n = int(ts.size)
        fmt = (container.format.name or "").split(",")
        if any(f in _ISO_FORMATS for f in fmt):
            rotation = iso_rotation(path, stream.id)
        else:
            rotation = None
        if rotation is None:
            rotation = _first_frame_rotation(path, stream.index) if cc.width * cc.height <= limit else 0
        w, h = (cc.height, cc.width) if rotation in (90, 270) else (cc.width, cc.height)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else n / duration
        short = None if not complete and warnings else short_duration_warning(
            path, duration, stated_duration(container, stream))
        if short:
            warnings.append(short)
        return VideoInfo(path=str(path), duration=duration, fps=fps, num_frames=n, width=w, height=h,
                         codec=cc.name, rotation=rotation, has_audio=len(container.streams.audio) > 0,
                         backend=backend, warnings=warnings)
    finally:
        container.close()
