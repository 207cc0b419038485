#!/usr/bin/env python
"""Cold start of the CLI: wall time of `vidclip probe FILE`, `vidclip search` on a small index,
a no-op re-`vidclip index`, against `python -c "import torch"` in the same run (median of
``--repeats`` fresh processes each). The index is built once from `vidclip synth` videos with
the shipped synthetic-domain model (vidclip-synth).

    python tools/bench_startup.py [--repeats 5] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], repeats: int, cwd: Path) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    print(f"{' '.join(cmd[1:4])}: {times}", file=sys.stderr, flush=True)
    return statistics.median(times)


def section(rows, command: str, repeats: int) -> str:
    base = rows[0][1]
    load = os.getloadavg()[0]
    lines = ["| command | median wall s | vs `import torch` |", "|---|---:|---:|"]
    lines += [f"| `{name}` | {sec:.2f} | {sec / base:.2f}x |" for name, sec in rows]
    table = "\n".join(lines)
    return f"""## Cold start

Wall time of a fresh process per call (median of {repeats}), from `tools/bench_startup.py`; the
baseline `python -c "import torch"` is measured in the same run. Index: 8 `vidclip synth`
videos indexed with `--model vidclip-synth` (built once, not timed).

Command: `{command}`. Machine: `nproc` = {os.cpu_count()}, Python {platform.python_version()};
1-min load average {load:.1f} at the end (shared with other engineers' jobs).

{table}
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--write", type=Path, help="markdown file whose '## Cold start' section is replaced")
    ns = ap.parse_args(argv)
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="vidclip-startup-") as tmp:
        work = Path(tmp)
        subprocess.run([py, "-m", "vidclip", "synth", "data", "--videos", "8", "--size", "32", "--frames", "8"],
                       cwd=work, check=True, capture_output=True)
        video = sorted((work / "data" / "videos").glob("*.mp4"))[0]
        index = [py, "-m", "vidclip", "index", "data/videos", "--index", "idx", "--model", "vidclip-synth"]
        subprocess.run(index, cwd=work, check=True, capture_output=True)
        rows = [
            ('python -c "import torch"', timed([py, "-c", "import torch"], ns.repeats, work)),
            ("vidclip probe FILE", timed([py, "-m", "vidclip", "probe", str(video)], ns.repeats, work)),
            ("vidclip search --index idx QUERY",
             timed([py, "-m", "vidclip", "search", "--index", "idx", "a red circle moving left"], ns.repeats, work)),
            ("vidclip index (no-op re-run)", timed(index, ns.repeats, work)),
        ]
    command = "python tools/bench_startup.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = section(rows, command.strip(), ns.repeats)
    print(text)
    if ns.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_decode import write_section

        write_section(ns.write, text, "## Cold start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
