#!/usr/bin/env python
"""The Ray engine against the local engine: the same generated library indexed by each, in one run.

Library: ``--videos`` synthetic clips (vidclip.synthetic.world: ``--size`` px, ``--frames`` frames at
8 fps), indexed with ``--model`` (default the shipped vidclip-synth) and a windows sampler at
``--fps``; ``--commit-every`` videos per shard / Ray partition, ``--batch-frames`` rows per encoder
pass. Every mode indexes into a fresh folder ``--trials`` times; the fastest trial is reported
(the machine is shared; the minimum is the least disturbed figure). Modes:

1. ``local``: the local engine (``--workers`` decode processes here, encoding in this process).
2. ``ray (local, 2 CPUs)``: a local Ray started once by this script (its start-up timed
   separately), then ``--engine ray`` runs, each starting its encoder actor (the model load is
   part of every run, as it is for the CLI).
3. ``--cluster``: a head and a second node started with ``ray start`` on loopback, 1 CPU each,
   the same runs against it; ``ray stop`` at the end (stops every Ray process of this machine).

Ratio = seconds / the local engine's seconds of the same run. Each Ray index is also checked to
hold the local index's vectors bit for bit.

    python tools/bench_ray.py                        # local vs Ray on this machine
    python tools/bench_ray.py --cluster              # plus the two-node loopback cluster
    python tools/bench_ray.py --videos 96 --frames 96 --trials 3 --cluster
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _vectors(idx: Path) -> dict:
    from vidclip.index.directory import IndexDir

    cat = IndexDir(idx).open_catalog(readonly=True)
    try:
        return {r[0]: r[1] for r in cat.conn.execute("SELECT abs_path, vector FROM videos WHERE status = 'indexed'")}
    finally:
        cat.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    return shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--frames", type=int, default=48, help="frames per clip at 8 fps (default: 48 = 6 s)")
    ap.add_argument("--size", type=int, default=128, help="frame side in pixels")
    ap.add_argument("--model", default="vidclip-synth")
    ap.add_argument("--fps", type=float, default=2.0, help="sampled frames per second (windows of 2 s every 1 s)")
    ap.add_argument("--commit-every", type=int, default=8)
    ap.add_argument("--batch-frames", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="local engine decode processes")
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--cluster", action="store_true", help="also run on a two-node `ray start` loopback cluster")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import ray
    import torch

    from vidclip.encode.options import RayOptions
    from vidclip.index import index_library
    from vidclip.models.clip.load import load_clip
    from vidclip.synthetic.datasets import SynthConfig, make_synthetic_dataset
    from vidclip.video.sample import SamplerConfig

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # throwaway clusters on this machine
    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    rows: list[dict] = []
    try:
        lib = Path(make_synthetic_dataset(work / "synth", SynthConfig(num_videos=args.videos, size=args.size,
                                                                      num_frames=args.frames), progress=False)
                   ["videos_dir"])
        clip = load_clip(args.model)
        sampler = SamplerConfig(name="windows", fps=args.fps, window=2.0, stride=1.0)
        kw = dict(commit_every=args.commit_every, batch_frames=args.batch_frames, progress=False)
        reference: dict = {}

        def run(mode: str, **extra) -> None:
            best = None
            for t in range(args.trials):
                idx = work / f"{mode.replace(' ', '_')}_{t}"
                start = time.perf_counter()
                report = index_library(lib, idx, clip, sampler, **kw, **extra)
                seconds = time.perf_counter() - start
                assert report.indexed == args.videos and not report.failed, report.to_dict()
                vectors = _vectors(idx)
                if not reference:
                    reference.update(vectors)
                same = vectors == reference
                if best is None or seconds < best["seconds"]:
                    best = {"mode": mode, "seconds": round(seconds, 2), "frames": report.frames,
                            "videos_per_s": round(args.videos / seconds, 2),
                            "frames_per_s": round(report.frames / seconds, 1), "nodes": len(report.nodes),
                            "vectors_identical_to_local": same, "load_1min": round(os.getloadavg()[0], 1)}
                shutil.rmtree(idx, ignore_errors=True)
            rows.append(best)
            print(json.dumps(best), file=sys.stderr, flush=True)

        run("local", workers=args.workers)
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - t0
        try:
            run("ray (local, 2 CPUs)", engine="ray", ray=RayOptions())
        finally:
            ray.shutdown()
        if args.cluster:
            env = dict(os.environ)
            address = f"127.0.0.1:{_free_port()}"
            try:
                for cmd in ([_ray_cli(), "start", "--head", "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
                             "--port", address.split(":")[1], "--include-dashboard", "false", "--disable-usage-stats"],
                            [_ray_cli(), "start", "--address", address, "--num-cpus", "1", "--disable-usage-stats"]):
                    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=180)
                ray.init(address=address, log_to_driver=False)
                try:
                    run("ray (2 nodes x 1 CPU, loopback)", engine="ray", ray=RayOptions())
                finally:
                    ray.shutdown()
            finally:
                subprocess.run([_ray_cli(), "stop"], env=env, capture_output=True, timeout=180)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    local = rows[0]["seconds"]
    for r in rows:
        r["ratio_vs_local"] = round(r["seconds"] / local, 2)
    machine = (f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}, torch {torch.__version__}, "
               f"ray {ray.__version__}")
    out = {"machine": machine, "args": vars(args), "ray_local_startup_s": round(startup, 2), "rows": rows}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"machine: {machine}; local Ray start-up {startup:.1f} s (not in the rows)")
        print("| mode | seconds | videos/s | frames/s | ratio vs local | nodes | vectors identical | load |")
        print("|---|---:|---:|---:|---:|---:|---|---:|")
        for r in rows:
            print(f"| {r['mode']} | {r['seconds']} | {r['videos_per_s']} | {r['frames_per_s']} | {r['ratio_vs_local']} "
                  f"| {r['nodes'] or '-'} | {r['vectors_identical_to_local']} | {r['load_1min']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
