"""``vidclip rerank`` and ``vidclip trec-eval``: parse, call one API function, print."""

from __future__ import annotations

import argparse
import sys

from vidclip.cli.options import (
    add_model_args,
    add_sampler_args,
    check_runtime_args,
    model_from_args,
    print_json,
    sampler_from_args,
)

#: What ``--run`` takes (both verbs read it with :func:`vidclip.eval.trec.read_run`).
_RUN_FORMATS = "TREC 6-column 'topic Q0 docid rank score tag', or CSV/JSONL with query_id, video_id, score[, rank]"


def add_trec_eval_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "trec-eval", help="evaluate a run the TRECVID way: xinfAP, infNDCG (sample_eval), AP, P@10, nDCG@10",
        description="Evaluate a ranked run against TRECVID sampled qrels ('topic iter docid stratum rel'; rel -1 = "
                    "pooled but not judged, 0 = not relevant, >0 relevant) or plain 4-column TREC qrels "
                    "('topic iter docid rel'). xinfAP and infNDCG are computed exactly as NIST's sample_eval.pl "
                    "(Yilmaz, Kanoulas, Aslam, SIGIR 2008); AP, P@10 and nDCG@10 by trec_eval (pytrec_eval), "
                    "unjudged documents counting as not relevant. The run is sorted by score (ties: docid "
                    "descending) and cut at --depth. The mean is over topics in both run and qrels; the others are "
                    "listed as skipped.")
    p.add_argument("--run", required=True, help="the run: " + _RUN_FORMATS)
    p.add_argument("--qrels", required=True, help="sampled (5-column) or plain (4-column) qrels")
    p.add_argument("--depth", type=int, default=1000,
                   help="evaluate the first D documents of each topic (sample_eval's maxResultSize; TRECVID uses "
                        "1000) (default: %(default)s)")
    p.add_argument("--per-topic", action="store_true", help="also print every topic's figures")
    p.add_argument("--json", action="store_true",
                   help='print {"depth", "mean": {xinfAP, infNDCG, AP, P@10, nDCG@10}, "per_topic", '
                        '"skipped_topics", "skipped_reasons", "num_topics"}')
    p.set_defaults(func=cmd_trec_eval)
    return p


def cmd_trec_eval(ns: argparse.Namespace) -> int:
    from vidclip.eval.trec import METRICS, evaluate_run, read_qrels, read_run

    result = evaluate_run(read_run(ns.run), read_qrels(ns.qrels), ns.depth)
    if ns.json:  # per_topic is always in the JSON: scripts read it
        print_json(result)
        return 0
    width = max([len("topic")] + [len(t) for t in result["per_topic"]])
    header = f"{'topic':<{width}}  " + "  ".join(f"{m:>8}" for m in METRICS)
    print(header)
    if ns.per_topic:
        for t, vals in result["per_topic"].items():
            print(f"{t:<{width}}  " + "  ".join(f"{vals[m]:8.4f}" for m in METRICS))
    print(f"{'all':<{width}}  " + "  ".join(f"{result['mean'][m]:8.4f}" for m in METRICS))
    print(f"{result['num_topics']} topics evaluated at depth {result['depth']}")
    for t, why in result["skipped_reasons"].items():
        print(f"vidclip trec-eval: skipped topic {t}: {why}", file=sys.stderr)
    return 0


