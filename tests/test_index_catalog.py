"""vidclip.index.catalog: schema, transactions, identity checks, fast hash, vectors."""

from __future__ import annotations

import hashlib
import sqlite3

import numpy as np
import pytest

from vidclip.core.errors import IndexMismatchError, VidclipError
from vidclip.index.catalog import Catalog, fast_hash

MODEL = {"family": "open_clip", "name": "tiny-vit", "pretrained": None, "embed_dim": 4, "image_size": 32,
         "random_weights": True, "weights_digest": "abc"}
SAMPLER = {"name": "windows", "fps": 1.0, "window": 10.0, "stride": 5.0}


def _video(cat: Catalog, cur, path: str, status="indexed", vector=None, **kw) -> int:
    fields = dict(key=path, source="/lib", root="/lib", path=path, abs_path="/lib/" + path, size=10, mtime_ns=1,
                  hash="h", status=status, duration=3.0, fps=1.0, shard="shard-000000", offset=0, count=3,
                  vector=vector if vector is not None else np.ones(4))
    fields.update(kw)
    return cat.insert_video(cur, **fields)


def test_fast_hash_reads_size_head_and_tail(tmp_path):
    mib = 1 << 20
    data = bytes(range(256)) * (3 * mib // 256 + 7)  # > 2 MiB: head and tail are read, the middle is not
    f = tmp_path / "v.bin"
    f.write_bytes(data)
    ref = hashlib.blake2b(digest_size=16)
    ref.update(len(data).to_bytes(8, "little"))
    ref.update(data[:mib])
    ref.update(data[-mib:])
    assert fast_hash(f) == ref.hexdigest()
    # an edit in the middle (same size) is invisible by design; head or tail edits are not
    middle = bytearray(data)
    middle[len(data) // 2] ^= 1
    f.write_bytes(bytes(middle))
    assert fast_hash(f) == ref.hexdigest()
    tail = bytearray(data)
    tail[-5] ^= 1
    f.write_bytes(bytes(tail))
    assert fast_hash(f) != ref.hexdigest()
    # small file: everything is hashed exactly once
    small = tmp_path / "s.bin"
    small.write_bytes(b"abc")
    ref2 = hashlib.blake2b(digest_size=16)
    ref2.update((3).to_bytes(8, "little") + b"abc")
    assert fast_hash(small) == ref2.hexdigest()


def test_wal_mode_and_meta_defaults(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite")
    assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert cat.generation == 0 and cat.get_meta("schema") == 1
    with cat.transaction() as cur:
        assert cat.bump_generation(cur) == 1
    cat.close()
    assert Catalog(tmp_path / "c.sqlite").generation == 1


def test_identity_is_recorded_then_enforced(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite")
    cat.check_or_set_identity(MODEL, "open_clip:32:4:abc", SAMPLER, {"name": "mean"})
    cat.check_or_set_identity(MODEL, "open_clip:32:4:abc", SAMPLER, {"name": "mean"})  # same: fine
    other = dict(MODEL, name="ViT-B-32", weights_digest="zzz")
    with pytest.raises(IndexMismatchError, match="cannot mix in embeddings of 'ViT-B-32'"):
        cat.check_or_set_identity(other, "open_clip:224:512:zzz", SAMPLER, {"name": "mean"})
    with pytest.raises(IndexMismatchError, match="samples frames"):
        cat.check_or_set_identity(MODEL, "open_clip:32:4:abc", dict(SAMPLER, fps=2.0), {"name": "mean"})
    with pytest.raises(IndexMismatchError, match="temporal module"):
        cat.check_or_set_identity(MODEL, "open_clip:32:4:abc", SAMPLER, {"name": "checkpoint"})


def test_transaction_rolls_back_on_error(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite")
    with pytest.raises(RuntimeError):
        with cat.transaction() as cur:
            _video(cat, cur, "a.mp4")
            cat.bump_generation(cur)
            raise RuntimeError("boom")
    assert cat.videos() == [] and cat.generation == 0


def test_one_live_row_per_path_ids_never_reused(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite")
    with cat.transaction() as cur:
        a = _video(cat, cur, "a.mp4")
    with pytest.raises(sqlite3.IntegrityError):
        with cat.transaction() as cur:
            _video(cat, cur, "a.mp4")
    with cat.transaction() as cur:
        cat.insert_segments(cur, a, [(0.0, 2.0, 0, 2), (1.0, 3.0, 1, 2)], np.eye(4)[:2])
        assert cat.segment_ids_of(cur, [a]) and len(cat.segment_ids_of(cur, [a])) == 2
        cat.mark_deleted(cur, [a])
        b = _video(cat, cur, "a.mp4", vector=np.arange(4.0))  # replacement allowed once the old one is deleted
    assert b > a
    with cat.transaction() as cur:
        cat.conn.execute("DELETE FROM videos WHERE id = ?", (b,))
    with cat.transaction() as cur:
        c = _video(cat, cur, "c.mp4")
    assert c > b  # AUTOINCREMENT: a deleted id is not handed out again
    old = cat.video(a)
    assert old["status"] == "deleted" and old["shard"] is None
    assert cat.segments_of([a], 4)[a][0] == []


def test_vectors_roundtrip_and_counts(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite")
    vec = np.array([0.5, -0.5, 0.5, -0.5], np.float32)
    with cat.transaction() as cur:
        a = _video(cat, cur, "a.mp4", vector=vec, metadata={"title": "x"})
        _video(cat, cur, "bad.mp4", status="failed", vector=None, error="moov atom not found", shard=None)
        cat.insert_segments(cur, a, [(5.0, 15.0, 5, 10), (0.0, 10.0, 0, 10)], np.stack([vec, -vec]))
    ids, vecs = cat.video_vectors(4)
    assert ids.tolist() == [a] and vecs.dtype == np.float32
    np.testing.assert_array_equal(vecs[0], vec)
    sids, svecs = cat.segment_vectors(4)
    assert len(sids) == 2 and svecs.shape == (2, 4)
    rows, wv = cat.segments_of([a], 4)[a]
    assert [r["start"] for r in rows] == [0.0, 5.0]  # ordered by start
    np.testing.assert_array_equal(wv[0], -vec)
    assert cat.counts() == {"indexed": 1, "failed": 1, "deleted": 0, "segments": 2}
    assert cat.video(a)["metadata"] == {"title": "x"}
    assert cat.videos(status="failed")[0]["error"] == "moov atom not found"
    assert cat.referenced_shards() == {"shard-000000"}
    assert set(cat.live()) == {"/lib/a.mp4", "/lib/bad.mp4"}


def test_readonly_open_errors(tmp_path):
    with pytest.raises(VidclipError, match="no catalog here"):
        Catalog(tmp_path / "missing.sqlite", readonly=True)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(VidclipError, match="not a readable vidclip catalog"):
        Catalog(junk)
