"""`vidclip demo`: the offline end-to-end walkthrough with the shipped synthetic-domain model."""

import json
import re
import subprocess
import sys
import time

from vidclip.cli.demo import run_demo
from vidclip.synthetic.scenes import make_scene_library
from vidclip.video.decode import open_video


def test_scene_library_is_deterministic(tmp_path):
    a = make_scene_library(tmp_path / "a", 2, 2, seed=5)
    b = make_scene_library(tmp_path / "b", 2, 2, seed=5)
    assert a == b
    assert [s["start"] for s in a[0]["scenes"]] == [0.0, 3.0]
    # same pictures up to x264's run-to-run noise (this PyAV build's x264 is not bit-reproducible)
    frames = []
    for root in ("a", "b"):
        with open_video(tmp_path / root / a[1]["path"]) as reader:
            frames.append(reader.get_frames(range(len(reader.timestamps))))
    assert frames[0].shape == frames[1].shape and frames[0].shape[0] == 48
    assert (frames[0].float() - frames[1].float()).abs().mean() < 1.0


def test_demo_indexes_searches_and_finds_the_scene(tmp_path):
    lines = []
    summary = run_demo(tmp_path / "demo", num_videos=8, scenes_per_video=2, num_queries=3, workers=0,
                       progress=False, log=lines.append)
    text = "\n".join(lines)
    assert summary["index_report"]["indexed"] == 8 and not summary["index_report"]["failed"]
    assert "knows only this synthetic world" in text
    assert f"vidclip serve {summary['index']}" in text
    assert "--pretrained" in text  # how to index real videos with a real checkpoint
    found = 0
    for q in summary["queries"]:
        assert 1 <= len(q["hits"]) <= 3
        for hit in q["hits"]:
            assert 0.0 <= hit["start"] < hit["end"] <= hit["duration"] + 1e-6
        # the rank is computed from the ranking the search returned, every video once, best first
        ranking = q["ranking"]
        assert sorted(ranking) == sorted(f"scene{i:03d}.mp4" for i in range(8))
        assert q["rank"] == ranking.index(q["expected"]["path"]) + 1
        assert [h["path"] for h in q["hits"]] == ranking[:3]
        scores = [h["score"] for h in q["hits"]]
        assert scores == sorted(scores, reverse=True)
        assert f"the right video ranked {q['rank']} of 8" in text
        # The query names colour, shape, size and background: the shipped model should find its video,
        # and its best moment should overlap the scene the query describes.
        if q["rank"] == 1 and q["moment_found"]:
            found += 1
    first = sum(q["rank"] == 1 for q in summary["queries"])
    top3 = sum(q["rank"] <= 3 for q in summary["queries"])
    assert (summary["first"], summary["top3"]) == (first, top3)
    assert f"came first for {first} of 3 queries and in the top 3 for {top3} of 3" in text
    assert found >= 2 and top3 == 3, summary["queries"]

    assert re.search(r"\nDone in \d+ s\.$", text, re.M) and summary["startup_seconds"] is None

    # Re-running reuses the library and the index: nothing is encoded again.
    lines.clear()
    again = run_demo(tmp_path / "demo", num_videos=8, scenes_per_video=2, num_queries=1, workers=0,
                     progress=False, log=lines.append, count_startup=True)
    assert again["index_report"]["indexed"] == 0 and again["index_report"]["unchanged"] == 8
    # the CLI's way: the time before the demo began (interpreter start, imports) is named too
    assert re.search(r"^Done in \d+ s \(after \d+ s start-up\)\.$", "\n".join(lines).strip(), re.M)


def test_cli_demo_json(tmp_path):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vidclip", "demo", "--workdir", str(tmp_path / "d"),
                           "--videos", "3", "--scenes", "1", "--queries", "1", "--workers", "0", "--json"],
                          capture_output=True, text=True, timeout=300)
    whole = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    # start-up is counted from that process's start (imports take a while), not from boot or from
    # this test process's start: it fits inside the subprocess' whole run, with the demo's own time
    assert 0 < summary["startup_seconds"] and summary["startup_seconds"] + summary["seconds"] <= whole + 0.5
    assert summary["index_report"]["indexed"] == 3 and len(summary["queries"]) == 1
