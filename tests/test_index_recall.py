"""vidclip.index: the built-in recall check (check_recall, `vidclip index --check-recall`) and the
search knobs it measures (--design, --search-params / --nprobe recorded in the index)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from index_testutil import make_clip

from vidclip.core.errors import ConfigError, VidclipError
from vidclip.index import check_recall, index_library
from vidclip.index.directory import IndexDir, record_search_params, recorded_search_params
from vidclip.index.exact import recall_at_k
from vidclip.index.vectors import VectorIndex

INDEX_OPTS = ["--model", "tiny-vit", "--pretrained", "none", "--workers", "0",
              "--fps", "4", "--window", "1", "--stride", "0.5", "--quiet"]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    lib = tmp_path_factory.mktemp("recall") / "lib"
    for i in range(8):
        make_clip(lib / f"clip{i}.mp4", seed=i, seconds=2.0 + 0.5 * (i % 3))
    return lib


def _stored(idx):
    """(all stored frames float32 [F, D], video ids [N], video vectors [N, D], segment ids, segment vectors)."""
    cat = IndexDir(idx).open_catalog(readonly=True)
    try:
        dim = int(cat.get_meta("model")["embed_dim"])
        frames = np.concatenate([
            np.load(idx / "features/shards" / r["shard"] / "emb.npy")[r["offset"]:r["offset"] + r["count"]]
            for r in cat.videos(status="indexed")]).astype(np.float32)
        return (frames, *cat.video_vectors(dim), *cat.segment_vectors(dim))
    finally:
        cat.close()


def _recall_by_hand(faiss_file, ids, vectors, queries, k, nprobe=None):
    """Full sort for the truth, the saved faiss index for the answers, set overlap counted in Python."""
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    q, v = unit(queries), unit(vectors)
    truth = ids[np.argsort(-(q @ v.T), axis=1, kind="stable")[:, :k]]
    index = VectorIndex.load(faiss_file)
    if nprobe is not None:
        index.nprobe = nprobe
    _, got = index.search(q, k)
    return float(np.mean([len(set(t.tolist()) & set(g.tolist())) / min(k, len(ids)) for t, g in zip(truth, got)]))


def test_check_recall_matches_hand_computation_ivf_and_flat(tmp_path, library, tiny_clip, windows_sampler):
    idx = tmp_path / "idx"
    index_library(library, idx, tiny_clip, windows_sampler, design="IVF4,Flat", segment_design="IVF4,Flat", search_params="nprobe=1",
                  workers=0, progress=False)
    frames, vid_ids, vid_vecs, seg_ids, seg_vecs = _stored(idx)

    # More queries than frames: every stored frame is a query, so the hand computation sees the same set.
    res = check_recall(idx, k=3, num_queries=10_000)
    assert res["queries"] == len(frames) and res["query_source"] == "frames" and res["random_weights"]
    v, s = res["videos"], res["segments"]
    assert (v["design"], v["requested"], v["nprobe"], v["exact"], v["vectors"]) == ("IVF4,Flat", "IVF4,Flat", 1, False, 8)
    assert s["vectors"] == len(seg_ids) and s["nprobe"] == 1
    by_hand = _recall_by_hand(idx / "videos.faiss", vid_ids, vid_vecs, frames, 3)
    assert v["recall"] == pytest.approx(by_hand, abs=1e-6)
    assert v["recall"] < 1.0  # one of 4 cells probed misses neighbours: the check must show it
    assert s["recall"] == pytest.approx(_recall_by_hand(idx / "segments.faiss", seg_ids, seg_vecs, frames, 3), abs=1e-6)
    assert v["verdict"] == f"video index IVF4,Flat nprobe=1: recall@3 = {v['recall']:.3f} over {len(frames)} frame queries (8 vectors)"

    # Every cell probed = exhaustive: exact. The override is measured, not recorded.
    res4 = check_recall(idx, k=3, num_queries=10_000, search_params="nprobe=4")
    assert res4["videos"]["recall"] == 1.0 and res4["segments"]["recall"] == 1.0 and res4["videos"]["nprobe"] == 4
    assert check_recall(idx, k=3, num_queries=10_000)["videos"]["nprobe"] == 1

    # A random subset of frames: the asked-for count, reproducible by seed, a different draw by another seed.
    a, b = check_recall(idx, k=3, num_queries=20, seed=1), check_recall(idx, k=3, num_queries=20, seed=1)
    assert a["queries"] == 20 and a == b

    # Forcing exact search on the same library: recall 1.0 by construction.
    index_library(library, idx, tiny_clip, windows_sampler, design="Flat", segment_design="Flat", workers=0, progress=False)
    flat = check_recall(idx, k=5, num_queries=10_000)
    for kind in ("videos", "segments"):
        assert flat[kind]["design"] == "Flat" and flat[kind]["exact"] and flat[kind]["recall"] == 1.0
        assert flat[kind]["nprobe"] is None
    assert flat["videos"]["verdict"].endswith("(8 vectors; exact search)")


def test_check_recall_reads_but_never_writes(tmp_path, library, tiny_clip, windows_sampler):
    idx = tmp_path / "idx"
    index_library(library, idx, tiny_clip, windows_sampler, design="IVF4,Flat", segment_design="IVF4,Flat", search_params="nprobe=1",
                  workers=0, progress=False)
    (idx / "videos.faiss").unlink()  # stale / missing faiss: measured as a reader rebuilds it, in memory
    res = check_recall(idx, k=3, num_queries=10_000)
    assert not (idx / "videos.faiss").exists()
    assert res["videos"]["design"] == "IVF4,Flat" and res["videos"]["nprobe"] == 1 and 0.0 < res["videos"]["recall"] <= 1.0

    with pytest.raises(ConfigError, match="k must be a positive integer"):
        check_recall(idx, k=0)
    with pytest.raises(ConfigError, match="number of queries"):
        check_recall(idx, num_queries=0)
    with pytest.raises(ConfigError, match="nprobe must be a positive integer"):
        check_recall(idx, search_params={"nprobe": -1})
    with pytest.raises(VidclipError, match="not a vidclip index"):
        check_recall(tmp_path / "nowhere")


def test_check_recall_with_text_queries(tmp_path, library, tiny_clip, windows_sampler):
    idx = tmp_path / "idx"
    index_library(library, idx, tiny_clip, windows_sampler, design="Flat", workers=0, progress=False)
    texts = ["a red bar moving right", "a dark clip", "", "blue water"]
    res = check_recall(idx, k=4, texts=texts, clip=tiny_clip)
    assert res["query_source"] == "texts" and res["queries"] == 3 and res["seed"] is None  # empty line dropped
    assert res["videos"]["recall"] == 1.0 and res["segments"]["recall"] == 1.0
    assert "over 3 text queries" in res["videos"]["verdict"]


def test_recall_at_k_counts_ties_only_when_asked():
    # Rows 0 and 1 are the same vector: for a query nearest to it, exact top-1 keeps one of them.
    x = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0]], np.float32)
    ids = np.array([10, 11, 12, 13])
    q = np.array([[0.9, 0.1, 0.0], [0.0, 1.0, 0.1]], np.float32)

    class Fixed:  # an "index" answering with the other duplicate, and a real miss for query 2
        def search(self, queries, k):
            return np.zeros((2, 1), np.float32), np.array([[11], [13]])

    from vidclip.index.exact import exact_search

    _, truth = exact_search(x / np.linalg.norm(x, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True), 1, ids)
    assert truth[:, 0].tolist() == [10, 12]  # the tie went to row 0
    assert recall_at_k(Fixed(), x, q, 1, ids) == 0.0  # strict overlap: both count as misses
    assert recall_at_k(Fixed(), x, q, 1, ids, tie_tol=1e-6) == 0.5  # the duplicate is a hit, 13 is not


def test_cli_check_recall(tmp_path, library, capsys):
    from vidclip.cli.main import main

    idx = tmp_path / "idx"
    assert main(["index", str(library), "--index", str(idx), *INDEX_OPTS, "--design", "IVF4,Flat", "--nprobe", "1"]) == 0
    capsys.readouterr()
    assert main(["index", "--report", str(idx), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["search_params"] == "nprobe=1"
    assert main(["index", "--report", str(idx)]) == 0
    assert "faiss designs: videos IVF4,Flat, segments IVF4,Flat, nprobe=1" in capsys.readouterr().out

    assert main(["index", "--check-recall", str(idx), "-k", "3", "--queries", "500", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["k"] == 3 and res["videos"]["design"] == "IVF4,Flat" and res["videos"]["recall"] < 1.0 and res["passed"]

    assert main(["index", "--check-recall", str(idx), "-k", "3", "--queries", "500"]) == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert lines[0] == res["videos"]["verdict"] and lines[1].startswith("segment index IVF4,Flat nprobe=1: recall@3 = ")
    assert "RANDOM weights" in out.err

    # --min-recall turns the check into a gate; a larger nprobe (measured, not recorded) passes it.
    assert main(["index", "--check-recall", str(idx), "-k", "3", "--min-recall", "1.0"]) == 1
    assert "recall below --min-recall 1.0: videos" in capsys.readouterr().err
    assert main(["index", "--check-recall", str(idx), "-k", "3", "--min-recall", "1.0", "--nprobe", "4"]) == 0
    capsys.readouterr()

    # Recording a new nprobe on an unchanged library applies it without re-encoding anything.
    assert main(["index", str(library), "--index", str(idx), "--nprobe", "4", "--quiet", "--workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["indexed"] == 0
    assert main(["index", "--check-recall", str(idx), "-k", "3", "--min-recall", "1.0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["videos"]["nprobe"] == 4
    # --search-params is the one form (--nprobe / --ef-search its short forms): a knob the IVF lacks is
    # recorded for the designs that have it, and what was recorded before stays unless given again.
    assert main(["index", str(library), "--index", str(idx), "--search-params", "efSearch=48", "--quiet",
                 "--workers", "0"]) == 0
    capsys.readouterr()
    assert IndexDir(idx).read_meta("search_params") == {"search_params": "nprobe=4,efSearch=48"}
    assert main(["index", "--check-recall", str(idx), "-k", "3", "--search-params", "nprobe=2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["videos"]["search_params"] == "nprobe=2"
    assert main(["index", str(library), "--index", str(idx), "--search-params", "nprobe=0"]) == 2
    assert "nprobe must be a positive integer" in capsys.readouterr().err
    assert main(["index", str(library), "--index", str(idx), "--search-params", "probes=3"]) == 2
    assert "search parameter 'probes': unknown" in capsys.readouterr().err

    texts = tmp_path / "queries.txt"
    texts.write_text("a red bar\na green clip\n")
    assert main(["index", "--check-recall", str(idx), "--query-texts", str(texts), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["queries"] == 2

    assert main(["index", "--check-recall", str(idx), "-k", "0"]) == 2
    assert "k must be a positive integer" in capsys.readouterr().err
    assert main(["index", "--check-recall", str(idx), "--min-recall", "2"]) == 2
    assert "--min-recall must be within [0, 1]" in capsys.readouterr().err
    assert main(["index", "--check-recall", str(idx), "--report", str(idx)]) == 2  # one mode at a time
    assert "give exactly one of" in capsys.readouterr().err


def test_a_design_too_big_for_the_library_warns_once_per_index_and_stays_exact(tmp_path, library, tiny_clip,
                                                                               windows_sampler, caplog):
    """IVF64 on 8 videos cannot train: one warning per faiss index per run (not one at open and one
    more at the end), exact search meanwhile, and a re-run with nothing new says nothing."""
    idx = tmp_path / "idx"
    with caplog.at_level("WARNING", logger="vidclip.index.directory"):
        index_library(library, idx, tiny_clip, windows_sampler, design="IVF64,Flat", segment_design="IVF64,Flat",
                      workers=0, progress=False)
    untrained = [r.getMessage() for r in caplog.records if "cannot train" in r.getMessage()]
    assert len(untrained) == 2 and {m.split(":")[0].rsplit("/", 1)[-1] for m in untrained} == {
        "videos.faiss", "segments.faiss"}
    assert all("IVF64,Flat on" in m and ".cpp" not in m for m in untrained)
    assert VectorIndex.load(idx / "videos.faiss").design == "Flat"
    caplog.clear()
    with caplog.at_level("WARNING", logger="vidclip.index.directory"):
        index_library(library, idx, tiny_clip, windows_sampler, workers=0, progress=False)
    assert not [r for r in caplog.records if "cannot train" in r.getMessage()]


def test_search_knobs_of_an_older_index_still_apply_and_fold_into_one_key(tmp_path, library, tiny_clip, windows_sampler):
    """An index written before ``search_params`` recorded one meta key per knob and kind."""
    idx = tmp_path / "idx"
    index_library(library, idx, tiny_clip, windows_sampler, design="IVF4,Flat", segment_design="IVF4,Flat",
                  workers=0, progress=False)
    folder = IndexDir(idx)
    with folder.open_catalog() as cat, cat.transaction() as cur:
        cat.delete_meta(cur, "search_params")
        for kind in ("videos", "segments"):
            cat.set_meta(cur, f"nprobe_{kind}", 3)
            cat.set_meta(cur, f"ef_search_{kind}", 40)
        cat.bump_generation(cur)  # the saved faiss files are stale: rebuilt with the recorded knobs
    res = check_recall(idx, k=3, num_queries=50)
    assert res["videos"]["nprobe"] == 3 and res["segments"]["search_params"] == "nprobe=3"
    with folder.open_catalog() as cat:
        assert recorded_search_params(cat, "segments") == {"nprobe": 3, "efSearch": 40}
        with cat.transaction() as cur:
            assert record_search_params(cat, cur, {"nprobe": 5}) == "nprobe=5,efSearch=40"
        assert cat.get_meta("nprobe_videos") is None and cat.get_meta("ef_search_segments") is None
        assert recorded_search_params(cat) == {"nprobe": 5, "efSearch": 40}
    index_library(library, idx, tiny_clip, windows_sampler, workers=0, progress=False)  # the writer saves faiss
    assert VectorIndex.load(idx / "videos.faiss").nprobe == 5
