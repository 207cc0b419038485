#!/usr/bin/env python
"""Cold start of the index's command-line verbs, next to ``python -c "import torch"`` in the same run.

Measures wall time of fresh processes (median of ``--repeat`` runs):

- ``import torch``: the floor for anything that runs a model;
- ``vidclip index LIB --index DIR`` with nothing new (a no-op re-index: loads no model);
- ``vidclip search QUERY --index DIR`` (one query: model load + one search);
- ``vidclip search --queries FILE --index DIR`` with ``--queries-count`` queries (one model load).

The library: ``vidclip synth`` videos indexed with the shipped ``vidclip-synth`` model, made in a
temp folder (or ``--work DIR``). Usage::

    nice -n 10 python tools/bench_index_startup.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _time(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--queries-count", type=int, default=20)
    ap.add_argument("--work", default=None, help="folder for the library and index (default: a temp folder)")
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(ns.work or tmp)
        vc = [sys.executable, "-m", "vidclip"]
        data = work / "synth"
        if not (data / "videos").is_dir():
            subprocess.run(vc + ["synth", str(data), "--videos", str(ns.videos)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        idx = work / "index"
        lib = data / "videos"
        subprocess.run(vc + ["index", str(lib), "--index", str(idx), "--model", "vidclip-synth", "--workers", "0",
                             "--quiet", "--device", "cpu"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        queries = work / "queries.txt"
        queries.write_text("\n".join(f"a red circle moving {i}" for i in range(ns.queries_count)) + "\n")
        rows = {
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "vidclip index (no-op)": vc + ["index", str(lib), "--index", str(idx), "--workers", "0", "--quiet"],
            "vidclip search (1 query)": vc + ["search", "a red circle", "--index", str(idx), "--device", "cpu"],
            f"vidclip search --queries ({ns.queries_count})": vc + ["search", "--queries", str(queries),
                                                                   "--index", str(idx), "--device", "cpu"],
        }
        result = {name: round(_time(cmd, ns.repeat), 3) for name, cmd in rows.items()}
    base = result["python -c 'import torch'"]
    if ns.json:
        print(json.dumps({"seconds": result, "repeat": ns.repeat}, indent=2))
    else:
        for name, s in result.items():
            print(f"{name:32s} {s:6.2f} s  ({s / base:.2f}x import torch)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
