"""Searching an index (:class:`VideoIndex`, :class:`SearchHit`): by text, by image, by video.

Search: the query's text embedding is compared with the video-level vectors in faiss. With a
text-conditioned temporal module (X-Pool-style ``xpool``, ``query_scoring``), the faiss
candidates (mean-pooled vectors, ``rerank_depth`` of them) are re-scored by the module on their
stored frame embeddings. The time span reported for a video hit is its best-scoring window
(windows are the sampler's fixed-length windows, scored by their stored vectors): a window has
a fixed, predictable length and averages several frames, so it is less noisy than one frame's
similarity and needs no margin to tune. ``segments=True`` ranks the windows themselves.

Two stages (``rerank=N``): the first stage's top ``max(N, k)`` candidates (videos, or windows
with ``segments=True``) are re-scored on their stored frames as CLIPRerank does
(:mod:`vidclip.retrieval.fusion`, arXiv 2401.08449): ``M = pool_t cos(query, frame_t)`` (``max`` by
default), fused ``S = alpha * norm(S_1) + (1 - alpha) * norm(M)`` (alpha weighs the first stage,
as in the paper) with alpha 0.4 and ``minmax`` normalisation over the candidates (the ``vidclip
rerank`` defaults; BENCHMARKS.md *Rerank* says why minmax), re-sorted, cut to k. ``S_1`` is what
search returns without rerank: the faiss cosine, or the text-conditioned module's score when the
index has one. A reranked hit's
``score`` is ``S``, ``frame_score`` is ``M`` and ``frame_time`` the timestamp of its best frame;
its span is the best-scoring window *containing* that frame (a video hit), or the window itself
(a window hit), so playing from ``start`` shows the best frame within one window length.
Frames are scored against the frozen CLIP's text embedding (the fine-tuned text tower of a
checkpoint, if any, belongs to the checkpoint's video vectors, not to single frames).

Search by example (:meth:`VideoIndex.search_image`, :meth:`VideoIndex.search_video`): the image,
or the video decoded with the index's own sampler, is encoded with the index's CLIP (the same
resize as indexing) and pooled as the index pools its videos (an image is a one-frame video);
the result is searched like a text query's embedding. A video that is itself in the index
comes back first with score ~1: that is the expected answer, not a bug. Text-conditioned
modules are not applied to example queries (they were trained to condition on text); the first
stage is then the faiss cosine with the mean-pooled vectors.

Light runtime: ``vidclip index`` exports the model's text tower to ONNX inside the index
(``<index>/onnx/<identity>/text``, recorded in the catalog meta ``onnx_text``; it moves with the
index). :meth:`VideoIndex.open` then encodes text queries with ONNX Runtime
(:class:`~vidclip.models.clip.onnx_runtime.OnnxCLIP`): neither torch nor open_clip is imported
for a text search, with or without ``rerank`` (frames are scored in numpy). Example queries, a
temporal checkpoint, an index without a (matching, complete) export, ``runtime="torch"``, or no
onnxruntime: the torch model is loaded on first need, as before. Both give the same ranking (the
export is verified to 1e-5 on unit vectors).
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vidclip.core.errors import (
    ConfigError,
    IndexMismatchError,
    VidclipError,
    VideoDecodeError,
    display_path,
)
from vidclip.features.pooling import Pooler
from vidclip.index.catalog import Catalog
from vidclip.index.directory import IndexDir
from vidclip.index.filters import SearchFilters, parse_filters
from vidclip.index.queries import load_query_image, onnx_text_encoder
from vidclip.index.textsearch import TextHit, has_text, search_text
from vidclip.index.vectors import VectorIndex
from vidclip.retrieval.fusion import NORMS, fuse_ranking, parse_pool, pool_scores
from vidclip.retrieval.hybrid import rrf_depth, rrf_fuse, weighted_fuse
from vidclip.retrieval.vectors import l2_normalize

# Most candidates a two-stage search re-scores on their frames: 1000 x ~300 frames (5-minute
# videos at 1 fps) is 300k frames, ~0.3 GB of fp16 rows read at D = 512 (scored in chunks, so not
# held at once); the bound keeps one request's work and disk reads small.
MAX_RERANK = 1000

#: Search modes: the picture (CLIP), the words (names, subtitles, metadata: FTS5 BM25), or both fused.
MODES = ("visual", "text", "hybrid")
FUSIONS = ("rrf", "weighted")



@dataclass
class SearchHit:
    video_id: int
    path: str  # relative to VideoIndex.library_root (absolute when outside it)
    score: float  # cosine similarity of the query with the video (or window); fused score S when reranked
    start: float  # best-matching time span, seconds
    end: float
    duration: float  # of the whole video
    frame_time: float | None = None  # reranked: timestamp (s) of the best-scoring stored frame; else None
    frame_score: float | None = None  # reranked: pooled frame cosine M (before fusion); else None
    # text / hybrid modes: why it matched: {"visual": {"score", "rank"}, "text": {"score", "rank",
    # "kind" (name / subtitle / metadata), "source" (file, stream, key), "start", "end", "text",
    # "words"}}, each channel present when it found the video; None in visual mode
    match: dict | None = None

    def to_dict(self) -> dict:
        """The fields as a dict; ``frame_time`` / ``frame_score`` (a reranked hit) and ``match``
        (text and hybrid modes) only when set, so a plain search prints exactly what it always did."""
        d = asdict(self)
        for key in ("frame_time", "frame_score", "match"):
            if d[key] is None:
                del d[key]
        return d


class VideoIndex:
    """Read side of a library index: search, catalog lookups. Safe to use from several threads.

    Picks up a concurrent indexer's commits: every search checks the catalog generation and
    reloads (or rebuilds in memory) the faiss indexes when it moved.
    """

    rerank_depth = 100  # faiss candidates re-scored by a text-conditioned temporal module
    MAX_RERANK = MAX_RERANK

    def __init__(self, index_dir: str | os.PathLike | IndexDir, catalog: Catalog, clip, pooler: Pooler | None,
                 *, text_encoder=None, device: str | None = None):
        """``clip``/``pooler`` None: loaded from the index's model on first need (``device``);
        ``text_encoder``: an OnnxCLIP with the index's text tower, used for text queries."""
        self.dir = index_dir if isinstance(index_dir, IndexDir) else IndexDir(index_dir)
        self.index_dir = self.dir.path
        self.catalog = catalog
        self._clip = clip
        self._pooler = pooler
        self._device = device
        self.text_encoder = text_encoder
        self.identity: dict = catalog.get_meta("model")
        self.library_root = Path(catalog.get_meta("library_root") or self.dir.path)
        self.dim = int(self.identity["embed_dim"])
        self._lock = threading.RLock()
        self._shards: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # shard -> (emb, time) memory maps
        self._video_index: VectorIndex | None = None
        self._segment_index: VectorIndex | None = None
        self._generation = -1
        self._refresh()

    @classmethod
    def open(cls, index_dir: str | os.PathLike | IndexDir, *, clip=None, device: str | None = None,
             runtime: str = "auto") -> "VideoIndex":
        """Open an index (a path or an :class:`~vidclip.index.directory.IndexDir`); loads the model
        named in it (on ``device``, default cpu; "auto": cuda when available) unless ``clip`` is
        given (then it must match). ``runtime``: "auto" encodes text queries with the index's ONNX
        export when it has a usable one and loads the torch model only when something needs it
        (see the module docstring); "torch" always loads it."""
        if runtime not in ("auto", "torch"):
            raise ConfigError(f"runtime: expected 'auto' or 'torch', got {runtime!r}")
        index_dir = index_dir if isinstance(index_dir, IndexDir) else IndexDir(index_dir)
        index_dir.require_catalog()
        catalog = index_dir.open_catalog()
        model = catalog.get_meta("model")
        if model is None:
            catalog.close()
            raise VidclipError(f"{index_dir.path}: the index holds no videos yet (no model recorded)")
        if clip is None and runtime == "auto":
            onnx = onnx_text_encoder(index_dir, catalog)
            if onnx is not None:
                return cls(index_dir, catalog, None, None, text_encoder=onnx, device=device)
        if clip is None:
            # int8 features are searched with their own int8 encoder
            from vidclip.models.clip.onnx_encoder import load_for_identity

            clip = load_for_identity(model, device)
        elif clip.identity.key() != catalog.get_meta("model_key"):
            stored_key = catalog.get_meta("model_key")
            catalog.close()
            raise IndexMismatchError(
                f"{index_dir.path}: index built with model {model.get('name')!r} (key {stored_key}), "
                f"but the given model is {clip.identity.name!r} (key {clip.identity.key()})")
        pooler = Pooler.from_spec(catalog.get_meta("temporal") or {"name": "mean"}, clip)
        return cls(index_dir, catalog, clip, pooler)

    @property
    def clip(self):
        """The index's FrozenCLIP (loaded on first use when the index was opened for the light runtime)."""
        if self._clip is None:
            self._load_torch()
        return self._clip

    @property
    def pooler(self) -> Pooler:
        if self._pooler is None:
            self._load_torch()
        return self._pooler

    def _load_torch(self) -> None:
        """Load the index's model and pooler (the torch path), checked against the index."""
        with self._lock:
            if self._clip is not None and self._pooler is not None:
                return
            # int8 features are searched with their own int8 encoder
            from vidclip.models.clip.onnx_encoder import load_for_identity

            clip = load_for_identity(self.identity, self._device)
            if clip.identity.key() != self.catalog.get_meta("model_key"):
                raise IndexMismatchError(f"{self.index_dir}: the model loaded for this index ({clip.identity.name!r}) "
                                         "is not the one it was built with")
            self._pooler = Pooler.from_spec(self.catalog.get_meta("temporal") or {"name": "mean"}, clip)
            self._clip = clip

    def close(self) -> None:
        self.catalog.close()

    def __len__(self) -> int:
        return self.catalog.counts()["indexed"]

    def _refresh(self) -> None:
        gen = self.catalog.generation
        if gen == self._generation:
            return
        # Save a rebuilt faiss file only when no writer holds the index (it will save its own).
        lock = self.dir.lock()
        try:
            can_save = os.access(self.dir.path, os.W_OK) and lock.acquire()
        except VidclipError:  # e.g. .lock is a directory: search still works, it just saves nothing
            can_save = False
        try:
            if can_save:
                self.dir.remove_stale_temps()
            self._video_index = self.dir.sync_faiss(self.catalog, "videos", self.dim, save=can_save)
            self._segment_index = self.dir.sync_faiss(self.catalog, "segments", self.dim, save=can_save)
        finally:
            lock.release()
        self._generation = int(self._video_index.metadata.get("generation", gen))

    def _shard(self, shard: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Memory-mapped (emb float16 [N, D], time float64 [N]) of a committed shard, cached."""
        if shard not in self._shards or self._shards[shard][0].shape[0] < rows:
            emb, _, times = self.dir.open_shard(shard, rows=rows)
            self._shards[shard] = (emb, times)
        return self._shards[shard]

    def _frames(self, row: dict) -> np.ndarray:
        """Stored frame embeddings of one indexed video: float32 [T, D] (raw, not normalised)."""
        end = row["offset"] + row["count"]
        return np.asarray(self._shard(row["shard"], end)[0][row["offset"]:end], dtype=np.float32)

    # Frames scored per chunk: the fp16 rows of one chunk become float32 only there, so a
    # request's memory stays ~CHUNK x D x 4 bytes (32 MB at D = 512) however many frames it scores.
    _SCORE_CHUNK = 1 << 14

    def _score_frames(self, qf: np.ndarray, rows: list[dict], first, count) -> tuple[np.ndarray, np.ndarray]:
        """Cosine of ``qf`` with candidates' stored frames, candidate after candidate.

        qf: float32 [D], L2-normalised. Candidate ``i`` contributes frames ``first[i] :
        first[i] + count[i]`` of video ``rows[i]`` (positions within the video). Returns (sims
        float32 [sum(count)], time float64 [sum(count)]). The rows are gathered with one fancy
        index per shard and scored with one matrix-vector product per chunk; no per-frame loop.
        """
        n = len(rows)
        first = np.asarray(first, dtype=np.int64)
        count = np.asarray(count, dtype=np.int64)
        total = int(count.sum())
        start = np.array([r["offset"] for r in rows], dtype=np.int64) + first
        out_first = np.zeros(n, dtype=np.int64)
        np.cumsum(count[:-1], out=out_first[1:])
        owner = np.repeat(np.arange(n), count)  # candidate of each output row
        src = np.arange(total) - out_first[owner] + start[owner]  # row inside the candidate's shard
        names = [r["shard"] for r in rows]
        shard_ids = {name: j for j, name in enumerate(dict.fromkeys(names))}
        shard_of = np.array([shard_ids[name] for name in names], dtype=np.int64)[owner]
        sims = np.empty(total, np.float32)
        times = np.empty(total, np.float64)
        qf = np.asarray(qf, dtype=np.float32)
        for name, j in shard_ids.items():
            sel = np.flatnonzero(shard_of == j)
            if sel.size == 0:
                continue
            shard_emb, shard_time = self._shard(name, int(src[sel].max()) + 1)
            times[sel] = shard_time[src[sel]]
            for lo in range(0, sel.size, self._SCORE_CHUNK):
                part = sel[lo:lo + self._SCORE_CHUNK]
                x = np.asarray(shard_emb[src[part]], dtype=np.float32)  # [chunk, D]
                sims[part] = (x @ qf) / np.maximum(np.linalg.norm(x, axis=1), 1e-12)
        return sims, times

    def _rerank(self, qf: np.ndarray, rows: list[dict], first, count, init: np.ndarray, opts: dict
                ) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """CLIPRerank of n candidates (see the module docstring).

        qf: float32 [D] normalised frame query; rows/first/count: as :meth:`_score_frames`;
        init: float [n] first-stage scores, best first. Returns (order: candidate positions, best
        first; S float64 [n]; M float64 [n]; best frame's position within the video int64 [n];
        its time float64 [n]), the arrays indexed by candidate position (S is NaN, and the
        candidate keeps its slot, only for a candidate without frames).
        """
        n = len(rows)
        count = np.asarray(count, dtype=np.int64)
        sims, times = self._score_frames(qf, rows, first, count)  # [sum(count)] cosines
        m = pool_scores(sims, count, opts["pool"])
        # best frame of each candidate: sort by (candidate, -sim); the first row of each run wins
        # (lexsort is stable, so the earliest frame wins a tie)
        owner = np.repeat(np.arange(n), count)
        by_score = np.lexsort((-sims, owner))
        run_start = np.zeros(n, dtype=np.int64)
        np.cumsum(count[:-1], out=run_start[1:])
        has = count > 0
        best_row = np.zeros(n, dtype=np.int64)
        best_row[has] = by_score[run_start[has]]
        best_pos = np.where(has, best_row - run_start + np.asarray(first, dtype=np.int64), -1)
        best_time = np.where(has, times[best_row] if times.size else 0.0, np.nan)
        docids = [str(i) for i in range(n)]
        res = fuse_ranking(docids, init, m, alpha=opts["alpha"], depth=n, norm=opts["norm"])
        fused = np.array([res.fused.get(d, np.nan) for d in docids], dtype=np.float64)
        return [int(d) for d in res.order], fused, m, best_pos, best_time

    @staticmethod
    def _rerank_options(k: int, rerank: int, pool: str, alpha: float, norm: str) -> dict:
        """Check k and the two-stage options (ConfigError naming the bad one); returns the options."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ConfigError(f"search: k must be a positive whole number, got {k!r}")
        if isinstance(rerank, bool) or not isinstance(rerank, (int, np.integer)):
            raise ConfigError(f"search: rerank must be a whole number of candidates, got {rerank!r}")
        if not 0 <= rerank <= MAX_RERANK:
            raise ConfigError(f"search: rerank must be within 0..{MAX_RERANK} candidates, got {rerank}")
        if rerank and k > MAX_RERANK:  # max(N, k) candidates are re-scored: the bound holds for k too
            raise ConfigError(f"search: with rerank, k must be at most {MAX_RERANK}, got {k}")
        parse_pool(pool)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"search: alpha must be a number in [0, 1], got {alpha!r}")
        if norm not in NORMS:
            raise ConfigError(f"search: norm must be one of {', '.join(NORMS)}, got {norm!r}")
        return {"rerank": int(rerank), "pool": pool, "alpha": float(alpha), "norm": norm}

    def search(self, query: str, k: int = 10, *, segments: bool = False, rerank: int = 0, pool: str = "max",
               alpha: float = 0.4, norm: str = "minmax", mode: str | None = None, fusion: str = "rrf",
               text_weight: float = 0.5, path: str | None = None, min_duration: float | str | None = None,
               max_duration: float | str | None = None, modified_after=None, modified_before=None,
               meta=None) -> list[SearchHit]:
        """Top-k videos (or windows, ``segments=True``) for a text query, best first.

        ``rerank=N`` (0..MAX_RERANK): re-score the first stage's top max(N, k) on their stored
        frames and fuse (``pool``, ``alpha``, ``norm`` as :func:`vidclip.retrieval.fusion.fuse`: ``alpha``
        weighs the first-stage score, ``1 - alpha`` the frame score).

        ``mode``: "visual" (CLIP), "text" (the words of names, subtitles and metadata, BM25) or
        "hybrid" (both fused); None = "hybrid" when the index holds subtitles or metadata
        (:meth:`has_text`), else "visual" (and always "visual" for ``segments=True``, which ranks
        windows by the picture only). ``fusion``: "rrf" (reciprocal-rank fusion, k = 60) or
        "weighted" (min-max normalised scores, ``text_weight`` for the words and
        ``1 - text_weight`` for the picture); see :meth:`_fuse`.

        Filters (:mod:`vidclip.index.filters`; all AND): ``path`` (GLOB over the library-relative
        or absolute path), ``min_duration`` / ``max_duration`` (seconds), ``modified_after`` /
        ``modified_before`` (ISO date or datetime), ``meta`` ({key: value} or ["KEY=VALUE", ...]).
        They restrict the vector search itself, so ``k`` hits come back when ``k`` videos match.
        A bad value is a ConfigError naming the keyword.
        """
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("search: the query text is empty")
        opts = self._rerank_options(k, rerank, pool, alpha, norm)
        filters = parse_filters(path, min_duration, max_duration, modified_after, modified_before, meta)
        fuse = self._fusion_options(fusion, text_weight)
        with self._lock:
            self._refresh()
            mode = self._mode(mode, segments)
            allowed = self._allowed(filters, segments)
            if mode == "text":  # no query embedding needed
                return self._hybrid(query, k, [], allowed, "text", fuse)
            if self.text_encoder is not None:  # the light runtime: the mean pooler, no torch
                raw, conditioned, mean = None, False, True
                q = l2_normalize(self.text_encoder.encode_text([query]))[0]
            else:
                raw, conditioned = self.pooler.encode_query(query), self.pooler.conditioned
                mean = self.pooler.spec.get("name", "mean") == "mean"
                q = l2_normalize(raw.cpu().numpy())[0]
            qf = None
            if opts["rerank"]:
                # frames are frozen-CLIP embeddings: score them with the frozen CLIP text tower
                qf = q if mean else l2_normalize(self.clip.encode_text([query]).float().cpu().numpy())[0]
            if segments:
                return self._search_segments(q, k, qf, opts, allowed)
            depth = k if mode == "visual" else max(k, rrf_depth())
            visual = self._search_videos(q, depth, raw if conditioned else None, qf, opts, allowed)
            return visual if mode == "visual" else self._hybrid(query, k, visual, allowed, "hybrid", fuse)

    # ------------------------------------------------------------------ words, filters, fusion

    def has_text(self) -> bool:
        """Whether the index holds subtitles or metadata words (names alone do not count)."""
        return self.catalog.has_text_tables() and has_text(self.catalog.conn)

    def _mode(self, mode: str | None, segments: bool) -> str:
        if mode is None:
            return "visual" if segments or not self.has_text() else "hybrid"
        if mode not in MODES:
            raise ConfigError(f"search: mode must be one of {', '.join(MODES)}, got {mode!r}")
        if segments and mode != "visual":
            raise ConfigError(f"search: mode {mode!r} ranks whole videos; windows (segments) are ranked by the "
                              "picture only (mode 'visual')")
        if mode != "visual" and not self.catalog.has_text_tables():
            raise ConfigError(f"{display_path(self.index_dir)}: this index has no text channel yet (made by an "
                              "older vidclip); run `vidclip index` on its library once to add it, or use mode 'visual'")
        return mode

    @staticmethod
    def _fusion_options(fusion: str, text_weight: float) -> dict:
        if fusion not in FUSIONS:
            raise ConfigError(f"search: fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        if isinstance(text_weight, bool) or not isinstance(text_weight, (int, float, np.floating)) \
                or not 0.0 <= text_weight <= 1.0:
            raise ConfigError(f"search: text_weight must be a number in [0, 1], got {text_weight!r}")
        return {"fusion": fusion, "text_weight": float(text_weight)}

    def _allowed(self, filters: SearchFilters, segments: bool = False) -> np.ndarray | None:
        """The faiss ids (videos, or windows with ``segments``) that ``filters`` let through; None: all."""
        if not filters:
            return None
        return filters.segment_ids(self.catalog.conn) if segments else filters.video_ids(self.catalog.conn)

    def _faiss(self, index: VectorIndex, q: np.ndarray, k: int, allowed: np.ndarray | None):
        """faiss top-k, restricted to ``allowed`` ids when given (inside the search: k hits when k match)."""
        if allowed is None:
            return index.search(q, k)
        if allowed.size == 0:
            return np.full((1, k), -np.inf, np.float32), np.full((1, k), -1, np.int64)
        return index.search(q, k, allowed_ids=allowed)

    def _hybrid(self, query: str, k: int, visual: list[SearchHit], allowed: np.ndarray | None, mode: str,
                fuse: dict) -> list[SearchHit]:
        """Fuse ``visual`` (hits best first, cut at max(k, 61)) with the text channel's BM25 ranking of
        as many videos, and describe why each hit matched.

        RRF: score = 1 / (60 + visual rank) + 1 / (60 + text rank), over the channels that found
        the video. Weighted: ``(1 - text_weight) * minmax(cosine) + text_weight * minmax(bm25)``.
        Either way a video both channels found ranks above every video one channel found (with
        lists cut at 61, RRF guarantees it; past that, and for weighted fusion, it is imposed:
        :func:`vidclip.retrieval.hybrid.rrf_fuse` ``agreement_first``). The moment of a hit is the
        subtitle cue that matched when the words matched a cue, else the visual best window
        (text only: the whole video).
        """
        depth = k if mode == "text" else max(k, rrf_depth())
        texts: dict[int, TextHit] = {h.video_id: h for h in search_text(self.catalog.conn, query, depth, allowed)}
        if not texts and mode == "hybrid":
            ranked = [(h.video_id, h.score) for h in visual[:k]]
        elif mode == "text":
            ranked = [(vid, h.score) for vid, h in texts.items()]
        elif fuse["fusion"] == "rrf":
            fused = rrf_fuse({"visual": [h.video_id for h in visual], "text": list(texts)}, agreement_first=True)
            ranked = [(f.id, f.score) for f in fused[:k]]
        else:
            w = fuse["text_weight"]
            fused = weighted_fuse({"visual": {h.video_id: h.score for h in visual},
                                   "text": {vid: h.score for vid, h in texts.items()}},
                                  {"visual": 1.0 - w, "text": w}, agreement_first=True)
            ranked = [(f.id, f.score) for f in fused[:k]]
        by_visual = {h.video_id: (rank, h) for rank, h in enumerate(visual, 1)}
        text_rank = {vid: rank for rank, vid in enumerate(texts, 1)}
        rows = self.catalog.videos_by_ids([vid for vid, _ in ranked if vid not in by_visual])
        hits = []
        for vid, score in ranked:
            match: dict = {}
            if vid in by_visual:
                rank, v = by_visual[vid]
                match["visual"] = {"score": v.score, "rank": rank}
                hit = SearchHit(vid, v.path, float(score), v.start, v.end, v.duration, v.frame_time, v.frame_score)
            else:
                row = rows.get(vid)
                if row is None or row["status"] != "indexed":
                    continue
                duration = float(row["duration"] or 0.0)
                hit = SearchHit(vid, self._display_path(row), float(score), 0.0, duration, duration)
            t = texts.get(vid)
            if t is not None:
                match["text"] = {"score": t.score, "rank": text_rank[vid], "kind": t.kind, "source": t.source,
                                 "start": t.start, "end": t.end, "text": t.text, "words": list(t.words)}
                if t.kind == "subtitle" and t.start is not None:
                    hit.start, hit.end = float(t.start), float(t.end)
            hit.match = match
            hits.append(hit)
        return hits

    def search_image(self, image, k: int = 10, *, segments: bool = False, rerank: int = 0, pool: str = "max",
                     alpha: float = 0.4, norm: str = "minmax", **filters) -> list[SearchHit]:
        """Top-k videos (or windows) for an example image: a PIL image, a file path or the file's bytes.
        ``filters``: the filter keywords of :meth:`search` (``path`` there is the filter's GLOB).

        The image is pooled as a one-frame video (see the module docstring); a picture over the
        decoding pixel limit, or bytes that are not an image, is a ConfigError naming the file.
        """
        opts = self._rerank_options(k, rerank, pool, alpha, norm)
        checked = _filters(filters)
        frames = load_query_image(image, min_side=self.clip.image_size)  # decoded near the model's size
        with self._lock:
            self._refresh()
            return self._search_example(self._encode_frames(frames), k, segments, opts,
                                        self._allowed(checked, segments))

    def search_video(self, path: str | os.PathLike, /, k: int = 10, *, segments: bool = False, rerank: int = 0,
                     pool: str = "max", alpha: float = 0.4, norm: str = "minmax", backend: str = "auto",
                     **filters) -> list[SearchHit]:
        """Top-k videos (or windows) for an example video, decoded with the index's sampler.
        ``filters``: the filter keywords of :meth:`search` (``path`` there is the filter's GLOB).

        The video's frames are pooled as the index pools its own; an indexed video finds itself
        first (score ~1). A file that cannot be decoded is a VideoDecodeError naming it.
        """
        from vidclip.encode.worker import Failure, iter_encoded
        from vidclip.video.sample import SamplerConfig

        opts = self._rerank_options(k, rerank, pool, alpha, norm)
        checked = _filters(filters)
        p = Path(path).expanduser()
        if not p.is_file():
            raise VideoDecodeError(p, "no such file")
        sampler = SamplerConfig.from_dict(self.catalog.get_meta("sampler") or {})
        with self._lock:
            self._refresh()
            (result,) = list(iter_encoded([(str(p), str(p))], self.clip, sampler, workers=0, backend=backend,
                                          progress=False))
            if isinstance(result, Failure):
                raise VideoDecodeError(p, result.reason)
            emb = result.emb.detach().float().cpu().numpy()
            if emb.shape[0] == 0:
                raise VideoDecodeError(p, "no frames could be decoded")
            return self._search_example(emb, k, segments, opts, self._allowed(checked, segments))

    def _encode_frames(self, frames) -> np.ndarray:
        """uint8 [N, H, W, 3] torch frames -> raw CLIP embeddings float32 [N, D], resized as indexing does."""
        from vidclip.models.clip.preprocess import resize_center_crop

        small = resize_center_crop(frames, self.clip.image_size)  # what the decode workers hand the encoder
        return self.clip.encode_frames(small.to(self.clip.device)).float().cpu().numpy()

    def _search_example(self, emb: np.ndarray, k: int, segments: bool, opts: dict,
                        allowed: np.ndarray | None = None) -> list[SearchHit]:
        """Search with the frames of an example, emb float32 [T, D] (raw)."""
        emb = emb.astype(np.float16).astype(np.float32)  # as stored: an indexed frame matches itself exactly
        q = self.pooler.video_and_windows(emb, [])[0]
        qf = Pooler().pool([emb])[0] if opts["rerank"] else None  # the mean: frames are frozen-CLIP embeddings
        if segments:
            return self._search_segments(q, k, qf, opts, allowed)
        return self._search_videos(q, k, None, qf, opts, allowed)

    def _search_segments(self, q: np.ndarray, k: int, qf: np.ndarray | None = None, opts: dict | None = None,
                         allowed: np.ndarray | None = None) -> list[SearchHit]:
        rerank = opts["rerank"] if opts else 0
        scores, ids = self._faiss(self._segment_index, q, max(k, rerank), allowed)
        keep = ids[0] >= 0
        seg_rows = self.catalog.segments_by_ids(ids[0][keep])
        videos = self.catalog.videos_by_ids({r["video_id"] for r in seg_rows.values()})
        cand = []  # (segment row, video row, first-stage score), best first
        for sid, score in zip(ids[0][keep].tolist(), scores[0][keep].tolist()):
            seg = seg_rows.get(sid)
            row = videos.get(seg["video_id"]) if seg else None
            if row is None or row["status"] != "indexed":
                continue
            cand.append((seg, row, float(score)))
        extra = [(None, None)] * len(cand)
        if rerank and cand:
            order, fused, m, _, best_time = self._rerank(
                qf, [c[1] for c in cand], [c[0]["first"] for c in cand], [c[0]["count"] for c in cand],
                np.array([c[2] for c in cand]), opts)
            cand = [(cand[i][0], cand[i][1], cand[i][2] if np.isnan(fused[i]) else float(fused[i])) for i in order]
            extra = [(None, None) if np.isnan(fused[i]) else (float(best_time[i]), float(m[i])) for i in order]
        return [SearchHit(row["id"], self._display_path(row), score, float(seg["start"]), float(seg["end"]),
                          float(row["duration"] or 0.0), frame_time=ft, frame_score=fs)
                for (seg, row, score), (ft, fs) in list(zip(cand, extra))[:k]]

    def _search_videos(self, q: np.ndarray, k: int, raw=None, qf: np.ndarray | None = None,
                       opts: dict | None = None, allowed: np.ndarray | None = None) -> list[SearchHit]:
        """``raw``: the raw text embedding for a text-conditioned module's re-scoring (None: faiss only)."""
        rerank = opts["rerank"] if opts else 0
        depth = max(k, rerank)
        conditioned = raw is not None and self.pooler.conditioned  # raw is None on the light runtime
        scores, ids = self._faiss(self._video_index, q, max(depth, self.rerank_depth) if conditioned else depth,
                                  allowed)
        keep = ids[0] >= 0
        cand, cand_scores = ids[0][keep].tolist(), scores[0][keep]
        rows = self.catalog.videos_by_ids(cand)
        order = [i for i, vid in enumerate(cand) if vid in rows and rows[vid]["status"] == "indexed"]
        cand, cand_scores = [cand[i] for i in order], cand_scores[order].astype(np.float64)
        if conditioned and cand:
            cand_scores = self.pooler.conditioned_scores(raw, [self._frames(rows[v]) for v in cand]).astype(np.float64)
            best = np.argsort(-cand_scores, kind="stable")
            cand, cand_scores = [cand[i] for i in best], cand_scores[best]
        cand, cand_scores = cand[:depth], cand_scores[:depth]
        frame_pos: dict[int, int] = {}  # reranked video -> position of its best frame
        extra: dict[int, tuple[float, float]] = {}  # reranked video -> (frame_time, frame_score)
        if rerank and cand:
            order, fused, m, best_pos, best_time = self._rerank(
                qf, [rows[v] for v in cand], np.zeros(len(cand), np.int64), [rows[v]["count"] for v in cand],
                cand_scores, opts)
            for i, vid in enumerate(cand):
                if not np.isnan(fused[i]):
                    cand_scores[i] = fused[i]
                    frame_pos[vid] = int(best_pos[i])
                    extra[vid] = (float(best_time[i]), float(m[i]))
            cand, cand_scores = [cand[i] for i in order], cand_scores[order]
        cand, cand_scores = cand[:k], cand_scores[:k]
        windows = self.catalog.segments_of(cand, self.dim)
        hits = []
        for vid, score in zip(cand, cand_scores.tolist()):
            row = rows[vid]
            segs, vecs = windows.get(vid, ([], None))
            if segs:
                win_scores = vecs @ q
                if vid in frame_pos:  # the best window among those holding the best frame
                    p = frame_pos[vid]
                    holds = np.array([s["first"] <= p < s["first"] + s["count"] for s in segs])
                    if holds.any():
                        win_scores = np.where(holds, win_scores, -np.inf)
                best = int(np.argmax(win_scores))
                start, end = float(segs[best]["start"]), float(segs[best]["end"])
            else:
                start, end = 0.0, float(row["duration"] or 0.0)
            ft, fs = extra.get(vid, (None, None))
            hits.append(SearchHit(vid, self._display_path(row), float(score), start, end,
                                  float(row["duration"] or 0.0), frame_time=ft, frame_score=fs))
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


def _filters(given: dict) -> SearchFilters:
    """The filter keywords of :meth:`VideoIndex.search` given to an example search, checked."""
    unknown = sorted(set(given) - {"path", "min_duration", "max_duration", "modified_after", "modified_before", "meta"})
    if unknown:
        raise ConfigError(f"search: unknown keyword {unknown[0]!r}")
    return parse_filters(**given)
