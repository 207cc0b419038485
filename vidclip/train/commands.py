"""``vidclip train`` (a YAML-configured training run, vidclip/train/trainer.py), ``vidclip pretrain-synth``
(vidclip/train/pretrain.py) and ``vidclip convert-checkpoint`` (vidclip/train/convert_run.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vidclip.cli.options import add_verb_parser

__all__ = ["add_train_parser", "cmd_train", "add_pretrain_parser", "cmd_pretrain", "add_convert_parser", "cmd_convert"]

_EPILOG = """\
examples:
  vidclip train configs/synth_seq_transformer.yaml
  vidclip train configs/msrvtt_mean.yaml optim.lr=3e-4 optim.batch_size=128 data.root=/data/msrvtt
  vidclip train configs/synth_mean.yaml model.text_tower=finetune name=synth_mean_ft
  vidclip train runs/synth_mean --resume              # continue an interrupted run
  vidclip train configs/msrvtt_seq_transformer.yaml --prepare-only   # build the caches once, then:
  accelerate launch --num_processes 2 -m vidclip train configs/msrvtt_seq_transformer.yaml

Overrides are dotted keys of the config (data.*, model.*, optim.*, and top-level keys such as
name, seed, run_dir, mixed_precision); values are checked against the key's type.
"""


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb_parser(
        subparsers, "train", help="train a temporal module (and optionally the text tower) on cached frame features",
        description="Train a temporal module with symmetric InfoNCE on a video-caption dataset. Frame "
                    "features are encoded once into the cache (a feature store) and reused; validation "
                    "videos are held out of the training split for model selection. Runs on CPU, one GPU, "
                    "or several (accelerate launch).",
        examples=_EPILOG)
    p.add_argument("config", metavar="CONFIG",
                   help="YAML config (see configs/), or a run dir (uses its config.yaml; for --resume)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. optim.lr=3e-4 model.temporal=seq_transformer")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in the config's run_dir from its last checkpoint (exactly: same "
                        "batches, same RNG); the config must be the one the run started with")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                   help="stop after this many optimizer steps in this invocation, saving a checkpoint to "
                        "--resume from (the LR schedule still spans the whole run)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--prepare-only", action="store_true",
                   help="only build the caches (frame features of the training videos, frozen-tower caption "
                        "embeddings) and exit; do this once before a multi-process run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=cmd_train)
    return p


def _check_config_args(config: str | None, overrides: list[str], missing_hint: str, example: str) -> None:
    """The checks of a YAML-configured verb that need no torch (the training config module imports it):
    the file exists, each override is KEY=VALUE."""
    from vidclip.core.config import split_override
    from vidclip.core.errors import ConfigError

    if config is not None and not Path(config).exists():
        raise ConfigError(f"{config}: {missing_hint}")
    for item in overrides:
        split_override(item, example)


def _resolve_config(ns: argparse.Namespace):
    from vidclip.core.errors import ConfigError

    path = Path(ns.config)
    _check_config_args(ns.config, ns.overrides, "config file not found (see configs/*.yaml)", "optim.lr=3e-4")
    if path.is_dir() and not (path / "config.yaml").is_file():
        raise ConfigError(f"{path}: a directory but not a run dir (no config.yaml)")
    if ns.stop_after is not None and ns.stop_after <= 0:
        raise ConfigError(f"--stop-after must be positive, got {ns.stop_after}")
    from vidclip.train.config import apply_overrides, load_config
    from vidclip.train.run_state import load_run_config

    if path.is_dir():
        return apply_overrides(load_run_config(path), ns.overrides)
    return load_config(path, ns.overrides)


def _in_config_words(message: str) -> str:
    """A load_clip hint, spelled as `vidclip train` takes it (config keys, not CLI options)."""
    return (message.replace("`--pretrained ", "`model.pretrained=").replace("`--model ", "`model.clip=")
            .replace("--model/--pretrained", "model.clip=/model.pretrained="))


def cmd_train(ns: argparse.Namespace) -> int:
    from vidclip.core.errors import WeightsNotFoundError

    try:
        return _run_train(ns)
    except WeightsNotFoundError as e:
        raise WeightsNotFoundError(_in_config_words(str(e))) from e


def _run_train(ns: argparse.Namespace) -> int:
    cfg = _resolve_config(ns)  # checks the arguments before importing torch
    from vidclip.train.config import dump_config
    from vidclip.train.trainer import train

    if ns.print_config:
        sys.stdout.write(dump_config(cfg))
        return 0
    if ns.prepare_only:
        from vidclip.train.trainer import prepare

        summary = prepare(cfg, progress=not (ns.quiet or ns.json))
        if ns.json:
            json.dump(summary, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(f"prepared: {summary['encoded']} videos encoded into {summary['features']}, "
                  f"{len(summary['failed'])} failed" + (f"; captions cached in {summary['text_cache']}"
                                                         if "text_cache" in summary else ""))
        for f in summary["failed"]:
            print(f"vidclip train: {f['path']}: {f['reason']}", file=sys.stderr)
        return 1 if summary["failed"] else 0
    result = train(cfg, resume=ns.resume, stop_after=ns.stop_after, progress=not (ns.quiet or ns.json))
    if not result.is_main:
        return 0  # one summary per run, from the main process
    summary = {
        "run_dir": str(result.run_dir), "global_step": result.global_step, "epochs_done": result.epoch,
        "best_score": result.best_score, "best_step": result.best_step, "stopped": result.stopped,
        "seconds": round(result.seconds, 2), "last_val": result.last_val,
    }
    if ns.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        state = "stopped (resume with --resume)" if result.stopped else "done"
        best = f", best {cfg.select_metric} {result.best_score:.2f} at step {result.best_step}" \
            if result.best_score is not None else ""
        print(f"{state}: {result.global_step} steps in {result.seconds:.1f} s{best} -> {result.run_dir}")
        if result.last_val:
            from vidclip.eval.metrics import format_metrics_table

            print(format_metrics_table({"validation": result.last_val}))
    return 0


# ----------------------------------------------------------------------------- pretrain-synth

_PRETRAIN_DESCRIPTION = (
    "Pretrain the small synthetic-domain CLIP (vidclip-synth) on single frames of `vidclip synth` data "
    "with frame-level captions (shape, colour, size, background and the object's 3x3 position), using "
    "vidclip's contrastive loss. Deterministic; a few minutes on 2 CPU cores. The result knows only "
    "that synthetic world.")


def _add_pretrain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                   help="YAML recipe (default: built-in, = configs/pretrain_synth_clip.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="recipe overrides, e.g. optim.steps=100 data.root=/tmp/synth")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder for {model}.safetensors and {model}.json (default: the recipe's out)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or loss lines")
    p.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")


def cmd_pretrain(ns: argparse.Namespace) -> int:
    from vidclip.core.errors import ConfigError

    config, overrides = ns.config, list(ns.overrides)
    if config is not None and "=" in config and not Path(config).exists():
        config, overrides = None, [config] + overrides  # `pretrain-synth optim.steps=10`
    _check_config_args(config, overrides, "pretraining recipe not found (see configs/pretrain_synth_clip.yaml)",
                       "optim.steps=100")
    if ns.out is not None and Path(ns.out).exists() and not Path(ns.out).is_dir():
        raise ConfigError(f"--out {ns.out}: exists and is not a folder")
    from vidclip.synthetic.captions import ATTRIBUTES
    from vidclip.train.pretrain import load_pretrain_config, pretrain

    cfg = load_pretrain_config(config, overrides)
    if ns.print_config:
        from vidclip.core.config import dump_dataclass_yaml

        sys.stdout.write(dump_dataclass_yaml(cfg))
        return 0
    from tqdm.auto import tqdm

    log = None if ns.quiet else (lambda s: tqdm.write(s, file=sys.stderr))
    res = pretrain(cfg, ns.out, progress=not ns.quiet, log=log, command=ns.command)
    m = res.metrics
    print(f"wrote {res.checkpoint} ({res.checkpoint.stat().st_size / 1e6:.1f} MB) and {res.metadata}")
    print(f"{len(res.losses)} steps in {res.train_seconds:.0f} s; loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}")
    print("held-out frame->caption accuracy: " + ", ".join(
        f"{a} {m[a]:.3f}" for a in (*ATTRIBUTES, "all")) + f"; position R^2 {m.get('position_r2', float('nan')):.3f}")
    return 0


def add_pretrain_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``pretrain-synth`` on an argparse subparsers object (for vidclip/cli/main.py)."""
    p = subparsers.add_parser("pretrain-synth", help="pretrain the synthetic-domain CLIP (vidclip-synth)",
                              description=_PRETRAIN_DESCRIPTION)
    _add_pretrain_arguments(p)
    p.set_defaults(func=cmd_pretrain, command="vidclip pretrain-synth " + " ".join(sys.argv[2:]))
    return p


