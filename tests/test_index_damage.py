"""vidclip.index against hostile names and damaged index directories (issue 7): non-UTF-8 file
names, faiss temp files left by a kill, damaged files giving clear messages, ``--verify``."""

from __future__ import annotations

import json
import os
import sys

import pytest
from index_testutil import make_clip

from vidclip.core.errors import VidclipError
from vidclip.index import VideoIndex, index_library


def _index(lib, idx, clip, sampler, **kw):
    kw.setdefault("workers", 0)
    kw.setdefault("progress", False)
    return index_library(lib, idx, clip, sampler, **kw)


def _lib(tmp_path, n=3):
    lib = tmp_path / "lib"
    for i in range(n):
        make_clip(lib / f"clip{i}.mp4", seed=i, seconds=2.0)
    return lib


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses non-UTF-8 file names")
def test_non_utf8_name_is_indexed_found_again_and_skipped(tmp_path, tiny_clip, windows_sampler):
    lib = _lib(tmp_path, n=2)
    raw = os.path.join(os.fsencode(lib), b"caf\xe9.mp4")
    os.rename(os.fsencode(lib / "clip1.mp4"), raw)
    idx = tmp_path / "idx"
    first = _index(lib, idx, tiny_clip, windows_sampler)
    assert first.indexed == 2 and not first.failed
    again = _index(lib, idx, tiny_clip, windows_sampler)  # found again by its exact bytes: nothing re-encoded
    assert again.indexed == 0 and again.unchanged == 2 and again.deleted == 0
    vi = VideoIndex.open(idx, clip=tiny_clip)
    try:
        paths = {vi.get_video(h.video_id)["abs_path"] for h in vi.search("a clip", k=5)}
        assert os.fsdecode(raw) in paths  # the stored path is the file's own name, byte for byte
        vid = next(h.video_id for h in vi.search("a clip", k=5) if h.path.startswith("caf"))
        assert os.fsencode(vi.video_path(vid)) == raw and vi.video_path(vid).is_file()
    finally:
        vi.close()
    os.unlink(raw)  # gone: marked deleted, not kept forever
    gone = _index(lib, idx, tiny_clip, windows_sampler)
    assert gone.deleted == 1 and gone.total_indexed == 1


# ----------------------------------------------------------------------------- leftovers of a killed faiss save


def test_faiss_temp_files_of_a_killed_save_are_removed(tmp_path, tiny_clip, windows_sampler):
    lib = _lib(tmp_path, n=2)
    idx = tmp_path / "idx"
    _index(lib, idx, tiny_clip, windows_sampler)
    # what a SIGKILL inside VectorIndex.save leaves (its temp name pattern), each the size of the index
    temps = [idx / ".videos.faiss.0a1b2c3d.tmp", idx / ".segments.faiss.deadbeef.tmp"]
    for t in temps:
        t.write_bytes(os.urandom(4096))
    keep = idx / ".unrelated.tmp"
    keep.write_text("not ours")
    vi = VideoIndex.open(idx, clip=tiny_clip)  # a reader that can take the lock cleans up
    vi.close()
    assert not any(t.exists() for t in temps) and keep.exists()
    for t in temps:
        t.write_bytes(b"x")
    report = _index(lib, idx, tiny_clip, windows_sampler)  # so does the next index run
    assert not any(t.exists() for t in temps) and report.temps_removed == 2


# ----------------------------------------------------------------------------- damaged index -> clear messages


def _rewrite_faiss_header(path, drop: str) -> None:
    import struct

    from vidclip.index.vectors import FILE_MAGIC

    data = path.read_bytes()
    (hlen,) = struct.unpack("<Q", data[len(FILE_MAGIC):len(FILE_MAGIC) + 8])
    start = len(FILE_MAGIC) + 8
    header = json.loads(data[start:start + hlen])
    header.pop(drop)
    new = json.dumps(header).encode()
    path.write_bytes(FILE_MAGIC + struct.pack("<Q", len(new)) + new + data[start + hlen:])


def test_faiss_header_without_dim_is_a_clear_error_and_rebuilt(tmp_path, tiny_clip, windows_sampler):
    from vidclip.core.errors import IndexMismatchError
    from vidclip.index.vectors import VectorIndex

    lib = _lib(tmp_path, n=2)
    idx = tmp_path / "idx"
    _index(lib, idx, tiny_clip, windows_sampler)
    _rewrite_faiss_header(idx / "videos.faiss", "dim")
    with pytest.raises(IndexMismatchError, match=r"videos\.faiss: corrupt vector index.*'dim'"):
        VectorIndex.load(idx / "videos.faiss")
    vi = VideoIndex.open(idx, clip=tiny_clip)  # search rebuilds it from the catalog instead of a KeyError
    try:
        assert len(vi.search("a clip", k=5)) == 2
    finally:
        vi.close()
    assert VectorIndex.load(idx / "videos.faiss").ntotal == 2  # and saved the rebuilt one


