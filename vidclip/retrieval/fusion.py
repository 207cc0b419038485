"""CLIPRerank's math: pooling frame scores, per-topic normalisation and fusion (arXiv 2401.08449).

Pure numpy over score arrays, shared by the index's two-stage search (:mod:`vidclip.index.search`)
and the reranking of another system's runs (:mod:`vidclip.rerank`). For a topic ``q`` and a
candidate ``v`` with frames ``f_1..f_T`` (only those inside the shot's span for shot-level
documents):

- frame score ``s(q, f) = cos(text(q), image(f))`` (computed by the callers, which hold the frames);
- candidate score ``M(q, v) = pool_t s(q, f_t)`` with ``max`` (the paper's), ``mean`` or
  ``topk:K`` (mean of the K best frames, all frames when fewer): :func:`pool_scores`;
- fused score ``S = alpha * norm(S_init) + (1 - alpha) * norm(M)`` (:func:`fuse`): alpha weighs
  the initial ranking's score, as in the paper, whose ``S_re = a * M(q, v) + (1 - a) * S(q, v)``,
  a = 0.4, names the initial model's score M and the CLIP score S (the letters are the other way
  round here: M is the CLIP score); so by default CLIP weighs 0.6. Both are normalised per topic
  over the reranked candidates (the first ``depth`` of the initial ranking that have frames), with
  ``none``, ``minmax`` ((x - min) / (max - min); 0 when all are equal), ``zscore`` ((x - mean) /
  std, population std; 0 when constant) or ``rank`` ((n - r) / (n - 1) with r the 1-based rank,
  ties averaged; 1 when n = 1): :func:`normalize`.

Ordering (:func:`fuse_ranking`): the reranked block is sorted by S (stable: equal S keep their
initial order); a candidate in the block whose frames could not be found keeps its slot (its
original position); candidates below ``depth`` follow in their initial order.

Pooling uses segment reductions over a padded [n, T_max] array: no per-frame Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidclip.core.errors import ConfigError

POOLS = ("max", "mean", "topk:K")
NORMS = ("none", "minmax", "zscore", "rank")


def parse_pool(pool: str) -> tuple[str, int]:
    """"max" | "mean" | "topk:K" -> (name, K) (K = 0 unless topk)."""
    if pool in ("max", "mean"):
        return pool, 0
    if isinstance(pool, str) and pool.startswith("topk:"):
        try:
            k = int(pool[5:])
        except ValueError:
            k = 0
        if k > 0:
            return "topk", k
    raise ConfigError(f"--pool must be max, mean or topk:K with K a positive integer, got {pool!r}")


def pool_scores(sims: np.ndarray, counts: np.ndarray, pool: str = "max") -> np.ndarray:
    """Pool frame scores per candidate.

    sims: float [sum(counts)], candidates' frame scores one candidate after another;
    counts: int [n] frames per candidate. Returns float64 [n]; NaN for a candidate with 0 frames.
    """
    name, k = parse_pool(pool)
    counts = np.asarray(counts, dtype=np.int64)
    n = counts.shape[0]
    sims = np.asarray(sims, dtype=np.float64)
    out = np.full(n, np.nan)
    if n == 0 or sims.size == 0:
        return out
    seg = np.repeat(np.arange(n), counts)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    has = counts > 0
    if name == "mean":
        sums = np.bincount(seg, weights=sims, minlength=n)
        out[has] = sums[has] / counts[has]
        return out
    pos = np.arange(sims.shape[0]) - starts[seg]
    padded = np.full((n, int(counts.max())), -np.inf)
    padded[seg, pos] = sims
    if name == "max":
        out[has] = padded[has].max(axis=1)
        return out
    width = min(k, padded.shape[1])
    top = -np.sort(-padded, axis=1)[:, :width]  # best first; padding (-inf) sorts last
    kk = np.minimum(counts, width)
    valid = np.arange(width)[None, :] < kk[:, None]
    sums = np.where(valid, top, 0.0).sum(axis=1)
    out[has] = sums[has] / kk[has]
    return out


def normalize(x: np.ndarray, method: str = "minmax") -> np.ndarray:
    """Per-topic normalisation of float [n] scores (see the module docstring). Returns float64 [n]."""
    x = np.asarray(x, dtype=np.float64)
    if method == "none":
        return x.copy()
    if x.size == 0:
        return x.copy()
    if method == "minmax":
        lo, hi = x.min(), x.max()
        return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if method == "zscore":
        sd = x.std()
        return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)
    if method == "rank":
        n = x.size
        if n == 1:
            return np.ones(1)
        # 1-based rank by descending value, ties get the average of the ranks they span
        uniq, inverse, counts = np.unique(-x, return_inverse=True, return_counts=True)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]) + 1
        avg_rank = (first + (counts - 1) / 2.0)[inverse]
        return (n - avg_rank) / (n - 1)
    raise ConfigError(f"--norm must be one of {', '.join(NORMS)}, got {method!r}")


def fuse(*, init_scores: np.ndarray, clip_scores: np.ndarray, alpha: float = 0.4, norm: str = "minmax") -> np.ndarray:
    """S = alpha * norm(S_init) + (1 - alpha) * norm(M), float64 [n]; alpha weighs the initial score.

    init_scores: float [n] the initial ranking's scores S_init; clip_scores: float [n] the pooled
    CLIP scores M. Keyword-only: the two are the same shape and easy to swap.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--alpha must be in [0, 1], got {alpha}")
    return alpha * normalize(init_scores, norm) + (1.0 - alpha) * normalize(clip_scores, norm)


@dataclass
class TopicResult:
    order: list[str]  # final ranking, best first
    fused: dict[str, float]  # S of each reranked candidate
    clip: dict[str, float]  # M of each reranked candidate
    unresolved: list[str]  # candidates inside the depth that had no frames (kept in their slots)


def fuse_ranking(docids: list[str], init_scores, clip_scores, *, alpha: float = 0.4, depth: int = 1000,
                 norm: str = "minmax") -> TopicResult:
    """Rerank one topic's candidates given their pooled frame scores (see the module docstring).

    docids: the initial ranking, best first; init_scores: float [n] their initial scores;
    clip_scores: float [min(n, depth)] the pooled frame score M of each of the first ``depth``
    candidates, NaN for one without frames (it keeps its slot). alpha: weight of the initial
    score in the fusion (1 - alpha weighs M).
    """
    if depth <= 0:
        raise ConfigError(f"--depth must be positive, got {depth}")
    init_scores = np.asarray(init_scores, dtype=np.float64)
    head = docids[:depth]
    m = np.asarray(clip_scores, dtype=np.float64)
    ok = ~np.isnan(m)
    slots = np.flatnonzero(ok)
    s = fuse(init_scores=init_scores[:len(head)][ok], clip_scores=m[ok], alpha=alpha, norm=norm)
    best = slots[np.argsort(-s, kind="stable")]
    new_head = list(head)
    for slot, src in zip(slots.tolist(), best.tolist()):
        new_head[slot] = head[src]
    order = new_head + list(docids[depth:])
    return TopicResult(order=order,
                       fused={head[i]: float(v) for i, v in zip(slots.tolist(), s.tolist())},
                       clip={head[i]: float(m[i]) for i in slots.tolist()},
                       unresolved=[head[i] for i in np.flatnonzero(~ok).tolist()])