# ----------------------------------------------------------------------------- convert-checkpoint

_CONVERT_EPILOG = """\
examples:
  vidclip convert-checkpoint --from clip4clip ckpts/pytorch_model.bin.4 --out runs/c4c_seqtransf
  vidclip convert-checkpoint --from xpool model_best.pth --out runs/xpool --model ViT-B-32 --pretrained openai
  vidclip eval runs/c4c_seqtransf --data data/msrvtt
"""


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``convert-checkpoint`` (:func:`vidclip.train.convert_run.convert_checkpoint`)."""
    p = add_verb_parser(
        subparsers, "convert-checkpoint", help="turn a CLIP4Clip / CLIP2Video / X-Pool checkpoint into a vidclip run dir",
        description="Map the temporal module of an official checkpoint onto vidclip's (mean, seq_transformer, "
                    "tdb, xpool) and write a run dir that eval, index --temporal and serve use. The checkpoint's "
                    "fine-tuned CLIP is written beside it (clip_finetuned.safetensors) and becomes the run's "
                    "frozen CLIP, unless --model names another one.",
        examples=_CONVERT_EPILOG)
    p.add_argument("checkpoint", metavar="FILE", help="official checkpoint (pytorch_model.bin.N, model_best.pth)")
    p.add_argument("--from", dest="source", required=True, choices=["clip4clip", "clip2video", "xpool"],
                   help="code that trained it")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run dir to write")
    p.add_argument("--model", default=None,
                   help="use this frozen CLIP instead of the checkpoint's fine-tuned one (then the run is NOT the "
                        "official model: its temporal module was trained on other features)")
    p.add_argument("--pretrained", default=None, help="weights of --model (tag or file)")
    p.add_argument("--xpool-heads", type=int, default=1,
                   help="X-Pool's --num_mha_heads (not stored in the checkpoint; default: %(default)s)")
    p.add_argument("--drop-tab", action="store_true",
                   help="CLIP2Video: convert the TDB branch and drop TAB (the result is not the released model)")
    p.add_argument("--data", default="data/msrvtt", help="dataset root recorded in the run (default: %(default)s)")
    p.add_argument("--num-frames", type=int, default=12, help="frames per video recorded in the run (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace a run already in RUN_DIR")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_convert)
    return p


def cmd_convert(ns: argparse.Namespace) -> int:
    from vidclip.core.errors import ConfigError
    from vidclip.train.convert_run import convert_checkpoint

    if ns.pretrained is not None and ns.model is None:
        raise ConfigError("--pretrained needs --model")
    if ns.num_frames <= 0 or ns.xpool_heads <= 0:
        raise ConfigError("--num-frames and --xpool-heads must be positive")
    summary = convert_checkpoint(ns.checkpoint, ns.out, ns.source, clip_model=ns.model, clip_pretrained=ns.pretrained,
                                 xpool_heads=ns.xpool_heads, drop_tab=ns.drop_tab, data_root=ns.data,
                                 num_frames=ns.num_frames, overwrite=ns.force)
    if ns.json:
        print(json.dumps(summary, indent=2))
        return 0
    clip = summary["clip"]
    print(f"{summary['run_dir']}: {summary['source']} -> {summary['temporal']} {summary['temporal_args'] or ''}".rstrip())
    print(f"  frozen CLIP: {clip['model']} {clip['pretrained']}"
          + (" (the checkpoint's fine-tuned CLIP)" if clip["finetuned_from_checkpoint"] else ""))
    for note in summary["notes"]:
        print(f"  note: {note}")
    return 0
