#!/usr/bin/env python
"""Benchmark vidclip.index.vectors designs at 250k, 1M and 4M synthetic CLIP-shaped vectors.

Data: a mixture of gaussians on the unit sphere, shaped like CLIP embeddings —
``--clusters`` centres (default 2000), each ``normalize(0.6 * mu + u_j)`` with u_j uniform on
the sphere and mu one shared direction (CLIP embeddings live in a narrow cone: centres have
mean pairwise cosine about 0.26 here); cluster sizes follow a power law (weight ~ rank^-0.7);
a point is ``normalize(c_j + s_j * g / sqrt(D))`` with g ~ N(0, I) and a per-cluster spread s_j
uniform in [0.7, 1.4] (cosine to its centre 0.58..0.82). Queries are fresh draws from the same
mixture (not in the database).

Every size runs in fresh processes, so peak memory is measured per size and design:

1. a data process draws the vectors chunk by chunk into a raw float32 file under ``--data-dir``
   (kept for the next run) and computes the exact top-10 of the queries by streaming it;
2. one process per design builds the index the way a large library does
   (``VectorIndex.build_chunked``: train on a sample, add 65,536 vectors at a time read from the
   file; the vectors are never all in memory), records build time and peak RSS, then times p50 /
   p95 single-query latency (``--single`` queries), 64-query batch throughput and recall@10 per
   search setting, and the numpy exact-search baseline (matmul + argpartition over the vectors,
   memory-mapped from the file, warm in the page cache) in the same process, interleaved with the
   index's single queries so that both see the same machine load; ratio = numpy p50 / index p50.
   ``--threads-ab`` also times single queries on all OpenMP threads against one, interleaved.

The load average is printed with every row: other jobs on the machine inflate latencies.

    python tools/bench_index.py                                 # 250k, 1M, 4M, default designs
    python tools/bench_index.py --sizes 1000000 --threads-ab    # the key 1M comparison only
    python tools/bench_index.py --sizes 100000 --quick          # a quick check (~1 min)
    python tools/bench_index.py --sizes 1000000 --design "IVF4096,SQ8" --nprobe 16 --nprobe 32

``--filtered``: filtered against unfiltered search (``VectorIndex.search(..., allowed_ids=...)``)
at ``--filtered-n`` (default 1M) 512-d vectors of the CLIP-shaped mixture above (not uniform random
unit vectors: there any IVF's recall is near chance, 0.05 at nprobe 16 of 1024 cells on 100k,
which says nothing about filtering), one process, the exact design (Flat) and an IVF (``--filtered-design``, default ``auto``: IVF4096,SQfp16 at 1M,
built in ~3 min on 2 cores), at 1% and 10% selectivity (allowed
ids drawn uniformly, unrelated to content). Per setting: p50 / p95 single-query latency, the
queries timed round-robin across settings so all see the same load; recall@10 against exact
filtered search (numpy over the allowed vectors); the fewest hits any query got (k=10 expected);
ratio = filtered p50 / unfiltered p50 of the same design.

    python tools/bench_index.py --filtered                      # ~3.5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402

from vidclip.index import vectors as vectors_module  # noqa: E402
from vidclip.index.exact import exact_search  # noqa: E402
from vidclip.index.vectors import VectorIndex, choose_design  # noqa: E402
from vidclip.retrieval.vectors import l2_normalize  # noqa: E402

DIM = 512
CHUNK = 65_536

# size -> [(design, [search settings])]; "auto" is choose_design(n); no settings = default and 2x nprobe.
DEFAULT_PLAN = {
    250_000: [("Flat", [{}]), ("auto", []), ("IVF2048,SQ8", [{"nprobe": 16}, {"nprobe": 32}])],
    1_000_000: [("IVF1024,Flat", [{"nprobe": 8}, {"nprobe": 16}]),  # the former auto design
                ("auto", []),
                ("IVF4096,SQ8", [{"nprobe": 16}, {"nprobe": 32}]),
                ("IVF4096,PQ64x4fs,RFlat", [{"nprobe": 16, "k_factor": 32}, {"nprobe": 16, "k_factor": 128}])],
    4_000_000: [("auto", [])],
}
DEFAULT_SIZES = sorted(DEFAULT_PLAN)


# ----------------------------------------------------------------------------- data


def mixture(dim: int, clusters: int, seed: int):
    """A sampler draw(m) -> float32 [m, dim] of the CLIP-shaped mixture (see the module docstring)."""
    rng = np.random.default_rng(seed)
    mu = l2_normalize(rng.standard_normal(dim))[0]
    centres = l2_normalize(0.6 * mu + l2_normalize(rng.standard_normal((clusters, dim))))
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.7
    weights /= weights.sum()
    spread = rng.uniform(0.7, 1.4, clusters).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        lab = rng.choice(clusters, m, p=weights)
        g = rng.standard_normal((m, dim), dtype=np.float32)
        return l2_normalize(centres[lab] + spread[lab, None] * g / np.sqrt(dim))

    return draw


def make_data(n: int, dim: int, clusters: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(vectors float32 [n, dim], queries float32 [n_queries, dim]) in memory (small sizes, tests)."""
    draw = mixture(dim, clusters, seed)
    x = np.concatenate([draw(min(131072, n - lo)) for lo in range(0, n, 131072)]) if n else np.zeros((0, dim), np.float32)
    return x, draw(n_queries)


