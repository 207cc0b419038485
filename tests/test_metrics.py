"""Retrieval metrics against hand-computed rankings (multi-caption, ties, DSL)."""

from __future__ import annotations

import numpy as np
import pytest

from vidclip.core.errors import VidclipError
from vidclip.eval import metrics as metrics_mod
from vidclip.eval.metrics import (
    MetricsInputError,
    dual_softmax,
    format_metrics_table,
    rank_metrics,
    retrieval_metrics,
    t2v_ranks,
    v2t_ranks,
)


def test_single_caption_ranks_by_hand():
    # 3 captions x 3 videos, caption i belongs to video i.
    sim = np.array([
        [0.9, 0.1, 0.2],   # own video best -> rank 1
        [0.5, 0.4, 0.6],   # own 0.4, two above -> rank 3
        [0.3, 0.8, 0.7],   # own 0.7, one above -> rank 2
    ])
    cv = np.array([0, 1, 2])
    assert t2v_ranks(sim, cv).tolist() == [1, 3, 2]
    # v2t: column 0 [0.9,0.5,0.3]: own 0.9 best -> 1; column 1 [0.1,0.4,0.8]: 0.8 above own 0.4 -> 2;
    # column 2 [0.2,0.6,0.7]: own 0.7 best -> 1
    ranks, videos = v2t_ranks(sim, cv)
    assert videos.tolist() == [0, 1, 2]
    assert ranks.tolist() == [1, 2, 1]
    m = retrieval_metrics(sim, cv)
    assert m["t2v"]["R@1"] == pytest.approx(100 / 3)
    assert m["t2v"]["R@5"] == 100.0 and m["t2v"]["R@10"] == 100.0
    assert m["t2v"]["MdR"] == 2.0
    assert m["t2v"]["MnR"] == pytest.approx(2.0)
    assert m["v2t"]["R@1"] == pytest.approx(200 / 3)
    assert m["v2t"]["MdR"] == 1.0
    assert m["v2t"]["MnR"] == pytest.approx(4 / 3)
    assert m["t2v"]["queries"] == 3 and m["v2t"]["queries"] == 3


def test_multi_caption_protocol():
    # 5 captions over 3 videos; video 0 has captions 0,1; video 1 has 2,3,4; video 2 has none.
    sim = np.array([
        #  v0   v1   v2
        [0.2, 0.9, 0.1],   # c0 (v0): v1 above -> t2v rank 2
        [0.7, 0.3, 0.8],   # c1 (v0): v2 above -> rank 2
        [0.1, 0.5, 0.6],   # c2 (v1): v2 above -> rank 2
        [0.0, 0.4, 0.3],   # c3 (v1): best -> rank 1
        [0.9, 0.2, 0.95],  # c4 (v1): two above -> rank 3
    ])
    cv = np.array([0, 0, 1, 1, 1])
    assert t2v_ranks(sim, cv).tolist() == [2, 2, 2, 1, 3]
    # v2t video 0: column [0.2,0.7,0.1,0.0,0.9]; best own caption c1 = 0.7, one caption (c4) above -> 2.
    # v2t video 1: column [0.9,0.3,0.5,0.4,0.2]; best own c2 = 0.5, c0 0.9 above -> 2.
    # video 2 has no caption: not a v2t query.
    ranks, videos = v2t_ranks(sim, cv)
    assert videos.tolist() == [0, 1]
    assert ranks.tolist() == [2, 2]
    m = retrieval_metrics(sim, cv)
    assert m["t2v"]["R@1"] == pytest.approx(20.0)
    assert m["t2v"]["MdR"] == 2.0 and m["t2v"]["MnR"] == pytest.approx(2.0)
    assert m["v2t"]["R@1"] == 0.0 and m["v2t"]["R@5"] == 100.0
    assert m["v2t"]["queries"] == 2


def test_ties_count_as_not_better():
    sim = np.array([
        [0.5, 0.5, 0.5, 0.1],  # own video 0 tied with 1 and 2 -> rank 1 (ties not better)
        [0.3, 0.3, 0.9, 0.3],  # own 0.3 tied with 0 and 3, one strictly above -> rank 2
        [0.2, 0.2, 0.2, 0.2],  # all tied -> rank 1
    ])
    cv = np.array([0, 1, 2])
    assert t2v_ranks(sim, cv).tolist() == [1, 2, 1]
    # v2t column 1: [0.5, 0.3, 0.2], own c1 = 0.3, one strictly above -> 2
    ranks, videos = v2t_ranks(sim, cv)
    # column 2: [0.5, 0.9, 0.2], own c2 = 0.2, two strictly above -> 3
    assert videos.tolist() == [0, 1, 2] and ranks.tolist() == [1, 2, 3]


def test_recall_at_k_boundaries_and_median_even():
    # 12 videos, 4 captions with own-video ranks 1, 5, 6, 11 (constructed explicitly).
    V = 12
    wanted = [1, 5, 6, 11]
    sim = np.zeros((4, V))
    cv = np.arange(4)
    for c, r in enumerate(wanted):
        row = np.linspace(1.0, 0.0, V)  # strictly decreasing scores
        others = [v for v in range(V) if v != c]
        order = others[: r - 1] + [c] + others[r - 1:]
        sim[c, order] = row
    assert t2v_ranks(sim, cv).tolist() == wanted
    m = rank_metrics(np.array(wanted))
    assert m["R@1"] == 25.0 and m["R@5"] == 50.0 and m["R@10"] == 75.0
    assert m["MdR"] == 5.5 and m["MnR"] == pytest.approx(23 / 4)


