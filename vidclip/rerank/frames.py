"""Where candidates' frames come from: a library index's stored embeddings, or videos encoded on the fly.

``bank_from_index``: docids (or the mapping's paths) resolve to catalog entries of a ``vidclip
index`` directory by key, path or a metadata column; frames and their timestamps are read from the
index's feature shards (memory-mapped, no decoding).

``bank_from_videos``: the mapping's videos are decoded and encoded with the existing pipeline
(:func:`vidclip.encode.pipeline.encode_videos`) into a feature store used as a disk cache, keyed by the
file's absolute path, size and mtime; a second rerank of the same candidates decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidclip.core.errors import DatasetError, VidclipError, display_path
from vidclip.features.store import FeatureStore
from vidclip.rerank.bank import FrameBank
from vidclip.rerank.inputs import Shot


@dataclass
class BankStats:
    videos: int = 0  # distinct videos the candidates come from
    decoded: int = 0  # videos decoded and encoded in this run (on-the-fly mode)
    cached: int = 0  # videos whose frames came from the cache (on-the-fly mode)
    failed: dict[str, str] = field(default_factory=dict)  # video -> reason
    seconds: float = 0.0


def _span_frames(emb: np.ndarray, times: np.ndarray, shot: Shot | None) -> tuple[np.ndarray | None, str]:
    """Frames of the shot's span (all frames without a span); (None, why) when there are none."""
    if emb.shape[0] == 0:
        return None, "the video has no stored frames"
    if shot is None or shot.start is None:
        return np.asarray(emb, dtype=np.float32), ""
    inside = (times >= shot.start) & (times < shot.end)
    if not inside.any():
        return None, f"no sampled frame inside [{shot.start:g}, {shot.end:g}) s"
    return np.asarray(emb[inside], dtype=np.float32), ""


def _catalog_lookup(rows: list[dict], match: str) -> dict[str, dict]:
    table: dict[str, dict] = {}
    if match.startswith("meta:"):
        col = match[5:]
        for r in rows:
            v = (r.get("metadata") or {}).get(col)
            if v not in (None, ""):
                table.setdefault(str(v), r)
        return table
    if match in ("auto", "path"):
        for r in rows:
            table.setdefault(r["abs_path"], r)
            table.setdefault(r["path"], r)
    if match in ("auto", "key"):
        for r in rows:
            table.setdefault(r["key"], r)
    if match == "auto":  # stems last: a run's docids are often file names without extension
        for r in rows:
            table.setdefault(Path(r["path"]).stem, r)
    return table


def check_index_dir(index_dir: str | os.PathLike, match: str = "auto"):
    """The :class:`~vidclip.index.directory.IndexDir` of ``index_dir`` when it is a library index and
    ``match`` is valid; else a VidclipError. Cheap (no catalog opened): called before any model is loaded."""
    from vidclip.index.directory import IndexDir

    index_dir = IndexDir(index_dir)
    index_dir.require_catalog(f"--index {display_path(index_dir.path)}")
    if match not in ("auto", "key", "path") and not (match.startswith("meta:") and len(match) > 5):
        raise VidclipError(f"--match must be auto, key, path or meta:COLUMN, got {match!r}")
    return index_dir


