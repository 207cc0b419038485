"""vidclip export (issue 19): the index's vectors out as Parquet / .npy + JSON Lines, bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from index_testutil import make_clip

from vidclip.cli.main import main
from vidclip.core.errors import ConfigError, VidclipError
from vidclip.index import index_library
from vidclip.index.directory import IndexDir
from vidclip.index.export import check_export_args, export_index

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SRT = """1
00:00:00,000 --> 00:00:00,800
good evening

2
00:00:01,500 --> 00:00:02,500
the council debates the budget
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_clip, windows_sampler):
    lib = tmp_path_factory.mktemp("exportlib")
    for i in range(3):
        make_clip(lib / f"v{i}.mp4", seed=40 + i, seconds=2.0 + i * 0.5)
    (lib / "v1.srt").write_text(SRT)
    idx = lib.parent / (lib.name + "-idx")
    index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
    return lib, idx


def _catalog(idx):
    return IndexDir(idx).open_catalog(readonly=True)


def test_video_and_segment_parquet_round_trip_bit_for_bit(built, tmp_path):
    lib, idx = built
    with _catalog(idx) as cat:
        dim = len(cat.conn.execute("SELECT vector FROM videos LIMIT 1").fetchone()[0]) // 4
        vid_ids, vid_vecs = cat.video_vectors(dim)
        seg_ids, seg_vecs = cat.segment_vectors(dim)
        segs = cat.segments_by_ids(seg_ids.tolist())
        model_key = cat.get_meta("model_key")
        v1 = next(v["id"] for v in cat.videos() if v["path"] == "v1.mp4")
    for level, ids, vecs in (("video", vid_ids, vid_vecs), ("segment", seg_ids, seg_vecs)):
        out = tmp_path / f"{level}.parquet"
        summary = export_index(idx, out, level=level)
        assert summary["rows"] == len(ids)
        table = pq.read_table(out)
        assert table.schema.field("embedding").type == pa.list_(pa.float32(), dim)
        np.testing.assert_array_equal(table.column("id").to_numpy(), ids)
        emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
        assert emb.tobytes() == np.ascontiguousarray(vecs, dtype=np.float32).tobytes()  # bit for bit
        meta = json.loads(table.schema.metadata[b"vidclip"])
        assert meta["model_key"] == model_key and meta["level"] == level and meta["dim"] == dim
        rows = table.to_pylist()
        assert all(r["path"].startswith(str(lib)) for r in rows)
        if level == "video":
            by_id = {r["id"]: r for r in rows}
            assert by_id[v1]["text"] == "good evening\nthe council debates the budget"
            assert all(r["text"] == "" for r in rows if r["id"] != v1)
        else:
            for r in rows:
                assert (r["start"], r["end"]) == (segs[r["id"]]["start"], segs[r["id"]]["end"])
                want = [t for cs, ce, t in ((0.0, 0.8, "good evening"), (1.5, 2.5, "the council debates the budget"))
                        if r["video_id"] == v1 and ce > r["start"] and cs < r["end"]]
                assert r["text"] == "\n".join(want)
            assert any(r["text"] == "the council debates the budget" for r in rows)


def test_frame_level_is_the_stored_fp16_frames(built, tmp_path):
    _, idx = built
    index_dir = IndexDir(idx)
    with _catalog(idx) as cat:
        videos = [v for v in cat.videos("indexed")]
    want_emb, want_time = [], []
    for v in videos:
        emb, _, times = index_dir.open_shard(v["shard"], rows=v["offset"] + v["count"])
        want_emb.append(np.asarray(emb[v["offset"]:v["offset"] + v["count"]]).astype(np.float32))
        want_time.append(np.asarray(times[v["offset"]:v["offset"] + v["count"]]))
    out = tmp_path / "frames.parquet"
    export_index(idx, out, level="frame")
    table = pq.read_table(out)
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    assert emb.tobytes() == np.concatenate(want_emb).tobytes()
    np.testing.assert_array_equal(table.column("start").to_numpy(), np.concatenate(want_time))
    np.testing.assert_array_equal(table.column("id").to_numpy(), np.arange(len(emb)))
    texts = table.column("text").to_pylist()
    times = table.column("start").to_numpy()
    assert any(t == "good evening" for t in texts)
    assert all(t in ("", "good evening", "the council debates the budget") for t in texts)
    assert all(t == "" for t, s in zip(texts, times) if 0.8 < s < 1.5)


def test_npy_format_and_rewrite_in_place(built, tmp_path):
    _, idx = built
    with _catalog(idx) as cat:
        dim = len(cat.conn.execute("SELECT vector FROM videos LIMIT 1").fetchone()[0]) // 4
        seg_ids, seg_vecs = cat.segment_vectors(dim)
    out = tmp_path / "segs"
    for _ in range(2):  # the second run replaces the first export
        assert main(["export", str(idx), str(out), "--level", "segment", "--format", "npy"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.npy", "meta.json", "rows.jsonl"]
    assert np.load(out / "embeddings.npy").tobytes() == seg_vecs.astype(np.float32).tobytes()
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == seg_ids.tolist()
    assert json.loads((out / "meta.json").read_text())["rows"] == len(seg_ids)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_pandas_reads_the_parquet(built, tmp_path):
    pd = pytest.importorskip("pandas")
    _, idx = built
    export_index(idx, tmp_path / "v.parquet")
    df = pd.read_parquet(tmp_path / "v.parquet")
    assert list(df.columns) == ["id", "video_id", "path", "start", "end", "text", "embedding"] and len(df) == 3


def test_bad_arguments_are_one_line_before_heavy_imports(built, tmp_path, capsys):
    _, idx = built
    with pytest.raises(VidclipError, match="INDEX .*no such folder"):
        check_export_args(tmp_path / "missing", tmp_path / "o.parquet")
    with pytest.raises(ConfigError, match="is a folder"):
        check_export_args(idx, tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        check_export_args(idx, tmp_path / "no" / "o.parquet")
    (tmp_path / "notexport").mkdir()
    (tmp_path / "notexport" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="keep.txt"):
        check_export_args(idx, tmp_path / "notexport", fmt="npy")
    with pytest.raises(ConfigError, match="--level"):
        check_export_args(idx, tmp_path / "o.parquet", level="scene")
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "o.parquet")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["export", str(idx), str(tmp_path / "o.parquet"), "--level", "scene"])
    code = ("import sys; from vidclip.cli.main import main; "
            f"rc = main(['export', {str(idx)!r}, {str(tmp_path)!r}]); "
            "heavy = [m for m in ('torch', 'pyarrow') if m in sys.modules]; "
            "assert rc == 2 and not heavy, (rc, heavy)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