def add_rerank_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "rerank", help="rerank another system's run with frame-level CLIP scores (CLIPRerank), shot level",
        description="Rerank each topic's first --depth candidates by S = alpha*norm(S_init) + (1-alpha)*norm(M), "
                    "S_init = the run's score, M = pool over the candidate's frames of cos(text, frame) "
                    "(CLIPRerank, arXiv 2401.08449: alpha weighs the initial score, 0.4 in the paper, so CLIP "
                    "weighs 0.6). "
                    "Frames come from a library index (--index, stored embeddings, no decoding) or from decoding "
                    "the videos of a mapping (--videos, cached on disk). Candidates whose frames cannot be found "
                    "are counted, listed and keep their slot; candidates below --depth keep their order. OUT is a "
                    "TREC run (ranks 1..n, score n+1-rank), written atomically.")
    p.add_argument("--run", required=True, help="input run: " + _RUN_FORMATS)
    p.add_argument("--topics", required=True,
                   help="topic texts: TRECVID 'topicId text' lines, TSV 'topicId<TAB>text', or JSONL "
                        "{topic|query_id|id, text|query|title}")
    p.add_argument("--out", required=True, help="output TREC run file")
    p.add_argument("--index", metavar="DIR", default=None,
                   help="a `vidclip index` directory: frames from its stored embeddings, text with its model")
    p.add_argument("--videos", metavar="MAP", default=None,
                   help="mapping CSV 'docid,path[,start,end]' (seconds; relative paths from the CSV's folder): "
                        "what each docid is; with start,end only frames inside the span are pooled. Without "
                        "--index the videos are decoded and encoded (cached); with --index the paths are matched "
                        "against the catalog")
    p.add_argument("--match", default="auto",
                   help="how docids (or the mapping's paths) find catalog entries with --index: key, path, "
                        "meta:COLUMN (a metadata column of a CSV library) or auto (path, key, file stem) (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.4,
                   help="weight of the run's initial score in the fusion, in [0, 1]; the CLIP score weighs 1 - alpha "
                        "(1 keeps the initial order, 0 is CLIP alone; the paper's 0.4 is the default) "
                        "(default: %(default)s)")
    p.add_argument("--depth", type=int, default=1000, help="rerank the first D candidates of each topic (default: %(default)s)")
    p.add_argument("--pool", default="max", help="frame pooling: max, mean or topk:K (mean of the K best frames) (default: %(default)s)")
    p.add_argument("--norm", default="minmax", choices=["none", "minmax", "zscore", "rank"],
                   help="per-topic normalisation of both scores over the reranked candidates (minmax: measured "
                        "best on the synthetic benchmark, see BENCHMARKS.md) (default: %(default)s)")
    p.add_argument("--tag", default="vidclip-rerank", help="run tag written in the last column of OUT (default: %(default)s)")
    p.add_argument("--tune", action="store_true",
                   help="first choose alpha, pool and norm by xinfAP against --qrels on these (development) topics; "
                        "prints the grid and the winner. Never report results on the topics you tuned on")
    p.add_argument("--qrels", default=None, help="qrels for --tune (sampled or plain)")
    p.add_argument("--cache", default=None,
                   help="frame cache for --videos (a feature store; default: $XDG_CACHE_HOME/vidclip/rerank/<model,"
                        "sampler digest>)")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes for --videos (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (and no progress)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars on stderr")
    # model and sampling: --videos without --index only (with --index the index's own model is used)
    add_model_args(p, default_model="vidclip-synth", default_pretrained=None, runtime=True)
    add_sampler_args(p, default="fps")
    p.set_defaults(func=cmd_rerank)
    return p


def cmd_rerank(ns: argparse.Namespace) -> int:
    from vidclip.core.errors import ConfigError
    from vidclip.rerank.run import RerankConfig, read_inputs, rerank_run

    # Every check before the model: options, OUT's path, and all input files read (no torch yet).
    if ns.tune and not ns.qrels:
        raise ConfigError("--tune needs --qrels")
    if ns.index is None and ns.videos is None:
        raise ConfigError("give --index DIR or --videos MAP (see vidclip rerank --help)")
    if ns.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {ns.workers}")
    from vidclip.video.header import BACKEND_CHOICES

    if ns.backend not in BACKEND_CHOICES:
        raise ConfigError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {ns.backend!r}")
    check_runtime_args(ns)
    cfg = RerankConfig(alpha=ns.alpha, depth=ns.depth, pool=ns.pool, norm=ns.norm, tag=ns.tag)
    sampler = sampler_from_args(ns) if ns.index is None else None
    inputs = read_inputs(ns.run, ns.topics, ns.out, cfg=cfg, index_dir=ns.index, mapping_path=ns.videos,
                         match=ns.match, tune_qrels=ns.qrels if ns.tune else None)
    progress = not (ns.json or ns.quiet)
    clip = None
    if ns.index is None:
        if progress:
            print(f"vidclip rerank: loading model {ns.model}", file=sys.stderr, flush=True)
        clip = model_from_args(ns)
    report = rerank_run(ns.run, ns.topics, ns.out, cfg=cfg, index_dir=ns.index, mapping_path=ns.videos,
                        match=ns.match, clip=clip, sampler=sampler, cache_dir=ns.cache, workers=ns.workers,
                        backend=ns.backend, tune_qrels=ns.qrels if ns.tune else None, progress=progress,
                        inputs=inputs)
    if ns.json:
        print_json(report)
        return 0
    if "tune" in report:
        print("tuning grid (mean xinfAP on these topics; alpha weighs the initial score, 1 - alpha the CLIP score):")
        for r in report["tune"]["grid"]:
            print(f"  alpha {r['alpha']:.1f}  pool {r['pool']:<7} norm {r['norm']:<7} xinfAP {r['xinfAP']:.4f}  "
                  f"AP {r['AP']:.4f}")
        b = report["tune"]["best"]
        print(f"best: --alpha {b['alpha']} --pool {b['pool']} --norm {b['norm']} (xinfAP {b['xinfAP']:.4f}); "
              f"{report['tune']['note']}")
    c, f = report["config"], report["frames"]
    src = (f"{f['videos']} videos, {f['decoded']} decoded, {f['cached']} from the cache"
           if f["source"] == "videos" else f"{f['videos']} videos from the index")
    print(f"reranked {report['reranked']} candidates of {report['topics']} topics (alpha {c['alpha']}, pool "
          f"{c['pool']}, norm {c['norm']}, depth {c['depth']}; frames: {src}; {report['ms_per_topic']:.1f} ms/topic) "
          f"-> {report['out']}")
    if report["temps_removed"]:
        print(f"removed {len(report['temps_removed'])} temp file(s) left by an interrupted write of {report['out']}")
    if report["unresolved"]:
        print(f"vidclip rerank: {report['unresolved']} candidate(s) had no frames and kept their place:",
              file=sys.stderr)
        for d, why in list(report["unresolved_docids"].items())[:20]:
            print(f"vidclip rerank:   {d}: {why}", file=sys.stderr)
        if len(report["unresolved_docids"]) > 20:
            print(f"vidclip rerank:   ... {len(report['unresolved_docids']) - 20} more (--json lists all)",
                  file=sys.stderr)
    return 0
