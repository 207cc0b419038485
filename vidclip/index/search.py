"""Searching an index (:class:`VideoIndex`, :class:`SearchHit`).

Search: the query's text embedding is compared with the video-level vectors in faiss. With a
text-conditioned temporal module (X-Pool-style ``xpool``, ``query_scoring``), the faiss
candidates (mean-pooled vectors, ``rerank_depth`` of them) are re-scored by the module on their
stored frame embeddings. The time span reported for a video hit is its best-scoring window
(windows are the sampler's fixed-length windows, scored by their stored vectors): a window has
a fixed, predictable length and averages several frames, so it is less noisy than one frame's
similarity and needs no margin to tune. ``segments=True`` ranks the windows themselves.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.features import FeatureStore
from ..errors import ConfigError, IndexMismatchError, VidclipError
from .catalog import Catalog
from .directory import (
    CATALOG_FILE,
    FEATURES_DIR,
    _DirLock,
    _is_index_dir,
    _sync_faiss,
    remove_stale_temps,
)
from .pooling import Pooler
from .vectors import VectorIndex, l2_normalize


@dataclass
class SearchHit:
    video_id: int
    path: str  # relative to VideoIndex.library_root (absolute when outside it)
    score: float  # cosine similarity of the query with the video (or window)
    start: float  # best-matching time span, seconds
    end: float
    duration: float  # of the whole video

    def to_dict(self) -> dict:
        return asdict(self)


class VideoIndex:
    """Read side of a library index: search, catalog lookups. Safe to use from several threads.

    Picks up a concurrent indexer's commits: every search checks the catalog generation and
    reloads (or rebuilds in memory) the faiss indexes when it moved.
    """

    rerank_depth = 100  # faiss candidates re-scored by a text-conditioned temporal module

    def __init__(self, index_dir: Path, catalog: Catalog, clip, pooler: Pooler):
        self.index_dir = index_dir
        self.catalog = catalog
        self.clip = clip
        self.pooler = pooler
        self.identity: dict = catalog.get_meta("model")
        self.library_root = Path(catalog.get_meta("library_root") or index_dir)
        self.dim = int(self.identity["embed_dim"])
        self._lock = threading.RLock()
        self._shards: dict[str, np.ndarray] = {}
        self._video_index: VectorIndex | None = None
        self._segment_index: VectorIndex | None = None
        self._generation = -1
        self._refresh()

    @classmethod
    def open(cls, index_dir: str | os.PathLike, *, clip=None, device: str | None = None) -> "VideoIndex":
        """Open an index; loads the model named in it (on ``device``, default cpu) unless ``clip`` is
        given (then it must match)."""
        index_dir = Path(index_dir).expanduser().resolve()
        if not _is_index_dir(index_dir):
            raise VidclipError(f"{index_dir}: not a vidclip index (no {CATALOG_FILE}); build one with `vidclip index`")
        catalog = Catalog(index_dir / CATALOG_FILE)
        model = catalog.get_meta("model")
        if model is None:
            catalog.close()
            raise VidclipError(f"{index_dir}: the index holds no videos yet (no model recorded)")
        if clip is None:
            from ..models.clip import load_clip_from_identity

            clip = load_clip_from_identity(model, **({"device": device} if device else {}))
        elif clip.identity.key() != catalog.get_meta("model_key"):
            stored_key = catalog.get_meta("model_key")
            catalog.close()
            raise IndexMismatchError(
                f"{index_dir}: index built with model {model.get('name')!r} (key {stored_key}), "
                f"but the given model is {clip.identity.name!r} (key {clip.identity.key()})")
        pooler = Pooler.from_spec(catalog.get_meta("temporal") or {"name": "mean"}, clip)
        return cls(index_dir, catalog, clip, pooler)

    def close(self) -> None:
        self.catalog.close()

    def __len__(self) -> int:
        return self.catalog.counts()["indexed"]

    def _refresh(self) -> None:
        gen = self.catalog.generation
        if gen == self._generation:
            return
        # Save a rebuilt faiss file only when no writer holds the index (it will save its own).
        lock = _DirLock(self.index_dir)
        try:
            can_save = os.access(self.index_dir, os.W_OK) and lock.acquire()
        except VidclipError:  # e.g. .lock is a directory: search still works, it just saves nothing
            can_save = False
        try:
            if can_save:
                remove_stale_temps(self.index_dir)
            self._video_index = _sync_faiss(self.catalog, self.index_dir, "videos", self.dim, save=can_save)
            self._segment_index = _sync_faiss(self.catalog, self.index_dir, "segments", self.dim, save=can_save)
        finally:
            lock.release()
        self._generation = int(self._video_index.metadata.get("generation", gen))

    def _frames(self, row: dict) -> np.ndarray:
        shard, end = row["shard"], row["offset"] + row["count"]
        if shard not in self._shards or self._shards[shard].shape[0] < end:
            self._shards[shard] = FeatureStore.open_shard(self.index_dir / FEATURES_DIR, shard, rows=end)[0]
        return np.asarray(self._shards[shard][row["offset"]:end], dtype=np.float32)

    def search(self, query: str, k: int = 10, *, segments: bool = False) -> list[SearchHit]:
        """Top-k videos (or windows, ``segments=True``) for a text query, best first."""
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("search: the query text is empty")
        if k <= 0:
            raise ConfigError(f"search: k must be positive, got {k}")
        with self._lock:
            self._refresh()
            raw = self.pooler.encode_query(query)
            q = l2_normalize(raw.cpu().numpy())[0]
            if segments:
                return self._search_segments(q, k)
            return self._search_videos(q, k, raw)

    def _search_segments(self, q: np.ndarray, k: int) -> list[SearchHit]:
        scores, ids = self._segment_index.search(q, k)
        keep = ids[0] >= 0
        seg_rows = self.catalog.segments_by_ids(ids[0][keep])
        videos = self.catalog.videos_by_ids({r["video_id"] for r in seg_rows.values()})
        hits = []
        for sid, score in zip(ids[0][keep].tolist(), scores[0][keep].tolist()):
            seg = seg_rows.get(sid)
            row = videos.get(seg["video_id"]) if seg else None
            if row is None or row["status"] != "indexed":
                continue
            hits.append(SearchHit(row["id"], self._display_path(row), float(score), float(seg["start"]), float(seg["end"]),
                                  float(row["duration"] or 0.0)))
        return hits

    def _search_videos(self, q: np.ndarray, k: int, raw=None) -> list[SearchHit]:
        depth = max(k, self.rerank_depth) if self.pooler.conditioned else k
        scores, ids = self._video_index.search(q, depth)
        keep = ids[0] >= 0
        cand, cand_scores = ids[0][keep].tolist(), scores[0][keep]
        rows = self.catalog.videos_by_ids(cand)
        order = [i for i, vid in enumerate(cand) if vid in rows and rows[vid]["status"] == "indexed"]
        cand, cand_scores = [cand[i] for i in order], cand_scores[order]
        if self.pooler.conditioned and cand:
            cand_scores = self.pooler.conditioned_scores(raw, [self._frames(rows[v]) for v in cand])
            best = np.argsort(-cand_scores, kind="stable")
            cand, cand_scores = [cand[i] for i in best], cand_scores[best]
        cand, cand_scores = cand[:k], cand_scores[:k]
        windows = self.catalog.segments_of(cand, self.dim)
        hits = []
        for vid, score in zip(cand, cand_scores.tolist()):
            row = rows[vid]
            segs, vecs = windows.get(vid, ([], None))
            if segs:
                best = int(np.argmax(vecs @ q))
                start, end = float(segs[best]["start"]), float(segs[best]["end"])
            else:
                start, end = 0.0, float(row["duration"] or 0.0)
            hits.append(SearchHit(vid, self._display_path(row), float(score), start, end, float(row["duration"] or 0.0)))
        return hits

    def _display_path(self, row: dict) -> str:
        """Path relative to ``library_root`` (absolute for a file outside it, e.g. a merged library's)."""
        try:
            return Path(row["abs_path"]).relative_to(self.library_root).as_posix()
        except ValueError:
            return row["abs_path"]

    def get_video(self, video_id: int) -> dict | None:
        """Catalog row of an indexed video: id, path (as in SearchHit), abs_path, duration, fps, size,
        mtime_ns, hash, metadata (dict), windows [[start, end], ...], key, source, root, shard, offset,
        count, status, indexed_at."""
        with self._lock:
            row = self.catalog.video(int(video_id))
            if row is None or row["status"] != "indexed":
                return None
            row["path"] = self._display_path(row)
            segs, _ = self.catalog.segments_of([row["id"]], self.dim)[row["id"]]
            row["windows"] = [[s["start"], s["end"]] for s in segs]
            return row

    def video_path(self, video_id: int) -> Path | None:
        """Absolute path of an indexed video (None for unknown / failed / deleted ids)."""
        with self._lock:
            row = self.catalog.video(int(video_id))
        if row is None or row["status"] != "indexed":
            return None
        return Path(row["abs_path"])
