"""Crash safety of `vidclip index`: SIGKILL a real indexing process, re-run, check the invariants.

Kill points: the ``VIDCLIP_INDEX_CRASH`` hook (after the k-th shard is renamed into place but
before its catalog transaction; after the k-th catalog commit; while saving faiss at the end)
and plain SIGKILLs after a delay from outside. After each kill: the catalog lists every file
exactly once, nothing committed before the kill was redone or lost, no orphan shard survives
the re-run, faiss (rebuilt on open if stale) holds exactly the catalog's ids, and search returns
exactly what an uninterrupted index returns.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from index_testutil import check_index_invariants, make_clip

REPO = Path(__file__).resolve().parents[1]
N_VIDEOS = 8
COMMIT_EVERY = 2
SAMPLING = ["--fps", "4", "--window", "1", "--stride", "0.5"]


@pytest.fixture(scope="module")
def clip():
    from vidclip.models.clip.load import load_clip

    return load_clip("tiny-vit", None)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    lib = tmp_path_factory.mktemp("crashlib")
    for i in range(N_VIDEOS):
        make_clip(lib / f"v{i}.mp4", seed=100 + i, seconds=1.5 + 0.25 * i)
        if i % 2 == 0:  # sidecar subtitles: their words go in with each video's row
            (lib / f"v{i}.srt").write_text(f"1\n00:00:00,000 --> 00:00:01,000\nsubtitle marker{i}x\n")
    (lib / "v3.json").write_text('{"topic": "harbour"}')
    return lib


@pytest.fixture(scope="module")
def reference(tmp_path_factory, library, clip):
    """An uninterrupted index of the same library, and its search results."""
    from vidclip.index import VideoIndex, index_library
    from vidclip.video.sample import SamplerConfig

    idx = tmp_path_factory.mktemp("ref") / "idx"
    index_library(library, idx, clip, SamplerConfig(name="windows", fps=4.0, window=1.0, stride=0.5),
                  workers=0, progress=False, commit_every=COMMIT_EVERY)
    vi = VideoIndex.open(idx, clip=clip)
    out = {q: [(h.path, round(h.score, 5), h.start, h.end) for h in vi.search(q, k=N_VIDEOS)]
           for q in ("a bar", "blue background")}
    out["segments"] = [(h.path, round(h.score, 5), h.start, h.end) for h in vi.search("a bar", k=6, segments=True)]
    vi.close()
    return out


def _cmd(library: Path, idx: Path, workers: int = 0) -> list[str]:
    return [sys.executable, "-m", "vidclip", "index", str(library), "--index", str(idx), "--model", "tiny-vit",
            "--pretrained", "none", "--workers", str(workers), "--commit-every", str(COMMIT_EVERY), "--batch-frames", "8",
            "--quiet",
            "--json", *SAMPLING]


def _run(library, idx, crash: str | None = None, kill_after: float | None = None, kill_at_shards: int = 0,
         workers: int = 0):
    """Run the CLI in a subprocess. ``kill_after``: SIGKILL after that many seconds (counted from
    the moment ``kill_at_shards`` committed shards exist, when given), unless it finished."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("VIDCLIP_INDEX_CRASH", None)
    if crash:
        env["VIDCLIP_INDEX_CRASH"] = crash
    proc = subprocess.Popen(_cmd(library, idx, workers), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    if kill_after is not None:
        shards = idx / "features" / "shards"
        deadline = time.monotonic() + 120
        while kill_at_shards and proc.poll() is None and time.monotonic() < deadline:
            if shards.is_dir() and len([p for p in shards.iterdir() if p.name.startswith("shard-")]) >= kill_at_shards:
                break
            time.sleep(0.01)
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the indexer and its decode workers, as a crash would
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.decode(), err.decode()


def _committed(idx: Path) -> dict[str, int]:
    """abs_path -> video id of every indexed row (read straight from SQLite)."""
    from vidclip.index.directory import IndexDir

    if not IndexDir(idx).is_index():
        return {}
    cat = IndexDir(idx).open_catalog()
    try:
        return {r["abs_path"]: r["id"] for r in cat.videos(status="indexed")}
    finally:
        cat.close()


def _recover_and_check(library: Path, idx: Path, clip, reference, before: dict[str, int]):
    from vidclip.index import VideoIndex, index_library
    from vidclip.video.sample import SamplerConfig

    report = index_library(library, idx, clip, SamplerConfig(name="windows", fps=4.0, window=1.0, stride=0.5),
                           workers=0, progress=False, commit_every=COMMIT_EVERY)
    assert report.failed == []
    assert report.indexed == N_VIDEOS - len(before)  # committed videos are not redone...
    expected = {str(p.resolve()) for p in library.glob("*.mp4")}
    rows, unreferenced = check_index_invariants(idx, expected)
    assert not unreferenced, f"orphan shards survived the re-run: {unreferenced}"
    after = {p: r["id"] for p, r in rows.items()}
    assert all(after[p] == vid for p, vid in before.items())  # ...and not lost or renumbered

    vi = VideoIndex.open(idx, clip=clip)
    try:
        # the words: one copy of each video's, for exactly the indexed rows
        conn = vi.catalog.conn
        assert conn.execute("SELECT COUNT(*) FROM text_spans WHERE kind = 'subtitle'").fetchone()[0] == N_VIDEOS // 2
        assert conn.execute("SELECT COUNT(*) FROM text_spans WHERE kind = 'name'").fetchone()[0] == N_VIDEOS
        assert {r[0] for r in conn.execute("SELECT video_id FROM text_state")} == set(after.values())
        for i in range(0, N_VIDEOS, 2):
            assert [h.path for h in vi.search(f"marker{i}x", mode="text")] == [f"v{i}.mp4"]
        assert [h.path for h in vi.search("harbour", mode="text")] == ["v3.mp4"]
        ids, _ = vi.catalog.video_vectors(vi.dim)
        assert vi._video_index.ntotal == N_VIDEOS == len(ids)
        assert vi._segment_index.ntotal == vi.catalog.counts()["segments"]
        for q in ("a bar", "blue background"):
            got = [(h.path, round(h.score, 5), h.start, h.end) for h in vi.search(q, k=N_VIDEOS)]
            assert got == reference[q]
        got = [(h.path, round(h.score, 5), h.start, h.end) for h in vi.search("a bar", k=6, segments=True)]
        assert got == reference["segments"]
    finally:
        vi.close()
    # a further run has nothing to do
    again = index_library(library, idx, clip, SamplerConfig(name="windows", fps=4.0, window=1.0, stride=0.5),
                          workers=0, progress=False)
    assert (again.indexed, again.unchanged, again.deleted) == (0, N_VIDEOS, 0)


@pytest.mark.parametrize("crash, committed", [
    ("shard:2", 2),    # 2nd shard renamed into place, its catalog transaction never ran: 1 batch committed
    ("commit:3", 6),   # killed right after the 3rd catalog commit: 3 batches committed
    ("faiss:1", 8),    # everything committed, killed while saving faiss: faiss files stale or missing
])
def test_kill_at_commit_points(tmp_path, library, clip, reference, crash, committed):
    idx = tmp_path / "idx"
    rc, out, err = _run(library, idx, crash=crash)
    assert rc == -signal.SIGKILL, (rc, out, err)
    before = _committed(idx)
    assert len(before) == committed
    if crash.startswith("shard"):
        shards = [p for p in (idx / "features/shards").iterdir() if p.name.startswith("shard-")]
        assert len(shards) == 2  # the orphan is there before the re-run
    _recover_and_check(library, idx, clip, reference, before)


@pytest.mark.parametrize("kill_at_shards, delay, workers", [
    (0, 2.0, 0),     # during start-up / model loading / the first batch: nothing committed yet
    (2, 0.05, 1),    # a little after the second shard, with a decode worker process running
])
def test_kill_from_outside(tmp_path, library, clip, reference, kill_at_shards, delay, workers):
    idx = tmp_path / "idx"
    rc, out, err = _run(library, idx, kill_after=delay, kill_at_shards=kill_at_shards, workers=workers)
    assert rc == -signal.SIGKILL, f"finished before the kill (rc {rc}); {err}"
    # How much got committed depends on scheduling (the machine is shared); any amount is a
    # valid crash point as long as the recovery invariants hold.
    _recover_and_check(library, idx, clip, reference, _committed(idx))


def test_stale_faiss_is_rebuilt_on_open(tmp_path, library, clip, reference):
    """Faiss files older than the catalog (a kill after a commit) are rebuilt, never served stale."""
    from vidclip.index import VideoIndex, index_library
    from vidclip.index.vectors import VectorIndex
    from vidclip.video.sample import SamplerConfig

    idx = tmp_path / "idx"
    index_library(library, idx, clip, SamplerConfig(name="windows", fps=4.0, window=1.0, stride=0.5), workers=0,
                  progress=False)
    stamp = VectorIndex.load(idx / "videos.faiss").metadata["generation"]
    # pretend the last commits happened after the faiss save: drop one id from the saved file
    stale = VectorIndex.load(idx / "videos.faiss")
    stale.remove([int(next(iter(_committed(idx).values())))])
    stale.metadata["generation"] = stamp - 1
    stale.save(idx / "videos.faiss")
    vi = VideoIndex.open(idx, clip=clip)
    try:
        assert vi._video_index.ntotal == N_VIDEOS
        assert [(h.path, round(h.score, 5), h.start, h.end) for h in vi.search("a bar", k=N_VIDEOS)] == reference["a bar"]
    finally:
        vi.close()
    assert VectorIndex.load(idx / "videos.faiss").metadata["generation"] == stamp  # saved again, fresh


def test_an_uninterrupted_run_leaves_no_orphan_shard(tmp_path, clip):
    """A run that deletes (file gone) or replaces (file changed) every video of a shard deletes that
    shard at its end: it used to stay until the next run, which then reported it as an interrupted
    run's orphan."""
    from vidclip.index import index_library
    from vidclip.video.sample import SamplerConfig

    lib = tmp_path / "lib"
    for i in range(3):
        make_clip(lib / f"v{i}.mp4", seed=200 + i, seconds=1.5)
    idx = tmp_path / "idx"
    sampler = SamplerConfig(name="windows", fps=4.0, window=1.0, stride=0.5)
    index_library(lib, idx, clip, sampler, workers=0, progress=False, commit_every=1)  # one shard per video
    (lib / "v0.mp4").unlink()  # its shard: all deleted
    make_clip(lib / "v1.mp4", seed=999, seconds=2.0)  # its shard: all replaced
    report = index_library(lib, idx, clip, sampler, workers=0, progress=False, commit_every=1)
    assert (report.deleted, report.indexed, report.unchanged) == (1, 1, 1)
    rows, unreferenced = check_index_invariants(idx, {str((lib / n).resolve()) for n in ("v1.mp4", "v2.mp4")})
    assert not unreferenced and report.superseded_removed == 2
    again = index_library(lib, idx, clip, sampler, workers=0, progress=False)
    assert again.orphans_removed == 0 and again.indexed == 0
