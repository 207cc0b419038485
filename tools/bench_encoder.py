"""Benchmark FrozenCLIP.encode_frames against calling the open_clip model directly.

For each model (random weights: speed does not depend on the weight values) and batch size:

* ``ours u8``   : ``clip.encode_frames(uint8 [N,H,W,3])`` -- preprocessing + encoding, the real use;
* ``ours px``   : ``clip.encode_frames(float [N,3,S,S])`` -- wrapper on already-preprocessed pixels;
* ``baseline``  : ``model.encode_image(pixels[i:i+bs])`` under ``torch.no_grad`` -- open_clip alone;
* ``overhead``  : ours-px time / baseline time (1.00 = no wrapper cost), wall and CPU time;
* ``preproc``   : share of the ``ours u8`` CPU time spent preprocessing (resize/crop/normalise).

Usage:  python tools/bench_encoder.py [--device cpu] [--quick]
Prints a Markdown table (paste into BENCHMARKS.md "## Encoder"). Runtime < 2 min on 2 CPU cores.

``--runtimes``: instead, the light runtime's rows (issue 18) in one run: the ViT-B-32 image tower
(random weights), batch ``--batch`` (16), on the same preprocessed pixels: torch fp32
(``encode_frames``), ONNX Runtime fp32 and ONNX Runtime dynamic int8 (exported into a temporary
cache first), best of ``--repeats`` interleaved; frames/s, ratio to torch fp32, min cosine of each
frame's embedding to torch fp32, and frames/s as a fraction of the machine's fp32 ceiling:
vCPUs x clock (/proc/cpuinfo "cpu MHz": in a VM the nominal clock, not the boost one) x fp32
FLOP per cycle (2 FMA units x 16 lanes x 2 = 64 with AVX-512, x 8 lanes = 32 with AVX2) / FLOP per
frame (2 x the multiply-adds of the tower, counted from its shapes).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _best_times(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Best-of-``repeats`` wall time and process CPU time (s) of each callable, after a warm-up.

    The variants are interleaved inside every repeat so background load (the machine is shared)
    hits them alike; best-of filters out the repeats that were slowed down. CPU time (all threads
    of this process) is far less sensitive to other processes than wall time, so the overhead
    ratio is also given in CPU time.
    """
    for fn in fns.values():
        fn()
    wall = dict.fromkeys(fns, float("inf"))
    cpu = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for k, fn in fns.items():
            _sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            _sync()
            wall[k] = min(wall[k], time.perf_counter() - t0)
            cpu[k] = min(cpu[k], time.process_time() - c0)
    return wall, cpu


def bench(model: str, n: int, batch_sizes: list[int], device: str, repeats: int, hw=(240, 320)) -> list[dict]:
    from vidclip.models.clip.load import load_clip

    clip = load_clip(model, "none", device=device, precision="fp32")  # random weights: timing only
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (n, hw[0], hw[1], 3), dtype=torch.uint8, generator=g)
    pixels = clip.preprocess(frames).to(clip.device)
    net = clip.model
    rows = []
    for bs in batch_sizes:
        def baseline(bs=bs):
            with torch.no_grad():
                for i in range(0, n, bs):
                    net.encode_image(pixels[i:i + bs])

        t, c = _best_times({
            "u8": lambda bs=bs: clip.encode_frames(frames, batch_size=bs),
            "px": lambda bs=bs: clip.encode_frames(pixels, batch_size=bs),
            "base": baseline,
        }, repeats)
        rows.append(dict(model=model, n=n, bs=bs, u8=n / t["u8"], px=n / t["px"], base=n / t["base"],
                         overhead=t["px"] / t["base"], overhead_cpu=c["px"] / c["base"],
                         preproc=max(0.0, 1 - c["px"] / c["u8"])))
    return rows


def vit_flop_per_frame(clip) -> float:
    """2 x multiply-adds of an open_clip ViT image tower at its input size (patch embedding,
    attention and MLP matmuls, attention scores; norms and softmax left out)."""
    v = clip.model.visual
    width = v.conv1.out_channels
    patch = v.conv1.kernel_size[0]
    grid = clip.image_size // patch
    tokens = grid * grid + 1
    layers = len(v.transformer.resblocks)
    mlp = v.transformer.resblocks[0].mlp.c_fc.out_features
    macs = grid * grid * 3 * patch * patch * width  # patch embedding
    macs += layers * (tokens * (4 * width * width + 2 * width * mlp) + 2 * tokens * tokens * width)
    macs += width * clip.embed_dim  # projection
    return 2.0 * macs


