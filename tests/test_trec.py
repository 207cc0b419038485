"""vidclip.eval.trec and `vidclip trec-eval`: xinfAP / infNDCG against hand-computed sample_eval values."""

from __future__ import annotations

import json
import math

import pytest

from vidclip.cli.main import main
from vidclip.core.errors import DatasetError
from vidclip.eval.trec import evaluate_run, inferred_measures, ranked, read_qrels, read_run

Q = 1.00001 / 1.00003  # (r + 0.00001) / (s + 0.00003) with r = s = 1: sample_eval's smoothing


def log2(x):
    return math.log(x) / math.log(2)


# Two strata: stratum 1 fully judged (3 docs), stratum 2 judged at 50% (2 of 4), two unjudged (-1).
QRELS_A = """\
1 0 a 1 1
1 0 b 1 0
1 0 c 1 1
1 0 d 2 1
1 0 e 2 0
1 0 f 2 -1
1 0 g 2 -1
"""
# a, x (not in qrels), d, f (unjudged), c, e
RUN_A = {"a": 10.0, "x": 9.0, "d": 8.0, "f": 7.0, "c": 6.0, "e": 5.0}


def _judged(text):
    out = {}
    for line in text.splitlines():
        t, _, d, s, r = line.split()
        out[d] = (s, int(r))
    return out


def test_xinfap_two_strata_by_hand():
    m = inferred_measures(_judged(QRELS_A), RUN_A, depth=1000)
    # R_1 = 2 * 3/3 = 2, R_2 = 1 * 4/2 = 2, R = 4
    assert m["inum_rel"] == pytest.approx(4.0)
    # a at rank 1: nothing pooled above -> prec 1
    # d at rank 3 (stratum 2): above it 1 pooled doc (a, stratum 1, 1 sampled 1 relevant): 1/3 + 1/3 * Q
    # c at rank 5 (stratum 1): above it 3 pooled: a (s1), d, f (s2; only d sampled): 1/5 + 3/5*(1/3*Q + 2/3*Q)
    sap1 = 1.0 + (1 / 5 + 3 / 5 * (1 / 3 * Q + 2 / 3 * Q))
    sap2 = 1 / 3 + 1 / 3 * Q
    expected = (2 / 4) * sap1 / 2 + (2 / 4) * sap2 / 1
    assert m["xinfAP"] == pytest.approx(expected, rel=1e-12)
    # infNDCG: gains s1: 1/log2(2) + 1/log2(6), s2: 1/log2(4); retrieved pooled: s1 a,c (2 sampled), s2 d,f,e (2 sampled)
    dcg = (2 / 5) * (1 + 1 / log2(6)) / 2 + (3 / 5) * (1 / log2(4)) / 2
    ideal = sum(1 / log2(r + 1) for r in (1, 2, 3, 4))  # 4 estimated relevant of grade 1
    assert m["infNDCG"] == pytest.approx(5 * dcg / ideal, rel=1e-12)


def test_depth_cut():
    m = inferred_measures(_judged(QRELS_A), RUN_A, depth=3)  # only a, x, d
    expected = (2 / 4) * 1.0 / 2 + (2 / 4) * (1 / 3 + 1 / 3 * Q) / 1
    # R = 4 > depth = 3, so the script's 2012 adjustment multiplies by R / depth
    assert m["xinfAP"] == pytest.approx(expected * 4 / 3, rel=1e-12)
    ideal = 1 + 1 / log2(3) + 1 / log2(4)  # the ideal DCG stops at the depth too
    dcg = (1 / 2) * 1.0 / 1 + (1 / 2) * 0.5 / 1
    assert m["infNDCG"] == pytest.approx(2 * dcg / ideal, rel=1e-12)


def test_ties_broken_by_docid_descending():
    judged = {"a": ("1", 1), "b": ("1", 0)}
    assert ranked({"a": 5.0, "b": 5.0}) == ["b", "a"]
    m = inferred_measures(judged, {"a": 5.0, "b": 5.0})
    # b (judged non-relevant) first, then a at rank 2: 1/2 + 1/2 * (0 + 0.00001) / (1 + 0.00003)
    assert m["xinfAP"] == pytest.approx(0.5 + 0.5 * 0.00001 / 1.00003, rel=1e-12)
    assert inferred_measures(judged, {"a": 5.0, "b": 4.0})["xinfAP"] == pytest.approx(1.0)


