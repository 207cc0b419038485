"""vidclip.rerank.bank: a topic's frame scores and rerank over an in-memory frame bank."""

from __future__ import annotations

import numpy as np
import pytest

from vidclip.rerank.bank import FrameBank, candidate_scores, rerank_topic


def _bank():
    # 2-d frames: the text is (1, 0); doc "hi" has a frame on it, "lo" points away, "mid" in between
    frames = {"hi": [[1.0, 0.0], [0.0, 1.0]], "mid": [[1.0, 1.0]], "lo": [[0.0, 1.0], [-1.0, 1.0]]}
    return FrameBank.from_lists(list(frames), [np.array(v) for v in frames.values()], {"gone": "missing"})


def test_candidate_scores_are_cosines():
    bank = _bank()
    m = candidate_scores(np.array([2.0, 0.0]), bank, bank.lookup(["lo", "hi", "gone", "mid"]), "max")
    np.testing.assert_allclose(m, [0.0, 1.0, np.nan, 1 / np.sqrt(2)], equal_nan=True)
    m = candidate_scores(np.array([2.0, 0.0]), bank, bank.lookup(["hi"]), "mean")
    np.testing.assert_allclose(m, [0.5])


def test_rerank_order_slots_and_tail():
    bank = _bank()
    docids = ["lo", "gone", "mid", "hi", "tail"]  # initial order
    init = np.array([4.0, 3.0, 2.0, 1.0, 0.0])
    res = rerank_topic(np.array([1.0, 0.0]), docids, init, bank, alpha=0.0, depth=4, pool="max", norm="minmax")
    # alpha 0, pure CLIP on the first 4: hi > mid > lo; "gone" keeps slot 2; "tail" stays below the depth
    assert res.order == ["hi", "gone", "mid", "lo", "tail"]
    assert res.unresolved == ["gone"]
    res1 = rerank_topic(np.array([1.0, 0.0]), docids, init, bank, alpha=1.0, depth=4)
    assert res1.order == docids  # alpha 1 (all weight on the initial score) keeps the initial order
    # alpha 0.4, minmax over resolved lo, mid, hi: M = (0, .707, 1) -> (0, .707, 1); S_init (4, 2, 1) -> (1, 1/3, 0)
    res = rerank_topic(np.array([1.0, 0.0]), docids, init, bank, alpha=0.4, depth=4)
    s = {"lo": 0.4 * 1.0, "mid": 0.4 / 3 + 0.6 * (1 / np.sqrt(2)), "hi": 0.6 * 1.0}
    assert res.fused == pytest.approx(s)
    assert res.order == ["hi", "gone", "mid", "lo", "tail"]  # 0.6 > 0.558 > 0.4
