"""Media helpers for the server: byte ranges, content types and thumbnails.

Nothing here knows about FastAPI, so each piece is tested on its own:

- :func:`parse_range` reads an HTTP ``Range`` header (RFC 9110 section 14) against a file size
  and says which bytes to send, or raises :class:`RangeNotSatisfiable` (answered with 416).
- :func:`content_type_for` maps a video file's extension to its media type, without consulting
  the host's ``mimetypes`` database (which differs between machines).
- :func:`frame_index_at` picks the frame *shown* at time ``t`` from the frames' presentation
  timestamps, so thumbnails are exact on variable-frame-rate video.
- :class:`Thumbnailer` renders a JPEG of that frame and keeps the results in small LRU caches
  keyed by the file's identity (path, size, mtime), so a file replaced on disk is re-read.
- :func:`open_indexed_file` opens a video only when it is still the file the catalog indexed
  (same size and mtime, a regular file, not swapped for a symbolic link out of the library).
- :func:`format_time` is the one way times are written for people (page, API text, CLI):
  ``m:ss.s`` (``h:mm:ss.s`` from an hour on), always one decimal.
- :func:`release_freed_memory` hands the heap memory freed after a big image decode back to the
  operating system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import math
import os
import re
import stat as stat_mod
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vidclip.core.errors import VidclipError

# --------------------------------------------------------------------------- content types

# Media types by extension. Browsers decide whether they can play a file from the codecs inside,
# not from this header, but a wrong type (or application/octet-stream) makes some refuse to try.
CONTENT_TYPES: dict[str, str] = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".avi": "video/x-msvideo",
    ".ogv": "video/ogg",
    ".ogg": "video/ogg",
    ".mpg": "video/mpeg",
    ".mpeg": "video/mpeg",
    ".ts": "video/mp2t",
    ".m2ts": "video/mp2t",
    ".3gp": "video/3gpp",
    ".flv": "video/x-flv",
    ".wmv": "video/x-ms-wmv",
    ".gif": "image/gif",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def content_type_for(path: str | os.PathLike) -> str:
    """The media type to send for ``path``, from its extension (case-insensitive)."""
    return CONTENT_TYPES.get(Path(path).suffix.lower(), DEFAULT_CONTENT_TYPE)


# --------------------------------------------------------------------------- byte ranges


class RangeNotSatisfiable(VidclipError):
    """A ``Range`` header is malformed or asks for bytes outside the file (HTTP 416)."""

    def __init__(self, header: str, size: int, reason: str):
        self.header = header
        self.size = size
        self.reason = reason
        super().__init__(f"Range header {header!r} for a {size}-byte file: {reason}")


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start..end`` of a file, both inclusive (as in ``Content-Range``)."""

    start: int
    end: int
    size: int  # size of the whole file

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


# At most 19 digits a side (any real file size fits): a 5000-digit number must be a 416, not
# Python's int-conversion limit turning into a 500.
_RANGE_SPEC = re.compile(r"^\s*(\d{0,19})\s*-\s*(\d{0,19})\s*$")


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """Which bytes of a ``size``-byte file a ``Range`` header asks for.

    Returns ``None`` when the whole file should be sent with 200: no header, a unit other than
    ``bytes`` (RFC 9110 14.2: such a header MUST be ignored), or several ranges (a server MAY
    ignore a Range header; browsers only ever ask for one, and multipart/byteranges bodies are
    not worth their complexity here). Raises :class:`RangeNotSatisfiable` for a malformed
    single range (``bytes=abc``, ``bytes=5-2``, ``bytes=-``) or one that starts at or past the
    end of the file (including any range of an empty file, and ``bytes=-0``). An end past the
    file is clamped to the last byte, as the RFC says.

    Forms: ``bytes=A-B`` (A..B), ``bytes=A-`` (A to the end), ``bytes=-N`` (the last N bytes).
    """
    if header is None:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep:
        raise RangeNotSatisfiable(header, size, "expected 'bytes=START-END'")
    if unit.strip().lower() != "bytes":
        return None
    parts = spec.split(",")
    if len(parts) > 1:
        # Still reject garbage, but serve well-formed multi-range requests whole.
        for part in parts:
            if not _RANGE_SPEC.match(part) or part.strip() == "-":
                raise RangeNotSatisfiable(header, size, f"malformed range {part.strip()!r}")
        return None
    m = _RANGE_SPEC.match(spec)
    if not m:
        raise RangeNotSatisfiable(header, size, f"malformed range {spec.strip()!r}")
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        raise RangeNotSatisfiable(header, size, "a range needs a start or a suffix length")
    if first == "":  # suffix form: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(header, size, "asks for zero bytes")
        return ByteRange(max(0, size - n), size - 1, size)
    start = int(first)
    end = int(last) if last != "" else size - 1
    if last != "" and end < start:
        raise RangeNotSatisfiable(header, size, f"end {end} is before start {start}")
    if start >= size:
        raise RangeNotSatisfiable(header, size, f"start {start} is at or past the end of the file")
    return ByteRange(start, min(end, size - 1), size)


