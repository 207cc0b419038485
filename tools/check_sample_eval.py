"""Cross-check vidclip.eval.trec against NIST's sample_eval.pl on random cases (needs perl and the script).

sample_eval.pl is not shipped with vidclip; get it from NIST (trec.nist.gov, TRECVID / TREC tools) and run

    python tools/check_sample_eval.py /path/to/sample_eval.pl [--cases 60] [--seed 1]

Each case: 4 topics over 60 docids, three strata judged at 100%, 50% and 20% (others -1), graded
relevance 0/1/2, runs with tied scores and docids absent from the qrels, depth 5, 10, 20 or 1000.
Compares per-topic and mean infAP / infNDCG at the 4 decimals the script prints; exit code 1 on any
difference.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidclip.eval.trec import evaluate_run, read_qrels, read_run  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("script", help="path to sample_eval.pl")
    p.add_argument("--cases", type=int, default=60)
    p.add_argument("--seed", type=int, default=1)
    ns = p.parse_args()
    rng = random.Random(ns.seed)
    tmp = Path(tempfile.mkdtemp(prefix="check-sample-eval-"))
    qf, rf = tmp / "q.txt", tmp / "r.txt"
    worst, bad, topics = 0.0, 0, 0
    for case in range(ns.cases):
        docs = [f"d{i:03d}" for i in range(60)]
        q, r = [], []
        depth = rng.choice([5, 10, 20, 1000])
        for t in range(1, 5):
            for d in rng.sample(docs, rng.randint(5, 40)):
                s = rng.choice(["1", "2", "3"])
                rel = rng.choice([0, 0, 1, 2]) if rng.random() < {"1": 1.0, "2": 0.5, "3": 0.2}[s] else -1
                q.append(f"{t} 0 {d} {s} {rel}")
            for i, d in enumerate(rng.sample(docs, rng.randint(1, 50))):
                sc = rng.choice([1.0, 2.0, 3.0]) if rng.random() < 0.3 else round(rng.random(), 3)
                r.append(f"{t} Q0 {d} {i + 1} {sc} x")
        qf.write_text("\n".join(q) + "\n")
        rf.write_text("\n".join(r) + "\n")
        out = subprocess.run(["perl", ns.script, "-q", str(qf), str(rf), str(depth)], capture_output=True,
                             text=True, check=True).stdout
        perl = {(p[0], p[1]): float(p[2]) for p in (ln.split() for ln in out.splitlines())
                if len(p) == 3 and p[0] in ("infAP", "infNDCG")}
        ours = evaluate_run(read_run(rf), read_qrels(qf), depth)
        pairs = [(t, v) for t, v in ours["per_topic"].items()] + [("all", ours["mean"])]
        for t, v in pairs:
            topics += t != "all"
            for m, pm in (("xinfAP", "infAP"), ("infNDCG", "infNDCG")):
                diff = abs(round(v[m], 4) - perl[(pm, t)])
                worst = max(worst, diff)
                if diff > 1e-9:
                    bad += 1
                    print(f"case {case} topic {t} {m}: vidclip {v[m]:.6f}, sample_eval {perl[(pm, t)]:.4f} (depth {depth})")
    print(f"{ns.cases} cases, {topics} topics: {bad} differences, worst {worst:.4g}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
