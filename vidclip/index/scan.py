"""Library scanning: a folder, a CSV with a ``path`` column or a text file of paths -> the
videos to index (:class:`Library` of :class:`LibraryItem`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vidclip.core.errors import DatasetError, display_path
from vidclip.core.textio import CsvRows, read_text_lines
from vidclip.video.files import VIDEO_EXTENSIONS


@dataclass
class LibraryItem:
    key: str  # path relative to the library root (absolute when outside it)
    path: Path  # absolute
    metadata: dict = field(default_factory=dict)


@dataclass
class Library:
    source: str  # absolute path of the folder / list / CSV
    root: Path
    items: list[LibraryItem]
    # entries of a scanned folder that cannot be read (dangling link, loop, FIFO, device, empty):
    # [{"path", "reason"}], reported by the build (vidclip.video.files.find_videos, as `vidclip encode` does)
    problems: list[dict] = field(default_factory=list)


def library_item(root: Path, raw: str, metadata: dict | None = None) -> LibraryItem:
    """The item of a path ``raw`` as a library lists it (``~`` expanded, relative to ``root``,
    normalised); its key is the path relative to ``root`` (absolute when outside it)."""
    p = Path(os.path.expanduser(raw))
    p = p if p.is_absolute() else root / p
    p = Path(os.path.normpath(p))
    try:
        key = p.relative_to(root).as_posix()
    except ValueError:
        key = p.as_posix()
    return LibraryItem(key, p, metadata or {})


LIST_SUFFIXES = (".txt", ".lst", ".list", "")  # a text file of paths; ".csv" is a CSV with a 'path' column


def scan_library(spec: str | os.PathLike) -> Library:
    """Expand a library: a folder (recursive, by video extension), a CSV (``.csv``) with a ``path``
    column (other columns become the video's metadata), a text file (``.txt``, ``.lst``, ``.list``
    or no suffix) with one path per line (``#`` comments and blank lines skipped), or one video file
    (by its video extension, whatever it holds). Relative paths in a list resolve against the
    list's folder, which is the library root. Listed files that do not exist are kept (they are
    recorded as failed, not silently dropped)."""
    spec_path = Path(spec).expanduser().resolve()
    if spec_path.is_dir():
        from vidclip.video.files import find_videos

        found, problems = find_videos([spec_path])
        items = [library_item(spec_path, key) for key, _ in found]
        return Library(str(spec_path), spec_path, items, [{"path": path, "reason": reason} for path, reason in problems])
    if not spec_path.is_file():
        raise DatasetError(f"{display_path(spec)}: no such folder or file (a library is a folder, a CSV with a "
                           "'path' column, a text file of paths, or a video file)")
    root = spec_path.parent
    suffix = spec_path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:  # a video, even one that holds text: it fails as a video would
        return Library(str(spec_path), root, [library_item(root, spec_path.name)])
    if suffix != ".csv" and suffix not in LIST_SUFFIXES:
        raise DatasetError(f"{display_path(spec_path)}: not a library: a folder, a .csv with a 'path' column, a "
                           f"text file of paths ({', '.join(s for s in LIST_SUFFIXES if s)} or no suffix) or a video "
                           f"file ({', '.join(VIDEO_EXTENSIONS)})")
    items: list[LibraryItem] = []
    seen: dict[Path, str] = {}
    if suffix == ".csv":
        rows = CsvRows(spec_path, header=True)
        fields = [c.strip() for c in rows.fieldnames]
        if "path" not in fields:
            raise DatasetError(f"{spec_path}: header {fields} has no 'path' column")
        rows.fieldnames = fields
        for row_no, row in rows:  # row_no: the file line the row ends on
            raw = (row.get("path") or "").strip()
            if not raw:
                raise DatasetError(f"{spec_path}: row {row_no}: field 'path' is empty")
            meta = {k: v for k, v in row.items() if k != "path" and k is not None}
            item = library_item(root, raw, meta)
            if item.path in seen:
                raise DatasetError(f"{spec_path}: row {row_no}: path {raw!r} already listed ({seen[item.path]})")
            seen[item.path] = f"row {row_no}"
            items.append(item)
    else:
        try:
            lines = read_text_lines(spec_path)
        except DatasetError as e:
            if "not UTF-8" not in str(e):
                raise
            raise DatasetError(f"{e}; not a text file of paths (is it a video? pass its folder instead)") from None
        for line_no, line in enumerate(lines, start=1):
            raw = line.strip()
            if not raw or raw.startswith("#"):
                continue
            item = library_item(root, raw)
            if item.path in seen:
                raise DatasetError(f"{spec_path}: line {line_no}: path {raw!r} already listed ({seen[item.path]})")
            seen[item.path] = f"line {line_no}"
            items.append(item)
    return Library(str(spec_path), root, items)
