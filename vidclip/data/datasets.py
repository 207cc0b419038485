"""Readers for text-video retrieval datasets, all returning one :class:`CaptionDataset`.

``load_dataset(kind, root, split)`` understands the files the common CLIP4Clip-style
loaders read:

* ``"msrvtt"``: ``MSRVTT_data.json`` (``videos``, ``sentences``), the train lists
  ``MSRVTT_train.9k.csv`` / ``MSRVTT_train.7k.csv`` (column ``video_id``) and the 1k-A test
  file ``MSRVTT_JSFUSION_test.csv`` (``key,vid_key,video_id,sentence``).  Splits:
  ``train`` (= ``train9k``), ``train7k`` - every caption of the listed videos from the
  json - and ``test`` - the csv's one caption per video (the json is not needed).
  Videos: ``root/videos/<id>.mp4`` or ``root/videos/all/<id>.mp4``.
* ``"msvd"``: ``raw-captions.pkl`` (dict id -> list of token lists, each joined with
  spaces) and ``train_list.txt`` / ``val_list.txt`` / ``test_list.txt``; videos
  ``root/videos/<id>.<any extension>`` (searched recursively, as CLIP4Clip does).
* ``"didemo"``: CLIP4Clip's ``{split}_data.json`` - a json *list* of
  ``{"video": name, "description": text, "times": [[s, e], ...], ...}`` moment
  annotations (the LocalizingMoments release) - plus the optional ``{split}_list.txt``.
  Paragraph-to-video mode, as in CLIP4Clip: all descriptions of a video are joined with
  ``" "`` (json order) into one caption for the whole video, so ``times`` is only
  validated.  Videos: ``root/videos/<video>``, or a file with the same stem and any
  extension (DiDeMo videos are often re-encoded to mp4).
* ``"jsonl"``: one ``{"video": path, "caption": text, "start": s, "end": e}`` object per
  line (``start``/``end``/``video_id`` optional); paths are relative to the file's folder;
  several lines with the same video (and segment) give several captions.  ``root`` is the
  .jsonl file, or a folder holding ``{split}.jsonl``.

Problems raise :class:`~vidclip.core.errors.DatasetError` naming the file and row; videos that
end up with no caption are kept (they still belong to the gallery) with a
:class:`DatasetWarning` naming them.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from vidclip.core.errors import ConfigError, DatasetError
from vidclip.core.textio import CsvRows, parse_json, read_text, read_text_lines

__all__ = [
    "VideoItem",
    "CaptionDataset",
    "DatasetWarning",
    "load_dataset",
    "split_validation",
    "DATASET_KINDS",
]


class DatasetWarning(UserWarning):
    """Something odd but usable in a dataset (e.g. videos without captions)."""


@dataclass
class VideoItem:
    """One video (or one segment of a video when ``start``/``end`` are set, in seconds)."""

    video_id: str
    path: Path
    start: float | None = None
    end: float | None = None


@dataclass(eq=False)  # holds numpy arrays: compare fields explicitly
class CaptionDataset:
    """Videos, captions, and which video each caption describes.

    ``caption_video`` is int64 [C]: caption ``j`` describes ``videos[caption_video[j]]``.
    Treat instances as immutable: the per-video caption index is built once at creation.
    """

    name: str
    videos: list[VideoItem]
    captions: list[str]
    caption_video: np.ndarray  # int64 [C] index into videos
    split: str = ""
    _order: np.ndarray = field(init=False, repr=False)  # int64 [C] captions sorted by video
    _bounds: np.ndarray = field(init=False, repr=False)  # int64 [V+1] slices of _order

    def __post_init__(self) -> None:
        cv = np.asarray(self.caption_video)
        if cv.ndim != 1 or len(cv) != len(self.captions):
            raise DatasetError(
                f"{self.name}: caption_video must be 1-D with one entry per caption "
                f"({len(self.captions)}), got shape {cv.shape}"
            )
        if cv.size and (
            not np.issubdtype(cv.dtype, np.integer) or cv.min() < 0 or cv.max() >= len(self.videos)
        ):
            raise DatasetError(
                f"{self.name}: caption_video has entries outside [0, {len(self.videos)})"
            )
        self.caption_video = cv.astype(np.int64, copy=False)
        self._order = np.argsort(self.caption_video, kind="stable")
        self._bounds = np.searchsorted(
            self.caption_video[self._order], np.arange(len(self.videos) + 1)
        )

    def __len__(self) -> int:
        """Number of videos."""
        return len(self.videos)

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    @property
    def video_ids(self) -> list[str]:
        return [v.video_id for v in self.videos]

    def caption_indices(self, i: int) -> np.ndarray:
        """int64 [k]: indices into ``captions`` of video ``i``'s captions, in dataset order."""
        return self._order[self._bounds[i] : self._bounds[i + 1]]

    def captions_of(self, i: int) -> list[str]:
        """The captions of video ``i`` (possibly empty)."""
        return [self.captions[j] for j in self.caption_indices(i)]

    def subset(
        self, indices: Sequence[int] | np.ndarray, name: str | None = None, split: str | None = None
    ) -> CaptionDataset:
        """The dataset restricted to ``videos[indices]`` (in that order) and their captions."""
        idx = np.asarray(indices, dtype=np.int64)
        remap = np.full(len(self.videos), -1, dtype=np.int64)
        remap[idx] = np.arange(len(idx))
        new_cv = remap[self.caption_video]
        keep = np.nonzero(new_cv >= 0)[0]
        return CaptionDataset(
            name=name or self.name,
            videos=[self.videos[i] for i in idx],
            captions=[self.captions[j] for j in keep],
            caption_video=new_cv[keep],
            split=self.split if split is None else split,
        )


