"""Exact inner-product search, recall@k of an approximate index against it, and chunk sources.

numpy only (no faiss): the reference that :class:`~vidclip.index.vectors.VectorIndex` is measured
against and falls back to. Both sides normalise rows with
:func:`vidclip.retrieval.vectors.l2_normalize`, so inner products are cosine similarities.

* :func:`exact_search` — exact top-k by matmul + argpartition, in row chunks (a running
  :class:`_TopK`), so memory is one chunk of scores.
* chunk sources: a callable starting a pass of ``(ids int64 [C], vectors [C, D])`` steps
  (:func:`array_chunks` over an array; ``Catalog.iter_vectors`` over the catalog) and
  :func:`sample_chunks`, a seeded uniform sample drawn in one pass.
* :func:`recall_at_k` — k-recall@k of any index with ``search(queries, k)`` against exact search,
  streaming the exact side chunk by chunk.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from vidclip.core.errors import ConfigError
from vidclip.retrieval.vectors import l2_normalize

CHUNK_ROWS = 65_536  # rows per step of a chunk source / normalised at a time: bounds the temporary copy


def exact_search(vectors, queries, k: int, ids=None, *, chunk: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with numpy: matmul + argpartition, in row chunks.

    vectors float [N, D], queries float [Q, D] (used as given: normalise them first for
    cosine). Returns (scores float32 [Q, k], ids int64 [Q, k]) best first; ``ids`` maps rows to
    ids (default: row numbers); missing entries (k > N) are -1 with score -inf.
    """
    vectors = np.asarray(vectors)
    top = _TopK(queries, k)
    for lo in range(0, vectors.shape[0], chunk):
        block = np.asarray(vectors[lo:lo + chunk], dtype=np.float32)
        top.update(top.queries @ block.T, lo)
    scores, rows = top.result()
    if ids is not None and vectors.shape[0]:
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)
    return scores, rows


