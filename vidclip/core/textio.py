"""Reading the text files users give: one decoder, one line splitter, one CSV reader, one number parser.

Every user text input (TREC runs and qrels, rerank topics and mappings, class lists, prompt
templates, library path lists, dataset lists and CSVs) is read through here, so they all agree:

- UTF-8, a leading byte-order mark dropped: Windows tools write one, and kept it glues itself to
  the first field (topic ``1`` becomes ``\\ufeff1`` and silently stops matching). Undecodable
  bytes are an error naming the file and line; UTF-16 (its BOM) is named as such.
- Lines split at ``\\n``, ``\\r\\n`` or ``\\r`` only. (``str.splitlines`` also splits at U+2028,
  form feeds and other separators inside a caption, shifting every later line number.)
- CSV rows come with the line they end on; ``csv.Error`` (an unclosed quote, a field over the
  csv module's 128 KiB limit) is an error naming the file and line.
- JSON: a syntax error, a number too long to convert or a nesting too deep for the parser
  (``RecursionError``) is one error naming the file and line.
- Numbers (:func:`parse_int`, :func:`parse_float`): plain decimal text, or a JSON number. No
  ``_`` digit separators (Python's ``float("1_000")`` is 1000), no booleans (JSON ``true`` is
  Python's 1), no NaN or infinity, non-ASCII digits refused, integers within int64 unless the
  caller gives narrower bounds.

Errors are ``error`` (default :class:`~vidclip.core.errors.DatasetError`), one line each, starting
with ``where`` (``file:line``, see :func:`at`). This module imports only the standard library and
``vidclip.core.errors``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator

from vidclip.core.errors import DatasetError, display_path

__all__ = ["at", "read_text", "read_text_lines", "split_lines", "CsvRows", "parse_json", "parse_int",
           "parse_float", "INT64_MIN", "INT64_MAX"]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() also takes "1_000" and "١٢"
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NEWLINE = re.compile(r"\r\n|\r|\n")


def at(path, line: int | None = None) -> str:
    """``file:line`` (or ``file``) as messages start: one printable line whatever the name."""
    return display_path(path) if line is None else f"{display_path(path)}:{line}"


def read_text(path: str | os.PathLike, *, error: type[Exception] = DatasetError) -> str:
    """The text of a UTF-8 file, a leading BOM dropped, line endings as they are.

    Raises ``error`` naming the file: missing, a folder, not a regular file (a FIFO would block),
    unreadable, UTF-16, or bytes that are not UTF-8 (then also the line).
    """
    p = Path(path)
    if p.is_dir():
        raise error(f"{at(path)}: is a folder, not a text file")
    if not p.exists():
        raise error(f"{at(path)}: no such file")
    if not p.is_file():
        raise error(f"{at(path)}: not a regular file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise error(f"{at(path)}: cannot read: {e.strerror or e}") from None
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise error(f"{at(path)}: UTF-16 text; save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)  # offset in the file, BOM included
        line = raw.count(b"\n", 0, start) + 1
        column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
        raise error(f"{at(path, line)}: not UTF-8 text (byte 0x{raw[start]:02x} at column {column})") from None


def split_lines(text: str) -> list[str]:
    """Lines of ``text`` split at ``\\n``, ``\\r\\n`` or ``\\r`` (line i of the file is item i-1)."""
    if not text:
        return []
    lines = _NEWLINE.split(text)
    if lines[-1] == "":  # the final newline ends the last line, it does not start another
        lines.pop()
    return lines


def read_text_lines(path: str | os.PathLike, *, error: type[Exception] = DatasetError) -> list[str]:
    """:func:`read_text` split by :func:`split_lines`."""
    return split_lines(read_text(path, error=error))


class CsvRows:
    """The rows of a CSV file, each as ``(line, row)``: ``line`` is the 1-based line the row ends on.

    ``header=True`` reads rows as dicts (``csv.DictReader``; :attr:`fieldnames` is the header,
    assignable, e.g. stripped); else as lists (``csv.reader``, blank lines as ``[]``). ``text``:
    the file's text when the caller has read it already. Read in the csv module's strict mode: a
    quote left open (which would swallow the rest of the file into one field) is an error too. A
    malformed CSV raises ``error`` naming the file and line, in the header or any row.
    """

    def __init__(self, path: str | os.PathLike, *, header: bool = False, text: str | None = None,
                 error: type[Exception] = DatasetError):
        self.path = path
        self._error = error
        text = read_text(path, error=error) if text is None else text
        stream = io.StringIO(text, newline="")  # the csv module does its own newline handling
        self._reader = csv.DictReader(stream, strict=True) if header else csv.reader(stream, strict=True)
        # DictReader's own line_num is updated only after a row parses: errors use the parser's
        self._lines = self._reader.reader if header else self._reader

    def _fail(self, e: csv.Error, start: int) -> Exception:
        end = self._lines.line_num
        opened = f" (the row from line {start} has a quote never closed)" if "end of data" in str(e) else ""
        return self._error(f"{at(self.path, end)}: not valid CSV: {e}{opened}")

    @property
    def fieldnames(self) -> list[str]:
        start = self._lines.line_num + 1
        try:
            return list(self._reader.fieldnames or [])
        except csv.Error as e:
            raise self._fail(e, start) from None

    @fieldnames.setter
    def fieldnames(self, names: list[str]) -> None:
        self._reader.fieldnames = names

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        while True:
            start = self._lines.line_num + 1
            try:
                row = next(self._reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise self._fail(e, start) from None
            yield self._lines.line_num, row


def parse_json(text: str, path: str | os.PathLike, line: int | None = None, *,
               error: type[Exception] = DatasetError) -> Any:
    """``json.loads(text)``: ``text`` is line ``line`` of ``path`` (JSON Lines), or the whole file (None).

    Any failure (syntax, a nesting too deep for the parser, a number too long to convert) is
    ``error`` naming the file and line (for a whole file: the line of a syntax error).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if line is None:
            raise error(f"{at(path, e.lineno)}: invalid JSON: {e.msg} (column {e.colno})") from None
        raise error(f"{at(path, line)}: invalid JSON: {e.msg} (column {e.colno})") from None
    except RecursionError:  # the parser recurses once per level: [[[[... 100k deep
        raise error(f"{at(path, line)}: invalid JSON: nested too deeply to read") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise error(f"{at(path, line)}: invalid JSON: {e}") from None


