"""vidclip.index (scan, pooling, build, search): scanning, incremental indexing, search math, merge, CLI."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
from index_testutil import check_index_invariants, make_clip

from vidclip.core.errors import DatasetError, IndexMismatchError, VidclipError
from vidclip.index import (
    Pooler,
    SearchHit,
    VideoIndex,
    index_library,
    index_report,
    merge_index,
    scan_library,
)


def _lib(tmp_path, n=4, start_seed=0, name="lib"):
    lib = tmp_path / name
    for i in range(n):
        make_clip(lib / ("sub" if i % 2 else "") / f"clip{start_seed + i}.mp4", seed=start_seed + i,
                  seconds=2.0 + 0.5 * (i % 3))
    return lib


def _index(lib, idx, clip, sampler, **kw):
    kw.setdefault("workers", 0)
    kw.setdefault("progress", False)
    return index_library(lib, idx, clip, sampler, **kw)


# ----------------------------------------------------------------------------- scanning


def test_scan_folder_list_and_csv(tmp_path):
    lib = tmp_path / "lib"
    (lib / "a" / "b").mkdir(parents=True)
    for name in ("x.mp4", "a/y.MKV", "a/b/z.avi", "notes.txt", "a/cover.jpg"):
        (lib / name).write_bytes(b"0")
    got = scan_library(lib)
    assert [i.key for i in got.items] == ["a/b/z.avi", "a/y.MKV", "x.mp4"]
    assert got.root == lib.resolve() and all(i.path.is_absolute() for i in got.items)

    lst = lib / "list.txt"
    lst.write_text(f"# my clips\nx.mp4\n\n{lib / 'a/y.MKV'}\nmissing.mp4\n")
    got = scan_library(lst)
    assert [i.key for i in got.items] == ["x.mp4", "a/y.MKV", "missing.mp4"]  # missing kept: reported later

    csv_path = lib / "clips.csv"
    csv_path.write_text("path,title,tags\nx.mp4,Pool cleaning,water\n/elsewhere/q.mp4,Far,\n")
    got = scan_library(csv_path)
    assert got.items[0].metadata == {"title": "Pool cleaning", "tags": "water"}
    assert got.items[1].key == "/elsewhere/q.mp4"  # outside the root: keyed by its absolute path

    bad = lib / "bad.csv"
    bad.write_text("file,title\nx.mp4,a\n")
    with pytest.raises(DatasetError, match=r"bad.csv: header \['file', 'title'\] has no 'path' column"):
        scan_library(bad)
    bad.write_text("path,title\nx.mp4,a\n,b\n")
    with pytest.raises(DatasetError, match="bad.csv: row 3: field 'path' is empty"):
        scan_library(bad)
    bad.write_text("path\nx.mp4\n./x.mp4\n")
    with pytest.raises(DatasetError, match="row 3: path './x.mp4' already listed"):
        scan_library(bad)
    with pytest.raises(DatasetError, match="no such folder or file"):
        scan_library(tmp_path / "nope")


# ----------------------------------------------------------------------------- the math


def test_mean_pooling_matches_hand_computation():
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((6, 5)).astype(np.float32) * rng.uniform(0.5, 3, (6, 1)).astype(np.float32)
    windows = [(0.0, 1.0, 0, 3), (0.5, 1.5, 2, 4), (1.0, 1.5, 5, 1)]
    video, wins = Pooler({"name": "mean"}).video_and_windows(frames, windows)
    unit = frames / np.linalg.norm(frames, axis=1, keepdims=True)  # CLIP4Clip meanP: normalise, average, normalise
    ref = unit.mean(0) / np.linalg.norm(unit.mean(0))
    np.testing.assert_allclose(video, ref, rtol=1e-5, atol=1e-6)
    for (_, _, first, count), got in zip(windows, wins):
        m = unit[first:first + count].mean(0)
        np.testing.assert_allclose(got, m / np.linalg.norm(m), rtol=1e-5, atol=1e-6)


def test_index_and_search_match_reference(tmp_path, tiny_clip, windows_sampler):
    lib = _lib(tmp_path, n=4)
    idx = tmp_path / "idx"
    report = _index(lib, idx, tiny_clip, windows_sampler, commit_every=3)
    assert report.indexed == 4 and not report.failed and report.total_indexed == 4
    expected = {str(p.resolve()) for p in lib.rglob("*.mp4")}
    rows, unreferenced = check_index_invariants(idx, expected)
    assert not unreferenced

    vi = VideoIndex.open(idx, clip=tiny_clip)
    assert vi.library_root == lib.resolve() and vi.identity["name"] == "tiny-vit"
    query = "a red bar moving right"
    hits = vi.search(query, k=10)
    assert len(hits) == 4 and all(isinstance(h, SearchHit) for h in hits)

    # Hand reference: normalised text embedding against meanP of the stored (fp16) frames.
    q = tiny_clip.encode_text([query]).float().cpu().numpy()[0]
    q /= np.linalg.norm(q)
    ref = {}
    for row in rows.values():
        emb = np.load(idx / "features/shards" / row["shard"] / "emb.npy")[row["offset"]:row["offset"] + row["count"]]
        unit = emb.astype(np.float32) / np.linalg.norm(emb.astype(np.float32), axis=1, keepdims=True)
        v = unit.mean(0) / np.linalg.norm(unit.mean(0))
        windows = vi.get_video(row["id"])["windows"]
        times = np.load(idx / "features/shards" / row["shard"] / "time.npy")[row["offset"]:row["offset"] + row["count"]]
        # best window by hand: frames whose timestamps fall in [start, end)
        best, best_s = None, -2.0
        for start, end in windows:
            sel = (times >= start - 1e-6) & (times < end - 1e-6)
            if not sel.any():
                sel = np.abs(times - start) < 1e-6
            m = unit[sel].mean(0)
            s = float(m @ q / np.linalg.norm(m))
            if s > best_s:
                best, best_s = (start, end), s
        ref[row["id"]] = (float(v @ q), best)
    order = sorted(ref, key=lambda i: -ref[i][0])
    assert [h.video_id for h in hits] == order
    for h in hits:
        assert h.score == pytest.approx(ref[h.video_id][0], abs=1e-4)
        assert (h.start, h.end) == pytest.approx(ref[h.video_id][1], abs=1e-6)
        assert 0.0 <= h.start < h.end <= h.duration + 1e-6
        assert vi.video_path(h.video_id) == lib.resolve() / h.path
    d = hits[0].to_dict()
    assert set(d) == {"video_id", "path", "score", "start", "end", "duration"}

    seg_hits = vi.search(query, k=5, segments=True)
    assert len(seg_hits) == 5 and seg_hits[0].score >= seg_hits[-1].score
    assert seg_hits[0].score == pytest.approx(
        max(_window_scores(vi, q, i) for i in ref), abs=1e-4)
    with pytest.raises(VidclipError):
        vi.search("   ")
    vi.close()


def _window_scores(vi, q, video_id):
    segs, vecs = vi.catalog.segments_of([video_id], vi.dim)[video_id]
    return float((vecs @ q).max())


# ----------------------------------------------------------------------------- incremental


def test_incremental_reindex_changes_deletions_failures(tmp_path, tiny_clip, windows_sampler):
    lib = _lib(tmp_path, n=4)
    (lib / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    idx = tmp_path / "idx"
    r1 = _index(lib, idx, tiny_clip, windows_sampler)
    assert r1.indexed == 4 and [f["path"] for f in r1.failed] == [str((lib / "broken.mp4").resolve())]
    assert r1.failed[0]["reason"]

    r2 = _index(lib, idx, tiny_clip, windows_sampler)  # nothing changed: nothing done
    assert (r2.indexed, r2.unchanged, r2.deleted, r2.failed) == (0, 5, 0, [])

    vi = VideoIndex.open(idx, clip=tiny_clip)
    before = {h.path: h.video_id for h in vi.search("anything", k=10)}
    clips = sorted(p for p in lib.rglob("clip*.mp4"))
    changed, gone, touched = clips[0], clips[1], clips[2]
    make_clip(changed, seed=99, seconds=3.0)  # new content
    gone.unlink()
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))  # same bytes, new mtime
    make_clip(lib / "new.mp4", seed=7)
    r3 = _index(lib, idx, tiny_clip, windows_sampler)
    assert (r3.indexed, r3.deleted, len(r3.failed)) == (2, 1, 0)  # changed + new; gone; broken is unchanged
    assert r3.unchanged == 3  # touched + untouched + broken

    expected = {str(p.resolve()) for p in lib.rglob("*.mp4") if p.name != "broken.mp4"}
    _, unreferenced = check_index_invariants(idx, expected, {str((lib / "broken.mp4").resolve())})
    assert not unreferenced
    after = {h.path: h.video_id for h in vi.search("anything", k=10)}  # vi picks up the new generation
    rel = lambda p: p.resolve().relative_to(lib.resolve()).as_posix()  # noqa: E731
    assert rel(gone) not in after and vi.video_path(before[rel(gone)]) is None
    assert vi.get_video(before[rel(gone)]) is None
    assert after[rel(changed)] != before[rel(changed)]  # re-indexed under a new id
    assert after[rel(touched)] == before[rel(touched)]  # only touched: kept
    assert "new.mp4" in after and len(after) == 4
    assert vi._video_index.ntotal == 4 and vi._segment_index.ntotal == vi.catalog.counts()["segments"]

    rep = index_report(idx)
    assert rep["counts"]["indexed"] == 4 and rep["counts"]["failed"] == 1 and rep["counts"]["deleted"] == 2
    assert rep["failed"][0]["path"].endswith("broken.mp4")
    vi.close()


# ----------------------------------------------------------------------------- identity, merge, CLI


def test_model_mismatch_is_refused(tmp_path, tiny_clip, windows_sampler):
    from vidclip.models.clip.load import load_clip

    lib = _lib(tmp_path, n=1)
    idx = tmp_path / "idx"
    _index(lib, idx, tiny_clip, windows_sampler)
    other = load_clip("tiny-vit-224", None)
    with pytest.raises(IndexMismatchError, match="cannot mix in embeddings"):
        _index(lib, idx, other, windows_sampler)
    with pytest.raises(IndexMismatchError, match="index built with model"):
        VideoIndex.open(idx, clip=other)
    from vidclip.video.sample import SamplerConfig

    with pytest.raises(IndexMismatchError, match="samples frames"):
        _index(lib, idx, tiny_clip, SamplerConfig(name="windows", fps=2.0, window=1.0, stride=0.5))


def test_merge_two_libraries(tmp_path, tiny_clip, windows_sampler):
    lib_a, lib_b = _lib(tmp_path, n=2, name="a"), _lib(tmp_path, n=3, start_seed=10, name="b")
    ia, ib = tmp_path / "ia", tmp_path / "ib"
    _index(lib_a, ia, tiny_clip, windows_sampler)
    _index(lib_b, ib, tiny_clip, windows_sampler)
    r = merge_index(ib, ia)
    assert r.indexed == 3 and r.total_indexed == 5
    expected = {str(p.resolve()) for lib in (lib_a, lib_b) for p in lib.rglob("*.mp4")}
    rows, unreferenced = check_index_invariants(ia, expected)
    assert not unreferenced
    vi = VideoIndex.open(ia, clip=tiny_clip)
    hits = vi.search("a clip", k=10)
    assert len(hits) == 5
    assert {str(vi.video_path(h.video_id)) for h in hits} == expected
    # merged frames are bit-identical copies
    src = VideoIndex.open(ib, clip=tiny_clip)
    for h in src.search("a clip", k=10):
        row_b = src.get_video(h.video_id)
        row_a = rows[row_b["abs_path"]]
        np.testing.assert_array_equal(src._frames(row_b), vi._frames(row_a))
    # re-indexing library A must not delete B's merged videos; merging again changes nothing
    assert _index(lib_a, ia, tiny_clip, windows_sampler).deleted == 0
    r2 = merge_index(ib, ia)
    assert r2.indexed == 0 and r2.unchanged == 3
    assert len(vi.search("a clip", k=10)) == 5
    with pytest.raises(VidclipError, match="into itself"):
        merge_index(ia, ia)
    vi.close()
    src.close()


def test_cli_index_search_report(tmp_path, capsys, tiny_clip):
    from vidclip.cli.main import main

    lib = _lib(tmp_path, n=2)
    (lib / "bad.mp4").write_bytes(b"junk")
    idx = tmp_path / "idx"
    rc = main(["index", str(lib), "--index", str(idx), "--model", "tiny-vit", "--pretrained", "none",
               "--workers", "0", "--fps", "4", "--window", "1", "--stride", "0.5", "--json"])
    out = capsys.readouterr()
    assert rc == 1  # one bad file
    rep = json.loads(out.out)
    assert rep["indexed"] == 2 and len(rep["failed"]) == 1 and "bad.mp4" in out.err
    # re-run without model/sampler options: the index's own are reused
    rc = main(["index", str(lib), "--index", str(idx), "--workers", "0", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["unchanged"] == 3
    rc = main(["search", "a", "moving", "bar", "--index", str(idx), "-k", "1", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["query"] == "a moving bar" and len(res["hits"]) == 1 and res["random_weights"]
    assert main(["search", "bar", "--index", str(idx)]) == 0
    assert "1. " in capsys.readouterr().out
    assert main(["index", "--report", str(idx), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failed"][0]["path"].endswith("bad.mp4")
    assert main(["index", str(lib)]) == 2  # no --index: a clear error, exit 2
    assert "--index DIR is required" in capsys.readouterr().err


def test_second_writer_is_refused(tmp_path, tiny_clip, windows_sampler, monkeypatch):
    import vidclip.index.directory as L

    lib = _lib(tmp_path, n=1)
    idx = tmp_path / "idx"
    holder = L.IndexDir(idx).lock()
    assert holder.acquire()  # as another process would hold it
    monkeypatch.setattr(L, "LOCK_WAIT_S", 0.3)
    try:
        with pytest.raises(VidclipError, match="another vidclip process is writing"):
            _index(lib, idx, tiny_clip, windows_sampler)
    finally:
        holder.release()
    assert _index(lib, idx, tiny_clip, windows_sampler).indexed == 1  # free again


def test_open_errors(tmp_path):
    with pytest.raises(VidclipError, match="not a vidclip index"):
        VideoIndex.open(tmp_path)
    shutil.rmtree(tmp_path)
