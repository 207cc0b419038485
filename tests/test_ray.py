"""--engine ray on a local Ray (2 CPUs, no dashboard) started once for this module: the same
index and store as the local engine, killed workers retried, a killed driver resumed.

What "the same" means: catalog rows compared by content (key, paths, size, mtime, hash,
duration, fps, status, error, metadata, vector, windows and their vectors) and the stored frame
embeddings read back, all bit for bit; row ids, shard names and offsets may differ (the local
engine commits in decode completion order, Ray in partition order). Search returns the same
videos and windows in the same order, scores equal to float32 rounding (see _assert_same_hits).
Ray's token authentication is switched off (RAY_AUTH_MODE=disabled) for these throwaway
clusters, so a second driver process can join without a token.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from index_testutil import check_index_invariants, make_clip

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]
COMMIT_EVERY = 2
BATCH = 16
SAMPLING = ["--fps", "4", "--window", "1", "--stride", "0.5"]


@pytest.fixture(scope="module")
def ray_address():
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 << 20,
             log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        patch.undo()


@pytest.fixture(scope="module")
def sampler():
    from vidclip.video.sample import SamplerConfig

    return SamplerConfig(name="windows", fps=4.0, window=1.0, stride=0.5)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """7 clips (two in a subfolder) and one file that is not a video: 4 partitions of 2."""
    lib = tmp_path_factory.mktemp("raylib")
    for i in range(7):
        make_clip(lib / ("sub" if i % 3 == 1 else "") / f"clip{i}.mp4", seed=40 + i, seconds=1.5 + 0.5 * (i % 3))
    (lib / "bad.mp4").write_bytes(b"not a video at all")
    return lib


@pytest.fixture(scope="module")
def reference(tmp_path_factory, library, tiny_clip, sampler):
    """The local engine's index (2 decode workers: completion order) of the library."""
    from vidclip.index import index_library

    idx = tmp_path_factory.mktemp("local") / "idx"
    report = index_library(library, idx, tiny_clip, sampler, workers=2, commit_every=COMMIT_EVERY,
                           batch_frames=BATCH, progress=False)
    assert report.indexed == 7 and len(report.failed) == 1
    return idx


def _content(idx: Path) -> dict:
    """abs_path -> everything the catalog and the stored frames say about the video, minus where it is kept."""
    from vidclip.features.store import FeatureStore
    from vidclip.index.directory import IndexDir

    cat = IndexDir(idx).open_catalog(readonly=True)
    try:
        dim = int(cat.get_meta("model")["embed_dim"])
        out = {}
        for r in cat.videos():
            if r["status"] == "deleted":
                continue
            rec = {k: r[k] for k in ("key", "source", "root", "path", "size", "mtime_ns", "hash", "duration", "fps",
                                     "status", "error", "metadata", "count")}
            if r["status"] == "indexed":
                rec["vector"] = cat.conn.execute("SELECT vector FROM videos WHERE id = ?", (r["id"],)).fetchone()[0]
                segs, seg_vecs = cat.segments_of([r["id"]], dim)[r["id"]]
                rec["windows"] = [(s["start"], s["end"], s["first"], s["count"]) for s in segs]
                rec["window_vectors"] = seg_vecs.tobytes()
                emb, fidx, times = FeatureStore.open_shard(idx / "features", r["shard"])
                sl = slice(r["offset"], r["offset"] + r["count"])
                rec["frames"] = (np.asarray(emb[sl]).tobytes(), np.asarray(fidx[sl]).tolist(),
                                 np.asarray(times[sl]).tolist())
            assert r["abs_path"] not in out
            out[r["abs_path"]] = rec
        return out
    finally:
        cat.close()


def _hits(idx: Path, clip) -> list:
    from vidclip.index import VideoIndex

    vi = VideoIndex.open(idx, clip=clip)
    try:
        return [[(h.path, h.start, h.end, h.score) for h in vi.search(q, k=8, segments=seg)]
                for q in ("a bar moving", "blue") for seg in (False, True)]
    finally:
        vi.close()


def _assert_same_hits(got: list, want: list) -> None:
    """Same videos, windows and order; scores equal to float32 rounding: exact search is a BLAS matmul
    over faiss' rows, whose last bits depend on the row order (the engines commit in different orders)."""
    assert [[h[:3] for h in q] for q in got] == [[h[:3] for h in q] for q in want]
    np.testing.assert_allclose([h[3] for q in got for h in q], [h[3] for q in want for h in q], rtol=0, atol=1e-6)


