"""Metadata a user attaches to videos: a ``clip.json`` sidecar, or a CSV given to ``--metadata``.

Metadata is what ``--meta KEY=VALUE`` filters on and what the text channel
(:mod:`vidclip.index.textsearch`) indexes as words. Its shape is deliberately flat::

    {"title": "Budget meeting", "year": 2023, "tags": ["news", "finance"]}

- a value is **text or a number**, or a **list of text and numbers** (tags are the common case;
  ``--meta tags=news`` is meant to match a video when any element equals ``news``);
- refused, with the key named: ``true`` / ``false`` (write ``"yes"`` or ``1``: a boolean's text
  form differs between JSON, CSV and the command line, so filters on it would surprise),
  ``null``, a nested object, a list inside a list or holding an object, NaN / Infinity, an empty
  key or one holding ``=`` (``--meta KEY=VALUE`` splits at the first ``=``), a key given twice;
- bounded: a sidecar is at most :data:`MAX_JSON_BYTES`, nested at most :data:`MAX_JSON_DEPTH`
  levels (checked *before* parsing, so a 100 000-deep ``[[[[...`` is one clear line rather than
  a RecursionError), a list at most :data:`MAX_LIST_ITEMS` elements.

The sidecar of ``clip.mp4`` is ``clip.json`` (same stem). The ``--metadata FILE`` CSV has a
``path`` column (relative to the CSV's folder, or absolute; resolved exactly as a library CSV
is, :func:`vidclip.index.scan.scan_library`) and one column per key. CSV cells are text (CSV has
no types; ``2023`` stays ``"2023"``); an empty cell means the key is absent for that video.

Errors are :class:`vidclip.core.errors.DatasetError`, one line naming the file, the line and the key.
No torch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import stat
from pathlib import Path

from vidclip.core.errors import DatasetError, display_path

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_LIST_ITEMS",
    "check_metadata",
    "metadata_sidecar",
    "read_metadata_csv",
    "read_metadata_json",
    "read_metadata_sidecar",
]

MAX_JSON_BYTES = 1024 * 1024
#: The object plus one level of lists is all a valid sidecar needs; a little slack lets deeper
#: (invalid) nesting be parsed and refused naming its key.
MAX_JSON_DEPTH = 16
MAX_LIST_ITEMS = 1000

Value = str | int | float | list  # list of str | int | float


def _value_problem(value) -> str | None:
    """Why ``value`` cannot be a metadata value, or None."""
    if isinstance(value, _LongNumber):
        return f"a number of {value.digits} digits is not allowed"
    if isinstance(value, bool):  # before int: bool is an int in Python
        return f"{str(value).lower()} (a boolean) is not allowed; write it as text (\"yes\") or a number (1)"
    if value is None:
        return "null is not allowed; leave the key out instead"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not allowed; values must be finite numbers or text"
    if isinstance(value, (str, int, float)):
        return None
    if isinstance(value, dict):
        return "a nested object is not allowed; values must be text or numbers (or a list of them)"
    if isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            return f"a list of {len(value)} items (at most {MAX_LIST_ITEMS})"
        for i, item in enumerate(value):
            if isinstance(item, (list, dict)):
                return f"item {i}: a nested {'list' if isinstance(item, list) else 'object'} is not allowed in a list"
            problem = _value_problem(item)
            if problem:
                return f"item {i}: {problem}"
        return None
    return f"a {type(value).__name__} is not allowed; values must be text or numbers"


def _key_problem(key) -> str | None:
    if not isinstance(key, str) or not key.strip():
        return "an empty key is not allowed"
    if "=" in key:
        return "'=' is not allowed in a key (--meta KEY=VALUE splits at the first '=')"
    return None


def check_metadata(mapping, where: str) -> dict[str, Value]:
    """``mapping`` checked as metadata (see the module docstring) -> a plain dict of it.

    ``where``: what the message names first (a file, or ``file: line N``).

    Raises:
        DatasetError: ``"{where}: key 'K': what is wrong"`` (or ``"{where}: ..."`` when the whole
            value is not an object).
    """
    if not isinstance(mapping, dict):
        kind = ("a list" if isinstance(mapping, list) else "text" if isinstance(mapping, str)
                else "null" if mapping is None else "a boolean" if isinstance(mapping, bool) else "a number")
        raise DatasetError(f"{where}: metadata must be one JSON object of keys and values, not {kind}")
    out: dict[str, Value] = {}
    for key, value in mapping.items():
        problem = _key_problem(key)
        if problem is None:
            problem = _value_problem(value)
        if problem:
            raise DatasetError(f"{where}: key {key!r}: {problem}")
        out[key] = list(value) if isinstance(value, list) else value
    return out


# --- JSON sidecars -----------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]+|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def _depth(text: str) -> int:
    """Deepest bracket nesting of JSON ``text``, strings left out (linear, no recursion)."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(_STRING.sub('""', text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _pairs(where: str):
    def hook(pairs):
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                raise DatasetError(f"{where}: key {key!r}: given twice")
            seen[key] = value
        return seen
    return hook


class _LongNumber:
    """An integer literal too long to be a metadata number (refused naming its key)."""

    def __init__(self, digits: int):
        self.digits = digits


def _parse_int(text: str):
    # Python refuses to convert integers of over 4300 digits, with a message naming no key.
    return int(text) if len(text) <= 100 else _LongNumber(len(text))


