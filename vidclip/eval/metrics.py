"""Text-video retrieval metrics: recall at K, median and mean rank, in both directions.

Everything starts from one similarity matrix ``sim`` float ``[C, V]`` (C captions, V videos;
higher = more similar) and ``caption_video`` int ``[C]``, the index of each caption's video.

* **t2v** (text -> video): every caption is a query; its rank is the position of its own video
  among all V videos.
* **v2t** (video -> text): every video *that has at least one caption* is a query; its rank is
  the rank of its *best-ranked* own caption among all C captions (the usual multi-sentence
  handling of CLIP4Clip-style evaluation: a video counts as found at K if any of its captions
  is in the top K). With one caption per video (MSR-VTT 1k-A) this is the plain diagonal rank.
* **Ties** count as *not better*, i.e. in the query's favour: rank = 1 + the number of
  candidates with a strictly greater score. That is the first sorted position holding the
  ground-truth value, which is what CLIP4Clip's ``compute_metrics`` looks up (although that
  code emits extra entries on ties). Two candidates with exactly the ground truth's score
  therefore both leave it at rank 1 (a 3x3 case of tied twins gives R@1 100%), so every result
  also reports ``ties``: how many queries had at least one other candidate with exactly the
  ground truth's score (for v2t: another video's caption with exactly the best own caption's).

Metrics: R@1, R@5, R@10 in percent; MdR (median rank) and MnR (mean rank), ranks 1-based.

``dual_softmax`` is the inference-time re-weighting of CAMoE's dual softmax loss (DSL). It
uses the statistics of the whole test set (every caption competes for every video), so its
numbers are reported separately and never mixed into the default ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidclip.core.errors import VidclipError

__all__ = [
    "MetricsInputError",
    "t2v_ranks",
    "v2t_ranks",
    "rank_metrics",
    "t2v_ties",
    "v2t_ties",
    "retrieval_metrics",
    "dual_softmax",
    "format_metrics_table",
]

RECALL_AT = (1, 5, 10)
# Rows of ``sim`` compared per step; bounds the [rows, V] boolean temporary to ~64 MB at V=64k.
_ROW_CHUNK = 1024


class MetricsInputError(VidclipError, ValueError):
    """A similarity matrix or caption->video map is malformed (the message says which and how)."""


@dataclass(frozen=True)
class _Checked:
    sim: np.ndarray  # float [C, V]
    caption_video: np.ndarray  # int64 [C]


def _check(sim, caption_video) -> _Checked:
    sim = np.asarray(sim)
    if sim.ndim != 2:
        raise MetricsInputError(f"sim: expected a [captions, videos] matrix, got shape {sim.shape}")
    if not np.issubdtype(sim.dtype, np.floating):
        sim = sim.astype(np.float64)
    num_captions, num_videos = sim.shape
    if num_captions == 0 or num_videos == 0:
        raise MetricsInputError(f"sim: empty similarity matrix of shape {sim.shape}")
    caption_video = np.asarray(caption_video)
    if caption_video.shape != (num_captions,):
        raise MetricsInputError(
            f"caption_video: expected shape ({num_captions},) (one video index per sim row), got {caption_video.shape}"
        )
    if not np.issubdtype(caption_video.dtype, np.integer):
        raise MetricsInputError(f"caption_video: expected integer video indices, got dtype {caption_video.dtype}")
    bad = np.flatnonzero((caption_video < 0) | (caption_video >= num_videos))
    if bad.size:
        raise MetricsInputError(
            f"caption_video[{bad[0]}] = {caption_video[bad[0]]} is not a video index in [0, {num_videos})"
        )
    nonfinite = np.argwhere(~np.isfinite(sim))
    if nonfinite.size:
        r, c = nonfinite[0]
        raise MetricsInputError(f"sim[{r}, {c}] = {sim[r, c]} is not finite ({len(nonfinite)} such entries)")
    return _Checked(sim, caption_video.astype(np.int64))


def _count_vs_own(sim, caption_video, compare) -> np.ndarray:
    """int64 [C]: for each caption c, #{v : compare(sim[c, v], sim[c, caption_video[c]])}."""
    chk = _check(sim, caption_video)
    sim, cv = chk.sim, chk.caption_video
    own = sim[np.arange(len(cv)), cv]  # [C]
    counts = np.empty(len(cv), dtype=np.int64)
    for lo in range(0, len(cv), _ROW_CHUNK):
        hi = lo + _ROW_CHUNK
        counts[lo:hi] = compare(sim[lo:hi], own[lo:hi, None]).sum(axis=1)
    return counts