def data_paths(data_dir: Path, n: int, clusters: int, n_queries: int, seed: int) -> dict[str, Path]:
    stem = f"clip{n}x{DIM}_c{clusters}_s{seed}"
    return {"x": data_dir / f"{stem}.f32", "q": data_dir / f"{stem}_q{n_queries}.npy",
            "truth": data_dir / f"{stem}_q{n_queries}_top10.npy"}


def file_chunks(path: Path, n: int, chunk: int = CHUNK):
    """A chunk source over a raw float32 [n, DIM] file, read (not mapped) one chunk at a time."""
    def passes():
        with open(path, "rb") as f:
            for lo in range(0, n, chunk):
                c = min(chunk, n - lo)
                yield np.arange(lo, lo + c, dtype=np.int64), np.fromfile(f, np.float32, c * DIM).reshape(c, DIM)
    return passes


def run_data(ns) -> dict:
    """Draw the vectors into the cache file (if absent) and the queries' exact top-10."""
    paths = data_paths(ns.data_dir, ns.n, ns.clusters, ns.queries, ns.seed)
    ns.data_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not (paths["x"].is_file() and paths["x"].stat().st_size == ns.n * DIM * 4 and paths["q"].is_file()):
        draw = mixture(DIM, ns.clusters, ns.seed)
        tmp = paths["x"].with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for lo in range(0, ns.n, 131072):
                draw(min(131072, ns.n - lo)).tofile(f)
        np.save(paths["q"], draw(ns.queries))  # same stream as make_data: same vectors and queries
        os.replace(tmp, paths["x"])
        paths["truth"].unlink(missing_ok=True)
    gen_s = time.perf_counter() - t0
    t = time.perf_counter()
    if not paths["truth"].is_file():
        q = np.load(paths["q"])
        mapped = np.memmap(paths["x"], np.float32, "r", shape=(ns.n, DIM))
        np.save(paths["truth"], exact_search(mapped, q, 10)[1])
    return {"data_s": gen_s, "truth_s": time.perf_counter() - t}


# ----------------------------------------------------------------------------- one design


def rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def percentile_ms(times: list[float], p: float) -> float:
    return float(np.percentile(times, p) * 1e3)


