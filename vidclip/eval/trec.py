"""TRECVID-style evaluation of ranked runs: xinfAP and infNDCG as NIST's ``sample_eval.pl`` computes them.

Inferred measures (Yilmaz, Kanoulas and Aslam, "A simple and efficient sampling method for
estimating AP and NDCG", SIGIR 2008) evaluate a run against *sampled* judgements: the pool of a
topic is split into strata, each stratum is judged at its own sampling rate, and the qrels say per
document which stratum it came from and its relevance (-1 = pooled but not sampled/judged,
0 = judged not relevant, > 0 = relevant, the value being its gain). The procedure here follows
sample_eval.pl step by step (TRECVID's copy, with the 2010 ``maxResultSize`` variable and the 2012
depth adjustment), so its numbers match that script's:

- per stratum ``c``: ``docs[c]`` pooled, ``sampled[c]`` judged (rel >= 0), ``rel[c]`` judged
  relevant; estimated relevant ``R = sum_c rel[c] * docs[c] / sampled[c]``.
- the run of a topic is sorted by score, descending, ties broken by docid in *descending*
  lexicographic order (``$b cmp $a``), and cut after ``depth`` documents (``maxResultSize``).
- at a relevant document at rank ``k``, with ``n`` pooled documents above it, of which ``n_c``
  are in stratum ``c`` (``s_c`` judged, ``r_c`` relevant), the expected precision is
  ``1/k + (n/k) * sum_c (n_c/n) * (r_c + 0.00001) / (s_c + 0.00003)`` (the smoothing constants
  of the script); these are summed per stratum of the relevant document.
- xinfAP ``= sum_c (R_c / R) * (sum of precisions in c) / rel[c]``, with ``R_c`` the stratum's
  estimated relevant; when ``R > depth``, xinfAP is multiplied by ``R / depth``.
- infNDCG: gains ``rel / log2(k + 1)`` summed per stratum, estimated DCG
  ``n * sum_c (n_c / n) * gain_c / s_c`` (``n``, ``n_c``, ``s_c`` over the cut run), divided by
  the ideal DCG of the estimated number of documents of each grade, laid out grade by grade from
  the highest, stopping at ``depth`` (the script's loop, fractional counts included).
- the mean is over the topics present in both the run and the qrels.

``tools/check_sample_eval.py /path/to/sample_eval.pl`` compares this module with the script on
random cases (strata at several rates, graded and unjudged documents, ties, depth cuts): 400
topics, no difference at the 4 decimals the script prints.

Plain AP, P@10 and nDCG@10 come from trec_eval itself (the ``pytrec_eval`` bindings), on the
same cut run, with unjudged (-1) documents counted as not relevant.

Plain 4-column TREC qrels (``topic iter docid rel``) are read as one fully judged stratum.
Run files: TREC 6-column (``topic Q0 docid rank score tag``), CSV with a header holding
``query_id, video_id, score`` (and optionally ``rank``), or JSONL with those keys. Files are read
by :mod:`vidclip.core.textio` (a BOM dropped; numbers read strictly: ``1_000`` and JSON ``true`` are not
scores); relevance grades are at most :data:`MAX_RELEVANCE`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from vidclip.core.errors import DatasetError, display_path
from vidclip.core.textio import CsvRows, at, parse_float, parse_int, parse_json, read_text_lines

__all__ = ["Qrels", "RunEntry", "read_qrels", "read_run", "ranked", "inferred_measures", "evaluate_run",
           "format_trec_run", "METRICS"]

METRICS = ("xinfAP", "infNDCG", "AP", "P@10", "nDCG@10")
PREC_SMOOTH_REL = 0.00001  # sample_eval.pl's smoothing constants
PREC_SMOOTH_SAMPLED = 0.00003
# trec_eval (pytrec_eval) allocates 8 bytes per relevance level up to the largest grade (2**31 took
# 16 GB), wraps grades >= 2**32 to 0 (silently "not relevant") and fails on >= 2**63; grades are
# small (TRECVID: 1), so a generous bound keeps its cost at a few MB.
MAX_RELEVANCE = 1_000_000


@dataclass
class Qrels:
    """topic -> docid -> (stratum, rel). ``sampled`` is True for the 5-column TRECVID form."""

    judgements: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)
    sampled: bool = True


@dataclass
class RunEntry:
    docid: str
    score: float
    rank: int | None
    line: int  # 1-based line of the run file (for messages)


def _err(path, line: int, what: str) -> DatasetError:
    return DatasetError(f"{display_path(path)}:{line}: {what}")


def read_qrels(path: str | os.PathLike) -> Qrels:
    """Read TRECVID sampled qrels (``topic iter docid stratum rel``) or plain ``topic iter docid rel``.

    The column count of the first line decides the form; every line must then have it.
    """
    out = Qrels()
    ncols = None
    for no, raw in enumerate(read_text_lines(path), 1):
        parts = raw.split()
        if not parts:
            continue
        if ncols is None:
            if len(parts) not in (4, 5):
                raise _err(path, no, f"expected 5 columns 'topic iter docid stratum rel' or 4 columns "
                                     f"'topic iter docid rel', got {len(parts)}")
            ncols = len(parts)
            out.sampled = ncols == 5
        if len(parts) != ncols:
            raise _err(path, no, f"expected {ncols} columns like the first line, got {len(parts)}")
        topic, docid = parts[0], parts[2]
        stratum = parts[3] if ncols == 5 else "1"
        rel = parse_int(parts[-1], at(path, no), "relevance", hi=MAX_RELEVANCE)
        if rel < -1:
            raise _err(path, no, f"relevance {rel} is below -1 (-1 = pooled but unjudged, 0 = not relevant, >0 relevant)")
        if ncols == 4 and rel < 0:
            raise _err(path, no, "plain 4-column qrels cannot hold -1 (unjudged); use the 5-column sampled form")
        topic_q = out.judgements.setdefault(topic, {})
        if docid in topic_q:
            raise _err(path, no, f"document {docid!r} of topic {topic!r} is judged twice")
        topic_q[docid] = (stratum, rel)
    if not out.judgements:
        raise DatasetError(f"{display_path(path)}: no judgements (empty qrels)")
    return out


def _run_format(path: Path, first_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".csv" or ("query_id" in first_line and "," in first_line):
        return "csv"
    return "trec"


def read_run(path: str | os.PathLike) -> dict[str, list[RunEntry]]:
    """topic -> entries in file order, from a TREC 6-column, CSV or JSONL run (see the module docstring).

    Raises DatasetError naming the file and line for a malformed line or a docid listed twice for a topic.
    """
    p = Path(path)
    lines = read_text_lines(p)
    first = next((ln for ln in lines if ln.strip()), "")
    if not first:
        raise DatasetError(f"{display_path(path)}: empty run file")
    fmt = _run_format(p, first)
    out: dict[str, list[RunEntry]] = {}
    seen: dict[tuple[str, str], int] = {}

    def add(no: int, topic, docid, score, rank) -> None:
        topic, docid = str(topic).strip(), str(docid).strip()
        if not topic or not docid:
            raise _err(path, no, "empty topic or docid")
        s = parse_float(score, at(path, no), "score")
        r = None
        if rank not in (None, ""):
            r = parse_int(rank, at(path, no), "rank")
        if (topic, docid) in seen:
            raise _err(path, no, f"document {docid!r} appears twice for topic {topic!r} (first on line {seen[topic, docid]})")
        seen[topic, docid] = no
        out.setdefault(topic, []).append(RunEntry(docid, s, r, no))

    if fmt == "trec":
        for no, raw in enumerate(lines, 1):
            parts = raw.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise _err(path, no, f"expected 6 columns 'topic Q0 docid rank score tag', got {len(parts)}")
            add(no, parts[0], parts[2], parts[4], parts[3])
    elif fmt == "csv":
        rows = CsvRows(path, header=True, text="\n".join(lines))
        need = {"query_id", "video_id", "score"}
        missing = need - set(rows.fieldnames)
        if missing:
            raise _err(path, 1, f"CSV header must name query_id, video_id, score (and optionally rank); missing {sorted(missing)}")
        for no, row in rows:
            add(no, row["query_id"], row["video_id"], row["score"], row.get("rank"))
    else:
        for no, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            obj = parse_json(raw, path, no)
            if not isinstance(obj, dict) or not {"query_id", "video_id", "score"} <= set(obj):
                raise _err(path, no, "each line must be an object with query_id, video_id, score (and optionally rank)")
            add(no, obj["query_id"], obj["video_id"], obj["score"], obj.get("rank"))
    return out


def ranked(entries: list[RunEntry] | dict[str, float]) -> list[str]:
    """Docids by score descending, ties by docid descending (sample_eval's and trec_eval's order)."""
    scores = entries if isinstance(entries, dict) else {e.docid: e.score for e in entries}
    return sorted(scores, key=lambda d: (scores[d], d), reverse=True)


def inferred_measures(judged: dict[str, tuple[str, int]], scores: dict[str, float], depth: int = 1000) -> dict:
    """xinfAP and infNDCG of one topic, exactly as sample_eval.pl computes them.

    ``judged``: docid -> (stratum, rel) of the topic; ``scores``: docid -> run score. Returns
    {"xinfAP", "infNDCG", "inum_rel" (estimated relevant), "inum_rel_ret" (estimated relevant retrieved)}.
    Loops mirror the script's, including the order of its sums, so the floats agree with it.
    """
    if depth <= 0:
        raise ValueError(f"depth must be positive, got {depth}")
    docs_per: dict[str, int] = {}
    sampled: dict[str, int] = {}
    sampled_rel: dict[str, int] = {}
    per_grade: dict[str, dict[int, int]] = {}
    for stratum, rel in judged.values():
        docs_per[stratum] = docs_per.get(stratum, 0) + 1
        if rel >= 0:
            sampled[stratum] = sampled.get(stratum, 0) + 1
        if rel > 0:
            sampled_rel[stratum] = sampled_rel.get(stratum, 0) + 1
            g = per_grade.setdefault(stratum, {})
            g[rel] = g.get(rel, 0) + 1
    strata = sorted(docs_per)  # Perl's `sort keys`: string order

    num_rels = 0.0
    for c in strata:
        if sampled.get(c, 0):
            num_rels += sampled_rel.get(c, 0) * docs_per[c] / sampled[c]

    grades: dict[int, float] = {}
    for c in strata:
        for g in sorted(per_grade.get(c, {}), key=str):
            grades[g] = grades.get(g, 0.0) + per_grade[c][g] * docs_per[c] / sampled[c]
    optimal_dcg = 0.0
    start = 0.0
    for g in sorted(grades, key=str, reverse=True):  # `reverse sort keys`
        r = start + 1
        while r <= start + grades[g]:
            optimal_dcg += g / (math.log(r + 1) / math.log(2))
            if r >= depth:  # the script leaves only this grade's loop
                break
            r += 1
        start += grades[g]

    sap: dict[str, float] = {}
    gain: dict[str, float] = {}
    n_sampled: dict[str, int] = {}
    n_relevant: dict[str, int] = {}
    n_docs: dict[str, int] = {}
    n_pooled = 0
    num_rel_ret = 0.0
    for rank, docid in enumerate(ranked(scores), 1):
        stratum, rel = judged.get(docid, (None, 0))
        if rel > 0:
            prec_above = 0.0
            for c in strata:
                if n_pooled != 0:
                    prob = n_docs.get(c, 0) / n_pooled
                    if prob != 0:
                        prec_above += prob * (n_relevant.get(c, 0) + PREC_SMOOTH_REL) / (n_sampled.get(c, 0) + PREC_SMOOTH_SAMPLED)
            prec = 1 / rank + (n_pooled / rank) * prec_above
            sap[stratum] = sap.get(stratum, 0.0) + prec
            n_relevant[stratum] = n_relevant.get(stratum, 0) + 1
            gain[stratum] = gain.get(stratum, 0.0) + rel / (math.log(rank + 1) / math.log(2))
        if stratum is not None:
            n_pooled += 1
            n_docs[stratum] = n_docs.get(stratum, 0) + 1
            if rel >= 0:
                n_sampled[stratum] = n_sampled.get(stratum, 0) + 1
        num_rel_ret = 0.0
        for c in strata:
            num_rel_ret += n_docs.get(c, 0) * (n_relevant.get(c, 0) + PREC_SMOOTH_REL) / (n_sampled.get(c, 0) + PREC_SMOOTH_SAMPLED)
        if rank >= depth:
            break

    ap = 0.0
    for c in strata:
        if sampled.get(c, 0) != 0:
            estimate = sampled_rel.get(c, 0) * docs_per[c] / sampled[c]
            if num_rels != 0:
                ap_c = sap.get(c, 0.0) / sampled_rel[c] if sampled_rel.get(c, 0) != 0 else 0.0
                ap += (estimate / num_rels) * ap_c
    if num_rels > depth:  # the 2012 adjustment: a run cannot hold more than `depth` documents
        ap = ap * num_rels / depth

    dcg = 0.0
    for c in strata:
        if n_pooled != 0:
            prob = n_docs.get(c, 0) / n_pooled
            if n_sampled.get(c, 0) != 0:
                dcg += prob * gain.get(c, 0.0) / n_sampled[c]
    ndcg = n_pooled * dcg / optimal_dcg if optimal_dcg != 0 else 0.0
    return {"xinfAP": ap, "infNDCG": ndcg, "inum_rel": num_rels, "inum_rel_ret": num_rel_ret}


def _plain_metrics(qrels: Qrels, cut_runs: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """AP, P@10, nDCG@10 per topic from trec_eval (pytrec_eval), unjudged (-1) counted as not relevant."""
    import pytrec_eval

    q = {t: {d: max(rel, 0) for d, (_, rel) in qrels.judgements[t].items()} for t in cut_runs}
    evaluator = pytrec_eval.RelevanceEvaluator(q, {"map", "P_10", "ndcg_cut_10"})
    res = evaluator.evaluate({t: {d: float(s) for d, s in run.items()} for t, run in cut_runs.items()})
    out = {}
    for t in cut_runs:
        r = res.get(t, {})
        out[t] = {"AP": float(r.get("map", 0.0)), "P@10": float(r.get("P_10", 0.0)),
                  "nDCG@10": float(r.get("ndcg_cut_10", 0.0))}
    return out


def evaluate_run(run: dict[str, list[RunEntry]] | dict[str, dict[str, float]], qrels: Qrels, depth: int = 1000) -> dict:
    """Evaluate a run; returns the ``vidclip trec-eval --json`` object::

        {"depth": D, "mean": {"xinfAP", "infNDCG", "AP", "P@10", "nDCG@10"},
         "per_topic": {topic: {same keys}}, "skipped_topics": [topic, ...],
         "skipped_reasons": {topic: why}, "num_topics": n}

    The mean is over topics present in both run and qrels (sample_eval's rule); the others are
    listed as skipped, with the reason.
    """
    if depth <= 0:
        raise DatasetError(f"--depth must be positive, got {depth}")
    scores = {t: (v if isinstance(v, dict) else {e.docid: e.score for e in v}) for t, v in run.items()}
    skipped: dict[str, str] = {}
    for t in scores:
        if t not in qrels.judgements:
            skipped[t] = "in the run but not in the qrels"
    for t in qrels.judgements:
        if t not in scores or not scores[t]:
            skipped[t] = "in the qrels but the run has no results for it"
    topics = [t for t in scores if t in qrels.judgements and scores[t]]
    topics.sort(key=_topic_sort_key)
    if not topics:
        raise DatasetError("no topic is in both the run and the qrels: nothing to evaluate")
    cut = {t: {d: scores[t][d] for d in ranked(scores[t])[:depth]} for t in topics}
    plain = _plain_metrics(qrels, cut)
    per_topic = {}
    for t in topics:
        inferred = inferred_measures(qrels.judgements[t], scores[t], depth)
        per_topic[t] = {"xinfAP": inferred["xinfAP"], "infNDCG": inferred["infNDCG"], **plain[t]}
    mean = {m: sum(per_topic[t][m] for t in topics) / len(topics) for m in METRICS}
    skipped_list = sorted(skipped, key=_topic_sort_key)
    return {"depth": int(depth), "mean": mean, "per_topic": per_topic, "skipped_topics": skipped_list,
            "skipped_reasons": {t: skipped[t] for t in skipped_list}, "num_topics": len(topics)}


def _topic_sort_key(t: str):
    # sample_eval orders topics numerically; non-numeric ids after, by name
    try:
        return (0, float(t), t)
    except ValueError:
        return (1, 0.0, t)


def format_trec_run(ranking: dict[str, list[tuple[str, float]]], tag: str) -> str:
    """TREC 6-column text: per topic, ranks 1..n in the given order, with the given scores."""
    if not tag or any(ch.isspace() for ch in tag):
        raise DatasetError(f"run tag must be one word without spaces, got {tag!r}")
    lines = []
    for topic in sorted(ranking, key=_topic_sort_key):
        for rank, (docid, score) in enumerate(ranking[topic], 1):
            lines.append(f"{topic} Q0 {docid} {rank} {score:.6f} {tag}")
    return "\n".join(lines) + ("\n" if lines else "")
