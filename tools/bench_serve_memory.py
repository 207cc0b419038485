#!/usr/bin/env python
"""Memory of `vidclip serve` under image uploads: its RSS before, at the peak of and after a burst
of concurrent ``POST /search/image`` uploads of one large, highly compressible PNG (by default
8 uploads of a 7680x4320 gradient, ~100 KB: the worst case the pixel limit lets through).

The server runs as its own process (``python -m vidclip serve``), so the figures are its
``/proc/PID/status``: ``VmRSS`` idle before the burst, ``VmHWM`` (peak RSS, reset through
``/proc/PID/clear_refs`` just before the burst) and ``VmRSS`` a moment after the last response.
``--baseline REV`` measures the package as committed at git revision REV in the same run
(extracted with ``git archive`` into a temporary folder that goes first on PYTHONPATH).

    python tools/bench_serve_memory.py [--uploads 8] [--baseline REV] [--write BENCHMARKS.md]

The index is built once from ``vidclip synth`` videos with the shipped vidclip-synth model
unless ``--index DIR`` names one. tests/test_serve_memory.py uses :func:`measure`.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worst_png(width: int = 7680, height: int = 4320) -> bytes:
    """A ``width x height`` RGB PNG that compresses to ~100 KB: a smooth two-way gradient.

    It decodes to ``3 * width * height`` bytes (100 MB at 8K UHD) from a tiny upload.
    """
    import numpy as np
    from PIL import Image

    x = (np.arange(width, dtype=np.uint32) * 255 // max(1, width - 1)).astype(np.uint8)
    y = (np.arange(height, dtype=np.uint32) * 255 // max(1, height - 1)).astype(np.uint8)
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = x[None, :]
    img[..., 1] = y[:, None]
    img[..., 2] = 128
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def proc_status_mb(pid: int, field: str) -> float:
    """``field`` (VmRSS, VmHWM, ...) of /proc/PID/status, in MB (10^6 bytes)."""
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    if not m:
        raise RuntimeError(f"/proc/{pid}/status has no {field}")
    return int(m.group(1)) * 1024 / 1e6


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0); False where that is refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class ServeProcess:
    """``python -m vidclip serve INDEX --port 0`` in its own process; ``url`` once it listens.

    ``pythonpath`` goes first on PYTHONPATH (a baseline revision's package). Killed on exit: it
    only reads the index, and a graceful stop takes seconds that measure nothing.
    """

    def __init__(self, index_dir: Path, *, pythonpath: str | None = None, extra_args: tuple[str, ...] = ()):
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vidclip", "serve", str(index_dir), "--port", "0", "--log-level", "warning",
             *extra_args], cwd=tempfile.gettempdir(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.pid = self.proc.pid
        self.url: str | None = None

    def __enter__(self) -> ServeProcess:
        found = threading.Event()
        lines: list[str] = []

        def read():
            for line in self.proc.stdout:
                lines.append(line)
                m = re.search(r"http://127\.0\.0\.1:\d+/", line)
                if m and line.startswith("Serving on"):
                    self.url = m.group(0)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(180):
            self.__exit__()
            raise RuntimeError(f"vidclip serve did not start: {lines} {self.proc.stderr.read()[-2000:]}")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def upload_burst(url: str, body: bytes, n: int) -> list[int]:
    """POST ``body`` to ``url``search/image ``n`` times at once (a barrier lines them up); status codes."""
    import httpx

    barrier = threading.Barrier(n)

    def one(_):
        with httpx.Client(timeout=300) as c:
            barrier.wait()
            return c.post(url + "search/image", params={"k": 3}, content=body,
                          headers={"Content-Type": "image/png"}).status_code

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def measure(index_dir: Path, body: bytes, n: int = 8, *, pythonpath: str | None = None,
            settle_s: float = 1.0) -> dict:
    """Start a server on ``index_dir``, send ``n`` concurrent uploads of ``body``, read its memory.

    Returns MB figures ``before`` (idle VmRSS), ``peak`` (VmHWM over the burst, or the largest
    VmRSS sampled every 10 ms where VmHWM cannot be reset: ``peak_from``), ``after`` (VmRSS
    ``settle_s`` after the last response), the burst's wall ``seconds`` and ``status`` codes. The server answers one warm-up upload of a small image first, so lazily loaded
    code (PIL plugins, the encoder's first call) counts as idle, not as the burst's cost.
    """
    from PIL import Image

    small = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 30)).save(small, format="PNG")
    with ServeProcess(index_dir, pythonpath=pythonpath) as srv:
        warm = upload_burst(srv.url, small.getvalue(), 1)
        if warm != [200]:
            raise RuntimeError(f"warm-up upload answered {warm}")
        time.sleep(settle_s)
        before = proc_status_mb(srv.pid, "VmRSS")
        sampled = [before]
        stop = threading.Event()
        hwm = reset_peak(srv.pid)
        if not hwm:  # no clear_refs: sample VmRSS instead (may miss a short peak)
            def sample():
                while not stop.wait(0.01):
                    sampled.append(proc_status_mb(srv.pid, "VmRSS"))
            threading.Thread(target=sample, daemon=True).start()
        t0 = time.perf_counter()
        status = upload_burst(srv.url, body, n)
        seconds = time.perf_counter() - t0
        stop.set()
        peak = max(proc_status_mb(srv.pid, "VmHWM") if hwm else 0.0, max(sampled))
        time.sleep(settle_s)
        after = proc_status_mb(srv.pid, "VmRSS")
    return {"before": before, "peak": peak, "after": after, "seconds": seconds, "status": status,
            "peak_from": "VmHWM" if hwm else "VmRSS samples"}


def build_index(work: Path) -> Path:
    """8 tiny `vidclip synth` videos indexed with the shipped vidclip-synth model: ``work``/idx."""
    py = sys.executable
    subprocess.run([py, "-m", "vidclip", "synth", "data", "--videos", "8", "--size", "32", "--frames", "8"],
                   cwd=work, check=True, capture_output=True)
    subprocess.run([py, "-m", "vidclip", "index", "data/videos", "--index", "idx", "--model", "vidclip-synth"],
                   cwd=work, check=True, capture_output=True)
    return work / "idx"


def extract_revision(rev: str, dest: Path) -> str:
    """The ``vidclip`` package as committed at ``rev``, extracted under ``dest``; returns ``dest``."""
    archive = subprocess.run(["git", "archive", rev, "vidclip"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return str(dest)


def section(rows: list[tuple[str, dict]], command: str, n: int, width: int, height: int, size: int) -> str:
    lines = ["| server | before MB | peak MB | after MB | peak - before | after - before | burst s | status |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in rows:
        codes = ",".join(sorted({str(s) for s in r["status"]}))
        lines.append(f"| {name} | {r['before']:.0f} | {r['peak']:.0f} | {r['after']:.0f} | "
                     f"{r['peak'] - r['before']:+.0f} | {r['after'] - r['before']:+.0f} | {r['seconds']:.1f} | "
                     f"{codes} |")
    table = "\n".join(lines)
    return f"""## Server memory under image uploads

RSS of a `vidclip serve` process (its `/proc/PID/status`) idle before, at the peak of
(`VmHWM`, reset just before) and 1 s after a burst of {n} concurrent `POST /search/image`
uploads of one {width}x{height} gradient PNG of {size / 1e3:.0f} KB, which decodes to
{3 * width * height / 1e6:.0f} MB of RGB. Index: 8 `vidclip synth` videos with `--model
vidclip-synth`. Rows from one run of `tools/bench_serve_memory.py`; a baseline row is the
package as committed at that revision.

Command: `{command}`. Machine: `nproc` = {os.cpu_count()}, Python {platform.python_version()};
1-min load average {os.getloadavg()[0]:.1f} at the end (shared with other engineers' jobs: it sets
the burst's seconds, not its memory).

{table}

Reading it: the baseline decoded each upload at full size and held ~5 full-size copies of it
(PIL's decode, its EXIF-transpose and RGB copies, the numpy array, the torch tensor), 8 uploads at
once, and glibc kept PIL's freed 16 MB blocks in the worker threads' malloc arenas afterwards.
Now at most 2 image searches run at once (`create_app(max_image_decodes=2)`), a big picture is
resized to the model's input side straight after decoding (`load_query_image(min_side=S)`: one
full-size copy, briefly), and `malloc_trim(0)` hands the freed heap back after each search.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, help="serve this index instead of building one")
    ap.add_argument("--uploads", type=int, default=8, help="concurrent uploads (default: %(default)s)")
    ap.add_argument("--size", default="7680x4320", help="the PNG's WIDTHxHEIGHT (default: %(default)s)")
    ap.add_argument("--baseline", metavar="REV", help="also measure the package as committed at git revision REV")
    ap.add_argument("--write", type=Path, help="markdown file whose '## Server memory under image uploads' "
                                               "section is replaced")
    ns = ap.parse_args(argv)
    width, height = (int(v) for v in ns.size.lower().split("x"))
    body = worst_png(width, height)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidclip-servemem-") as tmp:
        work = Path(tmp)
        index_dir = ns.index or build_index(work)
        if ns.baseline:
            (work / "base").mkdir()
            path = extract_revision(ns.baseline, work / "base")
            rev = subprocess.run(["git", "rev-parse", "--short", ns.baseline], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout.strip()
            rows.append((f"baseline ({rev})", measure(index_dir, body, ns.uploads, pythonpath=path)))
            print(rows[-1], file=sys.stderr, flush=True)
        rows.append(("this tree", measure(index_dir, body, ns.uploads)))
        print(rows[-1], file=sys.stderr, flush=True)
    command = "python tools/bench_serve_memory.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = section(rows, command.strip(), ns.uploads, width, height, len(body))
    print(text)
    if ns.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_decode import write_section

        write_section(ns.write, text, "## Server memory under image uploads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
