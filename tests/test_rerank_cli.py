"""`vidclip rerank` end to end on the small synthetic example world (decode + cache, index, errors)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vidclip.cli.main import main
from vidclip.eval.trec import evaluate_run, read_qrels, read_run
from vidclip.synthetic.rerank_example import make_example


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("rerank")
    make_example(d, num_videos=4, num_topics=3, seed=1)
    return d


def _rerank(world, out, *extra, capsys=None):
    args = ["rerank", "--run", str(world / "run.txt"), "--topics", str(world / "topics.txt"), "--out", str(out),
            "--fps", "2", "--workers", "0", "--json", *extra]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_rerank_videos_cached_and_valid_run(world, tmp_path, capsys):
    cache = tmp_path / "cache"
    rep = _rerank(world, tmp_path / "out.txt", "--videos", str(world / "shots.csv"), "--cache", str(cache),
                  capsys=capsys)
    assert rep["frames"]["decoded"] == 4 and rep["unresolved"] == 0 and rep["topics"] == 3
    rep2 = _rerank(world, tmp_path / "out2.txt", "--videos", str(world / "shots.csv"), "--cache", str(cache),
                   capsys=capsys)
    assert rep2["frames"]["decoded"] == 0 and rep2["frames"]["cached"] == 4  # second run decodes nothing
    assert (tmp_path / "out.txt").read_text() == (tmp_path / "out2.txt").read_text()
    run = read_run(tmp_path / "out.txt")
    for t, entries in run.items():
        assert [e.rank for e in entries] == list(range(1, len(entries) + 1))
        scores = [e.score for e in entries]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
        assert {e.docid for e in entries} == {e.docid for e in read_run(world / "run.txt")[t]}
    assert all(line.endswith(" vidclip-rerank") for line in (tmp_path / "out.txt").read_text().splitlines())
    # alpha 1 (all weight on the initial score, as the paper's alpha) reproduces the initial ranking
    _rerank(world, tmp_path / "a1.txt", "--videos", str(world / "shots.csv"), "--cache", str(cache), "--alpha", "1",
            capsys=capsys)
    q = read_qrels(world / "qrels.txt")
    assert evaluate_run(read_run(tmp_path / "a1.txt"), q)["per_topic"] == \
        evaluate_run(read_run(world / "run.txt"), q)["per_topic"]


def test_unresolved_docids_keep_their_place(world, tmp_path, capsys):
    run = tmp_path / "run.txt"
    lines = (world / "run.txt").read_text().splitlines()
    first = lines[0].split()
    lines.insert(2, f"{first[0]} Q0 not_a_shot 3 {float(lines[1].split()[4]) - 1e-4:.6f} weak")
    run.write_text("\n".join(lines) + "\n")
    args = ["rerank", "--run", str(run), "--topics", str(world / "topics.txt"), "--out", str(tmp_path / "o.txt"),
            "--videos", str(world / "shots.csv"), "--cache", str(tmp_path / "c"), "--fps", "2", "--workers", "0",
            "--json"]
    assert main(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["unresolved"] == 1 and rep["unresolved_docids"] == {"not_a_shot": "not in the mapping"}
    out = read_run(tmp_path / "o.txt")[first[0]]
    assert out[2].docid == "not_a_shot"  # third before, third after


def test_rerank_from_index_matches_decoding(world, tmp_path, capsys):
    from vidclip.index import index_library
    from vidclip.models.clip.load import load_clip
    from vidclip.video.sample import SamplerConfig

    index_library(world / "library", tmp_path / "index", load_clip("vidclip-synth"),
                  SamplerConfig("windows", fps=2.0, window=3.0, stride=1.5), workers=0, progress=False)
    rep = _rerank(world, tmp_path / "idx.txt", "--index", str(tmp_path / "index"), "--videos",
                  str(world / "shots.csv"), capsys=capsys)
    assert rep["frames"]["source"] == "index" and rep["unresolved"] == 0
    _rerank(world, tmp_path / "dec.txt", "--videos", str(world / "shots.csv"), "--cache", str(tmp_path / "c"),
            capsys=capsys)
    # same frames (fps 2) and same model: the same ranking
    assert [(e.docid) for t in read_run(tmp_path / "idx.txt").values() for e in t] == \
        [(e.docid) for t in read_run(tmp_path / "dec.txt").values() for e in t]


def test_tune_prints_grid_and_winner(world, tmp_path, capsys):
    rep = _rerank(world, tmp_path / "t.txt", "--videos", str(world / "shots.csv"), "--cache", str(tmp_path / "c"),
                  "--tune", "--qrels", str(world / "qrels.txt"), capsys=capsys)
    grid = rep["tune"]["grid"]
    assert len(grid) == 3 * 4 * 6 and rep["tune"]["best"]["xinfAP"] == max(r["xinfAP"] for r in grid)
    assert rep["config"]["alpha"] == rep["tune"]["best"]["alpha"]


def test_topics_missing_for_run_topics_exit_2(world, tmp_path, capsys):
    # (the readers' own errors, naming file and line: tests/test_rerank_inputs.py)
    (tmp_path / "few.txt").write_text("1 a red circle\n")  # the run has topics 1..3
    out = tmp_path / "never.txt"
    assert main(["rerank", "--run", str(world / "run.txt"), "--topics", str(tmp_path / "few.txt"), "--out", str(out),
                 "--videos", str(world / "shots.csv")]) == 2
    assert "no text for topic(s) 2, 3" in capsys.readouterr().err and not out.exists()
    shutil.rmtree(tmp_path / "c", ignore_errors=True)


def test_alpha_is_documented_as_the_initial_scores_weight(capsys):
    with pytest.raises(SystemExit):
        main(["rerank", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "weight of the run's initial score in the fusion" in text and "S = alpha*norm(S_init) + (1-alpha)*norm(M)" \
        in text


# ----------------------------------------------------------------------------- checks before the work


def test_bad_inputs_are_refused_before_torch_or_a_model(world, tmp_path):
    """Every case exits 2 with one line naming what is wrong, and torch was never imported (so no
    model was loaded): run in a fresh interpreter, which has not imported torch yet."""
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bad.txt").write_text("1 Q0 scene000_s0 1 0.5 weak\n1 Q0 scene000_s1 2 high weak\n")
    (tmp_path / "adir").mkdir()
    run, topics, shots = str(world / "run.txt"), str(world / "topics.txt"), str(world / "shots.csv")
    out = str(tmp_path / "o.txt")
    cases = [
        (["--run", str(tmp_path / "empty.txt")], "empty.txt: empty run file"),
        (["--run", str(tmp_path / "bad.txt")], "bad.txt:2: "),
        (["--out", str(tmp_path / "adir")], "adir: is a directory"),
        (["--out", str(tmp_path / "missing" / "x.txt")], "missing does not exist"),
        (["--out", run], "is the --run file"),
        (["--topics", str(tmp_path / "nope.txt")], "nope.txt: no such file"),
        (["--alpha", "1.5"], "--alpha must be in [0, 1]"),
        (["--depth", "0"], "--depth must be positive"),
        (["--pool", "top"], "--pool must be"),
        (["--tag", "two words"], "--tag must be one word"),
        (["--workers", "-1"], "--workers must be >= 0"),
        (["--backend", "vlc"], "--backend must be one of"),
        (["--tune"], "--tune needs --qrels"),
        (["--tune", "--qrels", str(tmp_path / "noq.txt")], "noq.txt: no such file"),
        (["--index", str(tmp_path / "adir")], "not a vidclip index"),
        (["--videos", str(tmp_path / "empty.txt")], "the mapping is empty"),
    ]
    script = (
        "import contextlib, io, json, sys\n"
        "from vidclip.cli.main import main\n"
        "base, cases = json.loads(sys.argv[1])\n"
        "res = []\n"
        "for extra, _ in cases:\n"
        "    args = ['rerank'] + base\n"
        "    for i in range(0, len(extra)):\n"
        "        if extra[i].startswith('--') and extra[i] in args:\n"
        "            j = args.index(extra[i]); del args[j:j + 2]\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        rc = main(args + extra)\n"
        "    res.append([rc, err.getvalue(), 'torch' in sys.modules])\n"
        "print(json.dumps(res))\n")
    base = ["--run", run, "--topics", topics, "--videos", shots, "--out", out, "--workers", "0"]
    proc = subprocess.run([sys.executable, "-c", script, json.dumps([base, cases])], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for (extra, needle), (rc, err, torch_loaded) in zip(cases, json.loads(proc.stdout)):
        assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, (extra, rc, err)
        assert err.startswith("vidclip rerank: error: ") and "Traceback" not in err, (extra, err)
        assert not torch_loaded, (extra, "torch imported before the error")
    assert not (tmp_path / "o.txt").exists()


def test_out_in_a_read_only_folder_is_refused(world, tmp_path, capsys, monkeypatch):
    import vidclip.rerank.commands as commands

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    real_access = os.access
    # root may write anywhere: there, deny this folder the way a plain user is denied it
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    monkeypatch.setattr(commands, "model_from_args", lambda ns: pytest.fail("the model was loaded"))
    try:
        assert main(["rerank", "--run", str(world / "run.txt"), "--topics", str(world / "topics.txt"),
                     "--videos", str(world / "shots.csv"), "--out", str(ro / "o.txt")]) == 2
    finally:
        ro.chmod(0o755)
    assert "cannot write in the folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- debris, progress


def test_rerank_removes_the_temp_file_of_a_killed_write_only(world, tmp_path, capsys):
    out = tmp_path / "o.txt"
    stale = tmp_path / ".o.txt.0123456789ab.tmp"  # what a SIGKILL during atomic_write_text(out) leaves
    other_target = tmp_path / ".p.txt.0123456789ab.tmp"  # another file's temp
    not_ours = tmp_path / ".o.txt.notes.tmp"  # not our pattern
    for p in (stale, other_target, not_ours):
        p.write_text("half a run")
        os.utime(p, (time.time() - 3600,) * 2)
    rep = _rerank(world, out, "--videos", str(world / "shots.csv"), "--cache", str(tmp_path / "c"), capsys=capsys)
    assert rep["temps_removed"] == [str(stale)]
    assert not stale.exists() and other_target.exists() and not_ours.exists()
    assert out.is_file()


def test_clean_stale_temps_spares_young_files_links_and_folders(tmp_path):
    from vidclip.core.fileio import clean_stale_temps

    out = tmp_path / "o.txt"
    young = tmp_path / ".o.txt.aaaaaaaaaaaa.tmp"  # just created: may be a writer that has not locked it yet
    young.write_text("x")
    link = tmp_path / ".o.txt.bbbbbbbbbbbb.tmp"
    link.symlink_to(young)
    folder = tmp_path / ".o.txt.cccccccccccc.tmp"
    folder.mkdir()
    assert clean_stale_temps(out) == [] and young.exists()
    assert clean_stale_temps(out, min_age_s=0) == [young]
    assert link.is_symlink() and folder.is_dir()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the OUT temp's fd through /proc")
def test_rerank_killed_while_writing_out_leaves_a_temp_the_next_run_removes(world, tmp_path, capsys):
    """A real `vidclip rerank`, SIGKILLed while it writes OUT (held in its fsync): its temp file is
    kept while the writer lives (it holds the file's lock) and removed by the next run."""
    from vidclip.core.fileio import clean_stale_temps

    out, cache = tmp_path / "o.txt", tmp_path / "c"
    script = (
        "import os, sys, time\n"
        "real = os.fsync\n"
        "def fsync(fd):\n"
        "    if os.readlink(f'/proc/self/fd/{fd}').endswith('.tmp') and '.o.txt.' in os.readlink(f'/proc/self/fd/{fd}'):\n"
        "        time.sleep(600)\n"
        "    real(fd)\n"
        "os.fsync = fsync\n"
        "from vidclip.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    args = ["rerank", "--run", str(world / "run.txt"), "--topics", str(world / "topics.txt"), "--videos",
            str(world / "shots.csv"), "--cache", str(cache), "--fps", "2", "--workers", "0", "--out", str(out),
            "--quiet"]
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        temps = []
        while not temps and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            temps = list(tmp_path.glob(".o.txt.*.tmp"))
        assert temps and proc.poll() is None, "the writer never reached its fsync"
        time.sleep(0.2)
        assert clean_stale_temps(out, min_age_s=0) == []  # a live writer's temp is left alone
    finally:
        proc.kill()
        proc.wait()
    assert temps[0].exists() and not out.exists()
    aged = time.time() - 60  # the next run comes later; the age rule alone would not tell
    os.utime(temps[0], (aged, aged))
    rep = _rerank(world, out, "--videos", str(world / "shots.csv"), "--cache", str(cache), capsys=capsys)
    assert rep["temps_removed"] == [str(temps[0])] and not temps[0].exists() and out.is_file()
    assert list(tmp_path.glob(".o.txt.*")) == []


def test_progress_on_stderr_unless_json_or_quiet(world, tmp_path, capsys):
    args = ["rerank", "--run", str(world / "run.txt"), "--topics", str(world / "topics.txt"), "--videos",
            str(world / "shots.csv"), "--cache", str(tmp_path / "c"), "--fps", "2", "--workers", "0"]
    assert main(args + ["--out", str(tmp_path / "a.txt")]) == 0
    cap = capsys.readouterr()
    for stage in ("vidclip rerank: loading model vidclip-synth", "decoding and encoding their videos",
                  "encode candidates' videos", "vidclip rerank: encoding 3 topic texts", "rerank: 100%"):
        assert stage in cap.err, stage
    assert cap.out.startswith("reranked ")  # the summary stays on stdout
    for quiet in ("--quiet", "--json"):
        assert main(args + ["--out", str(tmp_path / "b.txt"), quiet]) == 0
        assert capsys.readouterr().err == ""