def read_metadata_json(path) -> dict[str, Value]:
    """A JSON metadata file -> its checked flat object (see the module docstring).

    Raises:
        DatasetError: not a regular file, too large, not UTF-8, invalid JSON (line and column),
            nested too deeply, or a key / value refused (the key named).
    """
    path = Path(path)
    where = display_path(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read
            raise DatasetError(f"{where}: not a regular file")
        if st.st_size > MAX_JSON_BYTES:
            raise DatasetError(f"{where}: {st.st_size} bytes; a metadata file may hold at most "
                               f"{MAX_JSON_BYTES // 1024} KiB")
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)  # (the file may have grown since the stat)
    except OSError as e:
        raise DatasetError(f"{where}: cannot be read ({e.strerror or e})") from None
    if len(data) > MAX_JSON_BYTES:
        raise DatasetError(f"{where}: a metadata file may hold at most {MAX_JSON_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DatasetError(f"{where}: line {line}: not UTF-8 text") from None
    depth = _depth(text)
    if depth > MAX_JSON_DEPTH:
        raise DatasetError(f"{where}: JSON nested {depth} levels deep; metadata is one flat object "
                           "of text or numbers (a list of them at most)")
    try:
        # NaN / Infinity parse (to be refused by check_metadata, naming the key)
        obj = json.loads(text, object_pairs_hook=_pairs(where), parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{where}: line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None
    return check_metadata(obj, where)


def metadata_sidecar(video_path) -> Path:
    """The metadata sidecar path of a video: same folder, same stem, ``.json``."""
    video = Path(video_path)
    return video.with_name(video.stem + ".json")


def read_metadata_sidecar(video_path) -> dict[str, Value] | None:
    """The checked ``clip.json`` of ``clip.mp4``, or None when there is none.

    Raises:
        DatasetError: the sidecar exists and is refused (see :func:`read_metadata_json`).
    """
    path = metadata_sidecar(video_path)
    if not os.path.lexists(path):
        return None
    return read_metadata_json(path)


# --- the --metadata CSV ------------------------------------------------------------------------

def read_metadata_csv(path) -> dict[Path, dict[str, str]]:
    """A ``--metadata`` CSV -> {absolute normalised video path: {key: text}}.

    The ``path`` column is required; every other column is a key (an empty cell leaves the key
    out for that row). Paths resolve as in a library CSV: relative to the CSV's folder.

    Raises:
        DatasetError: naming the file and line: no ``path`` column, an empty or duplicate column
            name, an empty or repeated path, a row with more cells than the header, not UTF-8,
            a malformed CSV line.
    """
    # the library CSV's path resolution, shared so both agree
    from vidclip.index.scan import library_item

    csv_path = Path(path).expanduser().resolve()
    where = display_path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"{where}: no such file (--metadata takes a CSV with a 'path' column)")
    root = csv_path.parent
    out: dict[Path, dict[str, str]] = {}
    seen: dict[Path, int] = {}
    lines_read = 0

    def text_lines(f):
        # Decoded one line at a time, so a byte that is not UTF-8 is reported on its own line
        # (a text-mode file decodes 8 KB chunks ahead of the CSV reader).
        nonlocal lines_read
        for raw_line in f:
            lines_read += 1
            if lines_read == 1 and raw_line.startswith(b"\xef\xbb\xbf"):
                raw_line = raw_line[3:]  # the UTF-8 BOM spreadsheet programs write
            try:
                yield raw_line.decode("utf-8")
            except UnicodeDecodeError:
                raise DatasetError(f"{where}: line {lines_read}: not UTF-8 text") from None

    try:
        with open(csv_path, "rb") as f:
            reader = csv.reader(text_lines(f))
            try:
                header = [c.strip() for c in next(reader)]
            except StopIteration:
                raise DatasetError(f"{where}: empty file; expected a header with a 'path' column") from None
            if "path" not in header:
                raise DatasetError(f"{where}: line 1: header {header} has no 'path' column")
            for i, name in enumerate(header):
                problem = _key_problem(name) if name != "path" else None
                if problem:
                    raise DatasetError(f"{where}: line 1: column {i + 1} ({name!r}): {problem}")
                if header.index(name) != i:
                    raise DatasetError(f"{where}: line 1: column {name!r} appears twice")
            path_col = header.index("path")
            for row in reader:
                line = reader.line_num  # the row's last line (a quoted cell may span several)
                if not any(cell.strip() for cell in row):
                    continue  # a blank line
                if len(row) > len(header):
                    raise DatasetError(f"{where}: line {line}: {len(row)} cells but the header has "
                                       f"{len(header)} columns")
                raw = row[path_col].strip() if path_col < len(row) else ""
                if not raw:
                    raise DatasetError(f"{where}: line {line}: key 'path': empty")
                video = library_item(root, raw).path
                if video in seen:
                    raise DatasetError(f"{where}: line {line}: key 'path': {raw!r} already given on "
                                       f"line {seen[video]}")
                seen[video] = line
                out[video] = {key: cell for key, cell in zip(header, row)
                              if key != "path" and cell != ""}
    except csv.Error as e:
        raise DatasetError(f"{where}: line {lines_read}: malformed CSV ({e})") from None
    except OSError as e:
        raise DatasetError(f"{where}: cannot be read ({e.strerror or e})") from None
    return out