# ----------------------------------------------------------------------------- helpers


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        where = path.parent
        hint = "" if where.is_dir() else f" (folder {where} does not exist either)"
        raise DatasetError(f"{path}: {what} not found{hint}")
    return path


def _read_csv(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a csv as (line number, row); checks the header has ``columns``."""
    _need_file(path, "csv file")
    rows = CsvRows(path, header=True)
    header = rows.fieldnames
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; header is {header}")
    return list(rows)


def _read_json(path: Path, what: str) -> Any:
    _need_file(path, what)
    return parse_json(read_text(path), path)


def _read_id_list(path: Path) -> list[tuple[int, str]]:
    """(line number, id) of a one-id-per-line text file; blank lines are skipped."""
    _need_file(path, "video list")
    out = []
    seen: dict[str, int] = {}
    for n, line in enumerate(read_text_lines(path), 1):
        vid = line.strip()
        if not vid:
            continue
        if vid in seen:
            raise DatasetError(
                f"{path}:{n}: duplicate video id {vid!r} (first on line {seen[vid]})"
            )
        seen[vid] = n
        out.append((n, vid))
    return out


def _index_videos(folder: Path, wanted: Iterable[str], by_stem: bool) -> dict[str, Path]:
    """Map each wanted id to a file under ``folder`` (recursive): the file named exactly
    ``id``, else (``by_stem``) a file whose name without extension is ``id``."""
    wanted = set(wanted)
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for dirpath, _, files in os.walk(folder):
        for fn in files:
            if fn in wanted:
                found[fn] = Path(dirpath) / fn  # exact name wins over a stem match
            elif by_stem:
                stem = fn.rsplit(".", 1)[0] if "." in fn else fn
                if stem in wanted and stem not in found:
                    found[stem] = Path(dirpath) / fn
    return found


def _check_missing(name: str, videos: list[VideoItem], check_files: bool) -> None:
    if not check_files:
        return
    missing = [str(v.path) for v in videos if not v.path.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DatasetError(
            f"{name}: {len(missing)} of {len(videos)} video files are missing: {shown} "
            "(pass check_files=False to load the annotations anyway)"
        )


def _build(
    name: str, split: str, videos: list[VideoItem], caps: list[tuple[int, str]], source: Path | str
) -> CaptionDataset:
    """Assemble a dataset from (video index, caption) pairs; warn about caption-less videos."""
    caption_video = np.fromiter((v for v, _ in caps), dtype=np.int64, count=len(caps))
    ds = CaptionDataset(name, videos, [c for _, c in caps], caption_video, split=split)
    empty = np.nonzero(np.diff(ds._bounds) == 0)[0]
    if len(empty):
        ids = [videos[i].video_id for i in empty[:10]]
        more = f" and {len(empty) - 10} more" if len(empty) > 10 else ""
        warnings.warn(
            f"{source}: {len(empty)} video(s) of {name} have no caption: {ids}{more}",
            DatasetWarning,
            stacklevel=4,  # _build <- reader <- load_dataset <- the caller
        )
    return ds


def _caption_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: caption must be a non-empty string, got {value!r}")
    return value.strip()


# ----------------------------------------------------------------------------- MSR-VTT

_MSRVTT_LISTS = {
    "train": "MSRVTT_train.9k.csv",
    "train9k": "MSRVTT_train.9k.csv",
    "train7k": "MSRVTT_train.7k.csv",
    "test": "MSRVTT_JSFUSION_test.csv",
}


def _msrvtt_videos_dir(root: Path, videos_dir: str | os.PathLike | None) -> Path:
    if videos_dir is not None:
        return Path(videos_dir)
    return root / "videos" / "all" if (root / "videos" / "all").is_dir() else root / "videos"


def _msrvtt_name(root: Path, split: str) -> str:
    """``msrvtt-<split>``; a synthetic dataset in the MSR-VTT layout (``vidclip synth``, which
    writes synth_meta.json) is named after its folder instead: ``synth-<split>`` for data/synth,
    ``synth-<folder>-<split>`` otherwise."""
    if not (root / "synth_meta.json").is_file():
        return f"msrvtt-{split}"
    folder = re.sub(r"\s+", "_", Path(os.path.abspath(root)).name) or "synth"
    return f"{folder}-{split}" if folder.startswith("synth") else f"synth-{folder}-{split}"


def _load_msrvtt(
    root: Path,
    split: str,
    check_files: bool = True,
    videos_dir: str | os.PathLike | None = None,
    data_json: str | os.PathLike | None = None,
    list_csv: str | os.PathLike | None = None,
) -> CaptionDataset:
    if split not in _MSRVTT_LISTS:
        raise ConfigError(f"msrvtt: unknown split {split!r}; one of {sorted(_MSRVTT_LISTS)}")
    vdir = _msrvtt_videos_dir(root, videos_dir)
    name = _msrvtt_name(root, split)
    csv_path = Path(list_csv) if list_csv is not None else root / _MSRVTT_LISTS[split]

    if split == "test":
        # 1k-A: the csv alone defines the test set, one caption per video.
        index: dict[str, int] = {}
        videos: list[VideoItem] = []
        caps: list[tuple[int, str]] = []
        for line, row in _read_csv(csv_path, ["video_id", "sentence"]):
            vid = (row["video_id"] or "").strip()
            if not vid:
                raise DatasetError(f"{csv_path}:{line}: empty 'video_id'")
            text = _caption_text(row["sentence"], f"{csv_path}:{line}: 'sentence'")
            if vid not in index:
                index[vid] = len(videos)
                videos.append(VideoItem(vid, vdir / f"{vid}.mp4"))
            caps.append((index[vid], text))
        _check_missing(name, videos, check_files)
        return _build(name, "test", videos, caps, csv_path)

    listed = _read_csv(csv_path, ["video_id"])
    json_path = Path(data_json) if data_json is not None else root / "MSRVTT_data.json"
    data = _read_json(json_path, "MSRVTT_data.json")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("videos"), list)
        or not isinstance(data.get("sentences"), list)
    ):
        raise DatasetError(f"{json_path}: expected an object with lists 'videos' and 'sentences'")
    known = set()
    for i, v in enumerate(data["videos"]):
        if not isinstance(v, dict) or not isinstance(v.get("video_id"), str):
            raise DatasetError(f"{json_path}: videos[{i}]: missing string field 'video_id'")
        known.add(v["video_id"])

    index, videos = {}, []
    for line, row in listed:
        vid = (row["video_id"] or "").strip()
        if not vid:
            raise DatasetError(f"{csv_path}:{line}: empty 'video_id'")
        if vid in index:
            raise DatasetError(f"{csv_path}:{line}: duplicate video_id {vid!r}")
        if vid not in known:
            raise DatasetError(
                f"{csv_path}:{line}: video_id {vid!r} is not in {json_path} 'videos'"
            )
        index[vid] = len(videos)
        videos.append(VideoItem(vid, vdir / f"{vid}.mp4"))

    caps = []
    for i, s in enumerate(data["sentences"]):
        if not isinstance(s, dict) or "video_id" not in s or "caption" not in s:
            raise DatasetError(
                f"{json_path}: sentences[{i}]: needs fields 'video_id' and 'caption'"
            )
        vid = s["video_id"]
        if vid not in known:
            raise DatasetError(f"{json_path}: sentences[{i}]: video_id {vid!r} is not in 'videos'")
        j = index.get(vid)
        if j is not None:
            caps.append((j, _caption_text(s["caption"], f"{json_path}: sentences[{i}]")))
    _check_missing(name, videos, check_files)
    return _build(name, split, videos, caps, json_path)


# ----------------------------------------------------------------------------- MSVD


def _load_msvd(
    root: Path, split: str, check_files: bool = True, videos_dir: str | os.PathLike | None = None
) -> CaptionDataset:
    if split not in ("train", "val", "test"):
        raise ConfigError(f"msvd: unknown split {split!r}; one of ['test', 'train', 'val']")
    pkl = _need_file(root / "raw-captions.pkl", "MSVD captions")
    try:
        with open(pkl, "rb") as f:
            raw = pickle.load(f)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DatasetError(f"{pkl}: cannot unpickle: {e}") from None
    if not isinstance(raw, dict):
        raise DatasetError(
            f"{pkl}: expected a dict video id -> list of captions, got {type(raw).__name__}"
        )
    list_path = root / f"{split}_list.txt"
    ids = _read_id_list(list_path)
    vdir = Path(videos_dir) if videos_dir is not None else root / "videos"
    found = _index_videos(vdir, (vid for _, vid in ids), by_stem=True)

    videos, caps = [], []
    for i, (_, vid) in enumerate(ids):
        videos.append(VideoItem(vid, found.get(vid, vdir / f"{vid}.avi")))
        entries = raw.get(vid, [])
        if not isinstance(entries, (list, tuple)):
            raise DatasetError(
                f"{pkl}: [{vid!r}]: expected a list of captions, got {type(entries).__name__}"
            )
        for k, cap in enumerate(entries):
            where = f"{pkl}: [{vid!r}][{k}]"
            if isinstance(cap, (list, tuple)) and all(isinstance(t, str) for t in cap):
                cap = " ".join(cap)  # token list, as in the collaborative-experts release
            caps.append((i, _caption_text(cap, where)))
    _check_missing(f"msvd-{split}", videos, check_files)
    return _build(f"msvd-{split}", split, videos, caps, pkl)


# ----------------------------------------------------------------------------- DiDeMo


def _load_didemo(
    root: Path,
    split: str,
    check_files: bool = True,
    videos_dir: str | os.PathLike | None = None,
    strict: bool = True,
) -> CaptionDataset:
    if split not in ("train", "val", "test"):
        raise ConfigError(f"didemo: unknown split {split!r}; one of ['test', 'train', 'val']")
    json_path = root / f"{split}_data.json"
    data = _read_json(json_path, "DiDeMo annotations")
    if not isinstance(data, list):
        raise DatasetError(f"{json_path}: expected a JSON list of moment annotations")
    list_path = root / f"{split}_list.txt"
    listed = [vid for _, vid in _read_id_list(list_path)] if list_path.is_file() else None

    order: list[str] = list(listed) if listed is not None else []
    allowed = set(order)
    paragraphs: dict[str, list[str]] = {}
    skipped = []
    for i, item in enumerate(data):
        where = f"{json_path}: [{i}]"
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("video"), str)
            or not item["video"]
        ):
            raise DatasetError(f"{where}: needs a non-empty string field 'video'")
        vid = item["video"]
        text = _caption_text(item.get("description"), f"{where} 'description'")
        times = item.get("times", [])
        if not isinstance(times, list) or not all(
            isinstance(t, (list, tuple))
            and len(t) == 2
            and all(isinstance(x, (int, float)) for x in t)
            for t in times
        ):
            raise DatasetError(
                f"{where}: 'times' must be a list of [start, end] pairs, got {times!r}"
            )
        if listed is not None and vid not in allowed:
            if strict:
                raise DatasetError(
                    f"{where}: video {vid!r} is not in {list_path} (pass strict=False to skip such rows)"
                )
            skipped.append(vid)
            continue
        if vid not in paragraphs:
            paragraphs[vid] = []
            if listed is None:
                order.append(vid)
        paragraphs[vid].append(text)
    if skipped:
        warnings.warn(
            f"{json_path}: skipped {len(skipped)} row(s) for videos not in {list_path}: {sorted(set(skipped))[:10]}",
            DatasetWarning,
            stacklevel=3,  # reader <- load_dataset <- the caller
        )

    vdir = Path(videos_dir) if videos_dir is not None else root / "videos"
    found = _index_videos(vdir, order, by_stem=True)
    # DiDeMo names carry their extension (".mov", ".mp4" ...); re-encoded copies keep the stem
    stems = {vid.rsplit(".", 1)[0]: vid for vid in order if "." in vid and vid not in found}
    if stems:
        for stem, path in _index_videos(vdir, stems, by_stem=True).items():
            found.setdefault(stems[stem], path)
    videos = [VideoItem(vid, found.get(vid, vdir / vid)) for vid in order]
    caps = [(i, " ".join(paragraphs[vid])) for i, vid in enumerate(order) if vid in paragraphs]
    _check_missing(f"didemo-{split}", videos, check_files)
    return _build(f"didemo-{split}", split, videos, caps, json_path)


# ----------------------------------------------------------------------------- JSONL


def _number(value: Any, where: str, key: str) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise DatasetError(
            f"{where}: '{key}' must be a non-negative number of seconds, got {value!r}"
        )
    return float(value)


def _load_jsonl(root: Path, split: str, check_files: bool = True) -> CaptionDataset:
    path = root if root.is_file() or root.suffix == ".jsonl" else root / f"{split}.jsonl"
    _need_file(path, "JSONL annotations")
    base = path.parent
    index: dict[tuple[str, float | None, float | None], int] = {}
    id_key: dict[str, tuple[tuple[str, float | None, float | None], int]] = {}
    videos: list[VideoItem] = []
    caps: list[tuple[int, str]] = []
    for n, line in enumerate(read_text_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        obj = parse_json(line, path, n)
        if not isinstance(obj, dict):
            raise DatasetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        rel = obj.get("video")
        if not isinstance(rel, str) or not rel:
            raise DatasetError(f"{where}: missing or empty string field 'video'")
        text = _caption_text(obj.get("caption"), f"{where}: 'caption'")
        start, end = (
            _number(obj.get("start"), where, "start"),
            _number(obj.get("end"), where, "end"),
        )
        if start is not None and end is not None and end <= start:
            raise DatasetError(f"{where}: 'end' ({end}) must be after 'start' ({start})")
        vpath = Path(rel) if Path(rel).is_absolute() else base / rel
        key = (os.path.normpath(str(vpath)), start, end)
        if key not in index:
            vid = obj.get("video_id")
            if vid is None:
                vid = rel
                if start is not None or end is not None:
                    vid += f"@{'' if start is None else f'{start:g}'}-{'' if end is None else f'{end:g}'}"
            elif not isinstance(vid, str) or not vid:
                raise DatasetError(
                    f"{where}: 'video_id' must be a non-empty string, got {vid!r}"
                )
            if vid in id_key:
                raise DatasetError(
                    f"{where}: video_id {vid!r} already names a different video/segment (line {id_key[vid][1]})"
                )
            id_key[vid] = (key, n)
            index[key] = len(videos)
            videos.append(VideoItem(vid, Path(key[0]), start, end))
        caps.append((index[key], text))
    if not videos:
        raise DatasetError(f"{path}: no annotations")
    _check_missing(f"jsonl-{path.stem}", videos, check_files)
    return _build(f"jsonl-{path.stem}", split, videos, caps, path)


# ----------------------------------------------------------------------------- public API

DATASET_KINDS = {
    "msrvtt": _load_msrvtt,
    "msvd": _load_msvd,
    "didemo": _load_didemo,
    "jsonl": _load_jsonl,
}


def load_dataset(kind: str, root: str | os.PathLike, split: str, **kw: Any) -> CaptionDataset:
    """Read a dataset split.  ``kind``: msrvtt | msvd | didemo | jsonl (see module doc).

    Keyword options: ``check_files=True`` (raise when video files are missing; all kinds),
    ``videos_dir`` (msrvtt, msvd, didemo: where the videos are instead of ``root/videos``),
    ``data_json`` / ``list_csv`` (msrvtt: other annotation files), ``strict=True``
    (didemo: rows for videos missing from ``{split}_list.txt`` are an error, else skipped).
    """
    loader = DATASET_KINDS.get(kind)
    if loader is None:
        raise ConfigError(f"unknown dataset kind {kind!r}; one of {sorted(DATASET_KINDS)}")
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: dataset root does not exist")
    try:
        return loader(root, split, **kw)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise ConfigError(f"load_dataset({kind!r}): {e}") from None
        raise


def split_validation(
    ds: CaptionDataset, fraction: float = 0.05, seed: int = 0, group_size: int = 1
) -> tuple[CaptionDataset, CaptionDataset]:
    """Carve a validation split out of a *training* dataset, by video (a video's captions
    all go to the same side).  Returns ``(train, val)``; videos keep their order.

    ``group_size > 1`` holds out whole runs of that many consecutive videos (time-reversed
    twins stay together), about ``fraction`` of the runs."""
    if ds.split in ("test", "val"):
        raise ConfigError(
            f"split_validation: {ds.name} is a {ds.split} split; carve validation from training data"
        )
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"split_validation: fraction must be in (0, 1), got {fraction}")
    n = len(ds)
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise ConfigError(
            f"split_validation: {ds.name} has {n} video(s); too few to keep any for training"
        )
    if group_size > 1:
        groups = -(-n // group_size)
        n_val_groups = max(1, int(round(fraction * groups)))
        if n_val_groups >= groups:
            raise ConfigError(
                f"split_validation: {ds.name} has {groups} group(s) of {group_size} videos; too few to keep any for training"
            )
        held = np.random.default_rng(seed).permutation(groups)[:n_val_groups]
        is_val = np.isin(np.arange(n) // group_size, held)
        val_idx, train_idx = np.flatnonzero(is_val), np.flatnonzero(~is_val)
    else:
        perm = np.random.default_rng(seed).permutation(n)
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return (
        ds.subset(train_idx, name=f"{ds.name}-trainval", split="train"),
        ds.subset(val_idx, name=f"{ds.name}-val", split="val"),
    )