def bank_from_index(index_dir: str | os.PathLike, docids: list[str], shots: dict[str, Shot] | None = None,
                    *, match: str = "auto", mapping_base: Path | None = None) -> tuple[FrameBank, dict, BankStats]:
    """Frames of ``docids`` from a library index. Returns (bank, the index's model identity, stats).

    ``match``: how a docid (or, with ``shots``, the mapping's path) finds its catalog entry:
    ``key``, ``path`` (relative or absolute), ``meta:COLUMN`` (a metadata column of a CSV library)
    or ``auto`` (path, key, then file stem).
    """
    index_dir = check_index_dir(index_dir, match)
    with index_dir.open_catalog(readonly=True) as catalog:
        model = catalog.get_meta("model")
        if model is None:
            raise VidclipError(f"{display_path(index_dir.path)}: the index holds no videos yet")
        table = _catalog_lookup(catalog.videos(status="indexed"), match)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    found_ids, frames, unresolved, videos = [], [], {}, set()
    for docid in docids:
        shot = shots.get(docid) if shots is not None else None
        if shots is not None and shot is None:
            unresolved[docid] = "not in the mapping"
            continue
        target = shot.path if shot is not None else docid
        row = table.get(target)
        if row is None and shot is not None and mapping_base is not None:
            row = table.get(str(shot.resolved_path(mapping_base).resolve()))
        if row is None:
            unresolved[docid] = f"{target!r} matches no indexed video (--match {match})"
            continue
        shard = row["shard"]
        if shard not in arrays:
            emb, _, times = index_dir.open_shard(shard)
            arrays[shard] = (emb, times)
        emb, times = arrays[shard]
        sl = slice(row["offset"], row["offset"] + row["count"])
        f, why = _span_frames(emb[sl], np.asarray(times[sl]), shot)
        if f is None:
            unresolved[docid] = why
            continue
        videos.add(row["id"])
        found_ids.append(docid)
        frames.append(f)
    bank = FrameBank.from_lists(found_ids, frames, unresolved, dim=int(model.get("embed_dim", 0)))
    return bank, model, BankStats(videos=len(videos))


def default_cache_dir(model_key: str, sampler: dict) -> Path:
    """One feature store per (model, sampler) under $XDG_CACHE_HOME/vidclip/rerank (a store never mixes them)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidclip" / "rerank"
    digest = hashlib.blake2b(json.dumps([model_key, sampler], sort_keys=True).encode(), digest_size=8).hexdigest()
    return base / digest


def _video_key(path: Path) -> str:
    st = path.stat()
    return f"{path}@{st.st_size}:{st.st_mtime_ns}"


def bank_from_videos(docids: list[str], shots: dict[str, Shot], mapping_base: Path, clip, sampler, *,
                     cache_dir: str | os.PathLike | None = None, workers: int = 2, backend: str = "auto",
                     progress: bool | str = False) -> tuple[FrameBank, BankStats]:
    """Frames of ``docids`` by decoding and encoding the mapped videos (cached in a feature store).
    ``progress``: the encoding bar (a string: its label), as :func:`vidclip.encode.pipeline.encode_videos`."""
    import time

    from vidclip.encode.pipeline import encode_videos

    t0 = time.perf_counter()
    cache = Path(cache_dir) if cache_dir else default_cache_dir(clip.identity.key(), sampler.to_dict())
    stats = BankStats()
    unresolved: dict[str, str] = {}
    wanted: dict[str, str] = {}  # video key -> path
    doc_key: dict[str, str] = {}
    for docid in docids:
        shot = shots.get(docid)
        if shot is None:
            unresolved[docid] = "not in the mapping"
            continue
        p = shot.resolved_path(mapping_base).resolve()
        if not p.is_file():
            unresolved[docid] = f"video {display_path(p)} does not exist"
            continue
        key = _video_key(p)
        wanted[key] = str(p)
        doc_key[docid] = key
    stats.videos = len(wanted)
    if wanted:
        report = encode_videos(sorted(wanted.items()), cache, clip, sampler, workers=workers, backend=backend,
                               progress=progress)
        stats.decoded, stats.cached = report.done, report.skipped
        for f in report.failed:
            stats.failed[f.path] = f.reason
        try:
            store = FeatureStore(cache)
        except VidclipError as e:
            raise DatasetError(f"frame cache {display_path(cache)}: {e}") from None
    found_ids, frames = [], []
    for docid, key in doc_key.items():
        if key not in store:
            unresolved[docid] = f"video {display_path(wanted[key])} could not be decoded: " \
                                f"{stats.failed.get(wanted[key], 'see the report')}"
            continue
        vf = store.get(key)
        f, why = _span_frames(vf.emb, vf.time, shots[docid])
        if f is None:
            unresolved[docid] = why
            continue
        found_ids.append(docid)
        frames.append(f)
    stats.seconds = time.perf_counter() - t0
    return FrameBank.from_lists(found_ids, frames, unresolved, dim=clip.embed_dim), stats