def test_chunking_agrees_with_bruteforce(monkeypatch):
    import vidclip.eval.metrics as metrics

    rng = np.random.default_rng(0)
    sim = rng.standard_normal((37, 11)).round(1)  # rounding creates ties
    cv = rng.integers(0, 11, size=37)
    ref_t2v = [1 + int((sim[c] > sim[c, cv[c]]).sum()) for c in range(37)]
    ref_v2t = []
    for v in sorted(set(cv.tolist())):
        own = [c for c in range(37) if cv[c] == v]
        ref_v2t.append(min(1 + int((sim[:, v] > sim[c, v]).sum()) for c in own))
    monkeypatch.setattr(metrics, "_ROW_CHUNK", 5)
    assert metrics.t2v_ranks(sim, cv).tolist() == ref_t2v
    assert metrics.v2t_ranks(sim, cv)[0].tolist() == ref_v2t


def test_bad_inputs_raise_typed_errors():
    sim = np.zeros((2, 3))
    with pytest.raises(MetricsInputError, match=r"caption_video\[1\] = 3"):
        retrieval_metrics(sim, np.array([0, 3]))
    with pytest.raises(MetricsInputError, match="shape"):
        retrieval_metrics(sim, np.array([0, 1, 2]))
    bad = sim.copy()
    bad[1, 2] = np.nan
    with pytest.raises(VidclipError, match=r"sim\[1, 2\]"):
        retrieval_metrics(bad, np.array([0, 1]))
    with pytest.raises(MetricsInputError, match="integer"):
        retrieval_metrics(sim, np.array([0.0, 1.0]))
    with pytest.raises(MetricsInputError, match="temperature"):
        dual_softmax(sim, temperature=0)


def test_dual_softmax_by_hand():
    sim = np.array([[0.8, 0.6], [0.7, 0.1]])
    t = 0.1
    # column 0: softmax([8, 7]) ; column 1: softmax([6, 1])
    p00 = np.exp(8) / (np.exp(8) + np.exp(7))
    p10 = 1 - p00
    p01 = np.exp(6) / (np.exp(6) + np.exp(1))
    p11 = 1 - p01
    expected = np.array([[0.8 * p00, 0.6 * p01], [0.7 * p10, 0.1 * p11]])
    np.testing.assert_allclose(dual_softmax(sim, temperature=t), expected, rtol=1e-12)


def test_dual_softmax_fixes_hub_video():
    # Video 0 is a "hub": similar to every caption. DSL down-weights it for captions that another
    # video prefers, which raw cosine cannot do.
    sim = np.array([
        [0.90, 0.85, 0.10],
        [0.91, 0.20, 0.80],
        [0.92, 0.10, 0.20],
    ])
    cv = np.array([1, 2, 0])
    raw = retrieval_metrics(sim, cv)["t2v"]
    dsl = retrieval_metrics(dual_softmax(sim, 0.01), cv)["t2v"]
    assert raw["R@1"] == pytest.approx(100 / 3)
    assert dsl["R@1"] == 100.0


def test_format_table_has_both_directions():
    sim = np.eye(3)
    text = format_metrics_table({"mean": retrieval_metrics(sim, np.arange(3))}, title="zero-shot")
    assert "zero-shot" in text and "t2v" in text and "v2t" in text and "100.0" in text


def test_ties_are_counted_and_reported():
    """Tied twins: all three queries are at rank 1 (R@1 100%), and the result says two were ties."""
    sim = np.array([
        [0.7, 0.7, 0.1],  # own video 0 tied with video 1
        [0.7, 0.7, 0.1],  # own video 1 tied with video 0
        [0.1, 0.2, 0.9],  # no tie
    ])
    cv = np.array([0, 1, 2])
    assert metrics_mod.t2v_ties(sim, cv).tolist() == [1, 1, 0]
    # v2t column 0: [0.7, 0.7, 0.1], own c0 = 0.7 tied with c1 (video 1's caption)
    ties, videos = metrics_mod.v2t_ties(sim, cv)
    assert videos.tolist() == [0, 1, 2] and ties.tolist() == [1, 1, 0]
    m = retrieval_metrics(sim, cv)
    assert m["t2v"]["R@1"] == 100.0 and m["t2v"]["ties"] == 2
    assert m["v2t"]["R@1"] == 100.0 and m["v2t"]["ties"] == 2
    table = format_metrics_table({"mean": m})
    assert "exact ties" in table and "mean t2v 2" in table and "mean v2t 2" in table
    # ties among a video's own captions are not competitors; no ties -> no note
    sim2 = np.array([[0.5, 0.1], [0.5, 0.2], [0.1, 0.9]])
    cv2 = np.array([0, 0, 1])
    assert metrics_mod.v2t_ties(sim2, cv2)[0].tolist() == [0, 0]
    m2 = retrieval_metrics(sim2, cv2)
    assert m2["v2t"]["ties"] == 0 and m2["t2v"]["ties"] == 0
    assert "exact ties" not in format_metrics_table(m2)