def run_design(ns) -> list[dict]:
    paths = data_paths(ns.data_dir, ns.n, ns.clusters, ns.queries, ns.seed)
    q, truth = np.load(paths["q"]), np.load(paths["truth"])
    design = choose_design(ns.n) if ns.child_design == "auto" else ns.child_design
    settings = json.loads(ns.settings) or None
    rss0 = rss_now()
    load0 = os.getloadavg()
    t = time.perf_counter()
    index = VectorIndex.build_chunked(file_chunks(paths["x"], ns.n), ns.n, DIM, design)
    build_s = time.perf_counter() - t
    build_peak = peak_rss()
    index_rss = rss_now() - rss0
    index_bytes = index.nbytes()
    if not settings:
        # the design's default nprobe (vectors.default_nprobe) and twice that
        settings = [{"nprobe": index.nprobe}, {"nprobe": 2 * index.nprobe}] if index.nprobe else [{}]
    mapped = np.memmap(paths["x"], np.float32, "r", shape=(ns.n, DIM))

    def numpy_search(qq):
        return exact_search(mapped, qq, 10)

    numpy_search(q[:1])  # maps the file's pages (warm page cache) before anything is timed
    rows = []
    for setting in settings:
        for name, value in setting.items():
            setattr(index, name, value)
        _, got = index.search(q, 10)
        recall = float(np.mean([len(set(g) & set(tr)) / 10 for g, tr in zip(got.tolist(), truth.tolist())]))
        index.search(q[:1], 10)  # warm up
        single = []
        for i in range(ns.single):
            t = time.perf_counter()
            index.search(q[i % len(q)][None, :], 10)
            single.append(time.perf_counter() - t)
        # numpy exact search interleaved with more index queries: both under the same load
        paired_np, paired_ix = [], []
        for i in range(ns.paired):
            qq = q[(7 * i + 3) % len(q)][None, :]
            t = time.perf_counter()
            numpy_search(qq)
            paired_np.append(time.perf_counter() - t)
            t = time.perf_counter()
            index.search(qq, 10)
            paired_ix.append(time.perf_counter() - t)
        t = time.perf_counter()
        for b in range(ns.batches):
            lo = (b * 64) % max(1, len(q) - 64)
            index.search(q[lo:lo + 64], 10)
        batch_qps = ns.batches * 64 / (time.perf_counter() - t)
        row = {"n": ns.n, "design": design, "requested": ns.child_design, "setting": setting, "build_s": build_s,
               "build_peak_rss_mb": build_peak / 2**20, "index_rss_mb": index_rss / 2**20,
               "index_mb": index_bytes / 2**20, "bytes_per_vector": index_bytes / ns.n, "recall10": recall,
               "p50_ms": percentile_ms(single, 50), "p95_ms": percentile_ms(single, 95),
               "paired_index_p50_ms": percentile_ms(paired_ix, 50), "numpy_p50_ms": percentile_ms(paired_np, 50),
               "batch64_qps": batch_qps, "loadavg_build": load0, "loadavg": os.getloadavg()}
        row["ratio"] = row["numpy_p50_ms"] / row["p50_ms"]
        row.update(ivf_scan(index, q))
        if ns.threads_ab:
            row.update(threads_ab(index, q, ns.single))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def ivf_scan(index: VectorIndex, q: np.ndarray) -> dict:
    """Where an IVF query's time goes: vectors in the cells it visits (mean over the queries), against
    nprobe / nlist of the data, and the spread of cell sizes."""
    ivf = faiss.try_extract_index_ivf(index._index)
    if ivf is None:
        return {}
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)], dtype=np.int64)
    _, cells = ivf.quantizer.search(l2_normalize(q), int(ivf.nprobe))
    scanned = float(sizes[cells].sum(axis=1).mean())
    return {"scanned_per_query": scanned, "scanned_frac": scanned / max(1, int(sizes.sum())),
            "nprobe_frac": int(ivf.nprobe) / int(ivf.nlist), "cell_mean": float(sizes.mean()),
            "cell_max": int(sizes.max())}


def threads_ab(index: VectorIndex, q: np.ndarray, m: int) -> dict:
    """Single queries on one OpenMP thread (VectorIndex's default) against all threads, interleaved."""
    one, every = [], []
    few = vectors_module.FEW_QUERIES
    try:
        for i in range(m):
            qq = q[i % len(q)][None, :]
            for mode, times in ((few, one), (0, every)):
                vectors_module.FEW_QUERIES = mode
                t = time.perf_counter()
                index.search(qq, 10)
                times.append(time.perf_counter() - t)
    finally:
        vectors_module.FEW_QUERIES = few
    return {"p50_ms_1thread": percentile_ms(one, 50), "p95_ms_1thread": percentile_ms(one, 95),
            "p50_ms_all_threads": percentile_ms(every, 50), "p95_ms_all_threads": percentile_ms(every, 95)}


# ----------------------------------------------------------------------------- the driver


