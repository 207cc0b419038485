"""Training configuration: dataclasses, YAML files and ``key=value`` overrides.

A config has three sections plus run-level settings::

    name: synth_mean
    seed: 0
    data:   {root: ..., cache_dir: ..., num_frames: 12, ...}      -> DataConfig
    model:  {clip: ..., pretrained: ..., temporal: mean, ...}     -> ModelConfig (vidclip.models.checkpoint)
    optim:  {batch_size: 64, epochs: 10, lr: 1e-4, ...}           -> OptimConfig

Values are type checked against the dataclass fields, unknown keys and broken rules are
:class:`~vidclip.core.errors.ConfigError` naming the file (or the override) and the dotted key:
the generic dataclass + YAML machinery of :mod:`vidclip.core.config`, given the training rules
(:data:`CHOICES`/:data:`POSITIVE`/:data:`NON_NEGATIVE` and :func:`check_train_value`).
Overrides (``vidclip train CONFIG optim.lr=3e-4 model.temporal_args.layers=2``) are parsed from
their text by the field type.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vidclip.core.config import (
    apply_dataclass_overrides,
    build_dataclass,
    check_listed_rules,
    dump_dataclass_yaml,
    load_dataclass_yaml,
)
from vidclip.core.errors import ConfigError
from vidclip.models.checkpoint import ModelConfig

__all__ = ["DataConfig", "ModelConfig", "OptimConfig", "TrainConfig", "load_config", "apply_overrides",
           "config_from_dict", "config_to_dict", "dump_config", "check_train_value"]


@dataclass
class DataConfig:
    """Where the videos and captions come from, and where their features are cached."""

    root: str = "data/msrvtt"  # dataset folder (MSR-VTT layout: videos/, MSRVTT_data.json, split csvs)
    kind: str = "msrvtt"  # dataset reader passed to vidclip.data.datasets.load_dataset
    train_split: str = "train"  # split to train on (model selection uses a part of it)
    test_split: str = "test"  # split `vidclip eval` reports on (never used for selection)
    val_fraction: float = 0.1  # fraction of training videos held out for model selection
    val_seed: int = 0  # seed of that hold-out
    # Runs of this many consecutive training videos (in the split list's order) always share a
    # batch and the same side of the validation hold-out. 2 with `vidclip synth --train-twins`
    # data: every clip meets its time-reversed twin as a negative, which is what teaches direction.
    group_size: int = 1
    cache_dir: str = "cache/{name}"  # frame features (features/) and text embeddings (text/)
    features: str | None = None  # an existing feature store; default {cache_dir}/features
    num_frames: int = 12  # frames per video given to the temporal module
    encode_frames: int = 12  # frames per video the prepare step stores (uniform sampler)
    encode_workers: int = 2  # decoding processes of the prepare step
    backend: str = "auto"  # decoder of the prepare step / pixel training


@dataclass
class OptimConfig:
    """AdamW with warmup and a cosine (or constant) schedule."""

    batch_size: int = 64  # global batch (all processes together); must divide by the process count
    epochs: int = 5
    max_steps: int = 0  # > 0: stop after this many optimizer steps (the schedule spans them)
    lr: float = 1e-4  # temporal module and logit scale
    text_lr: float = 1e-5  # text tower (text_tower: finetune)
    weight_decay: float = 0.2  # not applied to biases, norms, embeddings and the logit scale
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup: float = 0.1  # fraction of all steps spent warming up linearly from 0
    schedule: str = "cosine"  # cosine | constant | linear (decay after warmup)
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    logit_scale_init: float = 1.0 / 0.07


@dataclass
class TrainConfig:
    name: str = "run"
    seed: int = 0
    run_dir: str = "runs/{name}"  # checkpoints, config.yaml and metrics.jsonl go here
    mixed_precision: str = "no"  # no | fp16 | bf16 (accelerate autocast)
    device: str = "auto"  # auto (GPU when present; accelerate picks which) | cpu
    eval_every: int = 1  # validate every N epochs (and at the end)
    eval_batch: int = 256  # videos per chunk when building validation similarities
    select_metric: str = "rsum"  # rsum (t2v R@1+R@5+R@10 on validation) | t2v_r1
    log_every: int = 10  # steps between metrics.jsonl lines
    save_every: int = 0  # steps between resumable checkpoints (0 = at each epoch end only)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    @property
    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir.format(name=self.name))

    @property
    def resolved_cache_dir(self) -> Path:
        return Path(self.data.cache_dir.format(name=self.name))

    @property
    def features_dir(self) -> Path:
        if self.data.features:
            return Path(self.data.features.format(name=self.name))
        return self.resolved_cache_dir / "features"


CHOICES: dict[str, tuple[str, ...]] = {
    "model.text_tower": ("frozen", "finetune"),
    "optim.schedule": ("cosine", "constant", "linear"),
    "mixed_precision": ("no", "fp16", "bf16"),
    "select_metric": ("rsum", "t2v_r1"),
    "device": ("auto", "cpu"),  # GPUs are chosen by accelerate (CUDA_VISIBLE_DEVICES, accelerate launch)
}
POSITIVE = {"data.group_size", "optim.batch_size", "optim.epochs", "data.num_frames", "data.encode_frames", "model.max_frames",
            "eval_batch", "log_every", "eval_every"}
NON_NEGATIVE = {"optim.max_steps", "optim.lr", "optim.text_lr", "optim.weight_decay", "optim.grad_clip",
                "save_every", "data.encode_workers"}

_EXAMPLE = "optim.lr=3e-4"


# ----------------------------------------------------------------------------- value rules


def check_train_value(dotted: str, value: Any, where: str) -> None:
    """The value rules of :class:`TrainConfig` (a :data:`vidclip.core.config.ValueCheck`)."""
    check_listed_rules(dotted, value, where, choices=CHOICES, positive=POSITIVE, non_negative=NON_NEGATIVE)
    if dotted == "data.val_fraction" and not 0 < value < 1:
        raise ConfigError(f"{where}: data.val_fraction must be in (0, 1), got {value!r}")
    if dotted == "optim.warmup" and not 0 <= value < 1:
        raise ConfigError(f"{where}: optim.warmup is a fraction of the steps, in [0, 1), got {value!r}")
    if dotted == "optim.logit_scale_init" and not 0 < value <= 100:
        raise ConfigError(f"{where}: optim.logit_scale_init must be in (0, 100], got {value!r}")


# ----------------------------------------------------------------------------- public API


def config_from_dict(data: dict, where: str = "config") -> TrainConfig:
    """Build a checked TrainConfig from a nested dict (missing keys keep their defaults)."""
    return build_dataclass(TrainConfig, data or {}, where, check_train_value)


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """Apply ``dotted.key=value`` overrides (returns a new config; ``cfg`` is not changed)."""
    return apply_dataclass_overrides(cfg, overrides, check_train_value, example=_EXAMPLE)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config file, check it, and apply overrides.

    A config's ``name`` defaults to its file name (``configs/synth_mean.yaml`` -> ``synth_mean``).
    """
    path = Path(path)
    return load_dataclass_yaml(TrainConfig, path, overrides, check_train_value,
                               missing_hint="config file not found (see configs/*.yaml)",
                               defaults={"name": path.stem}, example=_EXAMPLE)


def dump_config(cfg: TrainConfig) -> str:
    """The resolved config as YAML text (what the run dir's config.yaml holds)."""
    return dump_dataclass_yaml(cfg)
