"""vidclip.retrieval: pooling, normalisation, fusion and ordering against hand-written references; l2_normalize."""

from __future__ import annotations

import numpy as np
import pytest

from vidclip.core.errors import ConfigError
from vidclip.retrieval.fusion import fuse, fuse_ranking, normalize, pool_scores
from vidclip.retrieval.vectors import l2_normalize


def _ref_pool(groups, pool):
    out = []
    for g in groups:
        if not g:
            out.append(np.nan)
        elif pool == "max":
            out.append(max(g))
        elif pool == "mean":
            out.append(sum(g) / len(g))
        else:
            k = int(pool.split(":")[1])
            best = sorted(g, reverse=True)[:k]
            out.append(sum(best) / len(best))
    return np.array(out)


@pytest.mark.parametrize("pool", ["max", "mean", "topk:2", "topk:5"])
def test_pool_scores_matches_loop(pool):
    rng = np.random.default_rng(0)
    groups = [list(rng.normal(size=n)) for n in (3, 1, 0, 4, 2)]
    counts = np.array([len(g) for g in groups])
    sims = np.concatenate([np.array(g) for g in groups if g])
    np.testing.assert_allclose(pool_scores(sims, counts, pool), _ref_pool(groups, pool), equal_nan=True)


def test_pool_rejects_bad_spec():
    with pytest.raises(ConfigError, match="topk:K"):
        pool_scores(np.zeros(1), np.array([1]), "topk:0")


def test_normalizations_by_hand():
    x = np.array([3.0, 1.0, 2.0, 2.0])
    np.testing.assert_allclose(normalize(x, "none"), x)
    np.testing.assert_allclose(normalize(x, "minmax"), [1.0, 0.0, 0.5, 0.5])
    sd = np.sqrt(((x - 2.0) ** 2).mean())
    np.testing.assert_allclose(normalize(x, "zscore"), (x - 2.0) / sd)
    # ranks (descending): 3 -> 1, 2,2 -> 2.5 each, 1 -> 4; (n - r) / (n - 1)
    np.testing.assert_allclose(normalize(x, "rank"), [1.0, 0.0, 0.5, 0.5])
    np.testing.assert_allclose(normalize(np.array([5.0, 5.0]), "minmax"), [0.0, 0.0])
    np.testing.assert_allclose(normalize(np.array([5.0]), "rank"), [1.0])


def test_fuse_alpha_weighs_the_initial_score_as_in_the_paper():
    # CLIPRerank: S_re = a * (initial model's score) + (1 - a) * (CLIP score), a = 0.4.
    # Three candidates a, b, c by hand: initial 10, 0, 5 -> minmax 1, 0, 0.5; CLIP .2, .4, .3 -> 0, 1, 0.5.
    init, clip = np.array([10.0, 0.0, 5.0]), np.array([0.2, 0.4, 0.3])
    s = fuse(init_scores=init, clip_scores=clip)  # defaults: alpha 0.4, minmax
    np.testing.assert_allclose(s, [0.4 * 1 + 0.6 * 0, 0.4 * 0 + 0.6 * 1, 0.4 * 0.5 + 0.6 * 0.5])  # .4, .6, .5
    assert np.argsort(-s).tolist() == [1, 2, 0]  # b, c, a: CLIP weighs more by default
    np.testing.assert_allclose(fuse(init_scores=init, clip_scores=clip, alpha=1.0), [1.0, 0.0, 0.5])  # initial only
    np.testing.assert_allclose(fuse(init_scores=init, clip_scores=clip, alpha=0.0), [0.0, 1.0, 0.5])  # CLIP only
    with pytest.raises(ConfigError):
        fuse(init_scores=init, clip_scores=clip, alpha=1.5)
    with pytest.raises(TypeError):  # positional scores are refused: the two are easy to swap
        fuse(init, clip, 0.4)


def test_fuse_ranking_sorts_the_block_and_keeps_slots_and_tail():
    docids = ["lo", "gone", "mid", "hi", "tail"]  # initial order
    init = np.array([4.0, 3.0, 2.0, 1.0, 0.0])
    m = np.array([0.0, np.nan, 1 / np.sqrt(2), 1.0])  # M of the first depth=4; "gone" has no frames
    res = fuse_ranking(docids, init, m, alpha=0.0, depth=4)
    assert res.order == ["hi", "gone", "mid", "lo", "tail"]  # CLIP only; "gone" keeps slot 2; "tail" below depth
    assert res.unresolved == ["gone"] and res.clip == pytest.approx({"lo": 0.0, "mid": 1 / np.sqrt(2), "hi": 1.0})
    assert fuse_ranking(docids, init, m, alpha=1.0, depth=4).order == docids
    with pytest.raises(ConfigError, match="--depth must be positive"):
        fuse_ranking(docids, init, m, depth=0)


def test_l2_normalize_copy_and_in_place():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], np.float32)
    want = np.array([[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], np.float32)
    got = l2_normalize(x)
    np.testing.assert_allclose(got, want)
    assert got.dtype == np.float32 and got.flags.c_contiguous and x[0, 0] == 3.0  # a copy by default
    np.testing.assert_allclose(l2_normalize([3.0, 4.0]), want[:1])  # a 1-D input is one row
    assert l2_normalize(x, in_place=True) is x
    np.testing.assert_array_equal(x, got)  # in place: the same numbers
    with pytest.raises(TypeError):
        l2_normalize(x.astype(np.float64), in_place=True)