def test_adjustment_when_inferred_relevant_exceeds_depth():
    # one of 10 pooled documents sampled, and it is relevant: R = 10 > depth = 2
    judged = {"d0": ("1", 1), **{f"d{i}": ("1", -1) for i in range(1, 10)}}
    m = inferred_measures(judged, {"d0": 1.0, "zz": 0.5}, depth=2)
    assert m["inum_rel"] == pytest.approx(10.0)
    assert m["xinfAP"] == pytest.approx(1.0 * 10 / 2)  # AP * R / depth, as the script does


def test_graded_relevance_ideal_dcg():
    judged = {"a": ("1", 2), "b": ("1", 1), "c": ("1", 0)}
    m = inferred_measures(judged, {"b": 3.0, "a": 2.0, "c": 1.0})
    dcg = 1 / log2(2) + 2 / log2(3)
    ideal = 2 / log2(2) + 1 / log2(3)
    assert m["infNDCG"] == pytest.approx(dcg / ideal, rel=1e-12)


def test_evaluate_run_plain_metrics_mean_and_skipped(tmp_path):
    qrels = tmp_path / "q.txt"
    qrels.write_text(QRELS_A + "2 0 a 1 1\n")
    run = tmp_path / "run.txt"
    lines = [f"1 Q0 {d} {i} {s} sys" for i, (d, s) in enumerate(RUN_A.items(), 1)] + ["9 Q0 a 1 1.0 sys"]
    run.write_text("\n".join(lines) + "\n")
    res = evaluate_run(read_run(run), read_qrels(qrels), depth=1000)
    assert res["num_topics"] == 1 and res["skipped_topics"] == ["2", "9"]
    t = res["per_topic"]["1"]
    # trec_eval AP with relevant a, c, d (unjudged f counts as non-relevant): ranks 1, 3, 5
    assert t["AP"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert t["P@10"] == pytest.approx(0.3)
    dcg = 1 / log2(2) + 1 / log2(4) + 1 / log2(6)
    assert t["nDCG@10"] == pytest.approx(dcg / (1 + 1 / log2(3) + 1 / log2(4)))
    assert res["mean"] == pytest.approx(t)


def test_plain_four_column_qrels_is_one_judged_stratum(tmp_path):
    qrels = tmp_path / "q.txt"
    qrels.write_text("1 0 a 1\n1 0 b 0\n")
    q = read_qrels(qrels)
    assert not q.sampled and q.judgements["1"] == {"a": ("1", 1), "b": ("1", 0)}


def test_run_formats_agree(tmp_path):
    (tmp_path / "r.txt").write_text("1 Q0 a 1 2.5 t\n1 Q0 b 2 1.5 t\n")
    (tmp_path / "r.csv").write_text("query_id,video_id,score,rank\n1,a,2.5,1\n1,b,1.5,2\n")
    (tmp_path / "r.jsonl").write_text('{"query_id": 1, "video_id": "a", "score": 2.5}\n'
                                      '{"query_id": "1", "video_id": "b", "score": 1.5}\n')
    got = [{t: [(e.docid, e.score) for e in v] for t, v in read_run(tmp_path / n).items()}
           for n in ("r.txt", "r.csv", "r.jsonl")]
    assert got[0] == got[1] == got[2] == {"1": [("a", 2.5), ("b", 1.5)]}


@pytest.mark.parametrize("name,text,where", [
    ("r.txt", "1 Q0 a 1 2.5 t\n1 Q0 b 2 x t\n", "r.txt:2"),
    ("r.txt", "1 Q0 a 1 2.5\n", "r.txt:1"),
    ("r.txt", "1 Q0 a 1 2.5 t\n1 Q0 a 2 1.0 t\n", "r.txt:2"),
    ("r.csv", "query_id,video_id\n1,a\n", "r.csv:1"),
    ("r.jsonl", '{"query_id": 1}\n', "r.jsonl:1"),
])
def test_bad_run_lines_name_file_and_line(tmp_path, name, text, where):
    (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError, match=where):
        read_run(tmp_path / name)


def test_bad_qrels_name_file_and_line(tmp_path):
    (tmp_path / "q.txt").write_text("1 0 a 1 1\n1 0 b 1 yes\n")
    with pytest.raises(DatasetError, match=r"q.txt:2: relevance"):
        read_qrels(tmp_path / "q.txt")


def test_cli_json_keys(tmp_path, capsys):
    (tmp_path / "q.txt").write_text(QRELS_A)
    (tmp_path / "r.txt").write_text("".join(f"1 Q0 {d} {i} {s} sys\n" for i, (d, s) in enumerate(RUN_A.items(), 1)))
    assert main(["trec-eval", "--run", str(tmp_path / "r.txt"), "--qrels", str(tmp_path / "q.txt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["depth"] == 1000 and set(out["mean"]) == {"xinfAP", "infNDCG", "AP", "P@10", "nDCG@10"}
    assert set(out["per_topic"]["1"]) == set(out["mean"]) and out["skipped_topics"] == []
    assert main(["trec-eval", "--run", str(tmp_path / "r.txt"), "--qrels", str(tmp_path / "q.txt"), "--per-topic"]) == 0
    text = capsys.readouterr().out
    assert "xinfAP" in text and text.count("\n") >= 3


def _mean(tmp_path, capsys, run_text, qrels_text, bom_run=False, bom_qrels=False):
    (tmp_path / "r.txt").write_text(("\ufeff" if bom_run else "") + run_text, encoding="utf-8")
    (tmp_path / "q.txt").write_text(("\ufeff" if bom_qrels else "") + qrels_text, encoding="utf-8")
    assert main(["trec-eval", "--run", str(tmp_path / "r.txt"), "--qrels", str(tmp_path / "q.txt"), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_bom_in_run_or_qrels_changes_nothing(tmp_path, capsys):
    # Before: topic "1" of a BOM-prefixed file was read as "\ufeff1", skipped, and the mean changed (exit 0)
    qrels = QRELS_A + "2 0 a 1 1\n2 0 b 1 0\n"
    run = "".join(f"1 Q0 {d} {i} {s} sys\n" for i, (d, s) in enumerate(RUN_A.items(), 1)) + \
        "2 Q0 b 1 2.0 sys\n2 Q0 a 2 1.0 sys\n"
    want = _mean(tmp_path, capsys, run, qrels)
    assert want["num_topics"] == 2 and want["skipped_topics"] == []
    assert _mean(tmp_path, capsys, run, qrels, bom_run=True) == want
    assert _mean(tmp_path, capsys, run, qrels, bom_qrels=True) == want
    assert _mean(tmp_path, capsys, run, qrels, bom_run=True, bom_qrels=True) == want


@pytest.mark.parametrize("name,text,where,what", [
    ("r.csv", "query_id,video_id,score\n1,a,1\n1," + "b" * (129 * 1024) + ",2\n", "r.csv:3",
     "field larger than field limit"),
    ("r.jsonl", '{"query_id": "1", "video_id": "a", "score": 1}\n' + "[" * 100_000 + "]" * 100_000 + "\n",
     "r.jsonl:2", "nested too deeply"),
    ("r.txt", "1 Q0 a 1 1_000 t\n", "r.txt:1", "score '1_000' is not a number"),
    ("r.jsonl", '{"query_id": "1", "video_id": "a", "score": true}\n', "r.jsonl:1", "score true is not a number"),
    ("q.txt", "1 0 a 1 1\n1 0 b 1 9223372036854775808\n", "q.txt:2", "relevance 9223372036854775808 is above"),
    ("q.txt", "1 0 a 1 4294967296\n", "q.txt:1", "relevance 4294967296 is above"),  # trec_eval: silently 0
])
def test_hostile_text_is_one_line_naming_file_and_line(tmp_path, capsys, name, text, where, what):
    # Before: _csv.Error, RecursionError and SystemError tracebacks; 1_000 read as 1000, true as 1
    (tmp_path / "r.txt").write_text("1 Q0 a 1 2.5 t\n")
    (tmp_path / "q.txt").write_text("1 0 a 1 1\n")
    (tmp_path / name).write_text(text)
    run = tmp_path / (name if name.startswith("r.") else "r.txt")
    assert main(["trec-eval", "--run", str(run), "--qrels", str(tmp_path / "q.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err[:500]
    assert err.startswith("vidclip trec-eval: error: ") and f"{where}: " in err and what in err, err[:500]
