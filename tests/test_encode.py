"""`vidclip encode` and the pipeline behind it, plus the foundation CLI verbs."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from videogen import make_coded_video, read_code

from vidclip.cli.main import main
from vidclip.encode.pipeline import collect_videos, encode_videos
from vidclip.encode.worker import Failure, iter_encoded
from vidclip.features.store import FeatureStore
from vidclip.models.clip.load import load_clip
from vidclip.models.clip.preprocess import resize_center_crop
from vidclip.video.sample import SamplerConfig, sample_video


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    make_coded_video(root / "a.mp4", 40, size=(96, 64))
    make_coded_video(root / "sub" / "b.mkv", 25, size=(64, 96))
    make_coded_video(root / "c.webm", 9, size=(64, 64))
    (root / "broken.mp4").write_text("this is not a video\n")
    return root


@pytest.fixture(scope="module")
def clip():
    return load_clip("tiny-vit")


SAMPLER = SamplerConfig("uniform", num_frames=6)


def test_collect_videos_keys_by_relative_path(library):
    items = dict(collect_videos([library]))
    assert sorted(items) == ["a.mp4", "broken.mp4", "c.webm", "sub/b.mkv"]
    assert items["sub/b.mkv"] == str(library / "sub" / "b.mkv")


def test_encoded_frames_are_the_sampled_frames(library, clip):
    items = [("a", str(library / "a.mp4")), ("c", str(library / "c.webm"))]
    results = {r.key: r for r in iter_encoded(items, clip, SAMPLER, workers=0, progress=False)}
    for key, path in items:
        expected = sample_video(path, SAMPLER)
        got = results[key]
        np.testing.assert_array_equal(got.sample.indices, expected.sample.indices)
        # The frames the model saw are the frames the sampler picked (codes painted in them).
        assert [read_code(f) for f in expected.frames.numpy()] == list(got.valid_indices)
        reference = clip.encode_frames(resize_center_crop(expected.frames, clip.image_size))
        torch.testing.assert_close(got.emb, reference, atol=1e-5, rtol=1e-5)
    # all 6 sampled frames of the 9-frame clip are real
    assert results["c"].emb.shape == (6, clip.embed_dim)


def test_encode_store_resume_and_bad_file(library, clip, tmp_path):
    items = collect_videos([library])
    report = encode_videos(items, tmp_path, clip, SAMPLER, workers=2, progress=False, shard_size=2)
    assert report.done == 3 and report.skipped == 0
    assert [f.key for f in report.failed] == ["broken.mp4"]
    assert "broken.mp4" in report.failed[0].path and report.failed[0].reason
    store = FeatureStore(tmp_path)
    assert sorted(store.keys()) == ["a.mp4", "c.webm", "sub/b.mkv"]
    assert store.model["random_weights"] is True and store.sampler == SAMPLER.to_dict()
    feats = store.get("a.mp4")
    assert feats.emb.shape == (6, clip.embed_dim) and feats.emb.dtype == np.float16
    # eval-mode uniform over 40 frames: floor((k + 0.5) * 40 / 6)
    np.testing.assert_array_equal(feats.frame_index, np.floor((np.arange(6) + 0.5) * 40 / 6))
    np.testing.assert_allclose(feats.time, feats.frame_index / 30.0, atol=1e-3)
    failures = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert [f["key"] for f in failures] == ["broken.mp4"]

    again = encode_videos(items, tmp_path, clip, SAMPLER, workers=0, progress=False)
    assert again.done == 0 and again.skipped == 3 and len(again.failed) == 1


def test_workers_give_the_same_features_as_in_process(library, clip):
    items = [("a", str(library / "a.mp4")), ("b", str(library / "sub" / "b.mkv"))]
    serial = {r.key: r.emb for r in iter_encoded(items, clip, SAMPLER, workers=0, progress=False)}
    parallel = {r.key: r.emb for r in iter_encoded(items, clip, SAMPLER, workers=2, progress=False)}
    for key in serial:
        torch.testing.assert_close(serial[key], parallel[key])


def test_one_bad_file_never_stops_the_batch(library, clip, tmp_path):
    missing = tmp_path / "missing.mp4"
    items = [("missing", str(missing)), ("a", str(library / "a.mp4"))]
    results = list(iter_encoded(items, clip, SAMPLER, workers=0, progress=False))
    failures = [r for r in results if isinstance(r, Failure)]
    assert [f.key for f in failures] == ["missing"] and str(missing) in failures[0].path
    assert [r.key for r in results if not isinstance(r, Failure)] == ["a"]


def test_cli_encode_reports_bad_files_without_traceback(library, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vidclip", "encode", str(library), "--out", str(tmp_path / "feats"),
         "--model", "tiny-vit", "--pretrained", "none", "--num-frames", "4", "--workers", "0", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    bad_lines = [line for line in proc.stderr.splitlines() if "broken.mp4" in line]
    assert len(bad_lines) == 1
    report = json.loads(proc.stdout)
    assert report["done"] == 3 and len(report["failed"]) == 1
    assert "RANDOM weights" in proc.stderr


def test_cli_probe_and_frames(library, tmp_path, capsys):
    assert main(["probe", str(library / "a.mp4"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_frames"] == 40 and (info["width"], info["height"]) == (96, 64)

    assert main(["probe", str(library / "broken.mp4"), str(library / "a.mp4")]) == 1
    captured = capsys.readouterr()
    assert "broken.mp4" in captured.err and "a.mp4" in captured.out

    out = tmp_path / "frames"
    assert main(["frames", str(library / "a.mp4"), "--num-frames", "4", "--out", str(out)]) == 0
    meta = json.loads((out / "frames.json").read_text())
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 4 and list(meta["indices"]) == [5, 15, 25, 35]


def test_help_for_every_verb(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    verbs = ["probe", "frames", "encode", "synth", "train", "eval", "index", "search", "serve", "demo"]
    top = capsys.readouterr().out
    assert all(v in top for v in verbs), top
    for verb in verbs:
        with pytest.raises(SystemExit) as e:
            main([verb, "--help"])
        assert e.value.code == 0
        assert "usage: vidclip " + verb in capsys.readouterr().out


def test_cli_synth(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "s"), "--videos", "6", "--size", "32", "--frames", "6", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_videos"] == 6
    assert len(list((tmp_path / "s" / "videos").glob("*.mp4"))) == 6


# ----------------------------------------------------------------------------- worker processes


def test_sigkill_mid_decode_leaves_no_process_behind(tmp_path):
    """Decode workers (and the resource tracker) die with a SIGKILLed `vidclip encode`."""
    psutil = pytest.importorskip("psutil")
    import signal
    import time

    lib = tmp_path / "lib"
    for i in range(8):
        make_coded_video(lib / f"v{i}.mp4", 300, size=(160, 120), gop=250, noise=10, quality="normal")
    proc = subprocess.Popen([sys.executable, "-m", "vidclip", "encode", str(lib), "--out", str(tmp_path / "out"),
                             "--model", "tiny-vit", "--pretrained", "none", "--workers", "2", "--quiet",
                             "--sampler", "fps", "--fps", "30"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    kids = []
    while time.monotonic() < deadline and proc.poll() is None:
        kids = parent.children(recursive=True)
        if sum(1 for k in kids if "resource_tracker" not in " ".join(k.cmdline())) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None and len(kids) >= 2, "the encode run never started its decode workers"
    time.sleep(1.0)  # mid-decode
    kids = parent.children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(kids, timeout=8)
    for p in alive:
        p.kill()
    assert not alive, [p.cmdline() for p in alive]


README_SNIPPET = """
import vidclip
clip = vidclip.load_clip("tiny-vit")  # random weights: offline test model
cfg = vidclip.SamplerConfig("uniform", num_frames=4)
report = vidclip.encode_videos([("a", "a.mp4"), ("b", "b.mkv")], "features/", clip, cfg, progress=False)
parallel = vidclip.encode_videos([("a", "a.mp4"), ("b", "b.mkv")], "features2/", clip, cfg, workers=2,
                                 progress=False)
store = vidclip.FeatureStore("features/")
print("OK", report.done, parallel.done, store.get("a").emb.shape)
"""


@pytest.mark.parametrize("form", ["script", "stdin", "dash-c"])
def test_readme_python_snippet_runs_as_script_stdin_and_c(library, tmp_path, form):
    """No `if __name__ == "__main__"` needed: workers do not re-import the main module."""
    import shutil

    shutil.copy(library / "a.mp4", tmp_path / "a.mp4")
    shutil.copy(library / "sub" / "b.mkv", tmp_path / "b.mkv")
    if form == "script":
        (tmp_path / "snippet.py").write_text(README_SNIPPET)
        args, stdin = [sys.executable, "snippet.py"], None
    elif form == "stdin":
        args, stdin = [sys.executable, "-"], README_SNIPPET
    else:
        args, stdin = [sys.executable, "-c", README_SNIPPET], None
    proc = subprocess.run(args, cwd=tmp_path, input=stdin, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK 2 2" in proc.stdout, proc.stdout
