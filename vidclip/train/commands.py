"""``vidclip train``: run a YAML-configured training run (see vidclip/train/trainer.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_train_parser", "cmd_train"]

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
    p = subparsers.add_parser(
        "train",
        help="train a temporal module (and optionally the text tower) on cached frame features",
        description="Train a temporal module with symmetric InfoNCE on a video-caption dataset. Frame "
                    "features are encoded once into the cache (a feature store) and reused; validation "
                    "videos are held out of the training split for model selection. Runs on CPU, one GPU, "
                    "or several (accelerate launch).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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


def _resolve_config(ns: argparse.Namespace):
    from ..errors import ConfigError
    from .config import apply_overrides, load_config
    from .trainer import load_run_config

    path = Path(ns.config)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise ConfigError(f"{path}: a directory but not a run dir (no config.yaml)")
        return apply_overrides(load_run_config(path), ns.overrides)
    return load_config(path, ns.overrides)


def _in_config_words(message: str) -> str:
    """A load_clip hint, spelled as `vidclip train` takes it (config keys, not CLI options)."""
    return (message.replace("`--pretrained ", "`model.pretrained=").replace("`--model ", "`model.clip=")
            .replace("--model/--pretrained", "model.clip=/model.pretrained="))


def cmd_train(ns: argparse.Namespace) -> int:
    from ..errors import WeightsNotFoundError

    try:
        return _run_train(ns)
    except WeightsNotFoundError as e:
        raise WeightsNotFoundError(_in_config_words(str(e))) from e


def _run_train(ns: argparse.Namespace) -> int:
    from .config import dump_config
    from .trainer import train

    cfg = _resolve_config(ns)
    if ns.print_config:
        sys.stdout.write(dump_config(cfg))
        return 0
    if ns.prepare_only:
        from .trainer import prepare

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
    if ns.stop_after is not None and ns.stop_after <= 0:
        from ..errors import ConfigError

        raise ConfigError(f"--stop-after must be positive, got {ns.stop_after}")
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
            from ..eval.metrics import format_metrics_table

            print(format_metrics_table({"validation": result.last_val}))
    return 0
