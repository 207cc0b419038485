"""Candidates' frames in memory (:class:`FrameBank`) and CLIPRerank of a topic over them.

A bank holds the frames of every document a ``vidclip rerank`` job may meet, built once by
:mod:`vidclip.rerank.frames`; :func:`candidate_scores` gives a topic's pooled frame scores M and
:func:`rerank_topic` fuses them with the initial ranking (the math: :mod:`vidclip.retrieval.fusion`).

No per-frame Python loop: a topic's candidates' frames are gathered into one matrix, scored with
one matrix-vector product and pooled with segment reductions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vidclip.retrieval.fusion import TopicResult, fuse_ranking, pool_scores
from vidclip.retrieval.vectors import l2_normalize

__all__ = ["FrameBank", "candidate_scores", "rerank_topic"]


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
            emb = l2_normalize(np.concatenate([np.asarray(f, dtype=np.float32) for f in frames]))
        else:
            emb = np.zeros((0, dim or 0), np.float32)
        return cls(emb, offsets, {d: j for j, d in enumerate(docids)}, dict(unresolved or {}))

    def lookup(self, docids: list[str]) -> np.ndarray:
        """int64 [n] bank index per docid, -1 where it has no frames."""
        return np.array([self.index.get(d, -1) for d in docids], dtype=np.int64)


def candidate_scores(text: np.ndarray, bank: FrameBank, idx: np.ndarray, pool: str = "max") -> np.ndarray:
    """M for candidates ``idx`` (bank indices, -1 = no frames -> NaN): float64 [n].

    text: float [D] (normalised here).
    """
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
    q = l2_normalize(text)[0]
    sims = bank.emb[rows] @ q
    return pool_scores(sims, counts, pool)


def rerank_topic(text: np.ndarray, docids: list[str], init_scores, bank: FrameBank, *, alpha: float = 0.4,
                 depth: int = 1000, pool: str = "max", norm: str = "minmax",
                 clip_scores: np.ndarray | None = None) -> TopicResult:
    """Rerank one topic's candidates on their frames in ``bank``.

    text: float [D] the topic's text embedding; docids: the initial ranking, best first;
    init_scores: float [n] their initial scores. alpha: weight of the initial score in the fusion
    (1 - alpha weighs the CLIP score M). ``clip_scores`` (float [min(n, depth)], NaN = no frames)
    skips recomputing M (tuning reuses it).
    """
    if clip_scores is None and depth > 0:
        clip_scores = candidate_scores(text, bank, bank.lookup(docids[:depth]), pool)
    return fuse_ranking(docids, init_scores, clip_scores, alpha=alpha, depth=depth, norm=norm)
