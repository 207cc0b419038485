#!/usr/bin/env python
"""Benchmark vidclip.index.vectors designs on synthetic clustered embeddings.

Data: a mixture of gaussians on the unit sphere, shaped like CLIP embeddings —
``--clusters`` centres (default 2000), each ``normalize(0.6 * mu + u_j)`` with u_j uniform on
the sphere and mu one shared direction (CLIP embeddings live in a narrow cone: centres have
mean pairwise cosine about 0.26 here); cluster sizes follow a power law (weight ~ rank^-0.7);
a point is ``normalize(c_j + s_j * g / sqrt(D))`` with g ~ N(0, I) and a per-cluster spread s_j
uniform in [0.7, 1.4] (cosine to its centre 0.58..0.82). Queries are fresh draws from the same
mixture (not in the database).

For each design: build time (train + add), RSS delta and serialized index size, p50/p99
latency of single-query searches, throughput of 64-query batches and recall@10 against exact
search; next to a plain numpy baseline (matmul + argpartition) measured in the same run.

    python tools/bench_index.py                      # 1M x 512, default designs (~8 min on 2 cores)
    python tools/bench_index.py --n 100000 --quick   # a quick check
    python tools/bench_index.py --design HNSW32 --ef 64 --ef 128 --design "IVF1024,Flat" --nprobe 32
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402

from vidclip.index.vectors import VectorIndex, exact_search, l2_normalize  # noqa: E402

DEFAULT_DESIGNS = [
    ("Flat", []),
    ("IVF1024,Flat", [8, 16, 32]),
    ("IVF1024,SQ8", [16, 32]),
    ("IVF1024,PQ64np", [32]),  # np: skip polysemous training (minutes, unused here)
    ("HNSW32", [64, 256]),
]


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def make_data(n: int, dim: int, clusters: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = l2_normalize(rng.standard_normal(dim))[0]
    centres = l2_normalize(0.6 * mu + l2_normalize(rng.standard_normal((clusters, dim))))
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.7
    weights /= weights.sum()
    spread = rng.uniform(0.7, 1.4, clusters).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        for lo in range(0, m, 131072):
            hi = min(m, lo + 131072)
            lab = rng.choice(clusters, hi - lo, p=weights)
            g = rng.standard_normal((hi - lo, dim), dtype=np.float32)
            out[lo:hi] = l2_normalize(centres[lab] + spread[lab, None] * g / np.sqrt(dim))
        return out

    return draw(n), draw(n_queries)


def latency(search, queries: np.ndarray, n_single: int, n_batches: int, batch: int = 64) -> dict:
    search(queries[:1])  # warm up
    times = []
    for i in range(n_single):
        t = time.perf_counter()
        search(queries[i % len(queries)][None, :])
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    for b in range(n_batches):
        lo = (b * batch) % max(1, len(queries) - batch)
        search(queries[lo:lo + batch])
    batch_s = time.perf_counter() - t
    return {
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "batch64_qps": n_batches * batch / batch_s,
    }


def recall10(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(t)) / truth.shape[1] for g, t in zip(got.tolist(), truth.tolist())]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="database vectors (default: %(default)s)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=500, help="queries for recall (default: %(default)s)")
    ap.add_argument("--design", action="append", default=None,
                    help="faiss design to benchmark (repeatable); defaults: " + "; ".join(d for d, _ in DEFAULT_DESIGNS))
    ap.add_argument("--nprobe", type=int, action="append", default=None, help="IVF nprobe values (for --design)")
    ap.add_argument("--ef", type=int, action="append", default=None, help="HNSW efSearch values (for --design)")
    ap.add_argument("--single", type=int, default=200, help="single queries timed per setting")
    ap.add_argument("--batches", type=int, default=20, help="64-query batches timed per setting")
    ap.add_argument("--quick", action="store_true", help="fewer timed queries")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ns = ap.parse_args(argv)
    if ns.quick:
        ns.single, ns.batches = 50, 5

    if ns.design:
        designs = [(d, (ns.nprobe or [16]) if "IVF" in d else (ns.ef or [64]) if "HNSW" in d else []) for d in ns.design]
    else:
        designs = DEFAULT_DESIGNS
    info = {
        "n": ns.n, "dim": ns.dim, "clusters": ns.clusters, "queries": ns.queries,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} OpenMP threads), numpy {np.__version__}",
        "loadavg_start": os.getloadavg(),
    }
    print(json.dumps(info), flush=True)
    t0 = time.perf_counter()
    x, q = make_data(ns.n, ns.dim, ns.clusters, ns.queries, ns.seed)
    print(f"data: {x.shape} in {time.perf_counter() - t0:.1f} s", flush=True)
    t = time.perf_counter()
    _, truth = exact_search(x, q, 10)
    print(f"exact ground truth for {len(q)} queries: {time.perf_counter() - t:.1f} s", flush=True)

    rows = []
    # Baseline: plain numpy, same data, same run. Exact by construction (recall 1.0).
    slow = max(10, ns.single // 10)
    lat = latency(lambda qq: exact_search(x, qq, 10), q, slow, max(2, ns.batches // 5))
    rows.append({"design": "numpy matmul+argpartition", "setting": "", "build_s": 0.0, "rss_mb": 0.0,
                 "index_mb": x.nbytes / 2**20, "recall10": 1.0, **lat})
    print(json.dumps(rows[-1]), flush=True)

    for design, settings in designs:
        gc.collect()
        rss0 = rss_bytes()
        t = time.perf_counter()
        index = VectorIndex.build(x, None, design)
        build_s = time.perf_counter() - t
        gc.collect()
        rss_mb = (rss_bytes() - rss0) / 2**20
        index_mb = index.nbytes() / 2**20
        for setting in settings or [None]:
            label = ""
            if setting is not None and "IVF" in design:
                index.nprobe = setting
                label = f"nprobe={setting}"
            elif setting is not None and "HNSW" in design:
                index.ef_search = setting
                label = f"efSearch={setting}"
            _, got = index.search(q, 10)
            n_single = slow if design == "Flat" else ns.single
            n_batches = max(2, ns.batches // 5) if design == "Flat" else ns.batches
            lat = latency(lambda qq, ix=index: ix.search(qq, 10), q, n_single, n_batches)
            rows.append({"design": design, "setting": label, "build_s": build_s, "rss_mb": rss_mb,
                         "index_mb": index_mb, "recall10": recall10(got, truth), **lat})
            print(json.dumps(rows[-1]), flush=True)
        del index

    info["total_s"] = time.perf_counter() - t0
    info["loadavg_end"] = os.getloadavg()
    print()
    print(f"{ns.n:,} x {ns.dim} synthetic clustered vectors, {len(q)} queries, k=10; {info['machine']}")
    print("| design | search setting | build s | RSS delta MB | index MB | recall@10 | p50 ms (1 query) | p99 ms | batch-64 queries/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['design']} | {r['setting']} | {r['build_s']:.1f} | {r['rss_mb']:.0f} | {r['index_mb']:.0f} | "
              f"{r['recall10']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['batch64_qps']:.0f} |")
    print(f"\ntotal {info['total_s']:.0f} s; load average start {info['loadavg_start']}, end {info['loadavg_end']}")
    if ns.json:
        ns.json.write_text(json.dumps({"info": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
