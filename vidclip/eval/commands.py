"""``vidclip eval``: retrieval metrics of a trained checkpoint or of zero-shot pooling."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["add_eval_parser", "cmd_eval"]

_EPILOG = """\
examples:
  vidclip eval runs/synth_seq_transformer                 # best checkpoint, the config's test split
  vidclip eval runs/msrvtt_mean/best.safetensors --dsl --json --out results.json
  vidclip eval --zero-shot --data /data/msrvtt --model ViT-B-32 --pretrained openai
                                                           # features cached in cache/msrvtt-vit-b-32/features
"""


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    from vidclip.cli.options import add_model_args, add_verb_parser

    p = add_verb_parser(
        subparsers, "eval", help="text-to-video / video-to-text retrieval metrics (R@1/5/10, MdR, MnR)",
        description="Evaluate retrieval on a dataset split: a trained checkpoint (run dir or .safetensors), "
                    "or --zero-shot pooling of any CLIP's frame features. Videos without cached features are "
                    "encoded into the feature store first.",
        examples=_EPILOG)
    p.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT",
                   help="run dir (uses best.safetensors, else last) or a .safetensors checkpoint of `vidclip train`")
    p.add_argument("--zero-shot", action="store_true",
                   help="no checkpoint: evaluate parameter-free modules (--modules) on the --model CLIP")
    p.add_argument("--modules", default="mean,query_scoring",
                   help="zero-shot modules, comma separated (default: %(default)s)")
    g = p.add_argument_group("data (defaults: the checkpoint's config)")
    g.add_argument("--data", default=None, help="dataset root (MSR-VTT layout, or see --kind)")
    g.add_argument("--kind", default=None, help="dataset reader: msrvtt, msvd, didemo, jsonl (default: msrvtt)")
    g.add_argument("--split", default=None, help="split to evaluate (default: the config's test split, else test)")
    g.add_argument("--features", default=None,
                   help="feature store folder; missing or changed videos are encoded into it (default: the "
                        "checkpoint's cache; zero-shot: cache/<dataset folder>-<model>/features)")
    g.add_argument("--num-frames", type=int, default=None,
                   help="frames per video given to the module (default: the config's, else 12)")
    g.add_argument("--encode-frames", type=int, default=None,
                   help="frames per video stored when encoding missing videos (default: the config's, else "
                        "the --features store's, else 12)")
    g.add_argument("--workers", type=int, default=2, help="decoding processes when encoding (default: %(default)s)")
    g.add_argument("--no-encode", action="store_true", help="fail instead of encoding videos missing from the store (or changed since)")
    o = p.add_argument_group("output")
    o.add_argument("--dsl", action="store_true",
                   help="also report dual-softmax (DSL) inference numbers, separately from the default ones")
    o.add_argument("--dsl-temperature", type=float, default=0.01,
                   help="DSL softmax temperature on cosine similarities (default: %(default)s)")
    o.add_argument("--batch-videos", type=int, default=256, help="videos per module call (default: %(default)s)")
    o.add_argument("--json", action="store_true", help="print JSON instead of a table")
    o.add_argument("--out", default=None, help="also write the JSON result to this file (atomically)")
    add_model_args(p, runtime=True)  # --runtime onnx [--precision int8] for --zero-shot
    p.set_defaults(func=cmd_eval)
    return p


def _feature_source(ns, clip, ds, features: Path, encode_frames: int, num_frames: int, *, log):
    """Open the store, encoding the split's videos that are missing or changed (unless --no-encode)."""
    from vidclip.core.errors import VidclipError
    from vidclip.eval.evaluate import FeatureSource
    from vidclip.features.cache import check_features
    from vidclip.features.store import FeatureStore

    videos = [(v.video_id, str(v.path)) for v in ds.videos]
    found = check_features(features, clip.identity, videos, encode_frames=encode_frames,
                           for_encoding=not ns.no_encode, elsewhere="use another --features folder")
    if found.missing and ns.no_encode:
        first = found.missing[0][0]
        why = "its file changed since it was encoded" if first in set(found.changed) else "not encoded"
        raise VidclipError(f"{features}: {len(found.missing)} of {len(ds)} videos of {ds.name} have no current "
                           f"features (first: {first}: {why}); run without --no-encode to encode them")
    if found.missing:
        from vidclip.encode.pipeline import encode_videos
        from vidclip.video.sample import SamplerConfig

        if found.changed:
            log(f"{features}: {len(found.changed)} videos changed since their features were encoded "
                f"(first: {found.changed[0]}); encoding them again")
        report = encode_videos(found.missing, features, clip, SamplerConfig("uniform", num_frames=encode_frames),
                               workers=ns.workers, backend="auto", progress=not ns.json)
        for f in report.failed:
            log(f"{f.path}: {f.reason}")
        if report.failed:
            raise VidclipError(f"{len(report.failed)} videos of {ds.name} could not be encoded; metrics over a "
                               "partial test set would not be comparable")
    return FeatureSource(FeatureStore(features), num_frames)


