#!/usr/bin/env python
"""Cold start of the CLI: wall time of `vidclip probe FILE`, `vidclip search` on a small index,
a no-op re-`vidclip index`, against `python -c "import torch"` in the same run (median of
``--repeats`` fresh processes each). The index is built once from `vidclip synth` videos with
the shipped synthetic-domain model (vidclip-synth).

`vidclip search` is timed twice: on the index as built (it holds its ONNX text tower: the light
runtime, no torch) and on a copy without ``onnx/`` (the torch path, as before issue 18). `vidclip
serve` on each: seconds from the process start to the first answered text search (ready), and
the server's resident memory after it (idle RSS, /proc/PID/status VmRSS).

    python tools/bench_startup.py [--repeats 5] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import socket
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


def serve_ready(py: str, index: str, cwd: Path, query: str) -> tuple[float, float]:
    """(seconds from start to the first answered GET /search, server RSS in MB after it)."""
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    proc = subprocess.Popen([py, "-m", "vidclip", "serve", index, "--port", str(port)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/search?q={query.replace(' ', '+')}&k=5"
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"vidclip serve {index} exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=60) as r:
                    r.read()
                break
            except OSError:
                time.sleep(0.05)
        ready = time.perf_counter() - t
        time.sleep(1.0)
        rss = 0.0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
        return ready, rss
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def section(rows, serve, command: str, repeats: int, load_start: float) -> str:
    base = rows[0][1]
    load = os.getloadavg()[0]
    lines = ["| command | median wall s | vs `import torch` |", "|---|---:|---:|"]
    lines += [f"| `{name}` | {sec:.2f} | {sec / base:.2f}x |" for name, sec in rows]
    table = "\n".join(lines)
    srv = ["| `vidclip serve` | ready s (median) | idle RSS MB (median) |", "|---|---:|---:|"]
    srv += [f"| {name} | {r:.2f} | {m:.0f} |" for name, r, m in serve]
    srv_table = "\n".join(srv)
    return f"""## Cold start

Wall time of a fresh process per call (median of {repeats}), from `tools/bench_startup.py`; the
baseline `python -c "import torch"` is measured in the same run. Index: 8 `vidclip synth`
videos indexed with `--model vidclip-synth` (built once, not timed); it holds its ONNX text
tower (`idx/onnx/`), so a text search runs on the light runtime (no torch); "torch path" is a
copy of it without `onnx/`, searched as before issue 18.

Command: `{command}`. Machine: `nproc` = {os.cpu_count()}, Python {platform.python_version()};
1-min load average {load_start:.1f} at the start, {load:.1f} at the end (shared with other engineers' jobs).

{table}

`vidclip serve`: seconds from the process start to the first answered `GET /search` (ready) and
the server's resident memory after it (VmRSS), median of {repeats}:

{srv_table}
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--write", type=Path, help="markdown file whose '## Cold start' section is replaced")
    ns = ap.parse_args(argv)
    py = sys.executable
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vidclip-startup-") as tmp:
        work = Path(tmp)
        subprocess.run([py, "-m", "vidclip", "synth", "data", "--videos", "8", "--size", "32", "--frames", "8"],
                       cwd=work, check=True, capture_output=True)
        video = sorted((work / "data" / "videos").glob("*.mp4"))[0]
        index = [py, "-m", "vidclip", "index", "data/videos", "--index", "idx", "--model", "vidclip-synth"]
        subprocess.run(index, cwd=work, check=True, capture_output=True)
        if not (work / "idx" / "onnx").is_dir():
            raise SystemExit("the index has no ONNX text tower (is onnxruntime installed?)")
        shutil.copytree(work / "idx", work / "idx-torch", ignore=shutil.ignore_patterns("onnx"))
        query = "a red circle moving left"
        rows = [
            ('python -c "import torch"', timed([py, "-c", "import torch"], ns.repeats, work)),
            ("vidclip probe FILE", timed([py, "-m", "vidclip", "probe", str(video)], ns.repeats, work)),
            ("vidclip search --index idx QUERY",
             timed([py, "-m", "vidclip", "search", "--index", "idx", query], ns.repeats, work)),
            ("vidclip search --index idx QUERY (torch path)",
             timed([py, "-m", "vidclip", "search", "--index", "idx-torch", query], ns.repeats, work)),
            ("vidclip index (no-op re-run)", timed(index, ns.repeats, work)),
        ]
        serve = []
        for name, idx in (("light runtime (idx)", "idx"), ("torch path (idx-torch)", "idx-torch")):
            runs = [serve_ready(py, idx, work, query) for _ in range(ns.repeats)]
            print(f"serve {idx}: {runs}", file=sys.stderr, flush=True)
            serve.append((name, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)))
    command = "python tools/bench_startup.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = section(rows, serve, command.strip(), ns.repeats, load_start)
    print(text)
    if ns.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_decode import write_section

        write_section(ns.write, text, "## Cold start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
