"""Search filters: which videos a search may return, resolved to ids in the catalog (SQLite).

:class:`SearchFilters` holds the checked filters of one search::

    path             GLOB over the video's path relative to its library root, or its absolute
                     path (SQLite GLOB: case-sensitive, ``*`` also matches ``/``, ``?`` one
                     character, ``[abc]`` a set): "news/*", "*.mkv", "*/2024-*"
    min_duration     seconds; videos at least this long
    max_duration     seconds; videos at most this long
    modified_after   file modification time >= this moment
    modified_before  file modification time < this moment
    meta             {key: value}: every key present with that value (AND); a list value (tags)
                     matches when one of its items equals it. Values compare as text: 2023 and
                     "2023" are equal; 2.0 and 2 are not.

Dates: ISO 8601, ``2024-05-01`` (midnight), ``2024-05-01T14:30``, with an optional offset or
``Z``; without one, local time (as ``ls -l`` shows mtimes). In Python a number is a Unix time in seconds.

The filters become one SQL query over ``videos`` (:meth:`SearchFilters.video_ids`); search then
asks faiss for the nearest among those ids only (an IDSelector), so ``k`` hits come back when
``k`` videos match, however rare they are. Window (segment) search is restricted to the windows
of those videos (:meth:`SearchFilters.segment_ids`).

Bad values are :class:`~vidclip.core.errors.ConfigError`, one line naming the option as the
caller spells it (``--min-duration`` on the command line, ``min_duration`` in Python / HTTP).
No torch; numpy and sqlite3 only.
"""

from __future__ import annotations

import datetime as _dt
import math
import sqlite3
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from vidclip.core.errors import ConfigError

__all__ = ["FILTER_NAMES", "SearchFilters", "parse_date", "parse_filters"]

FILTER_NAMES = ("path", "min_duration", "max_duration", "modified_after", "modified_before", "meta")


def _label(name: str, cli: bool) -> str:
    return "--" + name.replace("_", "-") if cli else name


def parse_date(value, option: str = "date") -> float:
    """A date (ISO 8601 text, a datetime / date, or a Unix time in seconds) -> Unix seconds.

    Raises:
        ConfigError: naming ``option``.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{option}: {value!r} is not a date (write 2024-05-01 or 2024-05-01T14:30)")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ConfigError(f"{option}: {value!r} is not a date")
        return float(value)
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day).timestamp()
    text = str(value).strip()
    try:
        if len(text) < 10:  # fromisoformat takes 20240501 too; a bare year or number is not a date here
            raise ValueError(text)
        return _dt.datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError, OSError):
        raise ConfigError(f"{option}: {text!r} is not a date (write 2024-05-01, 2024-05-01T14:30 or "
                          "2024-05-01T14:30:00+02:00)") from None


def _seconds(value, option: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{option}: {value!r} is not a number of seconds")
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option}: {value!r} is not a number of seconds") from None
    if not math.isfinite(s) or s < 0:
        raise ConfigError(f"{option}: {value!r} is not a number of seconds >= 0")
    return s


def _meta(value, option: str) -> dict[str, str]:
    """KEY=VALUE text (or a list of them), or a {key: value} mapping -> {key: value as text}."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        items = [value] if isinstance(value, str) else list(value)
        pairs = []
        for item in items:
            if not isinstance(item, str) or "=" not in item:
                raise ConfigError(f"{option}: {item!r} is not KEY=VALUE")
            key, _, val = item.partition("=")
            pairs.append((key, val))
    out: dict[str, str] = {}
    for key, val in pairs:
        key = str(key).strip()
        if not key:
            raise ConfigError(f"{option}: an empty key (write KEY=VALUE)")
        if isinstance(val, bool) or not isinstance(val, (str, int, float)):
            raise ConfigError(f"{option}: key {key!r}: {val!r} is not text or a number")
        text = str(val).strip()
        if key in out and out[key] != text:
            raise ConfigError(f"{option}: key {key!r} given twice with different values "
                              f"({out[key]!r}, {text!r}); no video can match both")
        out[key] = text
    return out


