#!/usr/bin/env python
"""End-to-end library indexing throughput next to the encoder-only ceiling, in one run.

1. ``index``: vidclip.index.build.index_library over a library (decode workers -> batched
   encoding -> shards + catalog + faiss), timed from start to the saved faiss files.
2. ``decode only``: the same videos decoded, sampled and shrunk to the model's input size in
   this process (what the workers do), timed; the frames are kept in memory.
3. ``encoder only``: exactly those frames encoded in batches of ``--batch-frames`` with no
   decoding: the ceiling indexing could reach if decoding were free.

Every stage runs ``--trials`` times and the fastest is reported: the machine is shared, and
the minimum is the least disturbed measurement.

Default library: the 8 real clips of ../shared/videos plus the 4 MSR-VTT videos of
../shared/msrvtt/mini/videos, each linked ``--repeat`` times under distinct names (so the index
sees distinct files; the page cache makes repeats cheaper to read, not to decode).

    python tools/bench_indexing.py                         # tiny-vit, windows sampler at 1 fps
    python tools/bench_indexing.py --repeat 4 --workers 2 --fps 2
    python tools/bench_indexing.py --videos /path/to/folder --model ViT-B-32 --pretrained none

``--runtimes``: instead, ``vidclip index`` as the default (torch fp32) against ``--runtime onnx``
(fp32) and ``--runtime onnx --precision int8`` in the same run (trials interleaved, fastest
kept; the image towers are exported into a temporary cache before timing, the text-tower export
is left out of every run), then the frames those runs encode, decoded once more, embedded by
each encoder: the min / mean cosine of every frame's embedding to torch fp32's (the accuracy
gate of issue 18).

    python tools/bench_indexing.py --runtimes --model ViT-B-32 --pretrained none --repeat 1 --workers 2
    python tools/bench_indexing.py --runtimes --model vidclip-synth --pretrained "" --repeat 1 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def collect(sources: list[Path]) -> list[Path]:
    from vidclip.video.files import VIDEO_EXTENSIONS

    out = []
    for src in sources:
        if src.is_dir():
            out += sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        elif src.is_file():
            out.append(src)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=Path, action="append", default=None,
                    help="video files / folders (default: ../shared/videos and ../shared/msrvtt/mini/videos)")
    ap.add_argument("--repeat", type=int, default=4, help="link every video this many times (default: %(default)s)")
    ap.add_argument("--model", default="tiny-vit")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--fps", type=float, default=1.0, help="sampling rate (windows sampler) (default: %(default)s)")
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--stride", type=float, default=5.0)
    ap.add_argument("--workers", type=int, action="append", default=None,
                    help="decode worker processes; repeat to compare (default: 0 and 2)")
    ap.add_argument("--batch-frames", type=int, default=256)
    ap.add_argument("--trials", type=int, default=2,
                    help="runs of every stage; the fastest is reported (the machine is shared) (default: %(default)s)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--runtimes", action="store_true", help="torch fp32 vs ONNX Runtime fp32 / int8 (see above)")
    ns = ap.parse_args(argv)
    if ns.runtimes:
        return runtimes(ns)

    import torch

    from vidclip.encode.worker import decode_job
    from vidclip.index import index_library
    from vidclip.models.clip.load import load_clip
    from vidclip.video.sample import SamplerConfig

    sources = ns.videos or [SHARED / "videos", SHARED / "msrvtt" / "mini" / "videos"]
    videos = collect(sources)
    if not videos:
        print(f"no videos found in {[str(s) for s in sources]}", file=sys.stderr)
        return 2
    clip = load_clip(ns.model, ns.pretrained)  # 'none' = random weights
    sampler = SamplerConfig(name="windows", fps=ns.fps, window=ns.window, stride=ns.stride)
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
                   f"({torch.get_num_threads()} threads)",
        "model": clip.identity.to_dict(), "sampler": sampler.to_dict(), "videos": len(videos) * ns.repeat,
        "distinct_videos": len(videos), "loadavg_start": os.getloadavg(),
    }
    ns.workers = ns.workers or [0, 2]
    with tempfile.TemporaryDirectory(prefix="vidclip-bench-") as tmp:
        lib = Path(tmp) / "lib"
        lib.mkdir()
        for r in range(ns.repeat):
            for i, v in enumerate(videos):
                os.symlink(v.resolve(), lib / f"r{r}_{i:03d}_{v.name}")
        results["index"] = []
        for w in ns.workers:
            index_s = float("inf")
            for trial in range(ns.trials):
                t = time.perf_counter()
                report = index_library(lib, Path(tmp) / f"index-w{w}-{trial}", clip, sampler, workers=w,
                                       batch_frames=ns.batch_frames, progress=False)
                index_s = min(index_s, time.perf_counter() - t)
            if report.failed:
                print(f"failed: {report.failed}", file=sys.stderr)
            results["index"].append({"workers": w, "seconds": index_s, "videos": report.indexed,
                                     "frames": report.frames, "videos_per_s": report.indexed / index_s,
                                     "frames_per_s": report.frames / index_s})
            print(json.dumps(results["index"][-1]), flush=True)

        # decode only (this process), keeping the frames: the encoder's input, exactly
        decode_s = float("inf")
        for _ in range(ns.trials):
            frames = []
            t = time.perf_counter()
            for p in sorted(lib.iterdir()):
                out = decode_job(p.name, str(p), sampler.to_dict(), "auto", clip.image_size)
                if isinstance(out, tuple):
                    frames.append(torch.as_tensor(out[2]))
            decode_s = min(decode_s, time.perf_counter() - t)
        allf = torch.cat(frames)
        results["decode_only_1proc"] = {"seconds": decode_s, "frames": int(allf.shape[0]),
                                        "frames_per_s": allf.shape[0] / decode_s}
        print(json.dumps(results["decode_only_1proc"]), flush=True)

        # encoder only: same frames, same batch size, no decoding
        clip.encode_frames(allf[: min(len(allf), ns.batch_frames)])  # warm-up
        enc_s = float("inf")
        for _ in range(ns.trials):
            t = time.perf_counter()
            for lo in range(0, allf.shape[0], ns.batch_frames):
                clip.encode_frames(allf[lo:lo + ns.batch_frames])
            enc_s = min(enc_s, time.perf_counter() - t)
        results["encoder_only"] = {"seconds": enc_s, "frames": int(allf.shape[0]), "frames_per_s": allf.shape[0] / enc_s,
                                   "videos_per_s": results["videos"] / enc_s}
        print(json.dumps(results["encoder_only"]), flush=True)
    results["loadavg_end"] = os.getloadavg()
    dec, enc = results["decode_only_1proc"], results["encoder_only"]
    print()
    print(f"{results['videos']} videos ({len(videos)} distinct x {ns.repeat}), {ns.model}, windows sampler "
          f"{ns.fps:g} fps / {ns.window:g} s / {ns.stride:g} s; {results['machine']}")
    print("| stage | seconds | videos/s | frames/s |")
    print("|---|---:|---:|---:|")
    for ix in results["index"]:
        how = "in-process decoding" if ix["workers"] == 0 else f"{ix['workers']} decode worker processes"
        print(f"| index, end to end ({how}) | {ix['seconds']:.1f} | {ix['videos_per_s']:.2f} | {ix['frames_per_s']:.1f} |")
    print(f"| decode + resize only (1 process) | {dec['seconds']:.1f} | {results['videos'] / dec['seconds']:.2f} | {dec['frames_per_s']:.1f} |")
    print(f"| encoder only (same frames, batch {ns.batch_frames}) | {enc['seconds']:.2f} | {enc['videos_per_s']:.1f} | {enc['frames_per_s']:.0f} |")
    print(f"\nload average start {results['loadavg_start']}, end {results['loadavg_end']}")
    if ns.json:
        ns.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def runtimes(ns) -> int:
    import numpy as np
    import torch

    from vidclip.encode.worker import decode_job
    from vidclip.index import index_library
    from vidclip.models.clip.load import load_clip
    from vidclip.models.clip.onnx_encoder import onnx_image_clip
    from vidclip.video.sample import SamplerConfig

    load0 = os.getloadavg()
    sources = ns.videos or [SHARED / "videos"]
    videos = collect(sources)
    if not videos:
        print(f"no videos found in {[str(s) for s in sources]}", file=sys.stderr)
        return 2
    clip = load_clip(ns.model, ns.pretrained or None, device="cpu", precision="fp32")
    sampler = SamplerConfig(name="windows", fps=ns.fps, window=ns.window, stride=ns.stride)
    workers = (ns.workers or [2])[0]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="vidclip-bench-rt-") as tmp:
        encoders = {"torch fp32 (default)": clip, "--runtime onnx (fp32)": onnx_image_clip(clip, "fp32", tmp),
                    "--runtime onnx --precision int8": onnx_image_clip(clip, "int8", tmp)}
        lib = Path(tmp) / "lib"
        lib.mkdir()
        for r in range(ns.repeat):
            for i, v in enumerate(videos):
                os.symlink(v.resolve(), lib / f"r{r}_{i:03d}_{v.name}")
        best = dict.fromkeys(encoders, float("inf"))
        for trial in range(ns.trials):
            for name, enc in encoders.items():
                t = time.perf_counter()
                report = index_library(lib, Path(tmp) / f"idx-{len(rows)}-{trial}-{hash(name) & 0xffff}", enc, sampler,
                                       workers=workers, batch_frames=ns.batch_frames, progress=False, onnx_text=False)
                best[name] = min(best[name], time.perf_counter() - t)
                rows[name] = report
                print(f"{name}: {time.perf_counter() - t:.1f} s, {report.frames} frames", file=sys.stderr, flush=True)
        frames = []
        for p in sorted(lib.iterdir()):
            out = decode_job(p.name, str(p), sampler.to_dict(), "auto", clip.image_size)
            if isinstance(out, tuple):
                frames.append(torch.as_tensor(out[2]))
        allf = torch.cat(frames)
        emb = {k: e.encode_frames(allf, batch_size=ns.batch_frames).numpy() for k, e in encoders.items()}
    unit = {k: e / np.linalg.norm(e, axis=1, keepdims=True) for k, e in emb.items()}
    ref = unit["torch fp32 (default)"]
    base = rows["torch fp32 (default)"].frames / best["torch fp32 (default)"]
    print(f"\n{len(videos) * ns.repeat} videos ({len(videos)} distinct x {ns.repeat}), {ns.model} "
          f"(pretrained {ns.pretrained or 'default'}), windows sampler {ns.fps:g} fps / {ns.window:g} s / {ns.stride:g} s, "
          f"{workers} decode workers, batch {ns.batch_frames}, fastest of {ns.trials}; {platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}; load average start {load0}, end {os.getloadavg()}")
    print("| vidclip index | seconds | frames | frames/s | vs default | min cosine to torch fp32 | mean cosine |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k in encoders:
        fps = rows[k].frames / best[k]
        cos = (unit[k] * ref).sum(1)
        print(f"| {k} | {best[k]:.1f} | {rows[k].frames} | {fps:.1f} | {fps / base:.2f}x | {cos.min():.4f} | "
              f"{cos.mean():.5f} |")
    print(f"({allf.shape[0]} frames compared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
