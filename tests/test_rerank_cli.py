"""`vidclip rerank` end to end on the small synthetic example world (decode + cache, index, errors)."""

from __future__ import annotations

import json
import shutil

import pytest

from vidclip.cli import main
from vidclip.eval.trec import evaluate_run, read_qrels, read_run
from vidclip.rerank.example import make_example


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
    # alpha 0 reproduces the initial ranking
    _rerank(world, tmp_path / "a0.txt", "--videos", str(world / "shots.csv"), "--cache", str(cache), "--alpha", "0",
            capsys=capsys)
    q = read_qrels(world / "qrels.txt")
    assert evaluate_run(read_run(tmp_path / "a0.txt"), q)["per_topic"] == \
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
    from vidclip.models.clip import load_clip
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