def t2v_ranks(sim, caption_video) -> np.ndarray:
    """1-based rank of each caption's own video among all videos: int64 [C].

    rank[c] = 1 + #{v : sim[c, v] > sim[c, caption_video[c]]}  (ties are not better).
    """
    return 1 + _count_vs_own(sim, caption_video, np.greater)


def t2v_ties(sim, caption_video) -> np.ndarray:
    """int64 [C]: for each caption, how many *other* videos score exactly its own video's score
    (ties that :func:`t2v_ranks` counts in the query's favour)."""
    return _count_vs_own(sim, caption_video, np.equal) - 1  # minus the own video


def _best_own(sim, caption_video) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked (sim float [C, V], caption_video int64 [C], best float64 [V]) where
    best[v] = max_{c: cv[c]=v} sim[c, v], and -inf for a video without a caption."""
    chk = _check(sim, caption_video)
    sim, cv = chk.sim, chk.caption_video
    best = np.full(sim.shape[1], -np.inf, dtype=np.float64)
    np.maximum.at(best, cv, sim[np.arange(len(cv)), cv].astype(np.float64))
    return sim, cv, best


def v2t_ties(sim, caption_video) -> tuple[np.ndarray, np.ndarray]:
    """For each captioned video, how many captions *of other videos* score exactly its best own
    caption's score. Returns (ties int64 [V'], videos int64 [V']) in :func:`v2t_ranks` order."""
    sim, cv, best = _best_own(sim, caption_video)
    equal = np.zeros(sim.shape[1], dtype=np.int64)
    for lo in range(0, sim.shape[0], _ROW_CHUNK):
        rows = sim[lo:lo + _ROW_CHUNK] == best[None, :]  # [rows, V]
        own = cv[lo:lo + _ROW_CHUNK]
        rows[np.arange(len(own)), own] = False  # a video's own captions are not competitors
        equal += rows.sum(axis=0)
    videos = np.unique(cv)
    return equal[videos], videos


def v2t_ranks(sim, caption_video) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each captioned video's best own caption among all captions.

    Returns (ranks int64 [V'], videos int64 [V']) for the V' videos that have a caption, in
    increasing video order. For video v with best own score s_v = max_{c: cv[c]=v} sim[c, v]:
    rank[v] = 1 + #{c : sim[c, v] > s_v}, i.e. the minimum over v's captions of their
    tie-not-better rank in column v.
    """
    sim, cv, best = _best_own(sim, caption_video)
    above = np.zeros(sim.shape[1], dtype=np.int64)
    for lo in range(0, sim.shape[0], _ROW_CHUNK):
        above += (sim[lo:lo + _ROW_CHUNK] > best[None, :]).sum(axis=0)
    videos = np.unique(cv)
    return 1 + above[videos], videos


def rank_metrics(ranks, ties=None) -> dict:
    """R@1/5/10 (percent), MdR, MnR and the number of queries from 1-based ranks; with ``ties``
    (per-query tie counts, :func:`t2v_ties`), also ``ties``: the queries with at least one."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise MetricsInputError("ranks: no queries to score")
    out = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALL_AT}
    out["MdR"] = float(np.median(ranks))
    out["MnR"] = float(np.mean(ranks))
    out["queries"] = int(ranks.size)
    if ties is not None:
        out["ties"] = int(np.count_nonzero(np.asarray(ties)))
    return out


