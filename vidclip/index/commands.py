"""``vidclip index`` and ``vidclip search``: the command-line face of vidclip.index."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidclip.cli.options import add_verb_parser
from vidclip.core.errors import ConfigError, display_path

INDEX_EPILOG = """\
examples:
  vidclip index ~/Videos --index ~/vidx --model tiny-vit --pretrained none   # test run, random weights
  vidclip index ~/Videos --index ~/vidx --model ViT-B-32 --pretrained openai
  vidclip index clips.csv --index ~/vidx          # CSV: a 'path' column, other columns = metadata
  vidclip index --merge ~/other_vidx --index ~/vidx
  vidclip index /mnt/videos --index /mnt/vidx --engine ray --ray-address HEAD:6379 --num-gpus 1   # a Ray cluster
  vidclip index --report ~/vidx                   # what is indexed, what failed and why
  vidclip index big/ --index ~/vidx --design "IVF4096,SQ8" --nprobe 32   # approximate search
  vidclip index big/ --index ~/vidx --design HNSW32 --search-params efSearch=64
  vidclip index --check-recall ~/vidx             # recall@10 of faiss vs exact search
  vidclip index --verify ~/vidx                   # check shards, faiss files, catalog rows; repair
  vidclip index --check-recall ~/vidx --nprobe 64 -k 10 --queries 500 --json

Re-running on the same library indexes only new or changed files and drops deleted ones.
A killed run can simply be run again: nothing committed is lost, nothing is indexed twice.
The model, sampling and temporal options of an existing index are reused when not given.
"""

SEARCH_EPILOG = """\
examples:
  vidclip search "a person cleaning a swimming pool" --index ~/vidx
  vidclip search "basketball" --index ~/vidx --segments -k 20 --json
  vidclip search --queries queries.txt --index ~/vidx -k 5     # JSON Lines out, one per query
  vidclip search "a dog jumps" --index ~/vidx --rerank 100      # two stages: top 100 re-scored on their frames
  vidclip search --image photo.jpg --index ~/vidx               # search by an example picture
  vidclip search --video clip.mp4 --index ~/vidx --json         # by an example video (an indexed one finds itself first)
  vidclip search "budget" --index ~/vidx --mode text            # words only: names, subtitles, metadata
  vidclip search "budget meeting" --index ~/vidx --path "news/*" --modified-after 2024-05-01 --meta lang=en

