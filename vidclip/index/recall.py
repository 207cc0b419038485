"""Recall check of an index's approximate faiss designs against exact search.

Recall: :func:`check_recall` (``vidclip index --check-recall DIR``) measures recall@k of both faiss
indexes against exact search over the same stored vectors, so an approximate design (IVF, HNSW,
PQ, chosen by ``--design``) and its search knobs (``--search-params nprobe=16,efSearch=64``,
recorded in the catalog) can be checked on the library itself.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from vidclip.core.errors import ConfigError, IndexMismatchError, VidclipError
from vidclip.features.pooling import Pooler
from vidclip.index.catalog import Catalog
from vidclip.index.designs import format_search_params, parse_search_params
from vidclip.index.directory import IndexDir
from vidclip.index.exact import recall_at_k
from vidclip.index.vectors import VectorIndex

RECALL_QUERIES = 200  # default number of queries of check_recall
RECALL_TIE_TOL = 1e-6  # cosine gap below which a result ties with the exact k-th one (float rounding)


def _frame_queries(catalog: Catalog, index_dir: IndexDir, num_queries: int, seed: int) -> np.ndarray:
    """Stored frame embeddings drawn uniformly (without replacement) from all frames of the indexed
    videos: float32 [min(num_queries, frames), D], raw (recall_at_k normalises them)."""
    rows = catalog.videos(status="indexed")
    counts = np.array([r["count"] for r in rows], dtype=np.int64)
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    pick = np.sort(np.random.default_rng(seed).choice(total, size=min(num_queries, total), replace=False))
    which = np.searchsorted(ends, pick, side="right")  # the video each picked frame belongs to
    offsets = np.array([r["offset"] for r in rows], dtype=np.int64)[which] + (pick - (ends - counts)[which])
    shards = np.array([r["shard"] for r in rows], dtype=object)[which]
    out = None
    need = np.array([r["offset"] + r["count"] for r in rows], dtype=np.int64)[which]
    for shard in sorted(set(shards.tolist())):  # one memory-mapped read per shard, not per frame
        emb = index_dir.open_shard(shard, rows=int(need[shards == shard].max()))[0]
        sel = shards == shard
        if out is None:
            out = np.empty((len(pick), emb.shape[1]), np.float32)
        out[sel] = emb[offsets[sel]]
    return out if out is not None else np.zeros((0, 0), np.float32)


def _faiss_recall(catalog: Catalog, index_dir: IndexDir, kind: str, dim: int, queries: np.ndarray, k: int,
                  tie_tol: float, search_params: dict[str, int]) -> tuple[VectorIndex, int, float]:
    """(faiss index as a reader would serve it, its number of vectors, its recall@k) at one catalog
    generation. The exact side streams the stored vectors chunk by chunk (``Catalog.iter_vectors``)
    inside one read transaction, so checking millions of vectors never holds them all."""
    for _ in range(5):  # a concurrent indexer may commit between the two reads: retry until they agree
        index = index_dir.sync_faiss(catalog, kind, dim, save=False)
        index.set_search_params(search_params, only_applicable=True)
        with catalog.conn:
            catalog.conn.execute("BEGIN")
            if index.metadata.get("generation") != catalog.generation:
                continue
            n = catalog.count_vectors(kind)
            recall = recall_at_k(index, lambda: catalog.iter_vectors(kind, dim), queries, k, tie_tol=tie_tol)
            return index, n, recall
    raise VidclipError(f"{index_dir.path}: the index kept changing while its recall was being checked; try again")


def check_recall(
    index_dir: str | os.PathLike,
    k: int = 10,
    num_queries: int = RECALL_QUERIES,
    seed: int = 0,
    *,
    texts: Sequence[str] | None = None,
    clip=None,
    search_params: str | Mapping[str, int] | None = None,
    tie_tol: float = RECALL_TIE_TOL,
) -> dict:
    """Recall@k of an index's faiss indexes (videos and segments) against exact search.

    Each faiss index is taken as a reader would serve it (the saved file, or rebuilt in memory when
    stale; nothing is written) and compared with exact inner-product search over the same stored
    vectors (the catalog's), by :func:`~vidclip.index.exact.recall_at_k`: per query,
    |approx top-k ∩ exact top-k| / k, ties at rank k (duplicates, rounding within ``tie_tol``) counted
    as hits. A ``Flat`` design is exact, so it must report 1.0.

    Queries: by default ``num_queries`` stored frame embeddings, drawn uniformly without replacement
    from all frames of the indexed videos (``seed``). A single frame is never one of the indexed
    vectors (those are means over a video or window, except a one-frame window), but comes from the
    same distribution, like a held-out video. Text queries are further from every video than a frame
    is (CLIP's image-text modality gap), which can make approximate search harder; pass ``texts``
    (encoded with the index's model and query tower; ``clip`` to reuse a loaded model) to measure on
    real queries. ``search_params`` (``"nprobe=64"``, ``{"efSearch": 128}``): measure at other knobs
    than the index's own (each index takes those its design has).

    Returns {"index", "k", "queries", "query_source", "seed", "random_weights", "videos": {...},
    "segments": {...}}
    where each of "videos" / "segments" holds design, requested, search_params (the knobs measured,
    as a string), nprobe, ef_search, vectors, exact (bool), recall and a one-line verdict.
    """
    index_dir = IndexDir(index_dir)
    if isinstance(k, bool) or int(k) != k or k <= 0:
        raise ConfigError(f"check_recall: k must be a positive integer, got {k!r}")
    if texts is None and (isinstance(num_queries, bool) or int(num_queries) != num_queries or num_queries <= 0):
        raise ConfigError(f"check_recall: the number of queries must be a positive integer, got {num_queries!r}")
    search_params = parse_search_params(search_params)
    index_dir.require_catalog()
    with index_dir.open_catalog(readonly=True) as catalog:
        model = catalog.get_meta("model")
        if model is None or catalog.counts()["indexed"] == 0:
            raise VidclipError(f"{index_dir.path}: the index holds no videos; nothing to check")
        dim = int(model["embed_dim"])
        if texts is not None:
            texts = [t.strip() for t in texts if t and t.strip()]
            if not texts:
                raise ConfigError("check_recall: no text queries given (all empty)")
            queries = _text_queries(catalog, model, texts, clip)
            source = "texts"
        else:
            queries = _frame_queries(catalog, index_dir, int(num_queries), seed)
            source = "frames"
        result = {"index": str(index_dir.path), "k": int(k), "queries": int(len(queries)), "query_source": source,
                  "seed": int(seed) if source == "frames" else None,
                  "random_weights": bool(model.get("random_weights"))}
        for kind, label in (("videos", "video"), ("segments", "segment")):
            index, n, recall = _faiss_recall(catalog, index_dir, kind, dim, queries, int(k), tie_tol, search_params)
            result[kind] = _recall_entry(label, index, catalog.get_meta(f"design_{kind}", "auto"), n,
                                         recall, int(k), len(queries), source)
        return result


def _text_queries(catalog: Catalog, model: dict, texts: list[str], clip) -> np.ndarray:
    """Text embeddings [Q, D] as search computes them (the index's model; a checkpoint's text tower)."""
    if clip is None:
        from vidclip.models.clip.load import load_clip_from_identity

        clip = load_clip_from_identity(model)
    elif clip.identity.key() != catalog.get_meta("model_key"):
        raise IndexMismatchError(f"check_recall: the index was built with model {model.get('name')!r}, "
                                 f"the given model is {clip.identity.name!r}")
    pooler = Pooler.from_spec(catalog.get_meta("temporal") or {"name": "mean"}, clip)
    return np.stack([pooler.encode_query(t).cpu().numpy() for t in texts]).astype(np.float32)


def _recall_entry(label: str, index: VectorIndex, requested: str, n: int, recall: float, k: int, q: int,
                  source: str) -> dict:
    exact = index.design.strip() == "Flat"
    params = index.search_params
    knobs = f" {format_search_params(params)}" if params else ""
    notes = []
    if requested.strip().lower() != index.design.strip().lower():
        notes.append(f"requested {requested}")
    if exact:
        notes.append("exact search")
    verdict = (f"{label} index {index.design}{knobs}: recall@{k} = {recall:.3f} over {q} {source[:-1]} queries "
               f"({n} vectors{'; ' + ', '.join(notes) if notes else ''})")
    return {"design": index.design, "requested": requested, "search_params": format_search_params(params),
            "nprobe": params.get("nprobe"), "ef_search": params.get("efSearch"),
            "vectors": int(n), "exact": exact, "recall": round(float(recall), 6), "verdict": verdict}
