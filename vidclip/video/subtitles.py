"""Subtitles as timed text: sidecar ``.srt`` / ``.vtt`` files and text streams inside a container.

Words people *say* in a video are what CLIP cannot see; the index's text channel
(:mod:`vidclip.index.textsearch`) takes them from here as :class:`Cue` s: ``start`` / ``end``
in seconds on the frame timeline (first frame = 0.0, as every vidclip timestamp), plain text
(tags stripped), and the 1-based ``line`` of the cue's timing line in its file (for an embedded
stream: the cue's ordinal in that stream), so a warning can point at it.

Subtitle files in the wild are messy, and a bad one must never cost the video its visual
indexing, so parsing never raises on content: problems come back as warning lines, **at most
one per file per kind** (the first place it happens, and how many more there were):

- encoding: UTF-8 (a BOM is fine), UTF-16 with a BOM; anything else is read as cp1252 (Windows'
  Western code page, what most non-UTF-8 subtitles are), or latin-1 when not even cp1252
  decodes, with one warning naming the file and the line of the first byte that is not UTF-8;
- a timing line that does not parse (``00:00:0x,000``, minutes >= 60, end before start): that
  cue is skipped;
- one cue's text is cut at :data:`MAX_CUE_CHARS`; a file is read up to :data:`MAX_FILE_BYTES`;
- a file with no cue at all (empty, or not a subtitle file) warns once.

Overlapping cues are legal (two speakers at once) and kept as they are, in file order. CRLF
and CR line ends, HTML-ish tags (``<i>``, ``<font ...>``), WebVTT voice / class / timestamp
tags (``<v Bob>``, ``<c.yellow>``, ``<00:01.500>``), ASS override blocks some ``.srt`` files
carry (``{\\an8}``) and entities (``&amp;``) are all reduced to plain text.

Sidecars (:func:`find_sidecars`) sit next to the video with the same stem and an optional
language tag: ``clip.srt``, ``clip.vtt``, ``clip.en.srt``, ``clip.pt-BR.vtt`` for ``clip.mp4``.
Embedded text streams (SubRip, mov_text, WebVTT, ASS/SSA) are read by
:func:`read_embedded_subtitles` from the packets themselves, with PyAV demuxing and nothing
decoded; picture-based streams (DVD, PGS, DVB) carry no text and are skipped.

No torch here: this is the video layer.
"""

from __future__ import annotations

import html
import os
import re
import stat
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, NamedTuple

from vidclip.core.errors import VideoDecodeError, display_path
from vidclip.video.files import is_video_name

__all__ = [
    "Cue",
    "Sidecar",
    "SubtitleTrack",
    "MAX_CUE_CHARS",
    "MAX_FILE_BYTES",
    "SIDECAR_SUFFIXES",
    "clean_text",
    "collect_subtitles",
    "find_sidecars",
    "parse_srt",
    "parse_subtitle_file",
    "parse_vtt",
    "read_embedded_subtitles",
]