@dataclass(frozen=True)
class SearchFilters:
    """Checked filters (see the module docstring); all None / empty = no filter."""

    path: str | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    modified_after: float | None = None  # Unix seconds
    modified_before: float | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(v not in (None, {}) for v in (self.path, self.min_duration, self.max_duration,
                                                 self.modified_after, self.modified_before, self.meta))

    def to_dict(self) -> dict:
        """The filters in force (for a JSON answer), unset ones left out."""
        out = {}
        for name in FILTER_NAMES:
            v = getattr(self, name)
            if v not in (None, {}):
                out[name] = dict(v) if name == "meta" else v
        return out

    def _where(self) -> tuple[str, list]:
        where, args = ["v.status = 'indexed'"], []
        if self.path is not None:
            where.append("(v.path GLOB ? OR v.abs_path GLOB ?)")
            args += [self.path, self.path]
        if self.min_duration is not None:
            where.append("v.duration >= ?")
            args.append(self.min_duration)
        if self.max_duration is not None:
            where.append("v.duration <= ?")
            args.append(self.max_duration)
        if self.modified_after is not None:
            where.append("v.mtime_ns >= ?")
            args.append(int(round(self.modified_after * 1e9)))
        if self.modified_before is not None:
            where.append("v.mtime_ns < ?")
            args.append(int(round(self.modified_before * 1e9)))
        for key, value in self.meta.items():
            # one key of the metadata object, equal as text to the value, or a list holding it
            where.append("EXISTS (SELECT 1 FROM json_each(v.metadata) e WHERE e.key = ? AND ("
                         "(e.type != 'array' AND CAST(e.value AS TEXT) = ?) OR "
                         "(e.type = 'array' AND EXISTS (SELECT 1 FROM json_each(e.value) x "
                         "WHERE CAST(x.value AS TEXT) = ?))))")
            args += [key, value, value]
        return " AND ".join(where), args

    def video_ids(self, conn: sqlite3.Connection) -> np.ndarray:
        """int64 ids of the indexed videos that pass, ascending."""
        where, args = self._where()
        rows = conn.execute(f"SELECT v.id FROM videos v WHERE {where} ORDER BY v.id", args).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def segment_ids(self, conn: sqlite3.Connection) -> np.ndarray:
        """int64 ids of the windows of the indexed videos that pass, ascending."""
        where, args = self._where()
        rows = conn.execute(f"SELECT s.id FROM segments s JOIN videos v ON v.id = s.video_id WHERE {where} "
                            "ORDER BY s.id", args).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))


def parse_filters(path: str | None = None, min_duration=None, max_duration=None, modified_after=None,
                  modified_before=None, meta: Mapping | Iterable[str] | str | None = None, *,
                  cli: bool = False) -> SearchFilters:
    """Check the filter values (text, as a command line or URL gives them, or Python values) ->
    :class:`SearchFilters`. ``cli``: name options as ``--min-duration`` rather than ``min_duration``.

    Raises:
        ConfigError: one line naming the option and the value.
    """
    if path is not None:
        if not isinstance(path, str) or not path.strip():
            raise ConfigError(f"{_label('path', cli)}: {path!r} is not a glob pattern (e.g. 'news/*')")
        if "\x00" in path:
            raise ConfigError(f"{_label('path', cli)}: a NUL character in the pattern")
    lo = _seconds(min_duration, _label("min_duration", cli)) if min_duration is not None else None
    hi = _seconds(max_duration, _label("max_duration", cli)) if max_duration is not None else None
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"{_label('min_duration', cli)} {lo:g} is over {_label('max_duration', cli)} {hi:g}")
    after = parse_date(modified_after, _label("modified_after", cli)) if modified_after is not None else None
    before = parse_date(modified_before, _label("modified_before", cli)) if modified_before is not None else None
    return SearchFilters(path=path, min_duration=lo, max_duration=hi, modified_after=after,
                         modified_before=before, meta=_meta(meta, _label("meta", cli)))

