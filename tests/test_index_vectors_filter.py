"""Filtered vector search (VectorIndex.search(..., allowed_ids=...)) against a hand-written numpy reference."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from index_testutil import clustered_vectors

from vidclip.core.errors import ConfigError
from vidclip.index import vectors as vectors_mod
from vidclip.index.vectors import VectorIndex, id_selector


def filtered_reference(x, ids, q, allowed, k):
    """Exact filtered top-k: cosine of every allowed vector, full sort. ids int64 [Q, <=k]."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    keep = np.isin(ids, allowed)
    scores = qn @ xn[keep].T
    order = np.argsort(-scores, axis=1)[:, :k]
    return ids[keep][order]


def _data(n=4000, d=16, seed=0):
    x = clustered_vectors(n, d, clusters=16, seed=seed)
    ids = np.arange(n, dtype=np.int64) * 3 + 7  # not row numbers: the selector must see the stored ids
    q = clustered_vectors(5, d, clusters=16, seed=seed + 1)
    return x, ids, q


# designs whose filtered search scores every allowed vector exactly at 1% selectivity
EXACT_WHEN_SELECTIVE = ["Flat", "IVF16,Flat", "IVF16,SQfp16", "HNSW16", "IVF16_HNSW8,Flat", "RR16,IVF16,Flat"]
# lossy codes: the hits are allowed and k of them, the order approximate
LOSSY = ["IVF16,PQ4x4fs,RFlat", "IVF16,PQ4x4,Refine(Flat)", "PQ4x4", "IVF16,SQ8"]


@pytest.mark.parametrize("design", EXACT_WHEN_SELECTIVE + LOSSY)
def test_one_percent_filter_returns_k_allowed_hits(design):
    x, ids, q = _data()
    index = VectorIndex.build(x, ids, design=design, train_size=4000)
    allowed = np.random.default_rng(3).choice(ids, 40, replace=False)  # 1% of the library
    scores, got = index.search(q, 10, allowed_ids=allowed)
    assert got.shape == (5, 10) and (got >= 0).all()
    assert np.isin(got, allowed).all()
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    ref = filtered_reference(x, ids, q, allowed, 10)
    if design in EXACT_WHEN_SELECTIVE:
        np.testing.assert_array_equal(got, ref)
    else:
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref)])
        assert overlap >= 0.6


@pytest.mark.parametrize("design", ["Flat", "IVF16,Flat", "HNSW16"])
def test_ten_percent_filter_matches_exact_filtered_search(design, monkeypatch):
    # HNSW with more than EXACT_ALLOWED_MAX allowed ids searches the graph with a widened beam
    monkeypatch.setattr(vectors_mod, "EXACT_ALLOWED_MAX", 10)
    x, ids, q = _data()
    index = VectorIndex.build(x, ids, design=design)
    allowed = np.random.default_rng(4).choice(ids, 400, replace=False)
    _, got = index.search(q, 10, allowed_ids=allowed)
    ref = filtered_reference(x, ids, q, allowed, 10)
    assert np.isin(got, allowed).all() and (got >= 0).all()
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref)])
    assert overlap >= (1.0 if design != "HNSW16" else 0.9)


def test_ivf_filter_far_from_the_query_still_gets_k_hits():
    # allowed = the 20% of vectors least like the query: they lie in cells the scaled nprobe does not
    # reach, so the short result is searched again over every cell (exact for IVF,Flat)
    x, ids, q = _data(seed=5)
    q = q[:1]
    index = VectorIndex.build(x, ids, design="IVF64,Flat", search_params="nprobe=1")
    sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ q[0]
    allowed = ids[np.argsort(sims)[:800]]
    _, got = index.search(q, 10, allowed_ids=allowed)
    np.testing.assert_array_equal(got, filtered_reference(x, ids, q, allowed, 10))


def test_hnsw_short_beam_falls_back_to_exact_over_allowed(monkeypatch):
    monkeypatch.setattr(vectors_mod, "EXACT_ALLOWED_MAX", 0)
    x, ids, q = _data()
    index = VectorIndex.build(x, ids, design="HNSW4", search_params="efSearch=1")
    allowed = ids[::400]  # 10 ids: a narrow beam over the graph finds fewer
    _, got = index.search(q, 10, allowed_ids=allowed)
    np.testing.assert_array_equal(got, filtered_reference(x, ids, q, allowed, 10))


@pytest.mark.parametrize("design", ["HNSW16", "IVF16,Flat", "Flat"])
def test_filter_with_tombstones_unknown_ids_and_fewer_allowed_than_k(design):
    x, ids, q = _data()
    index = VectorIndex.build(x, ids, design=design)
    allowed = np.concatenate([ids[:6], [10**9, 2]])  # 2 and 10**9 are not stored ids
    index.remove(ids[:2])
    scores, got = index.search(q, 10, allowed_ids=allowed)
    for row, row_scores in zip(got, scores):
        assert sorted(row[:4].tolist()) == sorted(ids[2:6].tolist())
        assert (row[4:] == -1).all() and np.isneginf(row_scores[4:]).all()
    _, none = index.search(q, 3, allowed_ids=np.array([], dtype=np.int64))
    assert (none == -1).all()


def test_selector_kinds_give_the_same_hits():
    x, ids, q = _data()
    big = ids + (1 << 40)  # a bitmap up to 2**40 is too large: a hash set is used
    small_sel, _, small_n = id_selector(np.concatenate([ids[:50], ids[:5]])[::-1])  # unsorted, duplicates
    big_sel, _, big_n = id_selector(np.sort(big[:50]))
    assert isinstance(small_sel, faiss.IDSelectorBitmap) and isinstance(big_sel, faiss.IDSelectorBatch)
    assert small_n == big_n == 50
    assert [small_sel.is_member(int(i)) for i in (ids[0], ids[49], ids[50], ids[0] + 1)] == [True, True, False, False]
    neg_sel, _, neg_n = id_selector(np.array([-5, 3, 3], dtype=np.int64))
    assert isinstance(neg_sel, faiss.IDSelectorBatch) and neg_n == 2 and neg_sel.is_member(-5)
    _, a = VectorIndex.build(x, ids).search(q, 10, allowed_ids=ids[::37])
    _, b = VectorIndex.build(x, big).search(q, 10, allowed_ids=big[::37])
    np.testing.assert_array_equal(a + (1 << 40), b)


def test_filtered_search_keeps_recorded_nprobe_and_refuses_non_integer_ids():
    x, ids, q = _data()
    index = VectorIndex.build(x, ids, design="IVF16,Flat", search_params="nprobe=3")
    index.search(q, 5, allowed_ids=ids[::2])
    assert index.nprobe == 3 and index.search_params == {"nprobe": 3}
    with pytest.raises(ConfigError, match="integers"):
        index.search(q, 5, allowed_ids=np.array([1.5]))
