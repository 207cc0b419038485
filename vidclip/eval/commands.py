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
  vidclip eval --zero-shot --data /data/msrvtt --features cache/msrvtt-b32/features \\
               --model ViT-B-32 --pretrained openai
"""


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    from ..cli_options import add_model_args

    p = subparsers.add_parser(
        "eval",
        help="text-to-video / video-to-text retrieval metrics (R@1/5/10, MdR, MnR)",
        description="Evaluate retrieval on a dataset split: a trained checkpoint (run dir or .safetensors), "
                    "or --zero-shot pooling of any CLIP's frame features. Videos without cached features are "
                    "encoded into the feature store first.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
                   help="feature store folder; missing videos are encoded into it (default: the checkpoint's cache)")
    g.add_argument("--num-frames", type=int, default=None,
                   help="frames per video given to the module (default: the config's, else 12)")
    g.add_argument("--encode-frames", type=int, default=None,
                   help="frames per video stored when encoding missing videos (default: the config's, else 12)")
    g.add_argument("--workers", type=int, default=2, help="decoding processes when encoding (default: %(default)s)")
    g.add_argument("--no-encode", action="store_true", help="fail instead of encoding videos missing from the store")
    o = p.add_argument_group("output")
    o.add_argument("--dsl", action="store_true",
                   help="also report dual-softmax (DSL) inference numbers, separately from the default ones")
    o.add_argument("--dsl-temperature", type=float, default=0.01,
                   help="DSL softmax temperature on cosine similarities (default: %(default)s)")
    o.add_argument("--batch-videos", type=int, default=256, help="videos per module call (default: %(default)s)")
    o.add_argument("--json", action="store_true", help="print JSON instead of a table")
    o.add_argument("--out", default=None, help="also write the JSON result to this file (atomically)")
    add_model_args(p)
    p.set_defaults(func=cmd_eval)
    return p


def _write_json_atomic(path: str, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _feature_source(ns, clip, ds, features: Path, encode_frames: int, num_frames: int):
    """Open the store, encoding the split's videos that are missing (unless --no-encode)."""
    from ..data.features import STORE_FILE, FeatureStore
    from ..errors import VidclipError
    from .evaluate import FeatureSource

    have = FeatureStore(features) if (features / STORE_FILE).is_file() else None
    todo = [(v.video_id, str(v.path)) for v in ds.videos if have is None or v.video_id not in have]
    if todo:
        if ns.no_encode:
            raise VidclipError(f"{features}: {len(todo)} of {len(ds)} videos of {ds.name} have no features "
                               f"(first: {todo[0][0]}); run without --no-encode to encode them")
        from ..pipeline import encode_videos
        from ..video.sample import SamplerConfig

        report = encode_videos(todo, features, clip, SamplerConfig("uniform", num_frames=encode_frames),
                               workers=ns.workers, backend="auto", progress=not ns.json)
        for f in report.failed:
            print(f"vidclip eval: {f.path}: {f.reason}", file=sys.stderr)
        if report.failed:
            raise VidclipError(f"{len(report.failed)} videos of {ds.name} could not be encoded; metrics over a "
                               "partial test set would not be comparable")
    store = FeatureStore(features)
    from ..models.clip import ModelIdentity

    if ModelIdentity.from_dict(store.model).key() != clip.identity.key():
        raise VidclipError(f"{features}: features were encoded with {store.model.get('name')}, not with "
                           f"{clip.identity.name}; use another --features folder")
    return FeatureSource(store, num_frames)


def cmd_eval(ns: argparse.Namespace) -> int:
    from ..cli_options import model_from_args, resolve_device
    from ..data.datasets import load_dataset
    from ..errors import ConfigError
    from .evaluate import PixelSource, evaluate, format_results, zero_shot

    if bool(ns.checkpoint) == bool(ns.zero_shot):
        raise ConfigError("give a CHECKPOINT (run dir or .safetensors) or --zero-shot, not both / neither")

    loaded = None
    if ns.checkpoint:
        from ..train.model import load_checkpoint

        loaded = load_checkpoint(ns.checkpoint, device=resolve_device(ns.device))
        cfg = loaded.config
        clip = loaded.clip
        kind, root = ns.kind or cfg.data.kind, ns.data or cfg.data.root
        split = ns.split or cfg.data.test_split
        features = Path(ns.features) if ns.features else cfg.features_dir
        num_frames = ns.num_frames or cfg.data.num_frames
        encode_frames = ns.encode_frames or cfg.data.encode_frames
    else:
        if not ns.data or not ns.features:
            raise ConfigError("--zero-shot needs --data (dataset root) and --features (feature store folder)")
        clip = model_from_args(ns)
        kind, root, split = ns.kind or "msrvtt", ns.data, ns.split or "test"
        features = Path(ns.features)
        num_frames = ns.num_frames or 12
        encode_frames = ns.encode_frames or 12
    if num_frames <= 0 or encode_frames <= 0:
        raise ConfigError("--num-frames and --encode-frames must be positive")

    ds = load_dataset(kind, root, split)
    from ..train.trainer import check_whole_videos

    check_whole_videos([ds])
    captions, cv, keys = ds.captions, ds.caption_video, ds.video_ids
    if loaded is not None:
        module = loaded.model.temporal
        if getattr(module, "needs_pixels", False):
            source = PixelSource({v.video_id: str(v.path) for v in ds.videos}, num_frames, clip.image_size)
        else:
            source = _feature_source(ns, clip, ds, features, encode_frames, num_frames)
        name = f"{cfg.model.temporal}" + (" +text-ft" if loaded.model.text_tower is not None else "")
        results = {name: evaluate(module, captions, cv, keys, source, clip=clip, text_tower=loaded.model.text_tower,
                                  dsl=ns.dsl, dsl_temperature=ns.dsl_temperature, device=clip.device,
                                  batch_videos=ns.batch_videos, name=name)}
    else:
        modules = [m.strip() for m in ns.modules.split(",") if m.strip()]
        source = _feature_source(ns, clip, ds, features, encode_frames, num_frames)
        results = zero_shot(clip, captions, cv, keys, source, modules=modules, dsl=ns.dsl,
                            batch_videos=ns.batch_videos)

    random_weights = bool(clip.identity.random_weights)
    out = {
        "mode": "checkpoint" if loaded is not None else "zero-shot",
        "checkpoint": str(loaded.path) if loaded is not None else None,
        "dataset": ds.name, "split": split, "num_captions": len(captions), "num_videos": len(keys),
        "num_frames": num_frames, "model": clip.identity.to_dict(),
        "results": {n: r.metrics for n, r in results.items()},
    }
    if ns.dsl:
        out["dsl"] = {n: r.dsl for n, r in results.items()}
        out["dsl_temperature"] = ns.dsl_temperature
    if random_weights:
        out["warning"] = "the CLIP has RANDOM weights: these numbers are meaningless"
    if ns.out:
        _write_json_atomic(ns.out, out)
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