@dataclass(frozen=True)
class FileStamp:
    """What identifies one version of a file on disk: caches and validators are keyed by it."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> FileStamp:
        st = os.stat(path)
        return cls(str(path), st.st_size, st.st_mtime_ns)

    @property
    def etag(self) -> str:
        return f'"{self.mtime_ns:x}-{self.size:x}"'

    @property
    def last_modified(self) -> str:
        return formatdate(self.mtime_ns / 1e9, usegmt=True)

    def matches_if_range(self, value: str | None) -> bool:
        """Whether an ``If-Range`` header still names this version (so the Range applies).

        RFC 9110 13.1.5: a strong ETag must match exactly; a date must equal Last-Modified.
        """
        if value is None:
            return True
        value = value.strip()
        if value.startswith('"') or value.startswith("W/"):
            return value == self.etag
        return value == self.last_modified


# --------------------------------------------------------------------------- serving only the indexed file


class NotServable(VidclipError):
    """The file at an indexed video's path is not (any more) the file the catalog indexed.

    ``reason`` is safe to show a client: it never contains a path.
    """

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass
class IndexedFile:
    """An open, verified video file: ``file`` (binary, read-only), its ``stat`` and ``real_path``
    (symlinks resolved: what decoders should open)."""

    file: BinaryIO
    stat: os.stat_result
    real_path: Path

    def close(self) -> None:
        self.file.close()


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def open_indexed_file(path: str | os.PathLike, *, size: int | None, mtime_ns: int | None,
                      roots: tuple[str | os.PathLike, ...]) -> IndexedFile:
    """Open ``path`` for reading only if it is still the file the catalog indexed.

    Refused (:class:`NotServable`) when: the catalog has no size/mtime for it; the path lies in
    one of ``roots`` (library folders) but symbolic links now lead outside all of them (a file
    swapped for a link to ``/etc/passwd``); it is not a regular file (a FIFO would block, a
    device never ends); or its size or mtime (ns) differ from the catalog's (re-run
    ``vidclip index`` to re-index it). The checks run on the opened descriptor (``fstat``), and
    the descriptor must be the file the resolved path names, so a swap between check and open
    is caught too. Files outside every root (CSV lists of absolute paths) are served when they
    pass the size/mtime/regular-file checks.
    """
    if size is None or mtime_ns is None:
        raise NotServable("the catalog records no size/mtime for it, so it cannot be checked")
    full = os.path.abspath(path)
    real = os.path.realpath(full)
    real_roots = [os.path.realpath(r) for r in roots]
    inside = any(_within(full, os.path.abspath(r)) or _within(full, rr) for r, rr in zip(roots, real_roots))
    if inside and real != full and not any(_within(real, rr) for rr in real_roots):
        raise NotServable("its path is now a symbolic link leading out of the library")
    try:
        # O_NONBLOCK: opening a FIFO swapped in for the video must not hang a worker thread.
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise NotServable("its file is no longer in the library") from None
    except OSError as e:
        raise NotServable(f"its file cannot be opened ({e.strerror or type(e).__name__})") from None
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise NotServable("its path no longer names a regular file")
        try:
            now = os.stat(real)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise NotServable("its file was replaced while it was being opened")
        if st.st_size != size or st.st_mtime_ns != mtime_ns:
            what = (f"size {size} -> {st.st_size} bytes" if st.st_size != size else "modification time")
            raise NotServable(f"its file changed since it was indexed ({what}); run 'vidclip index' "
                              "again to re-index it")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return IndexedFile(f, st, Path(real))


# --------------------------------------------------------------------------- times for people


def format_time(seconds: float) -> str:
    """``m:ss.s`` (``h:mm:ss.s`` from one hour on), always one decimal: 1.5 -> '0:01.5',
    4 -> '0:04.0', 59.96 -> '1:00.0', 3725.25 -> '1:02:05.2'. Negative or non-finite -> '0:00.0'.

    The page's ``fmtTime`` (static/timefmt.js) writes exactly the same text (tested).
    """
    s = float(seconds)
    if not math.isfinite(s) or s < 0:
        s = 0.0
    tenths = int(math.floor(s * 10 + 0.5))  # round half up once, then split: no '0:60.0'
    h, rem = divmod(tenths, 36000)
    m, t = divmod(rem, 600)
    sec = f"{t // 10:02d}.{t % 10}"
    return f"{h}:{m:02d}:{sec}" if h else f"{m}:{sec}"


def format_span(start: float, end: float) -> str:
    """'0:01.5–0:04.5' (en dash): a hit's time span as the page shows it."""
    return f"{format_time(start)}\u2013{format_time(end)}"