#: Text kept of one cue (characters): a real cue is a line or two; a 10 MB "cue" is a broken file.
MAX_CUE_CHARS = 2000
#: Bytes read of one subtitle file (a feature film's subtitles are ~100 KB); also the bound on the
#: text read from one video's embedded streams together.
MAX_FILE_BYTES = 2 * 1024 * 1024
SIDECAR_SUFFIXES = (".srt", ".vtt")
#: Embedded subtitle codecs that carry text (FFmpeg codec names); others are pictures.
TEXT_CODECS = ("subrip", "srt", "mov_text", "webvtt", "ass", "ssa", "text")


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: ``start`` / ``end`` seconds (float, end >= start), plain ``text``,
    ``line``: 1-based line of its timing line in the file (embedded: its ordinal in the stream)."""

    start: float
    end: float
    text: str
    line: int


class Sidecar(NamedTuple):
    """A subtitle file next to a video: its ``path``, ``language`` tag (``"en"``, ``"pt-BR"``;
    None for ``clip.srt``) and ``format`` (``"srt"`` or ``"vtt"``)."""

    path: Path
    language: str | None
    format: str


@dataclass(frozen=True)
class SubtitleTrack:
    """The cues of one source: ``source`` is the sidecar's file name or ``"stream N"`` for an
    embedded stream (N = its index in the container); ``language`` when known."""

    source: str
    language: str | None
    cues: list[Cue]


class _Warnings:
    """At most one warning per kind: the first occurrence, plus how many more there were."""

    def __init__(self, where: str):
        self.where = where
        self._first: dict[str, str] = {}
        self._more: dict[str, int] = {}

    def add(self, kind: str, message: str) -> None:
        if kind in self._first:
            self._more[kind] = self._more.get(kind, 0) + 1
        else:
            self._first[kind] = message

    def has(self, kind: str) -> bool:
        return kind in self._first

    def lines(self) -> list[str]:
        out = []
        for kind, message in self._first.items():
            more = self._more.get(kind, 0)
            out.append(f"{self.where}: {message}" + (f" (and {more} more like it)" if more else ""))
        return out


# --- text cleaning ------------------------------------------------------------------------------

# A tag starts with a letter ("<i>", "</font>", "<v Bob>", "<c.yellow>") or is a WebVTT
# karaoke timestamp ("<00:01.500>"); "a < b" (a space after "<") is text and stays.
_TAG = re.compile(r"</?(?:[A-Za-z][^<>]*|\d[\d:.]*)>")
_ASS_OVERRIDE = re.compile(r"\{\\[^{}]*\}")  # {\i1}, {\an8}, {\pos(10,20)}
_ASS_BREAK = re.compile(r"\\[Nnh]")  # \N, \n: line breaks; \h: a hard space
_SPACE = re.compile(r"\s+")


def clean_text(raw: str) -> str:
    """Subtitle markup -> plain one-line text: tags and ASS override blocks removed, ASS
    ``\\N`` breaks and newlines made spaces, entities decoded, whitespace collapsed."""
    text = _ASS_OVERRIDE.sub("", raw)
    text = _ASS_BREAK.sub(" ", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    return _SPACE.sub(" ", text).strip()


def _cap(text: str, line: int, warn: _Warnings) -> str:
    if len(text) <= MAX_CUE_CHARS:
        return text
    warn.add("long", f"line {line}: cue text of {len(text)} characters cut to {MAX_CUE_CHARS}")
    cut = text[:MAX_CUE_CHARS]
    space = cut.rfind(" ")
    return cut[:space] if space > MAX_CUE_CHARS // 2 else cut  # end on a word when one is near


# --- reading a file ----------------------------------------------------------------------------

def _trim_partial_utf8(data: bytes) -> bytes:
    """``data`` without a UTF-8 sequence cut off at its end (after a read stopped mid-character)."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b & 0xC0 != 0x80:  # ASCII or a lead byte: how long is its sequence?
            need = 1 if b < 0x80 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return data[:-back] if need > back else data
    return data


def _read_text(path: Path, warn: _Warnings) -> str | None:
    """The file's text (bounded, decoded; see the module docstring); None when it cannot be read
    or is not text (a warning says why)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open
            warn.add("read", "not a regular file")
            return None
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        warn.add("read", f"cannot be read ({e.strerror or e})")
        return None
    if len(data) > MAX_FILE_BYTES:
        warn.add("size", f"file of {st.st_size} bytes: only the first {MAX_FILE_BYTES // (1024 * 1024)} MB read")
        # the last line read stays, cut (it may be the start of a huge cue worth keeping)
        data = _trim_partial_utf8(data[:MAX_FILE_BYTES])
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 with its BOM (Windows tools write it)
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data:
        warn.add("binary", "not a text file (it holds NUL bytes)")
        return None
    try:
        return data.decode("utf-8-sig")  # "-sig": a UTF-8 BOM is dropped
    except UnicodeDecodeError as e:
        bad_line = data.count(b"\n", 0, e.start) + 1
        try:
            text, used = data.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:  # cp1252 leaves 5 bytes undefined; latin-1 decodes anything
            text, used = data.decode("latin-1"), "latin-1"
        warn.add("encoding", f"line {bad_line}: not UTF-8; read as {used}")
        return text


# --- parsing -------------------------------------------------------------------------------------

# [hours:]minutes:seconds[,.]fraction; SRT writes "00:00:01,500", WebVTT "00:01.500" or
# "00:00:01.500"; both are accepted in both (files are often misnamed).
_TIME = r"(?:(\d{1,4}):)?(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(?:\s|$)")
# What looks like a timing line even when broken ("00:00:01,000 -> 00:00:02,000"): it starts a cue
# to skip with a warning, so its text does not silently vanish or join the previous cue.
_TIMING_LIKE = re.compile(r"^\s*\d{1,4}:\d.*-+\s*>")


def _seconds(h: str | None, m: str, s: str, frac: str | None) -> float | None:
    minutes, secs = int(m), int(s)
    if minutes >= 60 or secs >= 60:
        return None
    value = int(h or 0) * 3600 + minutes * 60 + secs
    if frac:
        value += int(frac) / 10 ** len(frac)
    return float(value)


def _timing(line: str) -> tuple[float, float] | None:
    m = _TIMING.match(line)
    if not m:
        return None
    start = _seconds(*m.groups()[:4])
    end = _seconds(*m.groups()[4:])
    if start is None or end is None or end < start:
        return None
    return start, end


def _parse(text: str, warn: _Warnings) -> list[Cue]:
    """Cues of SRT or WebVTT text: a timing line, then text lines up to a blank line.

    Lines outside a cue (SRT numbers, the WEBVTT header, NOTE / STYLE / REGION blocks, cue
    identifiers) are skipped. A cue whose text runs into the next cue's number without the blank
    line between them loses that number, not the next cue.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cues: list[Cue] = []
    current: tuple[float, float, int] | None = None  # (start, end, line) of the cue being read
    body: list[str] = []

    def finish() -> None:
        nonlocal current, body
        if current is not None:
            if body and body[-1].strip().isdigit():  # the next cue's SRT number, no blank line
                body = body[:-1]
            cue_text = clean_text(" ".join(body))
            if cue_text:
                cues.append(Cue(current[0], current[1], _cap(cue_text, current[2], warn), current[2]))
        current, body = None, []

    for number, line in enumerate(lines, start=1):
        if "-->" in line or _TIMING_LIKE.match(line):
            finish()
            span = _timing(line)
            if span is None:
                shown = line.strip()
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                warn.add("timing", f"line {number}: bad timing line {shown!r}; cue skipped")
            else:  # (after a bad one, current stays None: the skipped cue's text is not read)
                current = (span[0], span[1], number)
        elif not line.strip():
            finish()
        elif current is not None:
            body.append(line)
    finish()
    return cues


