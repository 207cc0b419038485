"""Rank fusion (vidclip/retrieval/hybrid.py): reciprocal-rank fusion against hand-computed values, the
weighted min-max option, and when an item found both ways ranks above one found one way."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from vidclip.core.errors import ConfigError
from vidclip.retrieval.hybrid import RRF_K, rrf_depth, rrf_fuse, weighted_fuse

VISUAL = ["a", "b", "c"]
TEXT = ["c", "a", "d"]


def _scores(hits):
    return [(h.id, h.score) for h in hits]


def test_rrf_hand_computed_reference():
    hits = rrf_fuse({"visual": VISUAL, "text": TEXT})  # k = 60
    # a: 1/61 + 1/62 = 0.032522   c: 1/63 + 1/61 = 0.032266   b: 1/62 = 0.016129   d: 1/63 = 0.015873
    expect = [("a", 1 / 61 + 1 / 62), ("c", 1 / 63 + 1 / 61), ("b", 1 / 62), ("d", 1 / 63)]
    assert [h.id for h in hits] == [e[0] for e in expect]
    assert all(s == pytest.approx(e, rel=1e-12) for (_, s), (_, e) in zip(_scores(hits), expect))
    assert hits[0].ranks == {"visual": 1, "text": 2} and hits[0].parts["text"] == pytest.approx(1 / 62)
    assert hits[3].ranks == {"text": 3}


def test_rrf_weights_and_k_hand_computed():
    # weights visual 1, text 3: a = 1/61 + 3/62 = 0.064780, c = 1/63 + 3/61 = 0.065053,
    # d = 3/63 = 0.047619, b = 1/62 = 0.016129: text now leads
    hits = rrf_fuse({"visual": VISUAL, "text": TEXT}, weights={"visual": 1, "text": 3})
    assert [h.id for h in hits] == ["c", "a", "d", "b"]
    assert hits[0].score == pytest.approx(1 / 63 + 3 / 61, rel=1e-12)
    # k = 0: a = 1 + 1/2, c = 1/3 + 1, b = 1/2, d = 1/3
    hits = rrf_fuse({"visual": VISUAL, "text": TEXT}, k=0)
    assert _scores(hits) == [("a", 1.5), ("c", pytest.approx(4 / 3)), ("b", 0.5), ("d", pytest.approx(1 / 3))]


def test_rrf_repeats_count_once_at_their_best_rank_and_ties_are_stable():
    hits = rrf_fuse({"visual": ["x", "x", "y"], "text": []})
    assert [(h.id, h.ranks) for h in hits] == [("x", {"visual": 1}), ("y", {"visual": 2})]
    # equal scores: better best rank first, then first appearance
    hits = rrf_fuse({"visual": ["p", "q"], "text": ["q", "p"]})
    assert [h.id for h in hits] == ["p", "q"] and hits[0].score == hits[1].score
    assert rrf_fuse({}) == [] and rrf_fuse({"visual": []}) == []


def test_rrf_two_way_beats_one_way_within_rrf_depth():
    """The documented guarantee: equal weights, lists cut at k + 1 -> every item found by both
    channels outranks every item found by one."""
    rng = random.Random(0)
    depth = rrf_depth(RRF_K)
    assert depth == 61
    for _ in range(200):
        pool = list(range(300))
        visual = rng.sample(pool, depth)
        text = rng.sample(pool, rng.randint(1, depth))
        hits = rrf_fuse({"visual": visual, "text": text})
        both = [i for i, h in enumerate(hits) if len(h.ranks) == 2]
        one = [i for i, h in enumerate(hits) if len(h.ranks) == 1]
        assert not both or not one or max(both) < min(one)
    # the worst two-way case, exactly at depth: 2/121 > 1/61
    hits = rrf_fuse({"visual": ["solo"] + [f"v{i}" for i in range(59)] + ["both"],
                     "text": [f"t{i}" for i in range(60)] + ["both"]})
    assert hits[0].id == "both" and hits[0].score == pytest.approx(float(Fraction(2, 121)))


def test_rrf_two_way_below_one_way_beyond_the_depth_unless_agreement_first():
    visual = ["solo"] + [f"v{i}" for i in range(98)] + ["both"]   # both at rank 100
    text = [f"t{i}" for i in range(99)] + ["both"]                 # both at rank 100
    hits = rrf_fuse({"visual": visual, "text": text})
    assert hits[0].id == "solo"                     # 1/61 = 0.0164 > 2/160 = 0.0125
    hits = rrf_fuse({"visual": visual, "text": text}, agreement_first=True)
    assert hits[0].id == "both" and hits[1].id == "solo"


def test_weighted_hand_computed_reference():
    scores = {"visual": {"a": 0.30, "b": 0.20, "c": 0.10}, "text": {"c": 8.0, "d": 2.0, "a": 4.0}}
    # min-max: visual a 1, b 0.5, c 0; text c 1, a (4-2)/6 = 1/3, d 0
    # alpha 0.5: a = 0.5 + 1/6 = 0.6667, c = 0.5, b = 0.25, d = 0
    hits = weighted_fuse(scores, {"visual": 0.5, "text": 0.5})
    assert [h.id for h in hits] == ["a", "c", "b", "d"]
    assert [h.score for h in hits] == pytest.approx([0.5 + 0.5 / 3, 0.5, 0.25, 0.0])
    assert hits[0].ranks == {"visual": 1, "text": 2} and hits[0].parts == pytest.approx({"visual": 0.5, "text": 1 / 6})
    # alpha 0.2 (text-heavy): c = 0.8, a = 0.2 + 0.8/3 = 0.4667, b = 0.1, d = 0
    hits = weighted_fuse(scores, {"visual": 0.2, "text": 0.8})
    assert [h.id for h in hits] == ["c", "a", "b", "d"]
    assert hits[1].score == pytest.approx(0.2 + 0.8 / 3)


def test_weighted_all_equal_channel_and_empty_channel():
    hits = weighted_fuse({"visual": {"x": 0.2, "y": 0.2}, "text": {}})
    assert [(h.id, h.score) for h in hits] == [("x", 1.0), ("y", 1.0)]


def test_weighted_two_way_is_not_guaranteed_first_but_agreement_first_is():
    """Documented: min-max gives a channel's weakest candidate 0, so a weak two-way match can
    fall below a strong one-way match; agreement_first orders by channel count first."""
    scores = {"visual": {"strong": 0.9, "weak_both": 0.1, "mid": 0.5}, "text": {"weak_both": 1.0, "t": 3.0}}
    hits = weighted_fuse(scores, {"visual": 0.5, "text": 0.5})
    order = [h.id for h in hits]
    assert order.index("strong") < order.index("weak_both")
    hits = weighted_fuse(scores, {"visual": 0.5, "text": 0.5}, agreement_first=True)
    assert hits[0].id == "weak_both"


@pytest.mark.parametrize("call, message", [
    (lambda: rrf_fuse({"visual": ["a"]}, k=-1), "RRF k must be a finite number >= 0"),
    (lambda: rrf_fuse({"visual": ["a"]}, k=float("nan")), "RRF k must be"),
    (lambda: rrf_fuse({"visual": ["a"]}, weights={"visual": 1, "audio": 1}), "unknown channel 'audio'"),
    (lambda: rrf_fuse({"visual": ["a"], "text": []}, weights={"visual": 1}), "no weight for channel 'text'"),
    (lambda: rrf_fuse({"visual": ["a"]}, weights={"visual": -0.5}), "channel 'visual': -0.5 is not a finite"),
    (lambda: weighted_fuse({"visual": {"a": float("nan")}}), "channel 'visual': score of 'a' is nan"),
    (lambda: weighted_fuse({"text": {"a": None}}), "channel 'text': score of 'a' is None"),
])
def test_bad_arguments_are_one_clear_line(call, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()