# --------------------------------------------------------------------------- frames and thumbnails


def frame_index_at(timestamps: np.ndarray, t: float) -> int:
    """Index of the frame on screen at time ``t`` seconds.

    ``timestamps`` is float64 [F], each frame's presentation time in ascending order. The frame
    shown at ``t`` is the last one whose pts is <= t (a tiny tolerance absorbs float round-off
    such as 0.1 * 3); a ``t`` before the first frame gives frame 0 and a ``t`` past the end the
    last frame. O(log F): no per-frame loop.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.ndim != 1 or ts.size == 0:
        raise ValueError(f"timestamps must be a non-empty 1-D array, got shape {ts.shape}")
    i = int(np.searchsorted(ts, float(t) + 1e-6, side="right")) - 1
    return min(max(i, 0), ts.size - 1)


class LRUCache:
    """A small thread-safe least-recently-used map (requests are served from a thread pool)."""

    def __init__(self, max_entries: int):
        self.max_entries = max(0, int(max_entries))
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any) -> None:
        if self.max_entries == 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


def _default_open_video(path: Path):
    from vidclip.video.decode import open_video

    return open_video(path)


class TimeOutOfRange(VidclipError):
    """A thumbnail time past the end of the video (HTTP 422)."""

    def __init__(self, t: float, duration: float):
        self.t = float(t)
        self.duration = float(duration)
        super().__init__(f"t={self.t:g} s is past the end of the video (duration {self.duration:g} s; "
                         f"t must be in 0..{self.duration:g})")


@dataclass(frozen=True)
class Thumbnail:
    """A rendered thumbnail: JPEG bytes and which frame (index, pts seconds) it shows."""

    jpeg: bytes
    frame_index: int
    time: float


class Thumbnailer:
    """JPEG thumbnails of the frame shown at a time, with two small LRU caches.

    ``timestamps`` caches each file's frame pts array (float64 [F], a few KB), so choosing the
    frame for a cached thumbnail needs no decoder at all; ``images`` caches the JPEG bytes per
    (file version, frame index), so nearby times that land on the same frame share one entry.
    ``open_video(path)`` must return an object with ``.timestamps`` (float64 [F]) and
    ``.get_frames(indices)`` (uint8 [N, H, W, 3]); it defaults to
    :func:`vidclip.video.decode.open_video`.
    """

    def __init__(self, *, max_width: int = 320, max_height: int = 240, quality: int = 82,
                 cache_size: int = 256, open_video: Callable[[Path], Any] | None = None,
                 max_concurrent: int = 2):
        self.max_width = max_width
        self.max_height = max_height
        self.quality = quality
        self.images = LRUCache(cache_size)
        self.timestamps = LRUCache(max(8, cache_size // 4))
        self._open = open_video or _default_open_video
        # Decoding is CPU-heavy; a burst of thumbnail requests should not starve search.
        self._decode_slots = threading.BoundedSemaphore(max(1, max_concurrent))

    def render(self, path: str | os.PathLike, t: float, *, duration: float | None = None) -> Thumbnail:
        """The thumbnail of ``path`` at ``t`` seconds.

        ``t`` past the end -- ``duration`` (the catalog's) when given, else the end of the last
        frame -- raises :class:`TimeOutOfRange` (the server answers 422); nothing is clamped.
        Raises VideoDecodeError / OSError when the file cannot be decoded.
        """
        if duration is not None and duration > 0 and t > duration + 1e-6:
            raise TimeOutOfRange(t, duration)
        stamp = FileStamp.of(path)
        ts = self.timestamps.get(stamp)
        if ts is not None:
            self._check_end(ts, t, duration)
            i = frame_index_at(ts, t)
            cached = self.images.get((stamp, i))
            if cached is not None:
                return cached
        with self._decode_slots:
            video = self._open(Path(path))
            try:
                ts = np.asarray(video.timestamps, dtype=np.float64)
                self.timestamps.put(stamp, ts)
                self._check_end(ts, t, duration)
                i = frame_index_at(ts, t)
                cached = self.images.get((stamp, i))
                if cached is not None:
                    return cached
                frames = video.get_frames([i])  # uint8 [1, H, W, 3]
            finally:
                close = getattr(video, "close", None)
                if callable(close):
                    close()
        thumb = Thumbnail(self._encode(frames), i, float(ts[i]))
        self.images.put((stamp, i), thumb)
        return thumb

    @staticmethod
    def _check_end(ts: np.ndarray, t: float, duration: float | None) -> None:
        """Without a usable catalog duration, the video ends one frame step after the last pts."""
        if duration is not None and duration > 0:
            return
        step = float(ts[-1] - ts[-2]) if ts.size > 1 else 0.0
        end = float(ts[-1]) + max(step, 0.0)
        if t > end + 1e-6:
            raise TimeOutOfRange(t, end)

    def _encode(self, frames) -> bytes:
        from PIL import Image

        arr = frames[0]
        arr = arr.cpu().numpy() if hasattr(arr, "cpu") else np.asarray(arr)
        img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))  # [H, W, 3] -> RGB
        img.thumbnail((self.max_width, self.max_height), Image.Resampling.BILINEAR, reducing_gap=2.0)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=self.quality, optimize=True)
        return buf.getvalue()


# --------------------------------------------------------------------------- memory


_malloc_trim: Any = None


def release_freed_memory() -> bool:
    """Return freed heap memory to the operating system: glibc's ``malloc_trim(0)``.

    PIL decodes a picture into 16 MB blocks, below glibc's largest mmap threshold, so after a big
    decode in a worker thread the blocks stay in that thread's malloc arena: free for Python, yet
    counted in the process's RSS (8 concurrent 8K uploads left ~3 GB behind). Trimming gives the
    pages back (a few ms). False, doing nothing, where the C library has no ``malloc_trim``
    (musl, macOS, Windows).
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
            fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
            _malloc_trim = fn
        except (OSError, AttributeError):
            _malloc_trim = False
    if not _malloc_trim:
        return False
    _malloc_trim(0)
    return True

