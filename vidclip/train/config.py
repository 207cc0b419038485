"""Training configuration: dataclasses, YAML files and ``key=value`` overrides.

A config has three sections plus run-level settings::

    name: synth_mean
    seed: 0
    data:   {root: ..., cache_dir: ..., num_frames: 12, ...}      -> DataConfig
    model:  {clip: ..., pretrained: ..., temporal: mean, ...}     -> ModelConfig (vidclip.models.checkpoint)
    optim:  {batch_size: 64, epochs: 10, lr: 1e-4, ...}           -> OptimConfig

Every value is type checked against the dataclass field (an int where a float is expected is
fine; ``"abc"`` for an int is not), every key must exist, and choice fields are checked against
their allowed values. Errors are :class:`~vidclip.core.errors.ConfigError` naming the file (or the
override) and the dotted key, with a "did you mean" for misspellings.

Overrides (``vidclip train CONFIG optim.lr=3e-4 model.temporal_args.layers=2``) are parsed from
their text by the field type: ``3e-4`` is a float, ``none``/``null`` clears an optional field,
and free-form dict fields (``model.temporal_args``) take YAML values.

The machinery is generic: :func:`build_dataclass`, :func:`apply_dataclass_overrides` and
:func:`load_dataclass_yaml` work on any tree of dataclasses whose leaf fields are ``int``,
``float``, ``bool``, ``str``, ``dict``, ``list`` or ``X | None``, given a ``check(dotted, value,
where)`` callable with the value rules (ranges, choices) that raises ConfigError.
:class:`TrainConfig` uses it with :data:`CHOICES`/:data:`POSITIVE`/:data:`NON_NEGATIVE` and
:func:`check_train_value`; the pretraining recipe (:mod:`vidclip.train.pretrain`) with its own rules.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence, TypeVar

import yaml

from vidclip.core.errors import ConfigError
from vidclip.models.checkpoint import ModelConfig

__all__ = ["DataConfig", "ModelConfig", "OptimConfig", "TrainConfig", "load_config", "apply_overrides",
           "config_from_dict", "config_to_dict", "dump_config", "check_train_value", "check_listed_rules", "ValueCheck",
           "build_dataclass", "apply_dataclass_overrides", "load_dataclass_yaml"]

T = TypeVar("T")

#: ``check(dotted_key, value, where)``: raise ConfigError when a (type-correct) leaf value breaks a
#: rule of the config (a range, a choice). ``where`` names the file or the override.
ValueCheck = Callable[[str, Any, str], None]


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

_NONE_WORDS = ("none", "null", "~", "")
_EXAMPLE = "optim.lr=3e-4"


# ----------------------------------------------------------------------------- type checking


def _is_optional(tp) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _type_name(tp) -> str:
    opt, base = _is_optional(tp)
    name = getattr(base, "__name__", str(base))
    return f"{name} or null" if opt else name


def _coerce(value: Any, tp, where: str, *, from_text: bool = False) -> Any:
    """Check/convert ``value`` to field type ``tp``; ``from_text`` = value is override text."""
    optional, base = _is_optional(tp)
    if from_text:
        if optional and value.strip().lower() in _NONE_WORDS:
            return None
        if base is str:
            return value
        if base in (dict, list):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise ConfigError(f"{where}: cannot parse {value!r} as YAML: {e}") from e
        elif base is bool:
            low = value.strip().lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        elif base is int:
            try:
                return int(value)
            except ValueError:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        elif base is float:
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: must not be null (expected {_type_name(tp)})")
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # PyYAML reads 1e-4 (no dot) as a string; accept numeric strings in files too.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if base is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if base is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return list(value)
    raise ConfigError(f"{where}: unsupported field type {tp}")  # pragma: no cover - programming error


def _fields(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown(key: str, where: str, known: Sequence[str]) -> ConfigError:
    by_leaf = {k.split(".")[-1]: k for k in known}
    close = difflib.get_close_matches(key.split(".")[-1], list(by_leaf), n=1)
    hint = f"; did you mean {by_leaf[close[0]]!r}?" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint} (known: {', '.join(sorted(known))})")


def check_listed_rules(dotted: str, value: Any, where: str, *, choices: Mapping[str, Sequence],
                       positive: Collection[str], non_negative: Collection[str]) -> None:
    """The rules a config states as lists: ``dotted`` in ``choices`` takes one of its values, in
    ``positive`` must be > 0, in ``non_negative`` >= 0. ConfigError naming ``where`` and the key."""
    if dotted in choices and value not in choices[dotted]:
        raise ConfigError(f"{where}: {dotted} must be one of {list(choices[dotted])}, got {value!r}")
    if dotted in positive and not value > 0:
        raise ConfigError(f"{where}: {dotted} must be > 0, got {value!r}")
    if dotted in non_negative and value < 0:
        raise ConfigError(f"{where}: {dotted} must be >= 0, got {value!r}")


def check_train_value(dotted: str, value: Any, where: str) -> None:
    """The value rules of :class:`TrainConfig` (a :data:`ValueCheck`)."""
    check_listed_rules(dotted, value, where, choices=CHOICES, positive=POSITIVE, non_negative=NON_NEGATIVE)
    if dotted == "data.val_fraction" and not 0 < value < 1:
        raise ConfigError(f"{where}: data.val_fraction must be in (0, 1), got {value!r}")
    if dotted == "optim.warmup" and not 0 <= value < 1:
        raise ConfigError(f"{where}: optim.warmup is a fraction of the steps, in [0, 1), got {value!r}")
    if dotted == "optim.logit_scale_init" and not 0 < value <= 100:
        raise ConfigError(f"{where}: optim.logit_scale_init must be in (0, 100], got {value!r}")


# ----------------------------------------------------------------------------- generic machinery


def build_dataclass(cls: type[T], data: Mapping, where: str, check: ValueCheck, *, prefix: str = "") -> T:
    """A checked ``cls`` instance from a nested mapping (missing keys keep their defaults).

    Args:
        cls: the root dataclass; fields that are dataclasses are sections (nested mappings).
        data: the values, e.g. a parsed YAML file.
        where: what the errors name first (a file path, ``"overrides"``).
        check: the value rules, called with every leaf's dotted key after its type is checked.
        prefix: dotted key of ``cls`` inside a larger config (``"optim."``); ``""`` for the root.

    Raises:
        ConfigError: ``"{where}: {dotted.key}: ..."`` for a value of the wrong type, a broken rule,
            or an unknown key (with a "did you mean" and the known keys).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: section {prefix.rstrip('.') or 'top level'!r} must be a mapping, got {data!r}")
    fields = _fields(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = prefix + str(key)
        if key not in fields:
            raise _unknown(dotted, where, [prefix + k for k in fields])
        tp = fields[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build_dataclass(tp, value if value is not None else {}, where, check, prefix=dotted + ".")
        else:
            kwargs[key] = _coerce(value, tp, f"{where}: {dotted}")
            check(dotted, kwargs[key], where)
    return cls(**kwargs)


def apply_dataclass_overrides(cfg: T, overrides: Sequence[str], check: ValueCheck, *,
                              example: str = "section.key=value") -> T:
    """Apply ``dotted.key=value`` overrides to a dataclass config; returns a new one (``cfg`` is kept).

    The value text is typed by the field: ``int``/``float`` parse numbers (``3e-4``), ``bool``
    takes true/false/yes/no/on/off/1/0, ``none``/``null``/``~``/empty clears an ``X | None`` field,
    ``str`` is taken verbatim, ``dict``/``list`` take YAML; a key below a ``dict`` field
    (``model.temporal_args.layers=2``) sets one entry of that free-form mapping (YAML value).
    Errors name the override and the dotted key; ``example`` is shown when ``=`` is missing.
    """
    data = dataclasses.asdict(cfg)
    root = type(cfg)
    for item in overrides:
        where = f"override {item!r}"
        if "=" not in item:
            raise ConfigError(f"{where}: expected KEY=VALUE (e.g. {example})")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        cls, node = root, data
        for i, part in enumerate(parts):
            fields = _fields(cls)
            dotted = ".".join(parts[: i + 1])
            prefix = ".".join(parts[:i])
            if part not in fields:
                raise _unknown(dotted, where, [f"{prefix}.{k}" if prefix else k for k in fields])
            tp = fields[part]
            last = i == len(parts) - 1
            if dataclasses.is_dataclass(tp):
                if last:
                    raise ConfigError(f"{where}: {dotted} is a section; set one of its keys "
                                      f"({', '.join(dotted + '.' + k for k in _fields(tp))})")
                cls, node = tp, node[part]
                continue
            if last:
                # a field may keep some words as text that would otherwise clear it (model.pretrained=none
                # means random weights, not "unset")
                words = {f.name: f.metadata for f in dataclasses.fields(cls)}[part].get("text_words", ())
                if text.strip().lower() in words:
                    node[part] = text.strip().lower()
                else:
                    node[part] = _coerce(text, tp, f"{where}: {dotted}", from_text=True)
                check(dotted, node[part], where)
            elif _is_optional(tp)[1] is dict:
                # free-form mapping (model.temporal_args.layers=2): the rest of the key is its path
                sub = node.setdefault(part, {}) or {}
                node[part] = sub
                for p in parts[i + 1:-1]:
                    sub = sub.setdefault(p, {})
                    if not isinstance(sub, dict):
                        raise ConfigError(f"{where}: {key}: {p!r} is not a mapping")
                try:
                    sub[parts[-1]] = yaml.safe_load(text)
                except yaml.YAMLError as e:
                    raise ConfigError(f"{where}: cannot parse {text!r} as YAML: {e}") from e
            else:
                raise ConfigError(f"{where}: {dotted} is a {_type_name(tp)}, it has no key {parts[i + 1]!r}")
            break
    return build_dataclass(root, data, "overrides", check)


def load_dataclass_yaml(cls: type[T], path: str | os.PathLike | None, overrides: Sequence[str], check: ValueCheck,
                        *, missing_hint: str = "config file not found", defaults: Mapping[str, Any] | None = None,
                        example: str = "section.key=value") -> T:
    """Read a YAML file into a checked ``cls``, then apply ``overrides`` (:func:`apply_dataclass_overrides`).

    Args:
        cls: the root dataclass.
        path: the YAML file; ``None`` starts from ``cls()`` (the built-in defaults).
        overrides: ``dotted.key=value`` strings, applied after the file.
        check: the value rules (:data:`ValueCheck`).
        missing_hint: the error for a missing file, after ``"{path}: "``.
        defaults: top-level values used where the file does not set them (``{"name": stem}``).
        example: an override shown when one lacks ``=``.

    Errors from the file name the file (``"{path}: optim.lr: expected a number ..."``), errors from
    an override name the override.
    """
    if path is None:
        cfg = cls()
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: {missing_hint}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
        data = data or {}  # an empty file: all defaults
        if defaults and isinstance(data, Mapping):
            data = {**defaults, **data}
        cfg = build_dataclass(cls, data, str(path), check)
    return apply_dataclass_overrides(cfg, overrides, check, example=example)


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
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
