"""Benchmark vidclip rerank: latency on stored frame embeddings, on-the-fly decoding, and quality.

1. Latency: T topics x C candidates x F frames (default 50 x 1000 x 12, D = 512) drawn from a bank of
   stored frames; ms per topic of ``vidclip.rerank.bank.rerank_topic`` (gather + one matrix-vector
   product + segment pooling + fusion) next to a naive per-candidate, per-frame Python loop on the same
   data in the same run (checked to give the same order).
2. On-the-fly: the example world's videos decoded and encoded into an empty cache (videos/s), then the
   same candidates again (cache hit: nothing decoded).
3. Quality: the synthetic example world (python -m vidclip.synthetic.rerank_example) at shot level with a
   deliberately weak first stage, reranked with the shipped vidclip-synth model; xinfAP and AP before
   and after for several alpha (the weight of the initial score, as in the paper; 0 = CLIP alone)
   and every normalisation (sampled qrels, two strata).

    nice -n 10 python tools/bench_rerank.py [--topics 50 --candidates 1000 --frames 12] [--videos 36]

4. ``--search`` (only this): two-stage search inside a library index, ``VideoIndex.search(q, 10)``
   next to ``search(q, 10, rerank=N)`` in the same run: a scene library of the synthetic world
   (``--search-videos`` videos of ``--scenes`` 3-second scenes, the demo's sampler: 3 s windows
   every 1.5 s at 4 fps) indexed with vidclip-synth. Latency in ms per query (text encoding
   included, as a user sees it; the rerank stage alone as the difference), and quality: a query
   is one scene's description (scenes whose description no other scene shares), the right video
   is the one holding it: R@1 / R@5 of videos, and "moment" = the right video first with its
   moment (the best frame when reranked, else the middle of the best window) inside the scene.

    nice -n 10 python tools/bench_rerank.py --search [--search-videos 200 --scenes 3 --depths 20,100]
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

from vidclip.rerank.bank import FrameBank, rerank_topic  # noqa: E402


def naive_topic(text, docids, init, frames_of, alpha, depth):
    """Reference loop: per candidate, per frame cosine; max pool; minmax fusion (alpha on the initial score)."""
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

    fused = alpha * mm(s0) + (1 - alpha) * mm(m)
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
    from vidclip.models.clip.load import load_clip
    from vidclip.rerank.frames import bank_from_videos
    from vidclip.rerank.inputs import read_mapping
    from vidclip.rerank.run import RerankConfig, encode_topics, load_inputs, rerank_all
    from vidclip.synthetic.rerank_example import make_example
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
        for alpha in (0.0, 0.2, 0.4, 0.6, 0.8):  # weight of the initial score; 0.0: CLIP alone
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


def bench_search(num_videos, scenes, seed, depths, repeats, workdir=None):
    from vidclip.cli.demo import DEMO_SAMPLER
    from vidclip.index import VideoIndex, index_library
    from vidclip.models.clip.load import load_clip
    from vidclip.synthetic.captions import scene_description
    from vidclip.synthetic.scenes import SCENE_SECONDS, write_scene_library
    from vidclip.video.sample import SamplerConfig

    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bench-search-"))
    videos = write_scene_library(tmp / "lib", num_videos, scenes, seed)
    clip = load_clip("vidclip-synth")
    t0 = time.perf_counter()
    report = index_library(tmp / "lib", tmp / "idx", clip, SamplerConfig(**DEMO_SAMPLER), workers=2, progress=False)
    index_s = time.perf_counter() - t0
    vi = VideoIndex.open(tmp / "idx", clip=clip)
    frames = sum(r["count"] for r in vi.catalog.videos(status="indexed"))
    count: dict[str, int] = {}
    for v in videos:
        for spec in v.specs:
            count[scene_description(spec)] = count.get(scene_description(spec), 0) + 1
    queries = [(scene_description(spec), v.name, i * SCENE_SECONDS, (i + 1) * SCENE_SECONDS)
               for v in videos for i, spec in enumerate(v.specs) if count[scene_description(spec)] == 1]

    def run(depth, alpha=0.4, segments=False):
        r1 = r5 = moment = 0
        for text, name, start, end in queries:
            hits = vi.search(text, 50 if segments else 10, rerank=depth, alpha=alpha, segments=segments)
            if segments:  # a video's rank = that of its best window
                first: dict = {}
                for h in hits:
                    first.setdefault(h.path, h)
                hits = list(first.values())
            names = [h.path for h in hits]
            r1 += names[:1] == [name]
            r5 += name in names[:5]
            if names[:1] == [name]:
                h = hits[0]
                t = h.frame_time if h.frame_time is not None else (h.start + h.end) / 2
                moment += start <= t < end
        n = len(queries)
        return {"depth": depth, "alpha": alpha, "segments": segments, "R@1": r1 / n, "R@5": r5 / n,
                "moment": moment / n}

    quality = [run(0)] + [run(d) for d in depths] + [run(max(depths), alpha=0.0)]  # alpha 0: frames only
    quality += [run(0, segments=True), run(max(depths), segments=True)]
    texts = [q[0] for q in queries[:50]]
    # the query embeddings once, for timing what follows the text encoder (faiss, catalog, frames)
    encoded = [vi.pooler.encode_query(t).cpu().numpy() for t in texts]
    encoded = [e / np.linalg.norm(e) for e in encoded]

    def one_pass(depth, segments, after_encoding):
        opts = {"rerank": depth, "pool": "max", "alpha": 0.4, "norm": "minmax"}
        t0 = time.perf_counter()
        for text, q in zip(texts, encoded):
            if not after_encoding:
                vi.search(text, 10, rerank=depth, segments=segments)
            elif segments:  # internal entry points: the search minus the text encoder
                vi._search_segments(q, 10, q, opts)
            else:
                vi._search_videos(q, 10, None, q, opts)
        return 1000 * (time.perf_counter() - t0) / len(texts)

    variants = [(0, False)] + [(d, False) for d in depths] + [(0, True), (max(depths), True)]
    timings = {(v, a): [] for v in variants for a in (False, True)}
    for v in variants:  # warm up: shards mapped, caches filled
        one_pass(*v, False)
    for _ in range(repeats):  # interleaved, so load changes on the shared machine hit every variant alike
        for v in variants:
            for after in (False, True):
                timings[(v, after)].append(one_pass(*v, after))
    lat = {"videos": {}, "segments": {}}
    for (depth, segments), after in timings:
        kind = "segments" if segments else "videos"
        lat[kind].setdefault(depth, {})["after_encoding" if after else "end_to_end"] = \
            float(np.median(timings[((depth, segments), after)]))
    vi.close()
    return {"videos": num_videos, "scenes": scenes, "frames": frames, "queries": len(queries),
            "index_seconds": index_s, "indexed": report.indexed, "latency_ms": lat, "quality": quality,
            "dir": str(tmp)}


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
    p.add_argument("--search", action="store_true", help="benchmark two-stage search in an index (only that)")
    p.add_argument("--search-videos", type=int, default=200, help="--search: videos of the scene library")
    p.add_argument("--scenes", type=int, default=3, help="--search: 3-second scenes per video")
    p.add_argument("--depths", default="20,100", help="--search: rerank depths N to measure, comma-separated")
    p.add_argument("--repeats", type=int, default=5, help="--search: timed passes over 50 queries (median kept)")
    p.add_argument("--workdir", default=None, help="--search: keep the library and index here (reused)")
    ns = p.parse_args()
    import os

    print(f"load average at start: {os.getloadavg()}")
    if ns.search:
        depths = [int(d) for d in ns.depths.split(",")]
        r = bench_search(ns.search_videos, ns.scenes, ns.seed, depths, ns.repeats, ns.workdir)
        print(f"index: {r['indexed']} videos indexed in {r['index_seconds']:.1f} s, {r['frames']} stored frames; "
              f"{r['queries']} queries")
        print("| search | ms / query | ratio | after the text encoder, ms | ratio |")
        print("|---|---:|---:|---:|---:|")
        for kind, rows in r["latency_ms"].items():
            seg = ", segments=True" if kind == "segments" else ""
            for d, ms in rows.items():
                call = f"search(q, 10{seg})" if d == 0 else f"search(q, 10{seg}, rerank={d})"
                e2e, after = ms["end_to_end"], ms["after_encoding"]
                print(f"| {call} | {e2e:.2f} | {e2e / rows[0]['end_to_end']:.2f} | {after:.2f} | "
                      f"{after / rows[0]['after_encoding']:.2f} |")
        print("| ranks | rerank | alpha | R@1 | R@5 | moment |")
        print("|---|---:|---:|---:|---:|---:|")
        for row in r["quality"]:
            print(f"| {'windows' if row['segments'] else 'videos'} | {row['depth']} | {row['alpha']:.1f} | "
                  f"{row['R@1']:.3f} | {row['R@5']:.3f} | {row['moment']:.3f} |")
        print(f"load average at end: {os.getloadavg()}")
        if ns.json:
            Path(ns.json).write_text(json.dumps({"search": r}, indent=2))
        return 0
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