def fp32_ceiling_gflops() -> tuple[float, str]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mhz = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith("cpu mhz"):
                mhz = float(line.split(":")[1])
                break
    except OSError:
        pass
    ghz = (mhz or 0.0) / 1000
    try:
        avx512 = " avx512f" in open("/proc/cpuinfo").read()
    except OSError:
        avx512 = False
    per_cycle = 64 if avx512 else 32  # 2 FMA units x 16 (AVX-512) or 8 (AVX2) fp32 lanes x 2 FLOP
    isa = "AVX-512 FMA" if avx512 else "AVX2 FMA"
    return cpus * ghz * per_cycle, f"{cpus} vCPUs x {ghz:.2f} GHz x {per_cycle} FLOP/cycle ({isa})"


def bench_runtimes(batch: int, n: int, repeats: int) -> int:
    import tempfile

    import numpy as np

    from vidclip.models.clip.load import load_clip
    from vidclip.models.clip.onnx_encoder import onnx_image_clip

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    clip = load_clip("ViT-B-32", "none", device="cpu", precision="fp32")
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (n, 240, 320, 3), dtype=torch.uint8, generator=g)
    pixels = clip.preprocess(frames)
    with tempfile.TemporaryDirectory(prefix="vidclip-bench-onnx-") as cache:
        enc = {"torch fp32": clip, "ONNX Runtime fp32": onnx_image_clip(clip, "fp32", cache),
               "ONNX Runtime int8": onnx_image_clip(clip, "int8", cache)}
        emb = {k: c.encode_frames(pixels, batch_size=batch).numpy() for k, c in enc.items()}
        wall, _ = _best_times({k: (lambda c=c: c.encode_frames(pixels, batch_size=batch)) for k, c in enc.items()},
                              repeats)
    unit = {k: e / np.linalg.norm(e, axis=1, keepdims=True) for k, e in emb.items()}
    ceiling, how = fp32_ceiling_gflops()
    flop = vit_flop_per_frame(clip)
    max_fps = ceiling * 1e9 / flop
    print(f"ViT-B-32 image tower (random weights), batch {batch}, {n} preprocessed frames, best of {repeats} "
          f"interleaved; torch {torch.__version__} ({torch.get_num_threads()} threads); 1-min load {load0:.2f} at the "
          f"start, {os.getloadavg()[0]:.2f} at the end; {time.perf_counter() - t0:.0f} s")
    print(f"fp32 ceiling: {how} = {ceiling:.0f} GFLOP/s; {flop / 1e9:.2f} GFLOP per frame -> {max_fps:.1f} frames/s")
    print()
    print("| runtime | frames/s | vs torch fp32 | of fp32 ceiling | min cosine to torch fp32 |")
    print("|---|---:|---:|---:|---:|")
    base = n / wall["torch fp32"]
    for k in enc:
        fps = n / wall[k]
        cos = float((unit[k] * unit["torch fp32"]).sum(1).min())
        print(f"| {k} | {fps:.1f} | {fps / base:.2f}x | {fps / max_fps:.0%} | {cos:.4f} |")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="fewer frames / repeats (smoke run)")
    ap.add_argument("--runtimes", action="store_true", help="torch fp32 vs ONNX Runtime fp32 / int8 (ViT-B-32)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if args.runtimes:
        return bench_runtimes(args.batch, args.frames, args.repeats)
    quick = args.quick
    # (model, frames, batch sizes, repeats); ViT-B-32 runs ~4 frames/s on 2 CPU cores
    plan = [
        ("tiny-vit", 64 if quick else 512, [16, 64, 256], 1 if quick else 10),
        ("ViT-B-32", 4 if quick else 8, [1, 8], 1 if quick else 2),
    ]
    t0 = time.perf_counter()
    rows = []
    for model, n, bss, repeats in plan:
        rows += bench(model, n, bss, args.device, repeats)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device: {args.device} ({dev}); frames 240x320 uint8; fp32; random weights; best of "
          f"{', '.join(f'{m}: {r}' for m, _, _, r in plan)} repeats; 1-min load avg at end {load:.2f}")
    print()
    print("| model | frames | batch | ours u8 (fr/s) | ours px (fr/s) | baseline (fr/s) "
          "| overhead wall | overhead CPU | preproc share (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['n']} | {r['bs']} | {r['u8']:.1f} | {r['px']:.1f} | {r['base']:.1f} | "
              f"{r['overhead']:.2f} | {r['overhead_cpu']:.2f} | {100 * r['preproc']:.0f}% |")
    print()
    print(f"total bench time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
