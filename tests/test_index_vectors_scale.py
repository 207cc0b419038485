"""Vectors at scale: chunked builds from a sample, large-library designs, streamed recall, the
catalog's chunk iterator and single-query thread switching (vidclip.index.vectors / exact / catalog)."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest
from index_testutil import brute_topk, clustered_vectors

from vidclip.core.errors import ConfigError
from vidclip.index.catalog import Catalog
from vidclip.index.directory import IndexDir
from vidclip.index.exact import array_chunks, exact_search, recall_at_k, sample_chunks
from vidclip.index.vectors import FEW_QUERIES, VectorIndex, choose_design, default_nprobe
from vidclip.retrieval.vectors import l2_normalize


class _CountingChunks:
    """A chunk source over an array that records how many passes ran and the largest chunk given."""

    def __init__(self, x: np.ndarray, ids: np.ndarray, chunk: int):
        self.source = array_chunks(x, ids, chunk)
        self.passes = 0
        self.largest = 0

    def __call__(self):
        self.passes += 1
        for ids, block in self.source():
            self.largest = max(self.largest, len(block))
            yield ids, block


# ----------------------------------------------------------------------------- sampling, sizes


def test_sample_chunks_is_the_seeded_uniform_sample_whatever_the_chunking():
    x = np.arange(1000 * 3, dtype=np.float32).reshape(1000, 3)
    ref = x[np.sort(np.random.default_rng(5).choice(1000, 120, replace=False))]  # by hand
    for chunk in (1, 7, 1000, 4096):
        got = sample_chunks(array_chunks(x, None, chunk)(), 1000, 120, seed=5)
        np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(sample_chunks(array_chunks(x, None, 64)(), 1000, 5000), x)  # size >= n: all
    assert len(sample_chunks(array_chunks(x[:10], None, 4)(), 1000, 1000)) == 10  # the pass yields fewer


def test_train_sample_size_rule_by_hand():
    d = 512
    cap = (2 << 30) // (4 * d)  # 1,048,576 vectors of 512-d float32
    assert cap == 1_048_576
    assert VectorIndex(d, "IVF16,Flat").train_sample_size(10**7) == 20_000  # the floor
    assert VectorIndex(d, "IVF4096,Flat").train_sample_size(10**7) == 64 * 4096
    assert VectorIndex(d, "IVF4096,SQ8").train_sample_size(10**7) == 64 * 4096
    assert VectorIndex(d, "IVF256,PQ64x4fs,RFlat").train_sample_size(10**7) == 65_536  # codebooks need 256 * 256
    assert VectorIndex(d, "IVF16384,SQfp16").train_sample_size(10**7) == cap  # 64 * 16384 > cap
    assert VectorIndex(d, "IVF65536,SQ8").train_sample_size(10**8) == 39 * 65536  # never under faiss' 39 per cell
    assert VectorIndex(d, "IVF4096,SQ8").train_sample_size(50_000) == 50_000  # never more than there are
    assert VectorIndex(d, "IVF4096,SQ8", train_size=7_000).train_sample_size(10**6) == 7_000


def test_auto_design_and_nprobe_by_size():
    assert choose_design(200_000) == "Flat"  # unchanged: exact up to flat_max
    assert choose_design(250_000) == "IVF2048,SQfp16"  # 4 * sqrt(250k) = 2000 -> 2048
    assert choose_design(1_000_000) == "IVF4096,SQfp16"
    assert choose_design(4_000_000) == "IVF8192,SQfp16"  # 8000 -> 8192
    assert choose_design(100_000_000) == "IVF32768,SQ8"  # 40000 -> 32768; 8-bit above 10M
    assert choose_design(2_000, flat_max=1000) == "IVF1024,SQfp16"  # clamped
    assert [default_nprobe(n) for n in (1024, 4096, 8192, 65536)] == [16, 16, 32, 256]
    assert [default_nprobe(n, "IVF,SQ8") for n in (1024, 2048, 4096, 32768)] == [16, 16, 32, 256]  # lossy: 2x
    assert default_nprobe(4096, "IVF4096,PQ64x4fs,RFlat") == 32 and default_nprobe(4096, "IVF4096,SQfp16") == 16
    assert VectorIndex(8, "IVF8192,SQ8").nprobe == 64 and VectorIndex(8, "IVF8192,SQfp16").nprobe == 32


# ----------------------------------------------------------------------------- chunked builds


def test_chunked_flat_build_equals_one_go_and_holds_one_chunk():
    x = clustered_vectors(1500)
    q = clustered_vectors(9, seed=2)
    ids = np.arange(1500, dtype=np.int64) * 3 + 11
    source = _CountingChunks(x, ids, 100)
    chunked = VectorIndex.build_chunked(source, 1500, 24, "Flat")
    assert source.passes == 1 and source.largest == 100  # no training pass; never more than a chunk
    one_go = VectorIndex.build(x, ids, "Flat")
    s1, i1 = chunked.search(q, 10)
    s2, i2 = one_go.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(i1, ids[brute_topk(x, q, 10)])
    np.testing.assert_allclose(s1, s2, rtol=1e-6)


def test_chunked_ivf_trained_on_everything_equals_one_go():
    # 3000 vectors < the 20,000 floor: the "sample" is every vector in order, as in one go.
    x = clustered_vectors(3000)
    q = clustered_vectors(20, seed=3)
    chunked = VectorIndex.build_chunked(array_chunks(x, None, 256), 3000, 24, "IVF16,Flat", search_params="nprobe=4")
    one_go = VectorIndex.build(x, None, "IVF16,Flat", search_params="nprobe=4")
    s1, i1 = chunked.search(q, 10)
    s2, i2 = one_go.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=1e-6)


@pytest.mark.parametrize("design", ["IVF32,Flat", "IVF32,SQ8", "IVF32,SQfp16"])
def test_chunked_ivf_trained_on_a_sample_reaches_the_one_go_recall(design):
    x = clustered_vectors(6000, clusters=40)
    q = clustered_vectors(60, clusters=40, seed=4)
    source = _CountingChunks(x, np.arange(6000), 500)
    chunked = VectorIndex.build_chunked(source, 6000, 24, design, search_params="nprobe=8", train_size=1200)
    assert source.passes == 2 and source.largest == 500  # one pass to sample, one to add
    one_go = VectorIndex.build(x, None, design, search_params="nprobe=8")  # trained on all 6000
    r_chunked = recall_at_k(chunked, x, q, 10)
    r_one_go = recall_at_k(one_go, x, q, 10)
    assert r_one_go > 0.85 and r_chunked > r_one_go - 0.05
    assert chunked.ntotal == 6000


@pytest.mark.parametrize("design", ["IVF16,PQ8x4fs,RFlat", "IVF16,PQ8x4fs,Refine(SQfp16)"])
def test_refined_designs_keep_ids_and_reach_exact_with_enough_candidates(tmp_path, design):
    x = clustered_vectors(2000)
    q = clustered_vectors(12, seed=6)
    ids = np.arange(2000, dtype=np.int64) * 5 + 7
    index = VectorIndex.build_chunked(array_chunks(x, ids, 300), 2000, 24, design, search_params="nprobe=16")
    assert index.k_factor == 32
    # every cell probed and k * k_factor >= N candidates re-ranked: the refine stage sees all vectors
    index.k_factor = 200
    _, got = index.search(q, 10)
    np.testing.assert_array_equal(got, ids[brute_topk(x, q, 10)])
    index.k_factor = 1
    assert recall_at_k(index, x, q, 10, ids) < 1.0  # 4-bit PQ alone is lossy on this data
    index.k_factor = 40
    path = tmp_path / "v.faiss"
    index.save(path)
    loaded = VectorIndex.load(path)
    assert loaded.design == design and loaded.k_factor == 40 and loaded.nprobe == 16
    s1, i1 = index.search(q, 10)
    s2, i2 = loaded.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2)
    # removal: the refine stage cannot delete, so tombstones; still k live results
    gone = i1[:, 0]
    assert loaded.remove(gone) == len(set(gone.tolist()))
    _, after = loaded.search(q, 10)
    assert not np.isin(after, gone).any() and (after >= 0).all()
    with pytest.raises(ConfigError, match="k_factor applies to refined"):
        VectorIndex(24, "IVF16,SQ8").k_factor = 4


# ----------------------------------------------------------------------------- streamed recall


def test_recall_from_chunks_equals_recall_from_the_array():
    x = clustered_vectors(2500, clusters=32)
    q = clustered_vectors(30, clusters=32, seed=7)
    ids = np.arange(2500, dtype=np.int64)[::-1] * 2  # not in row order
    index = VectorIndex.build(x, ids, "IVF32,Flat", search_params="nprobe=2")
    by_array = recall_at_k(index, x, q, 10, ids)
    by_chunks = recall_at_k(index, array_chunks(x, ids, 333), q, 10)
    _, got = index.search(q, 10)
    truth = ids[brute_topk(x, q, 10)]
    by_hand = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got.tolist(), truth.tolist())])
    assert by_array == pytest.approx(by_hand) and by_chunks == pytest.approx(by_hand)
    assert recall_at_k(index, array_chunks(x, ids, 333), q, 10, tie_tol=1e-6) >= by_hand
    assert by_hand < 1.0


def test_exact_search_pads_and_maps_ids_when_empty():
    s, i = exact_search(np.zeros((0, 4), np.float32), l2_normalize(np.ones((2, 4))), 3, ids=np.zeros(0, np.int64))
    assert (i == -1).all() and np.isneginf(s).all()


# ----------------------------------------------------------------------------- single-query threads


def test_single_queries_run_on_one_thread_and_match_the_batch(monkeypatch):
    x = clustered_vectors(3000)
    q = clustered_vectors(16, seed=8)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        index = VectorIndex.build(x, None, "IVF16,SQfp16", search_params="nprobe=4")
        seen: list[tuple[int, int]] = []
        hold: list[threading.Event] = []  # [entered, release]: a search from another thread waits
        inner = index._index

        class Spy:  # records faiss' thread count at each search call
            ntotal = inner.ntotal

            def search(self, queries, k, **kw):
                seen.append((len(queries), faiss.omp_get_max_threads()))
                if hold and threading.current_thread() is not threading.main_thread():
                    hold[0].set()
                    hold[1].wait(30)
                return inner.search(queries, k, **kw)

        monkeypatch.setattr(index, "_index", Spy())
        s_batch, i_batch = index.search(q, 10)
        singles = [index.search(q[j], 10) for j in range(len(q))]
        few = index.search(q[:FEW_QUERIES], 10)
        assert seen[0] == (16, 2)  # the batch keeps every thread
        assert all(t == 1 for _, t in seen[1:])  # single queries and a few run on one
        assert faiss.omp_get_max_threads() == 2  # restored
        np.testing.assert_array_equal(np.concatenate([i for _, i in singles]), i_batch)
        np.testing.assert_allclose(np.concatenate([s for s, _ in singles]), s_batch, rtol=1e-6)
        np.testing.assert_array_equal(few[1], i_batch[:FEW_QUERIES])
        # the setting is per calling thread: while another thread's single query runs on one
        # thread (held inside the search), this thread still has both
        entered, release = threading.Event(), threading.Event()
        worker = threading.Thread(target=index.search, args=(q[0], 10))
        hold[:] = [entered, release]
        worker.start()
        assert entered.wait(30)
        assert seen[-1] == (1, 1) and faiss.omp_get_max_threads() == 2
        release.set()
        worker.join(30)
        assert faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(before)


# ----------------------------------------------------------------------------- the catalog's chunks


MODEL = {"family": "open_clip", "name": "tiny-vit", "pretrained": None, "embed_dim": 4, "image_size": 32,
         "random_weights": True, "weights_digest": "abc"}


def _catalog_with_vectors(tmp_path, n_videos: int = 23) -> tuple[Catalog, dict[int, np.ndarray], dict[int, np.ndarray]]:
    """A catalog whose indexed videos have vectors (some failed / deleted ones have none) and 0-3
    windows each. Returns (catalog, video id -> vector, segment id -> vector) of the indexed ones."""
    cat = Catalog(tmp_path / "c.sqlite")
    rng = np.random.default_rng(0)
    videos, segments = {}, {}
    with cat.transaction() as cur:
        for i in range(n_videos):
            status = "failed" if i % 7 == 3 else "indexed"
            vec = rng.standard_normal(4).astype(np.float32)
            vid = cat.insert_video(cur, key=f"v{i}.mp4", source="/lib", root="/lib", path=f"v{i}.mp4",
                                   abs_path=f"/lib/v{i}.mp4", size=1, mtime_ns=1, hash="h", status=status,
                                   shard="s", offset=0, count=1, vector=vec if status == "indexed" else None)
            if status != "indexed":
                continue
            videos[vid] = vec
            w = rng.standard_normal((i % 4, 4)).astype(np.float32)
            cat.insert_segments(cur, vid, [(float(j), float(j + 1), j, 1) for j in range(len(w))], w)
        gone = sorted(videos)[::5]  # some indexed videos deleted again: their windows go too
        cat.mark_deleted(cur, gone)
        for vid in gone:
            del videos[vid]
        cat.bump_generation(cur)
    sids, svecs = cat.segment_vectors(4)
    segments = dict(zip(sids.tolist(), svecs))
    return cat, videos, segments


@pytest.mark.parametrize("chunk", [1, 4, 5, 1000])
def test_iter_vectors_yields_every_stored_vector_exactly_once_in_id_order(tmp_path, chunk):
    cat, videos, segments = _catalog_with_vectors(tmp_path)
    try:
        for kind, expected in (("videos", videos), ("segments", segments)):
            steps = list(cat.iter_vectors(kind, 4, chunk=chunk))
            assert all(0 < len(ids) <= chunk and vecs.shape == (len(ids), 4) for ids, vecs in steps)
            ids = np.concatenate([s[0] for s in steps])
            vecs = np.concatenate([s[1] for s in steps])
            assert ids.tolist() == sorted(expected) and len(set(ids.tolist())) == len(ids)  # once each, in order
            np.testing.assert_array_equal(vecs, np.stack([expected[i] for i in ids.tolist()]))
            assert cat.count_vectors(kind) == len(expected) > 0
            ref_ids, ref_vecs = cat.video_vectors(4) if kind == "videos" else cat.segment_vectors(4)
            np.testing.assert_array_equal(ids, ref_ids)
            np.testing.assert_array_equal(vecs, ref_vecs)
        with pytest.raises(ValueError, match="'videos' or 'segments'"):
            cat.count_vectors("frames")
    finally:
        cat.close()


def test_sync_faiss_streams_the_catalog_in_chunks(tmp_path, monkeypatch):
    cat, videos, _ = _catalog_with_vectors(tmp_path, n_videos=60)
    try:
        with cat.transaction() as cur:
            cat.set_meta(cur, "design_videos", "IVF2,Flat")
        seen = []
        iter_vectors = Catalog.iter_vectors

        def small_chunks(self, kind, dim, chunk=65_536):
            for ids, vecs in iter_vectors(self, kind, dim, chunk=7):
                seen.append(len(ids))
                yield ids, vecs

        monkeypatch.setattr(Catalog, "iter_vectors", small_chunks)
        index = IndexDir(tmp_path).sync_faiss(cat, "videos", 4, save=True)
        assert index.design == "IVF2,Flat" and index.ntotal == len(videos)
        assert max(seen) == 7 and sum(seen) == 2 * len(videos)  # a sampling pass and an adding pass
        assert index.metadata["trained_on"] == len(videos) and index.metadata["generation"] == cat.generation
        index.nprobe = 2  # both cells: exact
        ids = np.array(sorted(videos))
        x = np.stack([videos[i] for i in ids])
        _, got = index.search(x[:5], 3)
        np.testing.assert_array_equal(got, ids[brute_topk(x, x[:5], 3)])
    finally:
        cat.close()


def test_training_normalises_in_place_only_when_asked():
    x = clustered_vectors(2000) * 3.0
    before = x.copy()
    VectorIndex(24, "IVF8,Flat").train(x)
    np.testing.assert_array_equal(x, before)  # the caller's array is left alone
    sample = sample_chunks(array_chunks(x, None, 300)(), 2000, 500, seed=1)
    VectorIndex(24, "IVF8,Flat").train(sample, in_place=True)
    np.testing.assert_allclose(np.linalg.norm(sample, axis=1), 1.0, rtol=1e-5)  # normalised where it lay
    np.testing.assert_allclose(sample, l2_normalize(x[np.sort(np.random.default_rng(1).choice(2000, 500, replace=False))]),
                               rtol=1e-6)


def test_sync_faiss_of_an_empty_catalog_falls_back_to_flat(tmp_path, caplog):
    cat, videos, _ = _catalog_with_vectors(tmp_path, n_videos=0)
    try:
        with cat.transaction() as cur:
            cat.set_meta(cur, "design_videos", "IVF2,Flat")
        index = IndexDir(tmp_path).sync_faiss(cat, "videos", 4, save=False)
        assert videos == {} and index.design == "Flat" and index.ntotal == 0
        assert caplog.text == ""  # an empty new index is not a problem: nothing to say until it has vectors
    finally:
        cat.close()