def _bad(value: Any) -> str:
    # As the user wrote it (JSON's true/false), cut to keep the message one short line
    if isinstance(value, bool):
        return json.dumps(value)
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else f"{text[:24]}... ({len(text)} characters)"


def parse_int(value: Any, where: str, name: str, *, lo: int = INT64_MIN, hi: int = INT64_MAX,
              error: type[Exception] = DatasetError) -> int:
    """``value`` (text, or an int / integral float from JSON) as an int within ``[lo, hi]``.

    Raises ``error`` ``"{where}: {name} ... "`` for anything else, e.g. ``1_000``, ``1.5``, ``true``.
    """
    if value is None:
        raise error(f"{where}: {name} is missing")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise error(f"{where}: {name} {_bad(value)} is not an integer")
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise error(f"{where}: {name} {_bad(value)} is not an integer")
        n = int(value)
    elif isinstance(value, int):
        n = value
    else:
        text = value.strip()
        if not _INT.fullmatch(text):
            hint = " (no '_' digit separators)" if "_" in text else ""
            raise error(f"{where}: {name} {_bad(value)} is not an integer{hint}")
        if len(text.lstrip("+-").lstrip("0")) > 40:  # far outside any bound; int() would refuse > 4300 digits
            raise error(f"{where}: {name} {text[:24]}... is {'below' if text[0] == '-' else 'above'} "
                        f"{lo if text[0] == '-' else hi}")
        n = int(text)
    if n < lo:
        raise error(f"{where}: {name} {n} is below {lo}")
    if n > hi:
        raise error(f"{where}: {name} {n} is above {hi}")
    return n


def parse_float(value: Any, where: str, name: str, *, error: type[Exception] = DatasetError) -> float:
    """``value`` (decimal text, or a JSON number) as a finite float.

    Raises ``error`` ``"{where}: {name} ... "`` for anything else, e.g. ``1_000``, ``nan``, ``1e999``, ``true``.
    """
    if value is None:
        raise error(f"{where}: {name} is missing")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise error(f"{where}: {name} {_bad(value)} is not a number")
    if isinstance(value, str):
        text = value.strip()
        if not _FLOAT.fullmatch(text):
            lowered = text.lower().lstrip("+-")
            hint = (" (no '_' digit separators)" if "_" in text
                    else " (must be finite)" if lowered in ("nan", "inf", "infinity") else "")
            raise error(f"{where}: {name} {_bad(value)} is not a number{hint}")
        x = float(text)
    else:
        try:
            x = float(value)
        except OverflowError:  # a JSON integer beyond float range
            x = math.inf
    if not math.isfinite(x):
        raise error(f"{where}: {name} {_bad(value)} is not finite")
    return x