def test_directories_where_files_belong_and_index_given_a_file(tmp_path, tiny_clip, windows_sampler):
    from vidclip.core.errors import ConfigError, IndexMismatchError

    lib = _lib(tmp_path, n=2)
    idx = tmp_path / "idx"
    _index(lib, idx, tiny_clip, windows_sampler)
    (idx / "videos.faiss").unlink()
    (idx / "videos.faiss").mkdir()
    with pytest.raises(IndexMismatchError, match=r"videos\.faiss: is a directory"):
        _index(lib, idx, tiny_clip, windows_sampler)
    with pytest.raises(IndexMismatchError, match=r"videos\.faiss: is a directory"):
        VideoIndex.open(idx, clip=tiny_clip)
    (idx / "videos.faiss").rmdir()
    (idx / ".lock").unlink()
    (idx / ".lock").mkdir()
    with pytest.raises(IndexMismatchError, match=r"\.lock: is a directory"):
        _index(lib, idx, tiny_clip, windows_sampler)
    vi = VideoIndex.open(idx, clip=tiny_clip)  # a reader still searches (it just cannot save)
    try:
        assert len(vi.search("a clip", k=5)) == 2
    finally:
        vi.close()
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=r"--index .*afile: exists and is not a directory"):
        _index(lib, afile, tiny_clip, windows_sampler)


def _shard_of(idx):
    from vidclip.index.directory import IndexDir

    cat = IndexDir(idx).open_catalog(readonly=True)
    try:
        return sorted({r["shard"] for r in cat.videos(status="indexed")})
    finally:
        cat.close()


def test_truncated_or_deleted_shard_is_found_and_only_its_videos_reencoded(tmp_path, tiny_clip, windows_sampler):
    from vidclip.index import check_recall

    lib = _lib(tmp_path, n=3)
    idx = tmp_path / "idx"
    _index(lib, idx, tiny_clip, windows_sampler, commit_every=1)  # one shard per video
    shards = _shard_of(idx)
    assert len(shards) == 3
    emb = idx / "features" / "shards" / shards[0] / "emb.npy"
    emb.write_bytes(emb.read_bytes()[:-64])  # truncated
    with pytest.raises(VidclipError, match=r"emb\.npy"):
        check_recall(idx, k=1, num_queries=10_000)  # names the file, no traceback from numpy
    report = _index(lib, idx, tiny_clip, windows_sampler)  # not "3 unchanged": the damaged video is re-encoded
    assert [x["path"] for x in report.lost] == [str(lib / "clip0.mp4")]
    assert report.indexed == 1 and report.unchanged == 2 and report.total_indexed == 3
    assert check_recall(idx, k=1)["videos"]["recall"] == 1.0