class _TopK:
    """Running exact top-k of queries [Q, D] over score blocks [Q, C] seen one after another."""

    def __init__(self, queries, k: int):
        queries = np.asarray(queries, dtype=np.float32)
        self.queries = queries[None, :] if queries.ndim == 1 else queries
        self.k = int(k)
        q = self.queries.shape[0]
        self.best_s = np.full((q, 0), -np.inf, dtype=np.float32)
        self.best_i = np.zeros((q, 0), dtype=np.int64)

    def update(self, s: np.ndarray, first: int | None = None, block_ids=None) -> None:
        """Merge scores s [Q, C] of C candidates: rows ``first..first+C-1`` or ids ``block_ids`` [C]."""
        q, c = s.shape
        if c == 0:
            return
        kk = min(self.k, c)
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < c else np.broadcast_to(np.arange(c), (q, c))
        cand = part + first if block_ids is None else np.asarray(block_ids, dtype=np.int64)[part]
        self.best_s = np.concatenate([self.best_s, np.take_along_axis(s, part, axis=1)], axis=1)
        self.best_i = np.concatenate([self.best_i, cand], axis=1)
        if self.best_s.shape[1] > self.k:  # keep only the running top-k
            keep = np.argpartition(-self.best_s, self.k - 1, axis=1)[:, :self.k]
            self.best_s = np.take_along_axis(self.best_s, keep, axis=1)
            self.best_i = np.take_along_axis(self.best_i, keep, axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 [Q, k], ids int64 [Q, k]) best first; -inf / -1 pads when fewer than k were seen."""
        order = np.argsort(-self.best_s, axis=1, kind="stable")
        best_s = np.take_along_axis(self.best_s, order, axis=1)
        best_i = np.take_along_axis(self.best_i, order, axis=1)
        q, pad = best_s.shape[0], self.k - best_s.shape[1]
        if pad > 0:
            best_s = np.concatenate([best_s, np.full((q, pad), -np.inf, np.float32)], axis=1)
            best_i = np.concatenate([best_i, np.full((q, pad), -1, np.int64)], axis=1)
        return best_s.astype(np.float32), best_i.astype(np.int64)


def array_chunks(vectors, ids=None, chunk: int = CHUNK_ROWS) -> Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]:
    """A chunk source over in-memory vectors [N, D] (ids [N], default 0..N-1): a callable that starts
    a fresh pass of (ids int64 [C], vectors [C, D]) steps, as :meth:`~vidclip.index.vectors.VectorIndex.fill` and
    :func:`recall_at_k` take (the catalog's counterpart is ``Catalog.iter_vectors``)."""
    vectors = np.asarray(vectors)
    n = vectors.shape[0]
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape[0] != n:
        raise ConfigError(f"vector index: {n} vectors but {ids.shape[0]} ids")
    return lambda: ((ids[lo:lo + chunk], vectors[lo:lo + chunk]) for lo in range(0, n, chunk))


def sample_chunks(chunks: Iterable[tuple[np.ndarray, np.ndarray]], n: int, size: int, seed: int = 0) -> np.ndarray:
    """A uniform random sample without replacement of ``size`` of the ``n`` vectors a chunk pass yields,
    in pass order: float32 [min(size, n), D], taken in one pass holding only the sample (the rows are
    drawn up front as positions 0..n-1; a pass that yields fewer than n vectors gives fewer rows)."""
    size = min(int(size), int(n))
    pick = np.sort(np.random.default_rng(seed).choice(int(n), size, replace=False)) if size < n else np.arange(n)
    out, filled, seen = None, 0, 0
    for _, block in chunks:
        c = len(block)
        lo, hi = np.searchsorted(pick, [seen, seen + c])
        if hi > lo:
            if out is None:  # one buffer of the sample's size: no second copy to concatenate
                out = np.empty((size, np.shape(block)[1]), np.float32)
            out[filled:filled + hi - lo] = block[pick[lo:hi] - seen]
            filled += int(hi - lo)
        seen += c
        if hi == len(pick):
            break
    return out[:filled] if out is not None else np.zeros((0, 0), np.float32)


def recall_at_k(index, exact_vectors, queries, k: int = 10, ids=None, *,
                tie_tol: float | None = None) -> float:
    """k-recall@k of ``index`` against exact search: mean over queries of |approx top-k ∩ exact top-k| / k.

    ``index``: anything with ``search(queries [Q, D], k) -> (scores [Q, k], ids int64 [Q, k])``
    (a :class:`~vidclip.index.vectors.VectorIndex`; ids -1 are empty slots).

    ``exact_vectors``: the vectors the index holds, either an array [N, D] (row r has id ``ids[r]``,
    default r) or a chunk source (a callable starting a pass of (ids [C], vectors [C, D]) steps, e.g.
    over ``Catalog.iter_vectors``; ``ids`` unused), so millions of vectors are compared chunk by chunk
    without holding them all. queries [Q, D]; both sides see them L2-normalised, as the index does.
    When N < k a query's denominator is N.

    ``tie_tol``: None (default) counts only ids in the exact top-k (the definition BENCHMARKS.md
    uses). A float also counts a returned id whose exact score is within ``tie_tol`` of the k-th
    exact score: with duplicate vectors (identical clips, static windows) or float rounding (the
    index and numpy sum in different orders) several ids tie at rank k and exact search keeps an
    arbitrary one of them, which must not read as a miss (ann-benchmarks counts recall the same way).
    """
    queries = l2_normalize(queries)
    chunks = exact_vectors if callable(exact_vectors) else array_chunks(exact_vectors, ids)
    _, got = index.search(queries, k)  # [Q, k]
    top = _TopK(queries, k)
    got_s = np.full(got.shape, -np.inf, np.float32)  # exact score of each returned id (-inf: unknown id)
    got_flat = got.reshape(-1)
    for block_ids, block in chunks():
        block = l2_normalize(block) if len(block) else np.zeros((0, queries.shape[1]), np.float32)
        s = queries @ block.T  # [Q, C]
        top.update(s, block_ids=block_ids)
        if tie_tol is not None and len(block_ids):
            order = np.argsort(block_ids, kind="stable")
            pos = np.clip(np.searchsorted(block_ids[order], got_flat), 0, len(block_ids) - 1)
            found = (got_flat >= 0) & (block_ids[order][pos] == got_flat)
            if found.any():
                qi = np.nonzero(found)[0] // got.shape[1]
                got_s.reshape(-1)[found] = s[qi, order[pos[found]]]
    truth_s, truth = top.result()
    valid_t = truth >= 0  # [Q, k]; False only where N < k
    per_query = valid_t.sum(axis=1)
    denom = int(per_query.sum())
    if not denom:
        return 1.0
    hit = ((got[:, :, None] == truth[:, None, :]) & valid_t[:, None, :]).any(axis=2) & (got >= 0)  # [Q, k]
    if tie_tol is not None:
        kth = truth_s[np.arange(len(truth_s)), np.maximum(per_query - 1, 0)]
        hit |= (got >= 0) & (got_s >= kth[:, None] - tie_tol)
    # a query cannot score more hits than it has exact neighbours (guards against repeated ids)
    return float(np.minimum(hit.sum(axis=1), per_query).sum() / denom)