def _parse_file(path, fmt: str) -> tuple[list[Cue], list[str]]:
    path = Path(path)
    warn = _Warnings(display_path(path))
    text = _read_text(path, warn)
    cues = _parse(text, warn) if text is not None else []
    if text is not None and not cues and not warn.has("timing"):
        warn.add("empty", "empty file" if not text.strip() else f"no {fmt} cues found")
    return cues, warn.lines()


def parse_srt(path) -> tuple[list[Cue], list[str]]:
    """Cues of a SubRip file and its warning lines (see the module docstring); never raises on
    content. ``path``: str or Path."""
    return _parse_file(path, "SRT")


def parse_vtt(path) -> tuple[list[Cue], list[str]]:
    """Cues of a WebVTT file and its warning lines (see the module docstring); never raises on
    content. Cue settings after the timing (``align:start``) are ignored."""
    return _parse_file(path, "WebVTT")


def parse_subtitle_file(path) -> tuple[list[Cue], list[str]]:
    """:func:`parse_srt` or :func:`parse_vtt`, by the file's suffix (``.vtt`` -> WebVTT)."""
    return parse_vtt(path) if Path(path).suffix.lower() == ".vtt" else parse_srt(path)


# --- sidecars ----------------------------------------------------------------------------------

# A language tag between the stem and the suffix: "en", "eng", "pt-BR", "zh-Hant", "en_US".
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")


def find_sidecars(video_path, listing: Iterable[str] | None = None) -> list[Sidecar]:
    """Subtitle files next to ``video_path``: same stem, an optional language tag, ``.srt`` or
    ``.vtt`` (any case). Sorted by file name; regular files only (a FIFO is never opened).

    ``listing``: the names in the video's folder when the caller has them (a library scan lists
    each folder once instead of once per video). A language-tagged name that is itself the plain
    sidecar of another video in the folder (``clip.en.srt`` next to ``clip.en.mp4``) belongs to
    that video, not to ``clip.mp4``.
    """
    video = Path(video_path)
    folder, stem = video.parent, video.stem
    if listing is None:
        try:
            listing = [e.name for e in os.scandir(folder)]
        except OSError:
            return []
    names = list(listing)
    other_stems = {Path(n).stem for n in names if is_video_name(n) and n != video.name}
    found: list[Sidecar] = []
    prefix = stem + "."
    for name in names:
        suffix = Path(name).suffix
        if suffix.lower() not in SIDECAR_SUFFIXES or not name.startswith(prefix):
            continue
        middle = name[len(prefix): len(name) - len(suffix)]
        if middle and (not _LANGUAGE.match(middle) or f"{stem}.{middle}" in other_stems):
            continue
        path = folder / name
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                continue
        except OSError:
            continue
        found.append(Sidecar(path, middle or None, suffix.lower()[1:]))
    return sorted(found, key=lambda s: s.path.name)


# --- embedded streams --------------------------------------------------------------------------