def _run_data(run_config: dict) -> dict:
    """The data settings of a checkpoint's saved training config (a plain mapping: eval never needs
    vidclip.train). An official file loaded in memory has none: the training defaults apply."""
    name = str(run_config.get("name", "run"))
    data = {"kind": "msrvtt", "root": "data/msrvtt", "test_split": "test", "cache_dir": "cache/{name}",
            "features": None, "num_frames": 12, "encode_frames": 12, **(run_config.get("data") or {})}
    features = data["features"] or str(Path(data["cache_dir"]) / "features")
    data["features_dir"] = Path(features.format(name=name))
    return data


def cmd_eval(ns: argparse.Namespace) -> int:
    from vidclip.cli.options import model_from_args, resolve_device
    from vidclip.core.errors import ConfigError
    from vidclip.core.fileio import atomic_write_text
    from vidclip.data.datasets import load_dataset
    from vidclip.features.cache import check_whole_videos, default_features_dir
    from vidclip.video.provenance import synthetic_model_warning

    def log(line: str) -> None:
        print(f"vidclip eval: {line}", file=sys.stderr)

    if bool(ns.checkpoint) == bool(ns.zero_shot):
        raise ConfigError("give a CHECKPOINT (run dir or .safetensors) or --zero-shot, not both / neither")
    _check_inputs(ns)

    loaded = None
    if ns.checkpoint:
        from vidclip.models.checkpoint import load_checkpoint

        loaded = load_checkpoint(ns.checkpoint, device=resolve_device(ns.device))
        data = _run_data(loaded.run_config)
        clip = loaded.clip
        kind, root = ns.kind or data["kind"], ns.data or data["root"]
        split = ns.split or data["test_split"]
        features = Path(ns.features) if ns.features else data["features_dir"]
        num_frames = ns.num_frames or data["num_frames"]
        encode_frames = ns.encode_frames or data["encode_frames"]
    else:
        if not ns.data:
            raise ConfigError("--zero-shot needs --data (the dataset root)")
        kind, root, split = ns.kind or "msrvtt", ns.data, ns.split or "test"
        ds = load_dataset(kind, root, split)  # a missing or malformed dataset, before the model loads
        check_whole_videos([ds])
        clip = model_from_args(ns)
        num_frames = ns.num_frames or 12
        encode_frames = ns.encode_frames or _stored_uniform_frames(ns.features) or 12
        features = Path(ns.features) if ns.features else default_features_dir(root, clip.identity, encode_frames)
    if num_frames <= 0 or encode_frames <= 0:
        raise ConfigError("--num-frames and --encode-frames must be positive")
    from vidclip.eval.evaluate import PixelSource, evaluate, format_results, zero_shot  # torch

    if loaded is not None:
        ds = load_dataset(kind, root, split)
        check_whole_videos([ds])
    footage = root if Path(root).is_dir() else os.path.commonpath([str(v.path) for v in ds.videos[:8]])
    warning = synthetic_model_warning(clip.identity.name, footage)
    if warning:
        log(warning)
    captions, cv, keys = ds.captions, ds.caption_video, ds.video_ids
    if loaded is not None:
        module = loaded.model.temporal
        if getattr(module, "needs_pixels", False):
            source = PixelSource({v.video_id: str(v.path) for v in ds.videos}, num_frames, clip.image_size)
        else:
            source = _feature_source(ns, clip, ds, features, encode_frames, num_frames, log=log)
        name = f"{loaded.model_config.temporal}" + (" +text-ft" if loaded.model.text_tower is not None else "")
        results = {name: evaluate(module, captions, cv, keys, source, clip=clip, text_tower=loaded.model.text_tower,
                                  dsl=ns.dsl, dsl_temperature=ns.dsl_temperature, device=clip.device,
                                  batch_videos=ns.batch_videos, name=name)}
    else:
        modules = [m.strip() for m in ns.modules.split(",") if m.strip()]
        source = _feature_source(ns, clip, ds, features, encode_frames, num_frames, log=log)
        results = zero_shot(clip, captions, cv, keys, source, modules=modules, dsl=ns.dsl,
                            batch_videos=ns.batch_videos)

    random_weights = bool(clip.identity.random_weights)
    out = {
        "mode": "checkpoint" if loaded is not None else "zero-shot",
        "checkpoint": str(loaded.path) if loaded is not None else None,
        "dataset": ds.name, "split": split, "num_captions": len(captions), "num_videos": len(keys),
        "num_frames": num_frames, "features": None if isinstance(source, PixelSource) else str(features),
        "model": clip.identity.to_dict(),
        "results": {n: _rounded(r.metrics) for n, r in results.items()},
    }
    if ns.dsl:
        out["dsl"] = {n: _rounded(r.dsl) for n, r in results.items()}
        out["dsl_temperature"] = ns.dsl_temperature
    warnings = (["the CLIP has RANDOM weights: these numbers are meaningless"] if random_weights else []) + (
        [warning.removeprefix("warning: ")] if warning else [])
    if warnings:
        out["warning"] = "; ".join(warnings)
    if ns.out:
        Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(ns.out, json.dumps(out, indent=2) + "\n")
    if ns.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        title = (f"{ds.name} ({len(captions)} captions, {len(keys)} videos, {num_frames} frames/video), "
                 f"CLIP {clip.identity.name}")
        print(format_results(results, title=title))
        if random_weights:
            print("WARNING: the CLIP has RANDOM weights: these numbers are meaningless.")
    return 0


