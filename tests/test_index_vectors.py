"""vidclip.index.vectors / exact: exact/approximate inner-product search, ids, removal, persistence."""

from __future__ import annotations

import numpy as np
import pytest
from index_testutil import brute_topk, clustered_vectors

from vidclip.core.errors import ConfigError, IndexMismatchError
from vidclip.index.exact import exact_search, recall_at_k
from vidclip.index.vectors import VectorIndex, choose_design
from vidclip.retrieval.vectors import l2_normalize


def test_l2_normalize_rows_and_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    y = l2_normalize(x)
    np.testing.assert_allclose(y[0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(y[1], [0.0, 0.0])
    assert l2_normalize(np.array([0.0, 2.0])).shape == (1, 2)


def test_exact_search_matches_full_sort_across_chunks():
    x = clustered_vectors(1000)
    q = clustered_vectors(7, seed=1)
    xn, qn = l2_normalize(x), l2_normalize(q)
    ref = brute_topk(x, q, 10)
    scores, ids = exact_search(xn, qn, 10, chunk=97)  # many chunks: exercises the running top-k merge
    np.testing.assert_array_equal(ids, ref)
    np.testing.assert_allclose(scores, np.take_along_axis(qn @ xn.T, ref, axis=1), rtol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)
    # custom ids and k larger than N
    s2, i2 = exact_search(xn[:3], qn, 5, ids=np.array([30, 20, 10]))
    assert set(i2[0, :3]) == {10, 20, 30} and list(i2[0, 3:]) == [-1, -1] and np.isneginf(s2[0, 3:]).all()


def test_flat_is_exact_and_ids_are_kept():
    x = clustered_vectors(500)
    q = clustered_vectors(5, seed=2)
    ids = np.arange(500, dtype=np.int64) * 7 + 1000
    index = VectorIndex.build(x, ids, "Flat")
    assert index.design == "Flat" and index.ntotal == 500
    scores, got = index.search(q, 8)
    np.testing.assert_array_equal(got, ids[brute_topk(x, q, 8)])
    assert scores.dtype == np.float32 and got.dtype == np.int64
    assert recall_at_k(index, x, q, 8, ids=ids) == 1.0


def test_recall_at_k_counts_overlap_by_hand():
    x = clustered_vectors(2000, clusters=32)
    q = clustered_vectors(20, clusters=32, seed=5)
    index = VectorIndex.build(x, None, "IVF32,Flat", search_params="nprobe=1")
    _, got = index.search(q, 10)
    truth = brute_topk(x, q, 10)
    by_hand = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got.tolist(), truth.tolist())])
    r = recall_at_k(index, x, q, 10)
    assert r == pytest.approx(by_hand)
    assert r < 1.0  # one probed cell of 32 misses some neighbours on this data
    index.nprobe = 32  # every cell: exhaustive, exact
    assert recall_at_k(index, x, q, 10) == 1.0


@pytest.mark.parametrize("design", ["Flat", "IVF16,Flat", "HNSW8", "IVF16,SQ8"])
def test_remove_excludes_ids_and_keeps_k_results(design):
    x = clustered_vectors(600)
    index = VectorIndex.build(x, np.arange(600) + 1, design)
    if "IVF" in design:
        index.nprobe = 16
    if design.startswith("HNSW"):
        index.ef_search = 64
    _, before = index.search(x[:3], 5)
    gone = before[:, 0]  # each query's own best hit
    assert index.remove(list(gone) + [10**9]) == 3  # unknown id ignored
    assert index.ntotal == 597
    _, after = index.search(x[:3], 5)
    assert not np.isin(after, gone).any()
    assert (after >= 0).all()  # still 5 live results each
    assert index.remove(gone) == 0  # removing twice is a no-op


def test_hnsw_tombstones_survive_save_and_block_reuse(tmp_path):
    x = clustered_vectors(300)
    index = VectorIndex.build(x, np.arange(300), "HNSW8", search_params="efSearch=40")
    index.remove([0, 1, 2])
    path = tmp_path / "v.idx"
    index.save(path)
    loaded = VectorIndex.load(path)
    assert loaded.ntotal == 297 and loaded.ef_search == 40
    _, got = loaded.search(x[:3], 4)
    assert not np.isin(got, [0, 1, 2]).any()
    with pytest.raises(IndexMismatchError, match="cannot be reused"):
        loaded.add(x[:1], [1])
    loaded.reset()  # a rebuild clears tombstones
    loaded.add(x[:2], [1, 2])
    assert loaded.ntotal == 2


def test_save_load_roundtrip_is_atomic_and_identical(tmp_path):
    x = clustered_vectors(800)
    q = clustered_vectors(4, seed=3)
    index = VectorIndex.build(x, np.arange(800) * 3, "IVF16,Flat", search_params="nprobe=4", metadata={"generation": 7})
    path = tmp_path / "sub" / "videos.faiss"
    index.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["videos.faiss"]  # no tmp left behind
    loaded = VectorIndex.load(path)
    assert loaded.nprobe == 4 and loaded.metadata == {"generation": 7} and loaded.design == "IVF16,Flat"
    s1, i1 = index.search(q, 6)
    s2, i2 = loaded.search(q, 6)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2)
    # the faiss payload: all vectors + ids, smaller than the file, which adds our header
    assert 800 * (24 * 4 + 8) < index.nbytes() < path.stat().st_size