def run_filtered(ns) -> int:
    """The ``--filtered`` benchmark (see the module docstring)."""
    n, k, nq = ns.filtered_n, 10, ns.filtered_queries
    rng = np.random.default_rng(ns.seed + 1)
    t0 = time.perf_counter()
    draw = mixture(DIM, ns.clusters, ns.seed)
    x = np.empty((n, DIM), np.float32)
    for lo in range(0, n, CHUNK):
        x[lo:lo + min(CHUNK, n - lo)] = draw(min(CHUNK, n - lo))
    q = draw(nq)
    ids = np.arange(n, dtype=np.int64)
    data_s = time.perf_counter() - t0
    allowed = {None: None}
    for frac in (0.10, 0.01):
        allowed[frac] = np.sort(rng.choice(n, int(round(n * frac)), replace=False)).astype(np.int64)
    truth = {}
    for frac, a in allowed.items():  # exact (filtered) top-k by numpy: the reference
        truth[frac] = exact_search(x if a is None else x[a], q, k, ids if a is None else a)[1]
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__}, "
               f"numpy {np.__version__}")
    print(json.dumps({"machine": machine, "n": n, "dim": DIM, "queries": nq, "data_s": round(data_s, 1),
                      "loadavg_start": os.getloadavg()}), flush=True)
    rows = []
    for design in ("Flat", ns.filtered_design):
        t0 = time.perf_counter()
        index = VectorIndex.build_chunked(lambda: ((ids[lo:lo + CHUNK], x[lo:lo + CHUNK]) for lo in range(0, n, CHUNK)),
                                          n, DIM, design)
        build_s = time.perf_counter() - t0
        times = {frac: [] for frac in allowed}
        got = {frac: [] for frac in allowed}
        for i in range(nq):  # round-robin: every setting sees the same load
            for frac, a in allowed.items():
                t = time.perf_counter()
                _, hit = index.search(q[i:i + 1], k, allowed_ids=a)
                times[frac].append(time.perf_counter() - t)
                got[frac].append(hit[0])
        base = percentile_ms(times[None], 50)
        for frac in allowed:
            hits = np.stack(got[frac])
            recall = float(np.mean([len(set(h) & set(t)) / k for h, t in zip(hits, truth[frac])]))
            rows.append({"design": index.design, "setting": " ".join(f"{a}={b}" for a, b in index.search_params.items()),
                         "selectivity": "all" if frac is None else f"{100 * frac:g}%", "build_s": build_s,
                         "p50_ms": percentile_ms(times[frac], 50), "p95_ms": percentile_ms(times[frac], 95),
                         "recall10": recall, "min_hits": int((hits >= 0).sum(axis=1).min()),
                         "ratio": percentile_ms(times[frac], 50) / base, "loadavg": os.getloadavg()})
        del index
    print(f"\nfiltered search, {n:,} CLIP-shaped 512-d vectors ({ns.clusters} clusters), {nq} single queries, k={k}; {machine}")
    print("| design | setting | build s | selectivity | p50 ms | p95 ms | filtered / unfiltered p50 | recall@10 vs exact "
          "filtered | fewest hits | load 1-min |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['design']} | {r['setting'] or '-'} | {r['build_s']:.0f} | {r['selectivity']} | {r['p50_ms']:.2f} | "
              f"{r['p95_ms']:.2f} | {r['ratio']:.2f} | {r['recall10']:.3f} | {r['min_hits']} | {r['loadavg'][0]:.1f} |")
    print(f"load average end {os.getloadavg()}")
    if ns.json:
        ns.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    return 0


