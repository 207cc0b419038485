"""Readers for ``vidclip rerank``'s inputs: topics and the shot mapping. (Runs: vidclip.eval.trec.read_run.)

Topics: TRECVID lines ``topicId text`` (id, whitespace, the rest of the line is the text), TSV
``topicId<TAB>text`` (a first line ``topic<TAB>text`` / ``query_id<TAB>text`` is taken as a
header), or JSONL objects with an id (``topic``, ``query_id`` or ``id``) and a text (``text``,
``query`` or ``title``).

Mapping CSV ``docid,path[,start,end]``: what each docid of the run is, a video file (relative
paths are relative to the CSV's folder, or matched against the index catalog with ``--index``)
and optionally a span in seconds; with a span only frames whose timestamp t has start <= t < end
are pooled. A header row (first cell ``docid``) is optional.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vidclip.core.errors import DatasetError, display_path
from vidclip.core.textio import CsvRows, at, parse_float, parse_json, read_text_lines

_ID_KEYS = ("topic", "query_id", "id")
_TEXT_KEYS = ("text", "query", "title")


def read_topics(path: str | os.PathLike) -> dict[str, str]:
    """topic id -> text. Raises DatasetError (file:line) for an empty file, a topic without text or a repeated id."""
    topics: dict[str, str] = {}
    jsonl = Path(path).suffix.lower() in (".jsonl", ".json")
    lines = read_text_lines(path)
    first = next((no for no, raw in enumerate(lines, 1) if raw.strip()), 0)
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if jsonl:
            obj = parse_json(line, path, no)
            tid = next((obj[k] for k in _ID_KEYS if isinstance(obj, dict) and k in obj), None)
            text = next((obj[k] for k in _TEXT_KEYS if isinstance(obj, dict) and k in obj), None)
            if tid is None:
                raise DatasetError(f"{display_path(path)}:{no}: no topic id (one of {', '.join(_ID_KEYS)})")
            tid, text = str(tid).strip(), "" if text is None else str(text).strip()
        else:
            parts = line.split("\t", 1) if "\t" in line else line.split(None, 1)
            tid, text = parts[0].strip(), (parts[1].strip() if len(parts) > 1 else "")
            if not topics and no == first and tid.lower() in ("topic", "query_id", "topicid", "id") \
                    and text.lower() in ("text", "query", "title"):
                continue  # TSV header
        if not text:
            raise DatasetError(f"{display_path(path)}:{no}: topic {tid!r} has no text")
        if tid in topics:
            raise DatasetError(f"{display_path(path)}:{no}: topic {tid!r} is listed twice")
        topics[tid] = text
    if not topics:
        raise DatasetError(f"{display_path(path)}: no topics in the file")
    return topics


@dataclass(frozen=True)
class Shot:
    """What a docid is: a video (``path`` as written in the mapping) and an optional span in seconds."""

    docid: str
    path: str
    start: float | None = None
    end: float | None = None
    line: int = 0

    def resolved_path(self, base: Path) -> Path:
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else (base / p)


def read_mapping(path: str | os.PathLike) -> dict[str, Shot]:
    """docid -> Shot from a ``docid,path[,start,end]`` CSV (errors name the file and line)."""
    out: dict[str, Shot] = {}
    for no, row in CsvRows(path):
        if not row or all(not c.strip() for c in row):
            continue
        if not out and row[0].strip().lower() == "docid":
            continue  # header
        if len(row) not in (2, 4):
            raise DatasetError(f"{display_path(path)}:{no}: expected 'docid,path' or 'docid,path,start,end', "
                               f"got {len(row)} fields")
        docid, vpath = row[0].strip(), row[1].strip()
        if not docid or not vpath:
            raise DatasetError(f"{display_path(path)}:{no}: empty docid or path")
        start = end = None
        if len(row) == 4:
            start = parse_float(row[2], at(path, no), "start (seconds)")
            end = parse_float(row[3], at(path, no), "end (seconds)")
            if start < 0 or end <= start:
                raise DatasetError(f"{display_path(path)}:{no}: span [{row[2]}, {row[3]}) is not 0 <= start < end")
        if docid in out:
            raise DatasetError(f"{display_path(path)}:{no}: docid {docid!r} is mapped twice (first on line "
                               f"{out[docid].line})")
        out[docid] = Shot(docid, vpath, start, end, no)
    if not out:
        raise DatasetError(f"{display_path(path)}: the mapping is empty")
    return out