Give exactly one of QUERY, --image, --video, --queries.
--rerank N: the first stage's top max(N, k) hits are re-scored CLIPRerank-style on their stored
frames (the best frame's cosine weighing 0.6 and the first-stage score 0.4, as in CLIPRerank,
after min-max normalisation); each hit then also reports its best frame's time (frame_time, seconds).
--mode: visual (CLIP), text (BM25 over file and folder names, subtitle cues and metadata values)
or hybrid (both, reciprocal-rank fused: 1/(60 + visual rank) + 1/(60 + text rank); a video found
both ways ranks above one found one way); the default is hybrid when the index holds subtitles or
metadata, else visual. A subtitle match's moment is its cue's span; each hit says why it matched.
Filters (AND) restrict the vector search itself, so -k hits come back when k videos match.
"""


def add_index_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb_parser(
        subparsers, "index", help="index a video library for text search (incremental, crash-safe)",
        description="Decode, sample and encode every video of a library with a frozen CLIP, store per-frame "
                    "embeddings, a vector per video and per time window, and faiss indexes for search.",
        examples=INDEX_EPILOG)
    p.add_argument("library", nargs="?", metavar="LIBRARY",
                   help="a folder (searched recursively by video extension), a text file with one path per line, "
                        "or a CSV with a 'path' column plus optional metadata columns")
    p.add_argument("--index", metavar="DIR", help="index directory (created if missing)")
    p.add_argument("--merge", metavar="OTHER_DIR", help="merge another index built with the same model into --index")
    p.add_argument("--report", metavar="DIR", help="print an index's counts and its failed files with reasons")
    p.add_argument("--verify", metavar="DIR",
                   help="check every shard, vector file and catalog row of an index; rebuild faiss files from the "
                        "stored vectors and mark videos whose frames are lost for re-encoding")
    p.add_argument("--check-recall", metavar="DIR",
                   help="measure recall@k of the index's faiss indexes (videos, segments) against exact search "
                        "over the same stored vectors")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="open_clip architecture, hub id, folder or vidclip config (tiny-vit, ...); "
                        "default: the index's model, else ViT-B-32")
    g.add_argument("--pretrained", default=None,
                   help="pretrained tag or checkpoint file; 'none' for random weights (tests only); "
                        "default: the index's, else openai")
    g.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16", "int8"],
                   help="encoder precision; auto = fp16 autocast on GPU, fp32 on CPU; int8 needs --runtime onnx")
    from vidclip.cli.options import add_runtime_arg

    add_runtime_arg(g, default=None)
    g.add_argument("--temporal", default=None, metavar="mean|CKPT",
                   help="how frames become a video vector: 'mean' (default for a new index) or a training "
                        "checkpoint (.safetensors or run dir) of `vidclip train`")
    s = p.add_argument_group("frame sampling (default for a new index: windows of 10 s every 5 s at 1 fps)")
    s.add_argument("--sampler", default=None, choices=["uniform", "fps", "windows"])
    s.add_argument("--fps", type=float, default=None, help="frames per second sampled (fps / windows)")
    s.add_argument("--window", type=float, default=None, help="window length in seconds (windows)")
    s.add_argument("--stride", type=float, default=None, help="window stride in seconds (windows)")
    s.add_argument("--num-frames", type=int, default=None, help="frames per video (uniform)")
    s.add_argument("--max-frames", type=int, default=None, help="cap on frames per video (fps)")
    s.add_argument("--backend", default="auto", help="decoder: auto, decord, pyav, torchcodec")
    s.add_argument("--decode-device", default="cpu", help="cpu, or cuda for GPU decoding")
    v = p.add_argument_group("vector search")
    v.add_argument("--design", default=None,
                   help="faiss design of the video vectors: 'auto' (exact up to 200k, else IVF,SQfp16; SQ8 beyond 10M), 'Flat', "
                        "'HNSW32', 'IVF4096,Flat', ... (default: the index's, else auto)")
    v.add_argument("--segment-design", default=None, help="faiss design of the window vectors (default: as --design)")
    v.add_argument("--search-params", default=None, metavar="KNOBS",
                   help="faiss search knobs, e.g. 'nprobe=32,efSearch=64,k_factor=64', recorded in the index; each "
                        "faiss index takes those its design has (default: the index's, else IVF nprobe 16+, faiss' "
                        "HNSW efSearch 16, refine k_factor 32); with --check-recall: measure at these instead")
    v.add_argument("--nprobe", type=int, default=None,
                   help="IVF cells visited per search: short for --search-params nprobe=N")
    v.add_argument("--ef-search", type=int, default=None,
                   help="HNSW search beam width: short for --search-params efSearch=N")
    c = p.add_argument_group("recall check (--check-recall)")
    c.add_argument("-k", type=int, default=10, help="neighbours compared per query (default: %(default)s)")
    c.add_argument("--queries", type=int, default=200,
                   help="query count: stored frame embeddings drawn at random from the indexed videos "
                        "(default: %(default)s)")
    c.add_argument("--query-texts", metavar="FILE",
                   help="use the text queries in FILE (one per line, encoded with the index's model) instead")
    c.add_argument("--seed", type=int, default=0, help="seed of the frame draw (default: %(default)s)")
    c.add_argument("--min-recall", type=float, default=None,
                   help="exit with status 1 when either index's recall@k is below this")
    r = p.add_argument_group("run")
    r.add_argument("--workers", type=int, default=2, help="decoding worker processes; 0 = in this process (default: %(default)s)")
    r.add_argument("--batch-frames", type=int, default=256, help="frames per encoder batch (default: %(default)s)")
    r.add_argument("--commit-every", type=int, default=64,
                   help="videos per committed shard + catalog transaction; with --engine ray also per partition "
                        "(default: %(default)s)")
    r.add_argument("--retry-failed", action="store_true", help="try unchanged files that failed before again")
    r.add_argument("--metadata", metavar="CSV",
                   help="metadata of the videos: a CSV with a 'path' column and one column per key (with each "
                        "video's clip.json, searchable words and --meta filters); give it on every run that should keep it")
    r.add_argument("--json", action="store_true", help="print a JSON report")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    from vidclip.cli.options import add_engine_args

    add_engine_args(p)
    p.set_defaults(func=cmd_index)
    return p


def add_search_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb_parser(
        subparsers, "search", help="search an index with a text query, an example image or an example video",
        description="Rank the indexed videos (or, with --segments, their time windows) by similarity to a text "
                    "query (or an example image / video), with each video's best-matching time span.",
        examples=SEARCH_EPILOG)
    p.add_argument("query", nargs="*", metavar="QUERY", help="the text query (several words are joined)")
    p.add_argument("--queries", metavar="FILE",
                   help="many queries, one model load: one query per line, or JSON Lines with 'query' and an "
                        "optional 'id'; prints one JSON line per query")
    p.add_argument("--image", metavar="FILE",
                   help="search by example: an image file (JPEG, PNG, ...), encoded with the index's CLIP and "
                        "compared with the videos as a one-frame video")
    p.add_argument("--video", metavar="FILE",
                   help="search by example: a video file, sampled and pooled as the index pools its own videos "
                        "(a video that is itself indexed comes back first)")
    p.add_argument("--index", required=True, metavar="DIR", help="index directory made by `vidclip index`")
    p.add_argument("-k", "--top-k", "--top", type=int, default=10, dest="k", help="results to return (default: %(default)s)")
    p.add_argument("--segments", action="store_true", help="rank time windows instead of whole videos")
    p.add_argument("--rerank", type=int, default=0, metavar="N",
                   help="two-stage search: re-score the first stage's top max(N, k) hits on their stored frames "
                        "(0..1000; 0 = off, the default; 100 is a good start) and report each hit's best frame")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... for the text or image encoder (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print JSON")
    h = p.add_argument_group("words (text queries)")
    h.add_argument("--mode", choices=["visual", "text", "hybrid"], default=None,
                   help="rank by the picture, by the words (names, subtitles, metadata) or both fused "
                        "(default: hybrid when the index holds subtitles or metadata, else visual)")
    h.add_argument("--fusion", choices=["rrf", "weighted"], default="rrf",
                   help="hybrid fusion: reciprocal ranks (default) or min-max normalised scores weighted by --text-weight")
    h.add_argument("--text-weight", type=float, default=0.5, metavar="W",
                   help="--fusion weighted: weight of the words' score, 1 - W the picture's (default: %(default)s)")
    f = p.add_argument_group("filters (all must hold)")
    f.add_argument("--path", metavar="GLOB", help="library-relative or absolute path pattern, e.g. 'news/*' (* also matches /)")
    f.add_argument("--min-duration", metavar="S", help="videos at least S seconds long")
    f.add_argument("--max-duration", metavar="S", help="videos at most S seconds long")
    f.add_argument("--modified-after", metavar="DATE", help="file modified at or after DATE (2024-05-01 or 2024-05-01T14:30; local time)")
    f.add_argument("--modified-before", metavar="DATE", help="file modified before DATE")
    f.add_argument("--meta", action="append", metavar="KEY=VALUE",
                   help="metadata KEY equals VALUE (a list value: holds it); repeatable")
    p.set_defaults(func=cmd_search)
    return p


# ----------------------------------------------------------------------------- helpers


def _load_model(ns, stored: dict | None):
    from vidclip.cli.options import resolve_device, wrap_runtime
    from vidclip.models.clip import identity_load_args, load_clip, load_clip_from_identity
    from vidclip.models.clip.onnx_runtime import base_identity, identity_precision

    if ns.runtime is None and stored is not None and identity_precision(stored) == "int8":
        ns.runtime, ns.precision = "onnx", "int8"  # the index's own encoder (its features are int8)
    if ns.runtime == "onnx":  # the image tower is exported from the CPU fp32 model
        saved = (ns.runtime, ns.device, ns.precision)
        ns.runtime, ns.device, ns.precision = "torch", "cpu", "fp32"
        try:
            clip = _load_model(ns, base_identity(stored) if stored is not None else None)
        finally:
            ns.runtime, ns.device, ns.precision = saved
        return wrap_runtime(clip, ns)
    device = resolve_device(ns.device)
    if ns.model is None and ns.pretrained is None and stored is not None:
        return load_clip_from_identity(stored, device=device, precision=ns.precision)
    model = ns.model or (stored or {}).get("name") or "ViT-B-32"
    if ns.pretrained is not None:
        pretrained = ns.pretrained
    elif stored is not None and stored.get("name") == model:
        model, pretrained = identity_load_args(stored)  # the stored model, by the one spec rule
    else:
        pretrained = None  # load_clip: what the model name implies
    return load_clip(model, pretrained or None, device=device, precision=ns.precision)


def _names_stored_model(ns, stored: dict | None) -> bool:
    """Whether --model/--pretrained (each optional) name the model the index was built with."""
    if not stored:
        return False
    if ns.model is not None and ns.model != stored.get("name"):
        return False
    return ns.pretrained is None or ns.pretrained == stored.get("pretrained")


def _sampler(ns, stored: dict | None):
    from vidclip.video.sample import SamplerConfig

    given = {k: v for k, v in (("name", ns.sampler), ("fps", ns.fps), ("window", ns.window), ("stride", ns.stride),
                               ("num_frames", ns.num_frames), ("max_frames", ns.max_frames)) if v is not None}
    for name, value in given.items():
        if name != "name" and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if stored is not None:
        return SamplerConfig.from_dict({**stored, **given})
    return SamplerConfig.index_default(**given)


def _search_params(ns) -> dict[str, int]:
    """--search-params, with --nprobe / --ef-search (its short forms) over it; checked."""
    from vidclip.index.designs import parse_search_params

    return {**parse_search_params(ns.search_params),
            **parse_search_params({"nprobe": ns.nprobe, "efSearch": ns.ef_search})}


def _rate(per_s: float) -> str:
    """A rate rounded for reading: whole numbers from 100 up, else 3 significant figures
    (848.85 -> "849", 12.345 -> "12.3", 0.4567 -> "0.457")."""
    return f"{per_s:.0f}" if per_s >= 100 else f"{float(f'{per_s:.3g}'):g}"


def _print_report(report, index_dir, verb: str, as_json: bool) -> int:
    from vidclip.cli.options import print_json

    for f in report.failed:
        print(f"vidclip {verb}: {display_path(f['path'])}: {display_path(f['reason'])}", file=sys.stderr)
    for w in report.warnings:  # malformed subtitles, refused clip.json: the videos are indexed anyway
        print(f"vidclip {verb}: warning: {w}", file=sys.stderr)
    d = report.to_dict()
    if as_json:
        print_json(d)
    else:
        rate = (f", {_rate(d['videos_per_s'])} videos/s, {_rate(d['frames_per_s'])} frames/s"
                if d["indexed"] and d["seconds"] else "")
        # the whole run's time (scan, model or Ray start-up, encoding, commits); the progress bar's rate
        # counts encoding only
        print(f"indexed {d['indexed']} video{'' if d['indexed'] == 1 else 's'} ({d['frames']} frames, "
              f"{d['seconds']:.1f} s in all{rate}), "
              f"{d['unchanged']} unchanged, {d['deleted']} deleted, {len(d['failed'])} failed "
              f"-> {index_dir} ({d['total_indexed']} videos searchable)")
        if d["text_updated"]:
            print(f"read the words of {d['text_updated']} unchanged video(s) again (subtitles or metadata changed)")
        if d["orphans_removed"]:
            print(f"removed {d['orphans_removed']} uncommitted shard(s) left by an interrupted run")
        if d["temps_removed"]:
            print(f"removed {d['temps_removed']} faiss temp file(s) left by an interrupted save")
        if d.get("partitions_reused"):
            print(f"committed {d['partitions_reused']} partition(s) an interrupted Ray run had staged")
    for lost in report.lost:
        print(f"vidclip {verb}: {display_path(lost['path'])}: stored frames lost ({display_path(lost['reason'])}); "
              "re-encoding it when its library is indexed", file=sys.stderr)
    return 1 if report.failed else 0


# ----------------------------------------------------------------------------- verbs


def cmd_index(ns: argparse.Namespace) -> int:
    from vidclip.cli.options import print_json
    from vidclip.features.pooling import temporal_path
    from vidclip.index.build import IndexOptions, index_library, index_report, merge_index

    modes = [m for m in (ns.library, ns.merge, ns.report, ns.check_recall, ns.verify) if m is not None]
    if len(modes) != 1:
        raise ConfigError("give exactly one of: LIBRARY (with --index), --merge OTHER_DIR (with --index), --report DIR, "
                          "--check-recall DIR, --verify DIR")
    if ns.verify is not None:
        return _verify(ns)
    if ns.check_recall is not None:
        return _check_recall(ns)
    if ns.report is not None:
        rep = index_report(ns.report)
        if ns.json:
            print_json(rep)
        else:
            c = rep["counts"]
            print(f"{rep['index']}: {c['indexed']} indexed, {c['failed']} failed, {c['deleted']} deleted "
                  f"({c['segments']} windows); model {rep['model'] and rep['model'].get('name')}, "
                  f"temporal {rep['temporal'] and rep['temporal'].get('name')}")
            knobs = f", {rep['search_params']}" if rep["search_params"] else ""
            print(f"faiss designs: videos {rep['designs']['videos']}, segments {rep['designs']['segments']}{knobs} "
                  f"(measure them with --check-recall)")
            for f in rep["failed"]:
                print(f"failed: {display_path(f['path'])}: {display_path(f['reason'])}")
        return 0
    if ns.index is None:
        raise ConfigError("--index DIR is required")
    index_dir = Path(ns.index)
    if ns.merge is not None:
        report = merge_index(ns.merge, index_dir)
        return _print_report(report, index_dir, "index", ns.json)
    # Everything that can be wrong with the input is checked before a model loads (seconds to minutes).
    if ns.workers < 0 or ns.batch_frames <= 0 or ns.commit_every <= 0:
        raise ConfigError("--workers must be >= 0, --batch-frames and --commit-every > 0")
    search_params = _search_params(ns)
    from vidclip.cli.options import check_runtime_args

    check_runtime_args(ns)
    temporal_path(ns.temporal)  # an existing checkpoint, or mean
    from vidclip.cli.options import ray_options_from_args
    from vidclip.index.directory import IndexDir
    from vidclip.index.scan import scan_library

    ray = ray_options_from_args(ns)
    folder = IndexDir(index_dir)
    folder.check_path()
    if folder.path.is_dir():
        folder.refuse_damage()  # a lost or unreadable catalog, before reading it below
    library = scan_library(ns.library)  # a missing library or a bad CSV row, before the model loads
    metadata = None
    if ns.metadata is not None:
        from vidclip.index.metadata import read_metadata_csv

        metadata = read_metadata_csv(ns.metadata)  # a bad row is one line, before the model loads
    stored = folder.read_meta("model", "sampler", "temporal")
    if stored.get("model") and ns.runtime is not None:  # features of one precision per index
        from vidclip.models.clip.onnx_runtime import identity_precision

        have, want = identity_precision(stored["model"]), "int8" if ns.precision == "int8" else "fp32"
        if have != want:
            raise ConfigError(f"--index {display_path(index_dir)}: its frames were encoded at {have}"
                              f"{' (--runtime onnx --precision int8)' if have == 'int8' else ''}; --runtime {ns.runtime} "
                              f"--precision {ns.precision} would add {want} features to it; use another --index")
    sampler = _sampler(ns, stored.get("sampler"))
    from vidclip.encode.options import EncodeOptions

    encode = EncodeOptions(sampler=sampler, workers=ns.workers, backend=ns.backend, decode_device=ns.decode_device,
                           batch_frames=ns.batch_frames, shard_size=ns.commit_every,
                           progress=not (ns.json or ns.quiet), engine=ns.engine, ray=ray)
    if _names_stored_model(ns, stored.get("model")):
        # the index's own model: index_library loads it only if some video must be encoded (and
        # checks then that its identity is the stored one), so a no-op re-index loads no model
        def clip():
            return _load_model(ns, stored["model"])
        name, random_weights = stored["model"].get("name"), bool(stored["model"].get("random_weights"))
    else:
        clip = _load_model(ns, stored.get("model"))
        name, random_weights = clip.identity.name, clip.identity.random_weights
    if random_weights:
        print("vidclip index: note: the model has RANDOM weights; the index is for testing only, search results "
              "are not meaningful.", file=sys.stderr)
    from vidclip.video.provenance import synthetic_model_warning

    warning = synthetic_model_warning(str(name), ns.library)
    if warning:
        print(f"vidclip index: {warning}", file=sys.stderr)
    temporal = ns.temporal
    if temporal is None:
        spec = stored.get("temporal") or {"name": "mean"}
        temporal = spec.get("path") if spec.get("name") == "checkpoint" else "mean"
    options = IndexOptions(encode=encode, temporal=temporal, design=ns.design,
                           segment_design=ns.segment_design or ns.design, search_params=search_params,
                           retry_failed=ns.retry_failed, metadata=metadata)
    report = index_library(library, index_dir, clip, options)
    return _print_report(report, index_dir, "index", ns.json)


def _verify(ns: argparse.Namespace) -> int:
    from vidclip.cli.options import print_json
    from vidclip.index.verify import verify_index

    result = verify_index(ns.verify)
    if ns.json:
        print_json(result)
    else:
        for f in result["findings"]:
            fix = f["repair"] or "NOT REPAIRED" + (f": {f['advice']}" if f.get("advice") else "")
            print(f"{f['file']}: {f['problem']} -> {fix}")
        c = result["counts"]
        state = "OK" if result["ok"] else "PROBLEMS LEFT"
        print(f"{result['index']}: {state}; {len(result['findings'])} finding(s)"
              + (f"; {c['indexed']} indexed, {c['failed']} failed" if c else ""))
    return 0 if result["ok"] else 1


def _check_recall(ns: argparse.Namespace) -> int:
    from vidclip.cli.options import print_json
    from vidclip.index.recall import check_recall

    if ns.min_recall is not None and not 0.0 <= ns.min_recall <= 1.0:
        raise ConfigError(f"--min-recall must be within [0, 1], got {ns.min_recall}")
    search_params = _search_params(ns)
    texts, clip = None, None
    if ns.query_texts is not None:
        path = Path(ns.query_texts)
        from vidclip.core.textio import read_text_lines  # a BOM dropped, bad bytes named by line

        texts = read_text_lines(path, error=ConfigError)
        if not any(t.strip() for t in texts):
            raise ConfigError(f"--query-texts {path}: no non-empty lines")
        from vidclip.index.directory import IndexDir

        meta = IndexDir(ns.check_recall).read_meta("model")
        if meta.get("model"):
            from vidclip.cli.options import resolve_device
            from vidclip.models.clip.load import load_clip_from_identity

            clip = load_clip_from_identity(meta["model"], device=resolve_device(ns.device))
    result = check_recall(ns.check_recall, k=ns.k, num_queries=ns.queries, seed=ns.seed, texts=texts, clip=clip,
                          search_params=search_params)
    low = [kind for kind in ("videos", "segments")
           if ns.min_recall is not None and result[kind]["recall"] < ns.min_recall]
    if ns.json:
        print_json({**result, "min_recall": ns.min_recall, "passed": not low})
    else:
        if result["random_weights"]:
            print("vidclip index: note: the index's model has RANDOM weights; its vectors (and this recall) say "
                  "nothing about a real library.", file=sys.stderr)
        for kind in ("videos", "segments"):
            print(result[kind]["verdict"])
        if low:
            print(f"recall below --min-recall {ns.min_recall}: {', '.join(low)}", file=sys.stderr)
    return 1 if low else 0


def _read_queries(path: Path) -> list[tuple[str | None, str]]:
    """``--queries FILE``: one query per line, or JSON Lines of {"query": ..., "id": ...} (id optional).
    Returns [(id or None, text)]; blank lines and ``#`` comments of a plain file are skipped."""
    # one reader for users' text files: a BOM dropped, each bad line named
    from vidclip.core.textio import parse_json, read_text_lines

    lines = read_text_lines(path, error=ConfigError)
    out: list[tuple[str | None, str]] = []
    for no, line in enumerate(lines, 1):
        text = line.strip()
        if not text or (text.startswith("#")):
            continue
        if text.startswith("{"):
            obj = parse_json(text, path, no, error=ConfigError)
            query = obj.get("query") if isinstance(obj, dict) else None
            if not isinstance(query, str) or not query.strip():
                raise ConfigError(f"--queries {path}: line {no}: field 'query' missing or empty")
            qid = obj.get("id")
            out.append((None if qid is None else str(qid), query.strip()))
        else:
            out.append((None, text))
    if not out:
        raise ConfigError(f"--queries {path}: no queries in it")
    return out