def test_reset_keeps_training():
    x = clustered_vectors(700)
    index = VectorIndex.build(x, None, "IVF8,Flat")
    index.reset()
    assert index.ntotal == 0 and index.is_trained
    index.add(x[:10], np.arange(10))
    assert index.ntotal == 10


def test_pq_design_trains_on_sample_and_searches():
    x = clustered_vectors(3000, d=16)
    index = VectorIndex(16, "IVF8,PQ8x6", train_size=1000, search_params="nprobe=8")
    index.add(x, np.arange(3000))
    assert index.is_trained and index.ntotal == 3000
    # 8 sub-quantisers of 6 bits: lossy (measured 0.63), far above chance (10 / 3000).
    assert recall_at_k(index, x, x[:50], 10) > 0.45


def test_empty_index_search_and_choose_design():
    index = VectorIndex(8)
    s, i = index.search(np.ones(8), 3)
    assert (i == -1).all() and np.isneginf(s).all()
    assert choose_design(10) == "Flat"
    assert choose_design(200_000) == "Flat"
    assert choose_design(1_000_000) == "IVF4096,SQfp16"  # 4 * sqrt(1e6) = 4000 -> 4096
    assert choose_design(300_000, flat_max=1000) == "IVF2048,SQfp16"  # 4 * sqrt = 2191 -> 2048
    assert choose_design(2_000, flat_max=1000) == "IVF1024,SQfp16"  # clamped


def test_too_few_vectors_to_train_names_the_reason_without_faiss_source_lines():
    from vidclip.core.errors import VidclipError

    index = VectorIndex(8, "IVF64,SQfp16")
    with pytest.raises(VidclipError) as e:
        index.train(clustered_vectors(12, d=8))
    message = str(e.value)
    assert message.startswith("vector index 'IVF64,SQfp16': training on 12 vectors failed: ")
    assert "(12)" in message and "(64)" in message  # faiss' own reason: points vs clusters
    assert "Error in" not in message and ".cpp" not in message


def test_bad_inputs_raise_typed_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a valid faiss index_factory string"):
        VectorIndex(8, "NoSuchIndex123")
    index = VectorIndex(8)
    with pytest.raises(IndexMismatchError, match="8-d"):
        index.add(np.ones((2, 5)), [0, 1])
    with pytest.raises(ConfigError, match="2 vectors but 3 ids"):
        index.add(np.ones((2, 8)), [0, 1, 2])
    with pytest.raises(ConfigError, match="nprobe applies to IVF"):
        index.nprobe = 4
    bad = tmp_path / "x.faiss"
    bad.write_bytes(b"not an index at all")
    with pytest.raises(IndexMismatchError, match="bad magic"):
        VectorIndex.load(bad)
    good = tmp_path / "g.faiss"
    VectorIndex.build(np.eye(8, dtype=np.float32), None, "Flat").save(good)
    good.write_bytes(good.read_bytes()[:-40])  # truncated
    with pytest.raises(IndexMismatchError, match="corrupt"):
        VectorIndex.load(good)


def test_few_training_points_is_one_vidclip_warning_not_faiss_stderr(caplog, capfd):
    import logging

    x = np.random.default_rng(0).standard_normal((12, 16)).astype(np.float32)
    idx = VectorIndex(16, design="IVF2,SQfp16")
    with caplog.at_level(logging.WARNING, logger="vidclip"):
        idx.train(x)
    assert idx.is_trained
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("vidclip")]
    assert warned == ["vector index 'IVF2,SQfp16': 12 training vectors for 2 cells (faiss wants 78); "
                      "its cells may be poor: check with --check-recall"]
    assert "clustering" not in capfd.readouterr().err  # faiss' own C++ line is not printed


def test_search_params_one_string_parsed_and_checked_in_one_place():
    from vidclip.index.designs import format_search_params, parse_search_params

    assert parse_search_params(" nprobe=16, efSearch=64 ") == {"nprobe": 16, "efSearch": 64}
    assert parse_search_params("") == parse_search_params(None) == {}
    assert parse_search_params({"nprobe": None, "k_factor": 8}) == {"k_factor": 8}  # None: not given
    assert format_search_params({"k_factor": 8, "nprobe": 4, "efSearch": None}) == "nprobe=4,k_factor=8"
    for bad, message in (("nprobe", "not NAME=VALUE"), ("probes=3", "unknown"), ("nprobe=0", "positive integer"),
                         ("efSearch=1.5", "positive integer"), ({"nprobe": True}, "positive integer")):
        with pytest.raises(ConfigError, match=message):
            parse_search_params(bad)

    x = clustered_vectors(600, 16)
    ivf = VectorIndex.build(x, None, "IVF16,Flat")
    assert ivf.search_params == {"nprobe": 16}  # default_nprobe
    ivf.set_search_params("nprobe=4,efSearch=32", only_applicable=True)  # a recorded setting: each takes its own
    assert ivf.search_params == {"nprobe": 4} and ivf.nprobe == 4
    with pytest.raises(ConfigError, match="efSearch applies to HNSW designs only"):
        ivf.set_search_params("efSearch=32")
    hnsw = VectorIndex(16, "HNSW8")
    assert hnsw.search_params == {"efSearch": 16}  # faiss' default, reported
    hnsw.ef_search = 24
    assert hnsw.search_params == {"efSearch": 24}
    assert VectorIndex(16, "Flat").search_params == {}
