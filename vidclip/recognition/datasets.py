"""Labelled video sets as published: folder-per-class, UCF101, HMDB51, Kinetics CSV, ``path,label`` CSV.

A :class:`LabeledVideos` is a class list plus (path, label) items. Paths are resolved and
checked: a video listed but missing is a :class:`DatasetError` naming the list file, line and
path (``skip_missing=True`` reports it in ``missing`` and goes on instead).

Layouts (``read_split(data, split)``):

- ``folder``: ``ROOT/<class>/**/*.mp4``; the split is the folder itself.
- ``ucf101``: ``classInd.txt`` (``1 ApplyEyeMakeup``), ``trainlist0N.txt`` (``Class/v_x.avi 1``),
  ``testlist0N.txt`` (``Class/v_x.avi``), in ROOT or ``ROOT/ucfTrainTestlist``; videos under ROOT
  (or ``ROOT/UCF-101``).
- ``hmdb51``: ``<class>_test_split<N>.txt`` (``video.avi 0|1|2``: unused, train, test), in ROOT
  or ``ROOT/testTrainMulti_7030_splits``; videos in ``ROOT/<class>/``.
- ``kinetics``: a CSV ``label,youtube_id,time_start,time_end,split``; files named
  ``<youtube_id>_<start:06d>_<end:06d>.mp4`` anywhere under the CSV's folder.
- ``csv``: a CSV with columns ``path,label`` (paths relative to the CSV's folder).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vidclip.core.errors import DatasetError, display_path
from vidclip.core.textio import CsvRows, parse_float, read_text_lines
from vidclip.video.files import VIDEO_EXTENSIONS, is_video_name

LAYOUTS = ("auto", "folder", "ucf101", "hmdb51", "kinetics", "csv")


@dataclass
class LabeledVideos:
    """``classes``: raw class names (index = label); ``items``: (path, label index)."""

    name: str
    classes: list[str]
    items: list[tuple[str, int]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # "list:line: path" of skipped missing videos

    @property
    def paths(self) -> list[str]:
        return [p for p, _ in self.items]

    @property
    def labels(self) -> list[int]:
        return [y for _, y in self.items]


# ----------------------------------------------------------------------------- class names


def clean_class_name(raw: str) -> str:
    """A class folder / label as a prompt phrase: ``ApplyEyeMakeup`` -> "apply eye makeup",
    ``brush_hair`` -> "brush hair", ``playing-guitar`` -> "playing guitar", ``YoYo`` -> "yo yo"."""
    text = re.sub(r"[_\-]+", " ", raw.strip())
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", text)
    return re.sub(r"\s+", " ", text).strip().lower()


def read_class_names(path: str | os.PathLike) -> dict[str, str]:
    """Overrides: lines ``RAW<TAB>prompt name`` or ``RAW,prompt name`` (``#`` comments)."""
    p = Path(path)
    out: dict[str, str] = {}
    for no, line in enumerate(_read_lines(p), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        sep = "\t" if "\t" in line else ","
        raw, _, name = line.partition(sep)
        if not name.strip():
            raise DatasetError(f"{display_path(p)}:{no}: expected 'RAW<TAB>name' or 'RAW,name', got {line!r}")
        out[raw.strip()] = name.strip()
    return out


def read_class_list(path: str | os.PathLike) -> list[str]:
    """A plain class list: one class per line (a UCF ``classInd.txt`` ``N name`` works too; in a
    ``RAW<TAB>prompt name`` file the class is the part before the tab)."""
    names = []
    for line in _read_lines(Path(path)):
        line = line.split("\t", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        names.append(parts[1] if len(parts) == 2 and parts[0].isdigit() else line)
    if not names:
        raise DatasetError(f"{display_path(path)}: no class names in the file")
    return names


def _read_lines(p: Path) -> list[str]:
    return read_text_lines(p)  # BOM dropped; a bad byte is an error naming the file and line


# ----------------------------------------------------------------------------- layouts


def detect_layout(data: str | os.PathLike) -> str:
    p = Path(data)
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise DatasetError(f"{display_path(p)}: a dataset file must be a .csv (path,label or Kinetics)")
        header = (_read_lines(p)[:1] or [""])[0].lower()
        return "kinetics" if "youtube_id" in header else "csv"
    if not p.is_dir():
        raise DatasetError(f"{display_path(p)}: no such dataset folder or file")
    if _find(p, "classInd.txt", ("ucfTrainTestlist",)):
        return "ucf101"
    if any(p.glob("*_test_split1.txt")) or any((p / "testTrainMulti_7030_splits").glob("*_test_split1.txt")):
        return "hmdb51"
    return "folder"


def read_split(data: str | os.PathLike, split: str = "test", *, layout: str = "auto", fold: int = 1,
               classes: list[str] | None = None, skip_missing: bool = False) -> LabeledVideos:
    """The videos of one split.

    ``split``: a split name of the dataset at ``data`` (``train``/``test``; ``val`` and others
    for a Kinetics CSV's ``split`` column), or an existing folder (read folder-per-class), or a
    file: ``.csv`` (``path,label``, or Kinetics), ``.txt`` (a UCF-style list ``path [label]``,
    paths relative to ``data``). ``classes``: the class list the labels must come from (an
    unknown class is an error naming the file and line); default: the dataset's own.
    """
    if layout not in LAYOUTS:
        raise DatasetError(f"layout {layout!r}: one of {', '.join(LAYOUTS)}")
    sp = Path(split)
    if split not in ("train", "test", "val", "validate", "all") and (sp.is_dir() or sp.is_file()):
        if sp.is_dir():
            return read_class_folders(sp, classes=classes)
        if sp.suffix.lower() == ".csv":
            kind = detect_layout(sp)
            return (read_kinetics(sp, None, classes=classes, skip_missing=skip_missing) if kind == "kinetics"
                    else read_path_label_csv(sp, classes=classes, skip_missing=skip_missing))
        root = Path(data) if data and Path(data).is_dir() else sp.parent
        return read_list_file(sp, root, classes=classes, skip_missing=skip_missing)
    if data is None:
        raise DatasetError(f"split {split!r}: not a file or folder, and no --data dataset to take it from")
    layout = detect_layout(data) if layout == "auto" else layout
    if layout == "folder":
        if split not in ("test", "all"):
            raise DatasetError(f"{display_path(data)}: a folder-per-class dataset has no {split!r} split; pass a "
                               "folder or a list file as the split")
        return read_class_folders(Path(data), classes=classes)
    if layout == "ucf101":
        return read_ucf101(Path(data), split, fold, classes=classes, skip_missing=skip_missing)
    if layout == "hmdb51":
        return read_hmdb51(Path(data), split, fold, classes=classes, skip_missing=skip_missing)
    if layout == "kinetics":
        return read_kinetics(Path(data), None if split == "all" else split, classes=classes, skip_missing=skip_missing)
    if split != "all":
        raise DatasetError(f"{display_path(data)}: a path,label CSV is one split; pass 'all' or another file")
    return read_path_label_csv(Path(data), classes=classes, skip_missing=skip_missing)


def dataset_classes(data: str | os.PathLike, layout: str = "auto") -> list[str]:
    """The class list of a dataset (folder names sorted, classInd order, sorted labels)."""
    layout = detect_layout(data) if layout == "auto" else layout
    p = Path(data)
    if layout == "ucf101":
        return read_class_list(_find(p, "classInd.txt", ("ucfTrainTestlist",)))
    if layout == "folder":
        return sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if layout == "hmdb51":
        base = p if any(p.glob("*_test_split1.txt")) else p / "testTrainMulti_7030_splits"
        return sorted(f.name[: -len("_test_split1.txt")] for f in base.glob("*_test_split1.txt"))
    return read_split(data, "all", layout=layout, skip_missing=True).classes


def _find(root: Path, name: str, subdirs=()) -> Path | None:
    for base in (root, *(root / s for s in subdirs)):
        if (base / name).is_file():
            return base / name
    return None


def _is_video(p: Path) -> bool:
    return p.is_file() and is_video_name(p.name)


def read_class_folders(root: Path, *, classes: list[str] | None = None) -> LabeledVideos:
    """``root/<class>/**/<video>``; an empty class folder is an error naming it."""
    if not root.is_dir():
        raise DatasetError(f"{display_path(root)}: no such folder")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise DatasetError(f"{display_path(root)}: no class folders (expected ROOT/<class>/<video files>)")
    names = list(classes) if classes is not None else [d.name for d in folders]
    index = {c: i for i, c in enumerate(names)}
    out = LabeledVideos(str(root), names)
    for d in folders:
        if d.name not in index:
            raise DatasetError(f"{display_path(d)}: class {d.name!r} is not one of the classes ({_few(names)})")
        videos = sorted(f for f in d.rglob("*") if _is_video(f))
        if not videos:
            raise DatasetError(f"{display_path(d)}: class folder holds no video files ({', '.join(VIDEO_EXTENSIONS[:5])}, ...)")
        out.items += [(str(f), index[d.name]) for f in videos]
    return out


def _few(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def _label(names_index: dict[str, int], label: str, where: str, names: list[str]) -> int:
    if label not in names_index:
        raise DatasetError(f"{where}: unknown class {label!r} (classes: {_few(names)})")
    return names_index[label]


def _resolve(candidates: list[Path], where: str, out: LabeledVideos, skip_missing: bool) -> str | None:
    for c in candidates:
        if c.is_file():
            return str(c)
    msg = f"{where}: video {display_path(candidates[0])} is listed but missing"
    if not skip_missing:
        raise DatasetError(msg + " (pass --skip-missing to report and skip such videos)")
    out.missing.append(msg)
    return None


def read_list_file(path: Path, root: Path, *, classes: list[str] | None = None, skip_missing: bool = False,
                   bases: tuple[Path, ...] = ()) -> LabeledVideos:
    """A UCF-style list: ``Class/v_x.avi [label_index]``; the class is the path's folder."""
    names = list(classes) if classes is not None else dataset_classes(root)
    index = {c: i for i, c in enumerate(names)}
    out = LabeledVideos(str(path), names)
    for no, line in enumerate(_read_lines(path), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rel = line.split()[0]
        where = f"{display_path(path)}:{no}"
        label = _label(index, Path(rel).parent.name or "", where, names)
        found = _resolve([b / rel for b in (bases or (root,))], where, out, skip_missing)
        if found:
            out.items.append((found, label))
    return out


def read_ucf101(root: Path, split: str, fold: int, *, classes=None, skip_missing=False) -> LabeledVideos:
    if split not in ("train", "test"):
        raise DatasetError(f"{display_path(root)}: UCF101 has splits 'train' and 'test', not {split!r}")
    name = f"{split}list{fold:02d}.txt"
    lst = _find(root, name, ("ucfTrainTestlist",))
    if lst is None:
        raise DatasetError(f"{display_path(root)}: no {name} (in the folder or ucfTrainTestlist/)")
    names = classes if classes is not None else read_class_list(_find(root, "classInd.txt", ("ucfTrainTestlist",)))
    return read_list_file(lst, root, classes=names, skip_missing=skip_missing, bases=(root, root / "UCF-101"))


def read_hmdb51(root: Path, split: str, fold: int, *, classes=None, skip_missing=False) -> LabeledVideos:
    if split not in ("train", "test"):
        raise DatasetError(f"{display_path(root)}: HMDB51 has splits 'train' and 'test', not {split!r}")
    want = "1" if split == "train" else "2"
    base = root if any(root.glob(f"*_test_split{fold}.txt")) else root / "testTrainMulti_7030_splits"
    files = sorted(base.glob(f"*_test_split{fold}.txt"))
    if not files:
        raise DatasetError(f"{display_path(root)}: no *_test_split{fold}.txt files")
    names = list(classes) if classes is not None else dataset_classes(root, "hmdb51")
    index = {c: i for i, c in enumerate(names)}
    out = LabeledVideos(f"{root} split {fold} {split}", names)
    for f in files:
        cls = f.name[: -len(f"_test_split{fold}.txt")]
        label = _label(index, cls, display_path(f), names)
        for no, line in enumerate(_read_lines(f), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DatasetError(f"{display_path(f)}:{no}: expected 'VIDEO 0|1|2', got {line!r}")
            if parts[1] == want:
                found = _resolve([root / cls / parts[0], root / "videos" / cls / parts[0]],
                                 f"{display_path(f)}:{no}", out, skip_missing)
                if found:
                    out.items.append((found, label))
    return out


def _csv_rows(path: Path, required: tuple[str, ...]):
    rows = CsvRows(path, header=True)
    cols = [c.strip() for c in rows.fieldnames]
    missing = [c for c in required if c not in cols]
    if missing:
        raise DatasetError(f"{display_path(path)}: missing column(s) {missing}; the header has {cols}")
    for no, row in rows:  # no: the file line the row ends on
        yield no, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}


def read_path_label_csv(path: Path, *, classes=None, skip_missing=False) -> LabeledVideos:
    rows = list(_csv_rows(path, ("path", "label")))
    names = list(classes) if classes is not None else sorted({r["label"] for _, r in rows})
    index = {c: i for i, c in enumerate(names)}
    out = LabeledVideos(str(path), names)
    for no, r in rows:
        where = f"{display_path(path)}:{no}"
        label = _label(index, r["label"], where, names)
        p = Path(r["path"]).expanduser()
        found = _resolve([p if p.is_absolute() else path.parent / p], where, out, skip_missing)
        if found:
            out.items.append((found, label))
    return out


def read_kinetics(path: Path, split: str | None, *, classes=None, skip_missing=False) -> LabeledVideos:
    """Kinetics CSV rows of ``split`` (None: all); files found by name under the CSV's folder."""
    all_rows = list(_csv_rows(path, ("label", "youtube_id", "time_start", "time_end")))
    rows = [(no, r) for no, r in all_rows if split is None or r.get("split", "") == split]
    if split is not None and not rows:
        raise DatasetError(f"{display_path(path)}: no rows with split {split!r}")
    names = list(classes) if classes is not None else sorted({r["label"] for _, r in all_rows})
    index = {c: i for i, c in enumerate(names)}
    by_name: dict[str, Path] = {}
    for f in path.parent.rglob("*"):
        if _is_video(f):
            by_name.setdefault(f.stem, f)
    out = LabeledVideos(f"{path} {split or 'all'}", names)
    for no, r in rows:
        where = f"{display_path(path)}:{no}"
        label = _label(index, r["label"], where, names)
        start, end = parse_float(r["time_start"], where, "time_start"), parse_float(r["time_end"], where, "time_end")
        stem = f"{r['youtube_id']}_{int(start):06d}_{int(end):06d}"
        found = _resolve([by_name.get(stem, path.parent / f"{stem}.mp4")], where, out, skip_missing)
        if found:
            out.items.append((found, label))
    return out


def sample_shots(videos: LabeledVideos, shots: int, seed: int = 0) -> LabeledVideos:
    """K examples per class, drawn with ``seed``; a class with fewer than K is an error naming it."""
    import random

    rng = random.Random(seed)
    by_class: dict[int, list[str]] = {i: [] for i in range(len(videos.classes))}
    for p, y in videos.items:
        by_class[y].append(p)
    short = [(videos.classes[y], len(ps)) for y, ps in by_class.items() if len(ps) < shots]
    if short:
        detail = ", ".join(f"{c!r} has {n}" for c, n in short[:8])
        raise DatasetError(f"{videos.name}: --shots {shots} needs {shots} training videos per class, but {detail}")
    out = LabeledVideos(f"{videos.name} ({shots} shots)", videos.classes)
    for y, ps in by_class.items():
        out.items += [(p, y) for p in rng.sample(sorted(ps), shots)]
    return out
