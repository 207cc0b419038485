"""CLIPRerank's math: frame scores, pooling, per-topic normalisation and fusion (arXiv 2401.08449).

For a topic ``q`` and a candidate ``v`` with frames ``f_1..f_T`` (only those inside the shot's
span for shot-level documents):

- frame score ``s(q, f) = cos(text(q), image(f))``;
- candidate score ``M(q, v) = pool_t s(q, f_t)`` with ``max`` (the paper's), ``mean`` or
  ``topk:K`` (mean of the K best frames, all frames when fewer);
- fused score ``S = alpha * norm(S_init) + (1 - alpha) * norm(M)``: alpha weighs the initial
  ranking's score, as in the paper, whose ``S_re = a * M(q, v) + (1 - a) * S(q, v)``, a = 0.4,
  names the initial model's score M and the CLIP score S (the letters are the other way round
  here: M is the CLIP score); so by default CLIP weighs 0.6. Both are normalised per topic over
  the reranked candidates (the first ``depth`` of the initial ranking that have frames), with
  ``none``, ``minmax`` ((x - min) / (max - min); 0 when all are equal), ``zscore`` ((x - mean) /
  std, population std; 0 when constant) or ``rank`` ((n - r) / (n - 1) with r the 1-based rank,
  ties averaged; 1 when n = 1).

Ordering: the reranked block is sorted by S (stable: equal S keep their initial order); a
candidate in the block whose frames could not be found keeps its slot (its original position);
candidates below ``depth`` follow in their initial order.

No per-frame Python loop: a topic's candidates' frames are gathered into one matrix, scored with
one matrix-vector product and pooled with segment reductions over a padded [n, T_max] array.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def l2_normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass
class FrameBank:
    """Frames of documents, concatenated: doc ``j``'s frames are ``emb[offsets[j]:offsets[j+1]]``.

    emb: float32 [N, D], L2-normalised rows. offsets: int64 [K + 1]. index: docid -> j.
    unresolved: docid -> why it has no frames (kept for the report).
    """

    emb: np.ndarray
    offsets: np.ndarray
    index: dict[str, int]
    unresolved: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_lists(cls, docids: list[str], frames: list[np.ndarray], unresolved: dict[str, str] | None = None,
                   dim: int | None = None) -> "FrameBank":
        """Build from per-document frame arrays (float [T_j, D], T_j >= 1; normalised here)."""
        counts = np.array([f.shape[0] for f in frames], dtype=np.int64)
        offsets = np.zeros(len(frames) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        if frames:
            emb = l2_normalize_rows(np.concatenate([np.asarray(f, dtype=np.float32) for f in frames]))
        else:
            emb = np.zeros((0, dim or 0), np.float32)
        return cls(emb, offsets, {d: j for j, d in enumerate(docids)}, dict(unresolved or {}))

    def lookup(self, docids: list[str]) -> np.ndarray:
        """int64 [n] bank index per docid, -1 where it has no frames."""
        return np.array([self.index.get(d, -1) for d in docids], dtype=np.int64)


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


def candidate_scores(text: np.ndarray, bank: FrameBank, idx: np.ndarray, pool: str = "max") -> np.ndarray:
    """M for candidates ``idx`` (bank indices, -1 = no frames -> NaN). text: float [D] (normalised here)."""
    idx = np.asarray(idx, dtype=np.int64)
    ok = idx >= 0
    counts = np.zeros(idx.shape[0], dtype=np.int64)
    counts[ok] = bank.offsets[idx[ok] + 1] - bank.offsets[idx[ok]]
    total = int(counts.sum())
    if total == 0:
        return np.full(idx.shape[0], np.nan)
    # rows of every candidate's frames, candidate after candidate, without a Python loop
    starts = np.where(ok, bank.offsets[np.maximum(idx, 0)], 0)
    first_out = np.zeros(idx.shape[0], dtype=np.int64)
    np.cumsum(counts[:-1], out=first_out[1:])
    rows = np.arange(total) - np.repeat(first_out, counts) + np.repeat(starts, counts)
    q = l2_normalize_rows(np.asarray(text, dtype=np.float32).reshape(1, -1))[0]
    sims = bank.emb[rows] @ q
    return pool_scores(sims, counts, pool)


@dataclass
class TopicResult:
    order: list[str]  # final ranking, best first
    fused: dict[str, float]  # S of each reranked candidate
    clip: dict[str, float]  # M of each reranked candidate
    unresolved: list[str]  # candidates inside the depth that had no frames (kept in their slots)


def rerank_topic(text: np.ndarray, docids: list[str], init_scores, bank: FrameBank, *, alpha: float = 0.4,
                 depth: int = 1000, pool: str = "max", norm: str = "minmax",
                 clip_scores: np.ndarray | None = None) -> TopicResult:
    """Rerank one topic's candidates.

    docids: the initial ranking, best first; init_scores: float [n] their initial scores.
    alpha: weight of the initial score in the fusion (1 - alpha weighs the CLIP score M).
    ``clip_scores`` (float [min(n, depth)], NaN = no frames) skips recomputing M (tuning reuses it).
    """
    if depth <= 0:
        raise ConfigError(f"--depth must be positive, got {depth}")
    init_scores = np.asarray(init_scores, dtype=np.float64)
    head = docids[:depth]
    m = candidate_scores(text, bank, bank.lookup(head), pool) if clip_scores is None else np.asarray(clip_scores)
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