def child(args: list[str]) -> tuple[list, dict]:
    """Run this script in a fresh process; returns (its JSON rows, its resource usage)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    try:
        proc = subprocess.Popen([sys.executable, __file__, *args, "--out", str(out)])
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"bench child {args} failed with status {os.waitstatus_to_exitcode(status)}")
        return json.loads(out.read_text() or "[]"), {"peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}
    finally:
        out.unlink(missing_ok=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                    help="comma-separated database sizes (default: %(default)s)")
    ap.add_argument("--clusters", type=int, default=2000, help="mixture components (default: %(default)s)")
    ap.add_argument("--queries", type=int, default=500, help="queries for recall (default: %(default)s)")
    ap.add_argument("--design", action="append", default=None,
                    help="faiss index_factory string or 'auto' (repeatable; default: a plan per size, see DEFAULT_PLAN)")
    ap.add_argument("--nprobe", type=int, action="append", default=None, help="IVF nprobe values for --design")
    ap.add_argument("--k-factor", type=int, action="append", default=None, help="refine k_factor values for --design")
    ap.add_argument("--single", type=int, default=200, help="single queries timed per setting (default: %(default)s)")
    ap.add_argument("--paired", type=int, default=20,
                    help="numpy exact / index query pairs timed interleaved per setting (default: %(default)s)")
    ap.add_argument("--batches", type=int, default=20, help="64-query batches timed per setting (default: %(default)s)")
    ap.add_argument("--threads-ab", action="store_true", help="also time single queries on all threads vs one")
    ap.add_argument("--quick", action="store_true", help="fewer timed queries")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "vidclip-bench-index",
                    help="where the synthetic vectors are cached (4M x 512 = 8 GB; default: %(default)s)")
    ap.add_argument("--json", type=Path, default=None, help="also write all results here")
    ap.add_argument("--filtered", action="store_true",
                    help="filtered vs unfiltered search at --filtered-n random vectors, 1%% and 10%% selectivity")
    ap.add_argument("--filtered-n", type=int, default=1_000_000, help="--filtered: vectors (default: %(default)s)")
    ap.add_argument("--filtered-queries", type=int, default=50, help="--filtered: queries (default: %(default)s)")
    ap.add_argument("--filtered-design", default="auto",
                    help="--filtered: the IVF design besides Flat (default: %(default)s)")
    ap.add_argument("--child", choices=("data", "design"), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-design", help=argparse.SUPPRESS)
    ap.add_argument("--settings", default="[]", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.quick:
        ns.single, ns.paired, ns.batches = 50, 8, 5

    if ns.filtered:
        return run_filtered(ns)
    if ns.child:
        result = run_data(ns) if ns.child == "data" else run_design(ns)
        ns.out.write_text(json.dumps(result))
        return 0

    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__} "
               f"({faiss.omp_get_max_threads()} OpenMP threads), numpy {np.__version__}")
    info = {"machine": machine, "clusters": ns.clusters, "queries": ns.queries, "loadavg_start": os.getloadavg(),
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(info), flush=True)
    common = ["--clusters", str(ns.clusters), "--queries", str(ns.queries), "--seed", str(ns.seed),
              "--data-dir", str(ns.data_dir), "--single", str(ns.single), "--paired", str(ns.paired),
              "--batches", str(ns.batches)] + (["--threads-ab"] if ns.threads_ab else [])
    rows, sizes = [], {}
    t0 = time.perf_counter()
    for n in (int(s) for s in ns.sizes.split(",")):
        data, usage = child(["--child", "data", "--n", str(n), *common])
        sizes[n] = {**data, "data_peak_rss_mb": usage["peak_rss_mb"]}
        print(f"{n:,} vectors: data {data['data_s']:.0f} s, exact top-10 {data['truth_s']:.0f} s", flush=True)
        if ns.design:
            def settings_of(design: str) -> list[dict]:
                settings = [{"nprobe": p} for p in ns.nprobe or []]
                if ns.k_factor and ("RFlat" in design or "Refine" in design):
                    settings = [{**s, "k_factor": f} for s in settings or [{}] for f in ns.k_factor]
                return settings
            plan = [(d, settings_of(d)) for d in ns.design]
        else:
            plan = DEFAULT_PLAN.get(n, [("auto", [])])
        for design, settings in plan:
            got, usage = child(["--child", "design", "--n", str(n), "--child-design", design,
                                "--settings", json.dumps(settings), *common])
            for r in got:
                r["process_peak_rss_mb"] = usage["peak_rss_mb"]  # includes the mapped baseline vectors
            rows += got
    info["total_s"] = time.perf_counter() - t0
    info["loadavg_end"] = os.getloadavg()

    print(f"\nsynthetic CLIP-shaped 512-d vectors, {ns.queries} queries, k=10; {machine}")
    print("| n | design | setting | build s | build peak RSS MB | index MB | bytes/vector | recall@10 "
          "| p50 ms | p95 ms | numpy exact p50 ms | ratio | batch-64 q/s | scanned % (nprobe/nlist %) | load 1-min |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        setting = " ".join(f"{k}={v}" for k, v in r["setting"].items())
        design = r["design"] + (" (auto)" if r["requested"] == "auto" else "")
        scanned = f"{100 * r['scanned_frac']:.2f} ({100 * r['nprobe_frac']:.2f})" if "scanned_frac" in r else "100"
        print(f"| {r['n']:,} | {design} | {setting} | {r['build_s']:.0f} | {r['build_peak_rss_mb']:.0f} | "
              f"{r['index_mb']:.0f} | {r['bytes_per_vector']:.0f} | {r['recall10']:.3f} | {r['p50_ms']:.2f} | "
              f"{r['p95_ms']:.2f} | {r['numpy_p50_ms']:.1f} | {r['ratio']:.0f}x | {r['batch64_qps']:.0f} | "
              f"{scanned} | {r['loadavg'][0]:.1f} |")
    if ns.threads_ab:
        print("\n| n | design | setting | p50 ms 1 thread | p50 ms all threads | p95 ms 1 thread | p95 ms all threads |")
        print("|---:|---|---|---:|---:|---:|---:|")
        for r in rows:
            setting = " ".join(f"{k}={v}" for k, v in r["setting"].items())
            print(f"| {r['n']:,} | {r['design']} | {setting} | {r['p50_ms_1thread']:.2f} | {r['p50_ms_all_threads']:.2f} | "
                  f"{r['p95_ms_1thread']:.2f} | {r['p95_ms_all_threads']:.2f} |")
    print(f"\ntotal {info['total_s']:.0f} s; load average start {info['loadavg_start']}, end {info['loadavg_end']}")
    if ns.json:
        ns.json.write_text(json.dumps({"info": info, "sizes": sizes, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
