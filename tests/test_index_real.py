"""Index real footage: every clip of ../shared/videos and the MSR-VTT mini videos, tiny model.

The tiny model has random weights, so rankings mean nothing; what is checked is that every real
file (mp4/h264, avi/mpeg4, mkv, 1080p, with audio) indexes, that the stored frames, durations and
windows agree with the files, and that search returns valid spans for all of them.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from index_testutil import SHARED, check_index_invariants

pytestmark = pytest.mark.shared


def _real_videos():
    vids = sorted((SHARED / "videos").glob("*.*")) if (SHARED / "videos").is_dir() else []
    vids = [v for v in vids if v.suffix.lower() in (".mp4", ".avi", ".mkv", ".webm", ".mov")]
    mini = sorted((SHARED / "msrvtt" / "mini" / "videos").glob("*.mp4"))
    return vids, mini


def _listed(path) -> str:
    """The absolute path the index records for a listed ``path`` (normalised, symlinks kept)."""
    return os.path.normpath(os.path.abspath(path))


def test_index_shared_footage(tmp_path):
    vids, mini = _real_videos()
    if not vids and not mini:
        pytest.skip("../shared not present: no real videos to index")
    from vidclip.index import VideoIndex, index_library
    from vidclip.models.clip.load import load_clip
    from vidclip.video.decode import probe
    from vidclip.video.sample import SamplerConfig

    # A CSV library mixing both folders, with the manifest's captions as metadata.
    captions = {}
    manifest = SHARED / "videos" / "MANIFEST.tsv"
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                captions[row["file"]] = row["caption or label"]
    lib = tmp_path / "library.csv"
    with open(lib, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption"])
        for v in vids + mini:
            w.writerow([str(v), captions.get(v.name, "")])

    clip = load_clip("tiny-vit", None)
    sampler = SamplerConfig(name="windows", fps=1.0, window=4.0, stride=2.0)
    idx = tmp_path / "idx"
    report = index_library(lib, idx, clip, sampler, workers=2, progress=False)
    assert report.failed == [], report.failed
    assert report.indexed == len(vids) + len(mini)
    # The index keeps each path as listed (made absolute, not resolved): ../shared may be a symlink.
    rows, unreferenced = check_index_invariants(idx, {_listed(v) for v in vids + mini})
    assert not unreferenced

    vi = VideoIndex.open(idx, clip=clip)
    try:
        for v in vids + mini:
            row = vi.get_video(rows[_listed(v)]["id"])
            info = probe(v)
            assert row["duration"] == pytest.approx(info.duration, abs=0.05)
            # 1 fps over the whole video: about one frame per second
            assert abs(row["count"] - info.duration) <= 1.5, (v.name, row["count"], info.duration)
            assert row["windows"][0][0] == 0.0 and row["windows"][-1][1] == pytest.approx(row["duration"], abs=0.05)
            if v.name in captions:
                assert row["metadata"]["caption"] == captions[v.name]
            frames = vi._frames(row)
            assert frames.shape == (row["count"], clip.embed_dim) and np.isfinite(frames).all()
        hits = vi.search("a person cleaning a swimming pool", k=len(vids) + len(mini))
        assert len(hits) == len(vids) + len(mini)
        for h in hits:
            assert 0.0 <= h.start < h.end <= h.duration + 1e-6
            assert vi.video_path(h.video_id).is_file()
        seg = vi.search("people playing basketball", k=5, segments=True)
        assert len(seg) == 5 and all(s.end - s.start <= 4.0 + 1e-6 for s in seg)
    finally:
        vi.close()