def retrieval_metrics(sim, caption_video) -> dict:
    """Text-to-video and video-to-text retrieval metrics.

    Args:
        sim: float [C, V] similarity of caption c to video v (any monotone score).
        caption_video: int [C] index (column of ``sim``) of each caption's ground-truth video.

    Returns:
        ``{"t2v": {...}, "v2t": {...}}``, each with ``R@1``, ``R@5``, ``R@10`` (percent),
        ``MdR``, ``MnR`` (1-based ranks), ``queries`` and ``ties``. t2v ranks every caption
        against all videos; v2t takes, for every video that has a caption, the rank of its
        best-ranked own caption among all captions. A tie with the ground truth counts as not
        better, in the query's favour (rank = 1 + number of strictly greater scores); ``ties``
        is the number of queries that had one.

    Raises:
        MetricsInputError: wrong shapes, out-of-range video indices or non-finite scores.
    """
    t2v = t2v_ranks(sim, caption_video)
    v2t, _ = v2t_ranks(sim, caption_video)
    return {"t2v": rank_metrics(t2v, t2v_ties(sim, caption_video)),
            "v2t": rank_metrics(v2t, v2t_ties(sim, caption_video)[0])}


def dual_softmax(sim, temperature: float = 0.01) -> np.ndarray:
    """Dual-softmax (DSL, CAMoE) inference re-weighting of a [C, V] similarity matrix.

    ``out[c, v] = sim[c, v] * softmax_c(sim[:, v] / temperature)[c]``: each score is multiplied by
    how strongly video v prefers caption c over all other captions (the softmax runs over the
    caption axis, CAMoE's ``softmax(sim_matrix, dim=0)`` on a text x video matrix). On cosine
    similarities ``temperature=0.01`` equals CAMoE's softmax over CLIP logits (cosine x 100).
    CAMoE's extra factor ``len(sim)`` is a constant and changes no ranking, so it is left out.

    Args:
        sim: float [C, V] (numpy array or anything np.asarray accepts; torch tensors on CPU).
        temperature: softmax temperature, > 0.
    Returns:
        float64 [C, V] re-weighted similarities (use them only for the separately reported
        "dsl" numbers).
    """
    if not temperature > 0:
        raise MetricsInputError(f"dual_softmax: temperature must be > 0, got {temperature}")
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2:
        raise MetricsInputError(f"dual_softmax: expected a [captions, videos] matrix, got shape {sim.shape}")
    logits = sim / temperature
    logits = logits - logits.max(axis=0, keepdims=True)  # stable softmax over captions
    prior = np.exp(logits)
    prior /= prior.sum(axis=0, keepdims=True)
    return sim * prior


def format_metrics_table(results: dict, title: str | None = None) -> str:
    """Render ``{"name": {"t2v": {...}, "v2t": {...}}, ...}`` (or one such result) as a text table."""
    if "t2v" in results:
        results = {"": results}
    cols = ["R@1", "R@5", "R@10", "MdR", "MnR"]
    name_w = max([len("method")] + [len(n) for n in results])
    header = f"{'method':<{name_w}}  {'dir':<3}  " + "  ".join(f"{c:>6}" for c in cols) + "  queries"
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for name, res in results.items():
        for direction in ("t2v", "v2t"):
            m = res.get(direction)
            if not m:
                continue
            vals = "  ".join(f"{m[c]:6.1f}" for c in cols)
            lines.append(f"{name:<{name_w}}  {direction:<3}  {vals}  {m['queries']:>7}")
    tied = [f"{name or 'result'} {d} {res[d]['ties']}" for name, res in results.items() for d in ("t2v", "v2t")
            if res.get(d, {}).get("ties")]
    if tied:
        lines.append("exact ties with the ground truth (counted in the query's favour, as CLIP4Clip): "
                     + ", ".join(tied) + " queries")
    return "\n".join(lines)