def cmd_search(ns: argparse.Namespace) -> int:
    import json

    from vidclip.cli.options import print_json
    from vidclip.index.search import MAX_RERANK, VideoIndex

    query = " ".join(ns.query or []).strip()
    given = [name for name, value in (("QUERY", query), ("--queries", ns.queries), ("--image", ns.image),
                                      ("--video", ns.video)) if value]
    if len(given) != 1:
        raise ConfigError("give exactly one of: a QUERY text, --image FILE, --video FILE, --queries FILE"
                          + (f" (got {' and '.join(given)})" if given else ""))
    if not 0 <= ns.rerank <= MAX_RERANK:
        raise ConfigError(f"--rerank must be within 0..{MAX_RERANK}, got {ns.rerank}")
    if ns.k <= 0:
        raise ConfigError(f"-k must be positive, got {ns.k}")
    batch = _read_queries(Path(ns.queries)) if ns.queries else None
    from vidclip.index.filters import parse_filters

    filters = {"path": ns.path, "min_duration": ns.min_duration, "max_duration": ns.max_duration,
               "modified_after": ns.modified_after, "modified_before": ns.modified_before, "meta": ns.meta}
    parse_filters(**filters, cli=True)  # a bad value is one line naming the option, before the model loads
    if not 0.0 <= ns.text_weight <= 1.0:
        raise ConfigError(f"--text-weight must be within 0..1, got {ns.text_weight}")
    if ns.mode not in (None, "visual") and (ns.image or ns.video):
        raise ConfigError(f"--mode {ns.mode}: words are searched for a text query; --image and --video are visual")
    if ns.mode not in (None, "visual") and ns.segments:
        raise ConfigError(f"--mode {ns.mode}: --segments ranks windows by the picture only (use --mode visual)")
    for name, value in (("--image", ns.image), ("--video", ns.video)):
        if value is not None and not Path(value).is_file():
            what = "a folder, not a file" if Path(value).is_dir() else "no such file"
            raise ConfigError(f"{name} {display_path(value)}: {what}")
    from vidclip.index.directory import IndexDir

    index_dir = IndexDir.require(ns.index)  # before torch or the model loads
    # a text query on an index with its ONNX text tower imports no torch (VideoIndex.open); the
    # model loads (on --device, "auto" resolved then) only for what needs it
    index = VideoIndex.open(index_dir, device=ns.device)
    opts = {"segments": ns.segments, "rerank": ns.rerank, **filters}
    words = {"mode": ns.mode, "fusion": ns.fusion, "text_weight": ns.text_weight}
    try:
        random_weights = bool(index.identity.get("random_weights"))
        if not ns.json or batch is not None:
            if random_weights:
                print("vidclip search: note: the index's model has RANDOM weights; rankings are not meaningful.",
                      file=sys.stderr)
            from vidclip.video.provenance import synthetic_model_warning

            warning = synthetic_model_warning(str(index.identity.get("name")), index.library_root)
            if warning:
                print(f"vidclip search: {warning}", file=sys.stderr)
        if batch is not None:  # one model load, one JSON line per query
            for qid, text in batch:
                hits = index.search(text, ns.k, **opts, **words)
                rec = {"id": qid, "query": text, "hits": [h.to_dict() for h in hits]} if qid is not None else \
                    {"query": text, "hits": [h.to_dict() for h in hits]}
                print(json.dumps(rec, ensure_ascii=False), flush=True)
            return 0
        if ns.image is not None:
            hits, source = index.search_image(ns.image, ns.k, **opts), {"image": str(Path(ns.image).resolve())}
        elif ns.video is not None:
            hits, source = index.search_video(ns.video, ns.k, **opts), {"video": str(Path(ns.video).resolve())}
        else:
            hits, source = index.search(query, ns.k, **opts, **words), {"query": query}
    finally:
        index.close()
    if ns.json:
        print_json({**source, "index": str(Path(ns.index).resolve()), "segments": ns.segments,
                    "rerank": ns.rerank, "random_weights": random_weights,
                    **({"filters": parse_filters(**filters).to_dict()} if any(v is not None for v in filters.values())
                       else {}),
                    "hits": [h.to_dict() for h in hits]})
        return 0
    if not hits:
        print("no results (is the index empty?)")
    for rank, h in enumerate(hits, 1):
        frame = f"  best frame {_ts(h.frame_time)}" if h.frame_time is not None else ""
        print(f"{rank:3d}. {h.score:+.4f}  {display_path(h.path)}  [{_ts(h.start)} - {_ts(h.end)}] of {_ts(h.duration)}"
              f"{frame}  (id {h.video_id})")
        text = (h.match or {}).get("text")
        if text:
            where = text["kind"] if text["kind"] == "name" else f"{text['kind']} {text['source']}"
            if text["start"] is not None:
                where += f" [{_ts(text['start'])} - {_ts(text['end'])}]"
            snippet = text["text"] if len(text["text"]) <= 80 else text["text"][:77] + "..."
            seen = "; also by the picture" if "visual" in h.match else ""
            print(f"       words {', '.join(text['words'])}: {where}: {snippet!r}{seen}")
    return 0


def _ts(seconds: float) -> str:
    m, s = divmod(max(0.0, float(seconds)), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"
