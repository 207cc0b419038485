"""Fusing ranked lists from several channels (visual CLIP scores, text BM25) into one ranking.

Two methods, pure Python (no numpy needed, no torch):

**Reciprocal-rank fusion** (:func:`rrf_fuse`, the default; Cormack, Clarke and Buettcher, SIGIR
2009). Each channel ranks its candidates from 1; an item scores ``sum_i w_i / (k + rank_i)``
over the channels that found it, ``k = 60`` as in the paper. Only ranks are used, so a cosine
similarity in [-1, 1] and an unbounded BM25 need no calibration against each other.

*Why an item found both ways ranks above one found one way.* With equal weights ``w``, an item
only one channel found scores at most ``w / (k + 1)`` (rank 1 there). An item both channels
found, at ranks ``a`` and ``b`` with ``a, b <= k + 1``, scores at least
``2w / (2k + 1) > w / (k + 1)``. So when each channel's list is cut at depth ``k + 1``
(:func:`rrf_depth`: 61 for k = 60), every two-way item outranks every one-way item. Deeper lists
or unequal weights can break it: two-way at ranks (100, 100) scores ``2/160 = 0.0125`` against
``1/61 = 0.0164`` for a one-way rank 1; with weights, two-way beats one-way-at-rank-1 only while
``w_a / (k + a) + w_b / (k + b) > w_max / (k + 1)``.

**Weighted score fusion** (:func:`weighted_fuse`). Each channel's scores are min-max normalised
over its candidates to [0, 1] (the channel's best = 1, worst = 0; a channel whose candidates
all score the same gives them all 1), and an item scores ``sum_i w_i * norm_i``, a channel that
did not find it adding 0. For two channels, weights ``{visual: alpha, text: 1 - alpha}``. Here
the property does *not* hold in general: a two-way item scores ``w_a * norm_a + w_b * norm_b``,
which is below a one-way item's ``w_a * 1`` whenever its normalised scores are low (a weak
visual match that also has one common word). It holds when every two-way item's sum beats the
best one-way item, which nothing guarantees. Both functions take ``agreement_first=True`` to
make it hold by construction: items are ordered by how many channels found them, then by score.

Ties (equal fused score) are broken by the best rank in any channel, then by the order of
first appearance across channels (channel order as given, then rank), so results are stable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Hashable, Mapping, Sequence

from vidclip.core.errors import ConfigError

__all__ = ["RRF_K", "FusedHit", "rrf_depth", "rrf_fuse", "weighted_fuse"]

RRF_K = 60


@dataclass(frozen=True)
class FusedHit:
    """One fused result: ``id``, fused ``score`` (higher is better), ``ranks`` {channel: rank
    from 1} of the channels that found it, ``parts`` {channel: its contribution to ``score``}
    (so a hit can say why it ranks where it does)."""

    id: Hashable
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    parts: dict[str, float] = field(default_factory=dict)


def rrf_depth(k: float = RRF_K) -> int:
    """The deepest each channel's list may be cut for RRF with equal weights to rank every item
    found by two channels above every item found by one (see the module docstring): k + 1."""
    return int(math.floor(k)) + 1


def _weights(channels: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return dict.fromkeys(channels, 1.0)
    unknown = sorted(set(weights) - set(channels))
    if unknown:
        raise ConfigError(f"fusion weights: unknown channel {unknown[0]!r} (channels: {', '.join(channels)})")
    out = {}
    for name in channels:
        if name not in weights:
            raise ConfigError(f"fusion weights: no weight for channel {name!r}")
        w = weights[name]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"fusion weights: channel {name!r}: {w!r} is not a finite number >= 0")
        out[name] = float(w)
    return out


def _order(hits: dict, first_seen: dict, agreement_first: bool) -> list[FusedHit]:
    def key(h: FusedHit):
        agreement = -len(h.ranks) if agreement_first else 0
        return (agreement, -h.score, min(h.ranks.values()), first_seen[h.id])

    return sorted(hits.values(), key=key)


def rrf_fuse(rankings: Mapping[str, Sequence[Hashable]], k: float = RRF_K,
             weights: Mapping[str, float] | None = None, *,
             agreement_first: bool = False) -> list[FusedHit]:
    """Reciprocal-rank fusion of ``rankings`` {channel: ids best first}.

    score(id) = sum over channels that list it of ``weights[channel] / (k + rank)``, rank from 1.
    An id listed twice in one channel counts at its first (best) rank. ``weights``: None = 1
    each; else one finite weight >= 0 for every channel. Returns every listed id, best first
    (ties: see the module docstring).

    Raises:
        ConfigError: ``k`` < 0 or not finite; a weight missing, unknown or invalid.
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
        raise ConfigError(f"fusion: RRF k must be a finite number >= 0, not {k!r}")
    w = _weights(list(rankings), weights)
    hits: dict[Hashable, FusedHit] = {}
    first_seen: dict[Hashable, int] = {}
    for channel, ids in rankings.items():
        rank = 0
        for item in ids:
            hit = hits.get(item)
            if hit is not None and channel in hit.ranks:
                continue  # a repeat in the same list
            rank += 1
            if hit is None:
                hit = hits[item] = FusedHit(item, 0.0, {}, {})
                first_seen[item] = len(first_seen)
            part = w[channel] / (k + rank)
            hit.ranks[channel] = rank
            hit.parts[channel] = part
            hits[item] = FusedHit(item, hit.score + part, hit.ranks, hit.parts)
    return _order(hits, first_seen, agreement_first)


def weighted_fuse(scores: Mapping[str, Mapping[Hashable, float]],
                  weights: Mapping[str, float] | None = None, *,
                  agreement_first: bool = False) -> list[FusedHit]:
    """Weighted fusion of min-max normalised scores: ``scores`` {channel: {id: score}}, higher
    is better in each channel (negate a lower-is-better score first).

    score(id) = sum over channels that scored it of ``weights[channel] * (s - min) / (max - min)``
    (min, max over that channel's candidates; all equal -> 1). ``weights``: None = 1 each; for
    "alpha" between two channels pass ``{"visual": alpha, "text": 1 - alpha}``. ``ranks`` in
    the result are each channel's own order (ties by position in its mapping).

    Raises:
        ConfigError: a score that is not a finite number (channel and id named); bad weights.
    """
    w = _weights(list(scores), weights)
    hits: dict[Hashable, FusedHit] = {}
    first_seen: dict[Hashable, int] = {}
    for channel, by_id in scores.items():
        values = []
        for item, s in by_id.items():
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
                raise ConfigError(f"fusion: channel {channel!r}: score of {item!r} is {s!r}, not a finite number")
            values.append((item, float(s)))
        if not values:
            continue
        low = min(s for _, s in values)
        high = max(s for _, s in values)
        ordered = sorted(enumerate(values), key=lambda p: (-p[1][1], p[0]))
        for rank, (_, (item, s)) in enumerate(ordered, start=1):
            norm = (s - low) / (high - low) if high > low else 1.0
            hit = hits.get(item)
            if hit is None:
                hit = FusedHit(item, 0.0, {}, {})
                first_seen[item] = len(first_seen)
            part = w[channel] * norm
            hit.ranks[channel] = rank
            hit.parts[channel] = part
            hits[item] = FusedHit(item, hit.score + part, hit.ranks, hit.parts)
    return _order(hits, first_seen, agreement_first)