def test_verify_reports_and_repairs(tmp_path, tiny_clip, windows_sampler, capsys):
    from vidclip.cli.main import main
    from vidclip.index.vectors import VectorIndex

    lib = _lib(tmp_path, n=3)
    idx = tmp_path / "idx"
    _index(lib, idx, tiny_clip, windows_sampler, commit_every=1)
    assert main(["index", "--verify", str(idx), "--json"]) == 0
    clean = json.loads(capsys.readouterr().out)
    assert clean["ok"] and clean["findings"] == [] and clean["counts"]["indexed"] == 3
    import shutil

    shutil.rmtree(idx / "features" / "shards" / _shard_of(idx)[1])  # frames of clip1 lost
    (idx / "segments.faiss").write_bytes(b"garbage")
    (idx / ".videos.faiss.12345678.tmp").write_bytes(b"x")
    assert main(["index", "--verify", str(idx), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    problems = {os.path.basename(f["file"]): f for f in res["findings"]}
    assert set(problems) == {".videos.faiss.12345678.tmp", "clip1.mp4", "segments.faiss", "videos.faiss"}
    assert "emb.npy: missing" in problems["clip1.mp4"]["problem"]
    assert "stale" in problems["videos.faiss"]["problem"]  # the lost video left the catalog's vector set
    assert res["counts"]["indexed"] == 2 and res["counts"]["failed"] == 1
    assert VectorIndex.load(idx / "segments.faiss").ntotal == res["counts"]["segments"]
    assert main(["index", "--verify", str(idx)]) == 0  # repaired: a second pass finds nothing
    assert "OK; 0 finding(s)" in capsys.readouterr().out
    report = _index(lib, idx, tiny_clip, windows_sampler)  # re-encodes only the lost one
    assert report.indexed == 1 and report.unchanged == 2 and report.total_indexed == 3
    vi = VideoIndex.open(idx, clip=tiny_clip)
    try:
        assert {h.path for h in vi.search("a clip", k=5)} == {"clip0.mp4", "clip1.mp4", "clip2.mp4"}
    finally:
        vi.close()


def test_verify_counts_vectors_without_loading_them(tmp_path, tiny_clip, windows_sampler, monkeypatch):
    """A faiss file one vector short (same generation) is found and rebuilt, with the catalog's count
    in the messages, and verify never asks the catalog for all vectors at once (a million-video
    index would need them all in RAM): only the count and, for the rebuild, the chunked iterator."""
    from vidclip.index.catalog import Catalog
    from vidclip.index.directory import IndexDir
    from vidclip.index.vectors import VectorIndex
    from vidclip.index.verify import verify_index

    lib = _lib(tmp_path, n=3)
    idx = tmp_path / "idx"
    _index(lib, idx, tiny_clip, windows_sampler)
    cat = IndexDir(idx).open_catalog()
    try:
        n_segments = cat.count_vectors("segments")
        dim = int(cat.get_meta("model")["embed_dim"])
        first_segment = int(next(cat.iter_vectors("segments", dim))[0][0])
    finally:
        cat.close()
    short = VectorIndex.load(idx / "segments.faiss")
    assert short.remove([first_segment]) == 1
    short.save(idx / "segments.faiss")

    def whole_table(self, dim):
        raise AssertionError("verify loaded every stored vector at once")

    monkeypatch.setattr(Catalog, "video_vectors", whole_table)
    monkeypatch.setattr(Catalog, "segment_vectors", whole_table)
    res = verify_index(idx)
    assert res["ok"] and [os.path.basename(f["file"]) for f in res["findings"]] == ["segments.faiss"]
    finding = res["findings"][0]
    assert finding["problem"] == f"holds {n_segments - 1} {dim}-d vectors, the catalog {n_segments} {dim}-d"
    assert finding["repair"] == f"rebuilt from the {n_segments} vectors stored in the catalog"
    assert VectorIndex.load(idx / "segments.faiss").ntotal == n_segments == res["counts"]["segments"]


def test_verify_finds_and_repairs_what_index_refuses(tmp_path, tiny_clip, windows_sampler, capsys):
    """`vidclip index` refuses a damaged features/store.json or a lost catalog; --verify runs the same
    check (find_damage), reports it, repairs the store header from the catalog and says what to do
    about a lost catalog (exit 1), without turning the 0-byte catalog into an empty new one."""
    from vidclip.cli.main import main
    from vidclip.core.errors import IndexMismatchError

    lib = _lib(tmp_path, n=2)
    idx = tmp_path / "idx"
    _index(lib, idx, tiny_clip, windows_sampler)
    store = idx / "features" / "store.json"
    good = json.loads(store.read_text())
    for damage in ('{"format": 1, "mod', None, json.dumps({**good, "model": {**good["model"], "name": "other"}})):
        store.unlink()
        if damage is not None:
            store.write_text(damage)
        with pytest.raises(IndexMismatchError, match=r"store\.json: .*`vidclip index --verify .*` repairs it"):
            _index(lib, idx, tiny_clip, windows_sampler)
        assert main(["index", "--verify", str(idx), "--json"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert [os.path.basename(f["file"]) for f in res["findings"]] == ["store.json"], res
        assert res["findings"][0]["repair"].startswith("written again") and res["ok"]
        assert json.loads(store.read_text()) == good
        assert _index(lib, idx, tiny_clip, windows_sampler).unchanged == 2  # index works on it again
    catalog = idx / "catalog.sqlite"
    for name in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
        (idx / name).unlink(missing_ok=True)
    catalog.write_bytes(b"")
    with pytest.raises(IndexMismatchError, match=r"catalog\.sqlite: empty \(0 bytes\), but .* holds 1 shard"):
        _index(lib, idx, tiny_clip, windows_sampler)
    assert main(["index", "--verify", str(idx)]) == 1
    out = capsys.readouterr().out
    assert "catalog.sqlite: empty (0 bytes)" in out and "NOT REPAIRED: delete" in out and "PROBLEMS LEFT" in out
    assert catalog.stat().st_size == 0 and len(list((idx / "features" / "shards").iterdir())) == 1  # nothing touched
    assert main(["search", "x", "--index", str(idx)]) == 2
    assert "the record of what is indexed is lost" in capsys.readouterr().err