def test_ray_index_and_store_equal_the_local_engine(tmp_path, ray_address, library, reference, tiny_clip, sampler):
    from vidclip.encode.options import RayOptions
    from vidclip.encode.pipeline import collect_videos, encode_videos
    from vidclip.features.store import FeatureStore
    from vidclip.index import index_library

    idx = tmp_path / "idx"
    report = index_library(library, idx, tiny_clip, sampler, engine="ray", ray=RayOptions(encoders=1),
                           commit_every=COMMIT_EVERY, batch_frames=BATCH, progress=True)
    assert report.engine == "ray" and report.indexed == 7 and report.total_indexed == 7
    assert [Path(f["path"]).name for f in report.failed] == ["bad.mp4"]
    assert report.nodes and report.partitions_reused == 0
    assert _content(idx) == _content(reference)
    _assert_same_hits(_hits(idx, tiny_clip), _hits(reference, tiny_clip))
    assert not (idx / "features" / "staging").exists()  # every staged partition committed and removed
    again = index_library(library, idx, tiny_clip, sampler, engine="ray", commit_every=COMMIT_EVERY,
                          batch_frames=BATCH, progress=False)
    assert again.indexed == 0 and again.unchanged == 8  # nothing to do: nothing encoded, no Ray task

    # the feature store of `vidclip encode`: the same videos, frames and failures from either engine
    items = collect_videos([library])
    local = encode_videos(items, tmp_path / "local", tiny_clip, sampler, workers=2, batch_frames=BATCH,
                          shard_size=3, progress=False)
    remote = encode_videos(items, tmp_path / "ray", tiny_clip, sampler, batch_frames=BATCH, shard_size=3,
                           progress=False, engine="ray")
    assert (remote.done, [f.to_dict() for f in remote.failed]) == (local.done, [f.to_dict() for f in local.failed])
    a, b = FeatureStore(tmp_path / "local"), FeatureStore(tmp_path / "ray")
    assert sorted(a.keys()) == sorted(b.keys()) and len(a) == 7
    for key in a.keys():
        x, y = a.get(key), b.get(key)
        assert np.array_equal(x.emb, y.emb) and np.array_equal(x.frame_index, y.frame_index), key
        assert np.array_equal(x.time, y.time) and (x.windows, x.duration, x.fps, x.source, x.extra) == \
            (y.windows, y.duration, y.fps, y.source, y.extra), key


def test_killed_workers_are_retried_nothing_lost_or_doubled(tmp_path, monkeypatch, ray_address, library, reference,
                                                           tiny_clip, sampler):
    from vidclip.index import index_library

    decode_marker, encode_marker = tmp_path / "decode-killed", tmp_path / "encode-killed"
    monkeypatch.setenv("VIDCLIP_RAY_CRASH", f"decode:{decode_marker},encode:{encode_marker}")
    idx = tmp_path / "idx"
    report = index_library(library, idx, tiny_clip, sampler, engine="ray", commit_every=COMMIT_EVERY,
                           batch_frames=BATCH, progress=False)
    assert decode_marker.exists() and encode_marker.exists()  # one decode task and one actor were SIGKILLed
    assert report.indexed == 7 and len(report.failed) == 1
    expected = {str(p) for p in library.resolve().rglob("clip*.mp4")}
    _, unreferenced = check_index_invariants(idx, expected, {str(library.resolve() / "bad.mp4")})
    assert not unreferenced
    assert _content(idx) == _content(reference)


@pytest.mark.slow
def test_killed_driver_commits_staged_partitions_and_redoes_the_rest(tmp_path, ray_address, library, reference,
                                                                     tiny_clip, sampler):
    from vidclip.index import index_library

    idx = tmp_path / "idx"
    env = {**os.environ, "VIDCLIP_RAY_CRASH": "driver:1", "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "vidclip", "index", str(library), "--index", str(idx), "--model", "tiny-vit",
           "--pretrained", "none", *SAMPLING, "--engine", "ray", "--ray-address", ray_address,
           "--commit-every", str(COMMIT_EVERY), "--batch-frames", str(BATCH), "--quiet"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    staging = idx / "features" / "staging"
    staged = sorted(p for p in staging.iterdir() if not p.name.startswith(".tmp-"))
    assert len(staged) == 3  # 4 partitions: the first committed, then the driver died
    assert len(_content(idx)) == 2  # bad.mp4 (failed) and clip0.mp4
    (staged[0] / "manifest.json").unlink()  # as if its actor had been cut short: unfinished, redone
    stale = staging / "0123456789abcdef01234567"  # a finished partition of another model / file version
    (stale / "shards" / "shard-000000").mkdir(parents=True)
    (stale / "manifest.json").write_text('{"videos": 1, "failures": []}')
    report = index_library(library, idx, tiny_clip, sampler, engine="ray", commit_every=COMMIT_EVERY,
                           batch_frames=BATCH, progress=False)
    assert report.partitions_reused == 2 and report.staging_removed == 2  # the unfinished and the stale
    assert report.indexed == 6 and report.unchanged == 2 and not report.failed
    assert not staging.exists()
    assert _content(idx) == _content(reference)
    _assert_same_hits(_hits(idx, tiny_clip), _hits(reference, tiny_clip))
