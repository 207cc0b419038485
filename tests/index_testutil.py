"""Helpers for the tests/test_index_*.py files (not a test module itself)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def make_clip(path: str | Path, seed: int, seconds: float = 2.0, fps: int = 8, size: int = 32) -> Path:
    """Write a small mpeg4 video whose look depends on ``seed``: a seed-coloured background with a
    bar sweeping across it (so windows of one video differ too). Returns the path."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3).astype(np.uint8)
    bar = (255 - base).astype(np.uint8)
    n = max(1, int(round(seconds * fps)))
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            img = np.empty((size, size, 3), np.uint8)
            img[:] = base
            x = int(i * (size - 6) / max(1, n - 1))
            img[:, x:x + 6] = bar
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def check_index_invariants(index_dir: Path, expected_paths: set[str], failed_paths: set[str] = frozenset()
                           ) -> tuple[dict, set]:
    """Assert the index is consistent; returns ({abs_path: row} of indexed videos, unreferenced shards).

    Every expected file has exactly one live row (indexed, or failed for ``failed_paths``); each
    indexed row's frames exist in a committed shard whose manifest lists the video at that
    offset/count; no tmp dirs are left.
    """
    from vidclip.index.directory import IndexDir

    cat = IndexDir(index_dir).open_catalog()
    try:
        rows = cat.videos()
        live = [r for r in rows if r["status"] != "deleted"]
        paths = [r["abs_path"] for r in live]
        assert len(paths) == len(set(paths)), f"duplicate live rows: {sorted(paths)}"
        assert set(paths) == set(expected_paths) | set(failed_paths), set(paths) ^ (set(expected_paths) | set(failed_paths))
        wrong = [(r["abs_path"], r["status"], r["error"]) for r in live
                 if r["status"] != ("failed" if r["abs_path"] in failed_paths else "indexed")]
        assert not wrong, wrong
        live = [r for r in live if r["status"] == "indexed"]
        shards_dir = index_dir / "features" / "shards"
        on_disk = {p.name for p in shards_dir.iterdir()} if shards_dir.is_dir() else set()
        assert not [n for n in on_disk if n.startswith(".tmp-")], on_disk
        for r in live:
            shard = shards_dir / r["shard"]
            manifest = [json.loads(line) for line in (shard / "videos.jsonl").read_text().splitlines() if line.strip()]
            mine = [m for m in manifest if m["key"] == r["key"] and m["offset"] == r["offset"]]
            assert len(mine) == 1 and mine[0]["count"] == r["count"], (r, manifest)
            emb = np.load(shard / "emb.npy", mmap_mode="r")
            assert emb.shape[0] >= r["offset"] + r["count"] and r["count"] > 0
        referenced = {r["shard"] for r in live}
        return {r["abs_path"]: r for r in live}, on_disk - referenced
    finally:
        cat.close()


def clustered_vectors(n: int, d: int = 24, clusters: int = 16, seed: int = 0) -> np.ndarray:
    """float32 [n, d]: points around ``clusters`` Gaussian centres (clumped like CLIP embeddings), seeded."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d))
    x = centers[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d))
    return x.astype(np.float32)


def brute_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Hand reference for vector search: row numbers int [Q, k] of x [N, D] by cosine to q [Q, D],
    from the full cosine matrix and a full (stable) sort."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-(qn @ xn.T), axis=1, kind="stable")[:, :k]
