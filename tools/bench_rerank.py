"""Benchmark vidclip rerank: latency on stored frame embeddings, on-the-fly decoding, and quality.

1. Latency: T topics x C candidates x F frames (default 50 x 1000 x 12, D = 512) drawn from a bank of
   stored frames; ms per topic of ``vidclip.rerank.core.rerank_topic`` (gather + one matrix-vector
   product + segment pooling + fusion) next to a naive per-candidate, per-frame Python loop on the same
   data in the same run (checked to give the same order).
2. On-the-fly: the example world's videos decoded and encoded into an empty cache (videos/s), then the
   same candidates again (cache hit: nothing decoded).
3. Quality: the synthetic example world (python -m vidclip.rerank.example) at shot level with a
   deliberately weak first stage, reranked with the shipped vidclip-synth model; xinfAP and AP before
   and after for several alpha and every normalisation (sampled qrels, two strata).

    nice -n 10 python tools/bench_rerank.py [--topics 50 --candidates 1000 --frames 12] [--videos 36]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidclip.rerank.core import FrameBank, rerank_topic  # noqa: E402


def naive_topic(text, docids, init, frames_of, alpha, depth):
    """Reference loop: per candidate, per frame cosine; max pool; minmax fusion."""
    q = text / np.linalg.norm(text)
    head = docids[:depth]
    m = []
    for d in head:
        best = -np.inf
        for f in frames_of[d]:
            s = float(np.dot(q, f / np.linalg.norm(f)))
            best = max(best, s)
        m.append(best)
    m = np.array(m)
    s0 = np.asarray(init[:len(head)], dtype=np.float64)

    def mm(x):
        return (x - x.min()) / (x.max() - x.min()) if x.max() > x.min() else np.zeros_like(x)

    fused = alpha * mm(m) + (1 - alpha) * mm(s0)
    order = sorted(range(len(head)), key=lambda i: (-fused[i], i))
    return [head[i] for i in order] + list(docids[depth:])


def bench_latency(topics, candidates, frames, dim, library, seed=0):
    rng = np.random.default_rng(seed)
    docids = [f"v{i}" for i in range(library)]
    per_doc = [rng.standard_normal((frames, dim)).astype(np.float32) for _ in range(library)]
    bank = FrameBank.from_lists(docids, per_doc)
    frames_of = dict(zip(docids, per_doc))
    texts = rng.standard_normal((topics, dim)).astype(np.float32)
    runs = [[docids[j] for j in rng.choice(library, candidates, replace=False)] for _ in range(topics)]
    inits = [np.sort(rng.random(candidates))[::-1] for _ in range(topics)]
    rerank_topic(texts[0], runs[0], inits[0], bank, depth=candidates)  # warm up
    t0 = time.perf_counter()
    fast = [rerank_topic(texts[t], runs[t], inits[t], bank, alpha=0.4, depth=candidates).order for t in range(topics)]
    fast_s = time.perf_counter() - t0
    naive_topics = min(topics, 5)
    t0 = time.perf_counter()
    slow = [naive_topic(texts[t], runs[t], inits[t], frames_of, 0.4, candidates) for t in range(naive_topics)]
    slow_s = time.perf_counter() - t0
    agree = all(fast[t] == slow[t] for t in range(naive_topics))
    return {"topics": topics, "candidates": candidates, "frames": frames, "dim": dim, "library_videos": library,
            "ms_per_topic": 1000 * fast_s / topics, "naive_ms_per_topic": 1000 * slow_s / naive_topics,
            "naive_topics_timed": naive_topics, "speedup": (slow_s / naive_topics) / (fast_s / topics),
            "same_order_as_naive": agree}


def bench_world(num_videos, num_topics, seed, fps):
    from vidclip.eval.trec import evaluate_run, read_qrels
    from vidclip.models.clip import load_clip
    from vidclip.rerank.example import make_example
    from vidclip.rerank.frames import bank_from_videos
    from vidclip.rerank.inputs import read_mapping
    from vidclip.rerank.run import RerankConfig, encode_topics, load_inputs, rerank_all
    from vidclip.video.sample import SamplerConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench-rerank-"))
    make_example(tmp, num_videos=num_videos, num_topics=num_topics, seed=seed)
    clip = load_clip("vidclip-synth")
    sampler = SamplerConfig("fps", fps=fps)
    orders, scores, topics = load_inputs(tmp / "run.txt", tmp / "topics.txt")
    shots = read_mapping(tmp / "shots.csv")
    heads = list(dict.fromkeys(d for t in orders for d in orders[t]))
    bank, cold = bank_from_videos(heads, shots, tmp, clip, sampler, cache_dir=tmp / "cache", workers=2)
    _, warm = bank_from_videos(heads, shots, tmp, clip, sampler, cache_dir=tmp / "cache", workers=2)
    decode = {"videos": cold.videos, "cold_seconds": cold.seconds, "videos_per_s": cold.videos / cold.seconds,
              "warm_seconds": warm.seconds, "warm_decoded": warm.decoded, "warm_cached": warm.cached}
    emb = encode_topics(clip, [topics[t] for t in orders])
    text_emb = dict(zip(orders, emb))
    qrels = read_qrels(tmp / "qrels.txt")
    before = evaluate_run({t: dict(zip(orders[t], scores[t].tolist())) for t in orders}, qrels)["mean"]
    rows = []
    for norm in ("minmax", "zscore", "rank", "none"):
        for alpha in (0.2, 0.4, 0.6, 0.8, 1.0):
            for pool in ("max", "mean"):
                final, _, _ = rerank_all(orders, scores, text_emb, bank, RerankConfig(alpha=alpha, pool=pool,
                                                                                      norm=norm))
                ev = evaluate_run({t: {d: float(len(o) - i) for i, d in enumerate(o)} for t, o in final.items()},
                                  qrels)["mean"]
                rows.append({"norm": norm, "alpha": alpha, "pool": pool, "xinfAP": ev["xinfAP"], "AP": ev["AP"],
                             "infNDCG": ev["infNDCG"]})
    judged = sum(1 for t in qrels.judgements.values() for _, r in t.values() if r >= 0)
    pooled = sum(len(t) for t in qrels.judgements.values())
    return {"videos": num_videos, "shots": len(shots), "topics": len(orders), "judged": judged, "pooled": pooled,
            "before": before, "rows": rows, "decode": decode, "dir": str(tmp)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topics", type=int, default=50)
    p.add_argument("--candidates", type=int, default=1000)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--library", type=int, default=5000, help="stored videos the candidates are drawn from")
    p.add_argument("--videos", type=int, default=36, help="videos of the quality world (3 shots each)")
    p.add_argument("--world-topics", type=int, default=20)
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    ns = p.parse_args()
    import os

    print(f"load average at start: {os.getloadavg()}")
    lat = bench_latency(ns.topics, ns.candidates, ns.frames, ns.dim, ns.library, ns.seed)
    print(f"latency: {lat['topics']} topics x {lat['candidates']} candidates x {lat['frames']} frames, D={lat['dim']}: "
          f"{lat['ms_per_topic']:.2f} ms/topic vectorised, {lat['naive_ms_per_topic']:.1f} ms/topic naive loop "
          f"({lat['naive_topics_timed']} topics), {lat['speedup']:.0f}x; same order: {lat['same_order_as_naive']}")
    world = bench_world(ns.videos, ns.world_topics, ns.seed, ns.fps)
    d = world["decode"]
    print(f"on the fly: {d['videos']} videos decoded+encoded in {d['cold_seconds']:.1f} s ({d['videos_per_s']:.2f} "
          f"videos/s); second run {d['warm_seconds']:.2f} s, decoded {d['warm_decoded']}, cached {d['warm_cached']}")
    b = world["before"]
    print(f"quality: {world['shots']} shots, {world['topics']} topics, {world['judged']}/{world['pooled']} pooled judged; "
          f"weak first stage xinfAP {b['xinfAP']:.4f} AP {b['AP']:.4f}")
    print("| norm | alpha | pool | xinfAP | AP | infNDCG |")
    print("|---|---:|---|---:|---:|---:|")
    for r in world["rows"]:
        print(f"| {r['norm']} | {r['alpha']:.1f} | {r['pool']} | {r['xinfAP']:.4f} | {r['AP']:.4f} | {r['infNDCG']:.4f} |")
    print(f"load average at end: {os.getloadavg()}")
    if ns.json:
        Path(ns.json).write_text(json.dumps({"latency": lat, "world": world}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