def _packet_text(codec: str, data: bytes) -> str:
    """The text of one subtitle packet of a text codec (FFmpeg's storage of each)."""
    if codec == "mov_text":  # 3GPP timed text: 16-bit big-endian length, the text, style boxes
        if len(data) < 2:
            return ""
        n = int.from_bytes(data[:2], "big")
        data = data[2: 2 + n]
    text = data.decode("utf-8", errors="replace")
    if codec in ("ass", "ssa"):
        # Matroska stores ASS events as "ReadOrder,Layer,Style,Name,MarginL,MarginR,MarginV,
        # Effect,Text"; a full "Dialogue: Layer,Start,End,..." line has one field more.
        if text.startswith("Dialogue:"):
            parts = text[len("Dialogue:"):].split(",", 9)
        else:
            parts = text.split(",", 8)
        text = parts[-1] if len(parts) >= 9 else text
    return clean_text(text)


def read_embedded_subtitles(video_path) -> tuple[list[SubtitleTrack], list[str]]:
    """The text subtitle streams inside ``video_path``, one :class:`SubtitleTrack` each
    (``source`` ``"stream N"``, ``language`` from the stream's tag), and warning lines.

    Packets are demuxed, never decoded (PyAV's subtitle-decoding API differs between versions;
    the stored text does not). Times are put on the frame timeline: the video stream's start
    time is subtracted, as it is from frame timestamps. A stream that breaks off mid-file keeps
    the cues read before the break, with a warning. Text read is bounded by MAX_FILE_BYTES
    over all streams.

    Raises:
        VideoDecodeError: the file cannot be opened as media (it would fail as a video too).
    """
    import av

    from vidclip.video.pyav_reader import av_reason, open_container

    path = Path(video_path)
    warn = _Warnings(display_path(path))
    tracks: list[SubtitleTrack] = []
    with open_container(path) as container:
        streams = [s for s in container.streams.subtitles
                   if s.codec_context is not None and s.codec_context.name in TEXT_CODECS]
        if not streams:
            return [], []
        video = next(iter(container.streams.video), None)
        # exact (Fraction) arithmetic, so a cue at 5.2 s in a file starting at 5 s is at 0.2 s
        if video is not None and video.start_time is not None and video.time_base:
            offset = video.start_time * video.time_base
        else:
            offset = Fraction(container.start_time or 0, 1_000_000)  # AV_TIME_BASE
        cues: dict[int, list[Cue]] = {s.index: [] for s in streams}
        counts = dict.fromkeys(cues, 0)
        total = 0
        try:
            for packet in container.demux(*streams):
                if packet.size == 0:  # flush / empty chunk
                    continue
                stream = packet.stream
                counts[stream.index] += 1
                ordinal = counts[stream.index]
                if packet.pts is None or not stream.time_base:
                    warn.add("timing", f"stream {stream.index}: cue {ordinal} has no timestamp; skipped")
                    continue
                text = _packet_text(stream.codec_context.name, bytes(packet))
                if not text:  # mov_text writes empty samples for the gaps between cues
                    continue
                total += len(text)
                if total > MAX_FILE_BYTES:
                    warn.add("size", f"embedded subtitles: only the first {MAX_FILE_BYTES // (1024 * 1024)} MB of text read")
                    break
                begin = packet.pts * stream.time_base - offset
                finish = begin + (max(packet.duration or 0, 0) * stream.time_base)
                text = _cap(text, ordinal, warn)
                cues[stream.index].append(Cue(max(0.0, float(begin)), max(0.0, float(finish)), text, ordinal))
        except av.error.FFmpegError as e:
            warn.add("read", f"subtitle streams cut short ({av_reason(e)}); cues before it kept")
        for s in streams:
            if cues[s.index]:
                language = s.language if s.language not in (None, "", "und") else None  # "und": undetermined
                tracks.append(SubtitleTrack(f"stream {s.index}", language, cues[s.index]))
    return tracks, warn.lines()


def collect_subtitles(video_path, listing: Iterable[str] | None = None, embedded: bool = True
                      ) -> tuple[list[SubtitleTrack], list[str]]:
    """Every subtitle track of one video: its sidecars (``source`` = the file name), then its
    embedded text streams, and all warning lines. Never raises on a bad subtitle; a video that
    cannot be opened just has no embedded tracks here (its visual indexing reports it).
    ``listing``: see :func:`find_sidecars`."""
    tracks: list[SubtitleTrack] = []
    warnings: list[str] = []
    for sidecar in find_sidecars(video_path, listing):
        cues, warns = parse_subtitle_file(sidecar.path)
        warnings += warns
        if cues:
            tracks.append(SubtitleTrack(sidecar.path.name, sidecar.language, cues))
    if embedded:
        try:
            found, warns = read_embedded_subtitles(video_path)
        except VideoDecodeError:
            found, warns = [], []
        tracks += found
        warnings += warns
    return tracks, warnings
