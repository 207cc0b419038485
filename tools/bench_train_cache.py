#!/usr/bin/env python
"""Benchmark: a training epoch on cached frame features vs one that re-encodes frames.

Same data (a small synthetic set), same model (a seq_transformer on the tiny-vit CLIP), same
initial weights, same batches; the only difference is where each step's frame embeddings come
from:

* **cached**: ``FeatureStore.batch`` (memory-mapped fp16 features written once by
  ``encode_videos``), what ``vidclip train`` does;
* **re-encode**: decode the sampled frames of every video in the batch (DataLoader workers,
  like a CLIP4Clip-style loader) and run the frozen backbone on them, every step.

Both epochs see the same frames (the uniform sampler's evaluation positions), so their losses
agree up to the fp16 rounding of the cache; the script reports the largest difference as a
sanity check. The one-off cost of building the cache is reported too.

    python tools/bench_train_cache.py                    # defaults: 250 videos, batch 16, 8 frames
    python tools/bench_train_cache.py --videos 200 --json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=250, help="synthetic videos to generate (default: %(default)s)")
    ap.add_argument("--size", type=int, default=64, help="synthetic frame side in pixels (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=16, help="videos per step (default: %(default)s)")
    ap.add_argument("--frames", type=int, default=8, help="frames per video (default: %(default)s)")
    ap.add_argument("--model", default="tiny-vit", help="CLIP config (default: %(default)s; random weights, timing only)")
    ap.add_argument("--workers", type=int, default=2, help="decoding processes, both for the one-off encode and "
                                                            "for the re-encoding epoch (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads in the main process; 0 = torch's default (default: %(default)s)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    ap.add_argument("--out", default=".bench/train_cache", help="work folder (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="epochs of each kind, interleaved; the best (and median) is reported (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ns = ap.parse_args(argv)
    if ns.threads > 0:
        torch.set_num_threads(ns.threads)

    from vidclip.data.datasets import load_dataset
    from vidclip.encode.pipeline import encode_videos
    from vidclip.eval.evaluate import FeatureSource, PixelSource
    from vidclip.features.store import FeatureStore
    from vidclip.models.checkpoint import LogitScale, cached_text_embeddings
    from vidclip.models.clip.load import load_clip
    from vidclip.models.temporal.registry import create_temporal
    from vidclip.synthetic.datasets import SynthConfig, make_synthetic_dataset
    from vidclip.train.model import TrainingModel
    from vidclip.train.trainer import video_batches
    from vidclip.video.sample import SamplerConfig

    out = Path(ns.out)
    data = out / f"synth-{ns.videos}-{ns.size}"
    if not (data / "MSRVTT_data.json").is_file():
        make_synthetic_dataset(data, SynthConfig(num_videos=ns.videos, seed=0, size=ns.size), progress=False)
    ds = load_dataset("msrvtt", data, "train")
    keys = ds.video_ids
    paths = {v.video_id: str(v.path) for v in ds.videos}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = load_clip(ns.model, "none", device=ns.device)

    features = out / f"features-{ns.model}-{ns.size}-{ns.frames}-{ns.videos}"
    t0 = time.perf_counter()
    report = encode_videos(list(paths.items()), features, clip, SamplerConfig("uniform", num_frames=ns.frames),
                           workers=ns.workers, progress=False)
    encode_s = time.perf_counter() - t0
    if report.failed:
        print(f"failed to encode: {[f.to_dict() for f in report.failed]}", file=sys.stderr)
        return 1
    store = FeatureStore(features)

    first_caption = [int(ds.caption_indices(i)[0]) for i in range(len(ds))]
    text = cached_text_embeddings(clip, [ds.captions[j] for j in first_caption], None)
    steps = len(keys) // ns.batch
    batches = [keys[s * ns.batch:(s + 1) * ns.batch] for s in range(steps)]
    text_batches = [text[s * ns.batch:(s + 1) * ns.batch] for s in range(steps)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seq_transformer: random init notice
        torch.manual_seed(0)
        initial = TrainingModel(create_temporal("seq_transformer", clip.embed_dim, max_frames=ns.frames, clip=clip,
                                                 num_layers=2), LogitScale()).to(clip.device)

    def run_epoch(batch_stream) -> tuple[float, list[float]]:
        model = copy.deepcopy(initial).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        losses = []
        if clip.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for (video, mask), t in zip(batch_stream, text_batches):
            loss = model(t.to(clip.device), video.to(clip.device), mask.to(clip.device))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        return time.perf_counter() - start, losses

    pixels = PixelSource(paths, ns.frames, clip.image_size)

    def reencoded():
        for frames, mask in video_batches(pixels, batches, ns.workers):
            B, T = mask.shape
            emb = torch.zeros(B, T, clip.embed_dim, device=clip.device)
            emb[mask.to(clip.device)] = clip.encode_frames(frames[mask])  # frozen backbone, real frames only
            yield emb, mask

    cached_times, reencode_times = [], []
    for _ in range(ns.repeats):  # interleaved, so load changes hit both kinds alike
        t, cached_losses = run_epoch(FeatureSource(store, ns.frames).batch(b) for b in batches)
        cached_times.append(t)
        t, reencode_losses = run_epoch(reencoded())
        reencode_times.append(t)
    cached_s, reencode_s = min(cached_times), min(reencode_times)
    result = {
        "command": "python tools/bench_train_cache.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"device {clip.device}, torch threads {torch.get_num_threads()}",
        "videos": len(keys), "steps": steps, "batch": ns.batch, "frames": ns.frames, "model": ns.model,
        "image_size": clip.image_size, "synth_size": ns.size, "workers": ns.workers,
        "encode_once_s": round(encode_s, 3), "encoded_videos": report.done, "reused_videos": report.skipped,
        "epoch_cached_s": round(cached_s, 4), "epoch_reencode_s": round(reencode_s, 4),
        "speedup": round(reencode_s / cached_s, 1),
        "epoch_cached_all_s": [round(t, 4) for t in cached_times],
        "epoch_reencode_all_s": [round(t, 4) for t in reencode_times],
        "speedup_median": round(float(np.median(reencode_times)) / float(np.median(cached_times)), 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "max_loss_diff": max(abs(a - b) for a, b in zip(cached_losses, reencode_losses)),
    }
    if ns.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['videos']} videos, {steps} steps of {ns.batch} x {ns.frames} frames, {ns.model} "
              f"({clip.image_size}px) on {clip.device}")
        print(f"  one-off encode into the cache: {encode_s:.2f} s ({report.done} videos encoded, "
              f"{report.skipped} already cached)")
        print(f"  epoch on cached features:      {cached_s:.3f} s (best of {ns.repeats})")
        print(f"  epoch re-encoding frames:      {reencode_s:.3f} s (best of {ns.repeats})")
        print(f"  speedup: {result['speedup']}x best-of, {result['speedup_median']}x median "
              f"(max |loss difference| {result['max_loss_diff']:.2e}: fp16 cache; load {result['load_average_1min']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