def _check_inputs(ns: argparse.Namespace) -> None:
    """What can be checked before torch and a model load: the checkpoint and the folders given
    exist, the output file can be written, the numbers are positive."""
    from vidclip.core.errors import ConfigError, display_path

    if ns.checkpoint and not os.path.exists(ns.checkpoint):
        raise ConfigError(f"{display_path(ns.checkpoint)}: checkpoint not found (a run dir of `vidclip train` or its "
                          ".safetensors file)")
    if ns.data and not os.path.exists(ns.data):
        raise ConfigError(f"--data {display_path(ns.data)}: no such dataset folder")
    if ns.features and os.path.exists(ns.features) and not os.path.isdir(ns.features):
        raise ConfigError(f"--features {display_path(ns.features)}: exists and is not a folder (a feature store is one)")
    if ns.out:
        if os.path.isdir(ns.out):
            raise ConfigError(f"--out {display_path(ns.out)}: is a folder; give the JSON file to write")
        parent = Path(ns.out).expanduser().resolve().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {display_path(ns.out)}: cannot be written ({display_path(parent)} is not a "
                              "writable folder)")
    for name, value in (("--num-frames", ns.num_frames), ("--encode-frames", ns.encode_frames),
                        ("--batch-videos", ns.batch_videos), ("--workers", ns.workers)):
        if value is not None and value <= (-1 if name == "--workers" else 0):
            raise ConfigError(f"{name} must be {'>= 0' if name == '--workers' else 'positive'}, got {value}")
    if ns.dsl_temperature <= 0:
        raise ConfigError(f"--dsl-temperature must be positive, got {ns.dsl_temperature}")


def _stored_uniform_frames(features: str | None) -> int | None:
    """Frames per video of an existing uniform-sampled store at ``features`` (None otherwise):
    what zero-shot encodes missing videos with when --encode-frames is not given."""
    from vidclip.features.store import STORE_FILE, read_store_header

    if not features or not (Path(features) / STORE_FILE).is_file():
        return None
    sampler = read_store_header(features).get("sampler") or {}
    return int(sampler["num_frames"]) if sampler.get("name") == "uniform" and sampler.get("num_frames") else None


def _rounded(metrics: dict) -> dict:
    """Metrics as reported: percentages and mean ranks to 0.01 (what a test set can resolve)."""
    return {d: {k: round(v, 2) if isinstance(v, float) else v for k, v in m.items()} for d, m in metrics.items()}
