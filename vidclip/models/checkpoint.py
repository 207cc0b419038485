"""A trained model: its config section, text tower, temporal module, weights and checkpoint files.

This is the one home of a trained model, so that reading a checkpoint (search, eval, serve)
needs only ``vidclip.models`` and the checkpoint's ``model`` section, never the training package.
Training (``vidclip.train``) adds what only it needs: the loss wrapper, ``save_weights``.

:class:`TextTower` is a trainable copy of a FrozenCLIP's text side (``text_tower: finetune``):
the vision tower is left out of the copy, so fine-tuning the text side cannot touch it.

Checkpoint files (safetensors) hold the state dict of a :class:`RetrievalModel`: ``temporal.*``,
``logit_scale.log_scale`` and, when fine-tuned, ``text_tower.net.*``; the metadata holds the
resolved training config (JSON), the CLIP identity, step and epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from vidclip.core.errors import ConfigError, VidclipError
from vidclip.core.fileio import atomic_path
from vidclip.models.clip.spec import RANDOM_WEIGHTS_WORDS

__all__ = [
    "CHECKPOINT_FORMAT",
    "ModelConfig",
    "model_config_from_dict",
    "LogitScale",
    "TextTower",
    "RetrievalModel",
    "build_temporal",
    "load_weights",
    "LoadedCheckpoint",
    "load_checkpoint",
    "load_official",
    "cached_text_embeddings",
    "path_for_run",
    "resolve_in_run",
]

CHECKPOINT_FORMAT = "vidclip-train-1"
INIT_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0


@dataclass
class ModelConfig:
    """The frozen CLIP, the trained temporal module and the text side (a config's ``model`` section)."""

    clip: str = "ViT-B-32"  # load_clip model spec
    # load_clip pretrained tag / file / folder; null = what `clip` implies (shipped weights of
    # vidclip-synth, openai for an open_clip architecture, ...); none = random weights
    pretrained: str | None = field(default=None, metadata={"text_words": RANDOM_WEIGHTS_WORDS})
    temporal: str = "mean"  # registered temporal module (vidclip.models.list_temporal())
    temporal_args: dict = field(default_factory=dict)  # extra keyword arguments of create_temporal
    max_frames: int = 32  # longest frame sequence the module accepts (position embeddings)
    text_tower: str = "frozen"  # frozen: text embeddings cached once; finetune: text tower trains too


def model_config_from_dict(data: dict, where: str = "model") -> ModelConfig:
    """A :class:`ModelConfig` from a checkpoint's saved ``model`` section (unknown keys are an error)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the model section must be a mapping, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(ModelConfig)]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key model.{key}{hint}")
    return ModelConfig(**data)


class LogitScale(nn.Module):
    """Learnable ``s = exp(t)``, initialised to 1/0.07 and kept <= 100 (CLIP's clamp).

    The parameter is the log of the scale (as in CLIP). ``forward`` clamps the value it returns,
    and :meth:`clamp_` clamps the parameter itself; the trainer calls it after every optimizer
    step, as open_clip does, so the parameter never drifts above log(100).
    """

    def __init__(self, init: float = 1.0 / INIT_TEMPERATURE, max_scale: float = MAX_LOGIT_SCALE):
        super().__init__()
        if not 0 < init <= max_scale:
            raise ValueError(f"logit scale init must be in (0, {max_scale}], got {init}")
        self.max_log = math.log(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init), dtype=torch.float32))

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log).exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_scale.clamp_(0.0, self.max_log)


class TextTower(nn.Module):
    """Trainable copy of the text side of a FrozenCLIP.

    ``forward(ids LongTensor [Q, L]) -> float [Q, D]`` (not normalised), the same computation as
    ``FrozenCLIP.encode_text`` but with gradients. The copy excludes the vision tower (open_clip
    ``visual``; transformers ``vision_model`` + ``visual_projection``) and keeps CLIP's own logit
    scale frozen (the retrieval model has its own).
    """

    def __init__(self, clip):
        super().__init__()
        src = clip.model
        if clip.family == "open_clip":
            skip = [getattr(src, "visual", None)]
        else:
            skip = [getattr(src, "vision_model", None), getattr(src, "visual_projection", None)]
        # deepcopy's memo maps an object's id to its copy: mapping the vision modules to None
        # copies the model without them (and without touching the frozen original).
        memo: dict[int, Any] = {id(m): None for m in skip if m is not None}
        self.net = copy.deepcopy(src, memo)
        for name, p in self.net.named_parameters():
            p.requires_grad_(not name.split(".")[-1].startswith("logit_"))
        self.net.train()
        self.family = clip.family
        # pad / eos ids build the transformers attention mask (unused for open_clip)
        impl = clip._tokenizer.impl if clip.family == "hf" else None
        self.pad_id = getattr(impl, "pad_token_id", None)
        self.eos_id = getattr(impl, "eos_token_id", None)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # FrozenCLIP's own text path (EOT pooling, HF attention mask), run on the trainable copy.
        from vidclip.models.clip.load import text_features_from_ids

        return text_features_from_ids(self.net, self.family, ids, pad_id=self.pad_id, eos_id=self.eos_id)


def build_temporal(model_cfg: ModelConfig, clip) -> nn.Module:
    """``create_temporal`` from a config's model section (module name, embed dim, max frames, extra args)."""
    from vidclip.models.temporal.registry import create_temporal, list_temporal

    name = model_cfg.temporal
    if name not in list_temporal():
        raise ConfigError(f"model.temporal: unknown temporal module {name!r}; one of {list_temporal()}")
    try:
        return create_temporal(name, clip.embed_dim, max_frames=model_cfg.max_frames, clip=clip,
                               **model_cfg.temporal_args)
    except TypeError as e:
        raise ConfigError(f"model.temporal_args: {e} (module {name!r})") from e


class RetrievalModel(nn.Module):
    """Temporal module + learnable logit scale (+ text tower): what a checkpoint holds.

    ``encode_text(text_in)``: float [n, D] cached text embeddings (frozen text tower) pass
    through; LongTensor [n, L] token ids go through the fine-tuned text tower. Training wraps
    this with its loss (``vidclip.train.model.TrainingModel``); the state-dict names are the same.
    """

    def __init__(self, temporal: nn.Module, logit_scale: LogitScale, text_tower: TextTower | None = None):
        super().__init__()
        self.temporal = temporal
        self.logit_scale = logit_scale
        self.text_tower = text_tower

    def encode_text(self, text_in: torch.Tensor) -> torch.Tensor:
        if self.text_tower is None:
            return text_in.float()
        return self.text_tower(text_in).float()


# ----------------------------------------------------------------------------- files


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata with JSON values decoded) of a checkpoint written by save_weights."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise VidclipError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any parse error means "not a checkpoint"
        raise VidclipError(f"{path}: not a readable safetensors checkpoint ({type(e).__name__}: {e})") from e
    if raw.get("format") != CHECKPOINT_FORMAT:
        raise VidclipError(f"{path}: not a vidclip training checkpoint (format {raw.get('format')!r})")
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    return state, meta


@dataclass
class LoadedCheckpoint:
    """A trained model ready for evaluation.

    ``model_config`` is the checkpoint's model section; ``run_config`` the whole saved training
    config as a plain mapping (its ``data`` section tells eval where the run's data was), ``{}``
    for an official file loaded in memory.
    """

    model_config: ModelConfig
    clip: Any  # FrozenCLIP
    model: RetrievalModel
    meta: dict
    path: Path
    run_config: dict = field(default_factory=dict)


def load_checkpoint(path: str | os.PathLike, *, device: str = "cpu", clip=None,
                    source: str | None = None) -> LoadedCheckpoint:
    """Rebuild the RetrievalModel of a checkpoint (a .safetensors file or a run dir: best, else last).

    The CLIP named in the checkpoint's model section is loaded (or ``clip`` is used, after
    checking that its weights are the ones the checkpoint was trained on). An official CLIP4Clip /
    CLIP2Video / X-Pool file (``source=``, or a torch pickle file) is converted in memory by
    :func:`load_official` (it needs ``clip``).
    """
    from vidclip.models.convert import conform_converted, is_official_checkpoint

    if source is not None or is_official_checkpoint(path):
        return load_official(path, source, clip=clip, device=device)
    p = Path(path)
    if p.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise VidclipError(f"{path}: run dir holds neither best.safetensors nor last.safetensors")
    state, meta = load_weights(p)
    run_config = meta.get("config")
    if not isinstance(run_config, dict) or "model" not in run_config:
        raise VidclipError(f"{p}: checkpoint metadata holds no model section (config.model)")
    model_cfg = model_config_from_dict(run_config["model"], where=f"{p} (metadata)")
    ident = meta.get("clip_identity") or {}
    if clip is None:
        from vidclip.models.clip.load import load_clip

        pretrained = resolve_in_run(model_cfg.pretrained, p.parent)
        if pretrained is None and ident.get("random_weights"):
            pretrained = "none"  # trained on a random CLIP: not the weights the name implies
        clip = load_clip(model_cfg.clip, pretrained, device=device)
    if ident.get("weights_digest") and clip.identity.weights_digest != ident["weights_digest"]:
        raise VidclipError(
            f"{p}: trained on CLIP weights {ident.get('weights_digest')} ({ident.get('name')}), but the "
            f"loaded model has {clip.identity.weights_digest}; pass the same --model/--pretrained")
    with warnings.catch_warnings():
        # how the module would be initialised (text-tower copy or random) does not matter: the
        # checkpoint's weights replace it right below, so its init notices would be noise
        warnings.simplefilter("ignore")
        temporal = build_temporal(model_cfg, clip)
    if meta.get("converted_from"):  # official numerics the state dict does not hold (convert-checkpoint)
        conform_converted(temporal, meta["converted_from"])
    text_tower = TextTower(clip) if model_cfg.text_tower == "finetune" else None
    model = RetrievalModel(temporal, LogitScale(), text_tower)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VidclipError(f"{p}: checkpoint does not match model {model_cfg.temporal!r}: "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.to(clip.device).eval()
    return LoadedCheckpoint(model_cfg, clip, model, meta, p, run_config)


def path_for_run(pretrained: str | None, run_dir: str | os.PathLike) -> str | None:
    """``model.pretrained`` as a run stores it: a file or folder inside ``run_dir`` relative to it
    (POSIX separators), so the run can be moved or copied; anything else (a tag, a path outside
    the run) as given. :func:`resolve_in_run` undoes it."""
    if not pretrained:
        return pretrained
    p = Path(os.path.expanduser(pretrained))
    if not p.exists():
        return pretrained  # a tag or hub id, not a path
    try:
        return p.resolve().relative_to(Path(run_dir).resolve()).as_posix()
    except ValueError:
        return pretrained


def resolve_in_run(pretrained: str | None, run_dir: str | os.PathLike) -> str | None:
    """A run's ``model.pretrained`` as load_clip takes it: a relative path naming a file or folder
    inside ``run_dir`` (how ``convert-checkpoint`` stores the CLIP it writes) becomes that path;
    anything else (a tag, ``none``, an absolute path, a path relative to the working directory as
    a training config gives it) is returned unchanged."""
    if not pretrained or pretrained.strip().lower() in RANDOM_WEIGHTS_WORDS:
        return pretrained
    if os.path.isabs(os.path.expanduser(pretrained)):
        return pretrained
    inside = Path(run_dir) / pretrained
    return str(inside) if inside.exists() else pretrained


def converted_logit_scale(log_logit_scale: float | None) -> LogitScale:
    """A LogitScale holding an official checkpoint's (clamped) log scale, or the default one."""
    scale = LogitScale()
    if log_logit_scale is not None:
        with torch.no_grad():
            scale.log_scale.fill_(min(log_logit_scale, scale.max_log))
    return scale


def load_official(path: str | os.PathLike, source: str | None = None, *, clip: Any = None, device: str = "cpu",
                  xpool_heads: int = 1, drop_tab: bool = False) -> LoadedCheckpoint:
    """An official CLIP4Clip / CLIP2Video / X-Pool checkpoint file as a :class:`LoadedCheckpoint`, in memory.

    ``clip`` is required (the file's own fine-tuned CLIP is only usable after
    ``vidclip convert-checkpoint`` exported it); when it is not the checkpoint's CLIP a warning
    says that the results are not the official model's.
    """
    from vidclip.models.convert import (
        build_converted_temporal,
        clip_matches,
        convert_state,
        read_official_state,
    )

    p = Path(path)
    conv = convert_state(read_official_state(p), source, xpool_heads=xpool_heads, drop_tab=drop_tab, where=str(p))
    if clip is None:
        raise ConfigError(f"{p}: an official {conv.source} checkpoint needs the CLIP to run on; convert it first "
                          f"(vidclip convert-checkpoint --from {conv.source} {p} --out RUN_DIR), which also exports "
                          "its fine-tuned CLIP")
    if conv.clip_state and clip_matches(clip, conv) is not True:
        warnings.warn(f"{p}: the CLIP given is not the checkpoint's fine-tuned CLIP; results are not the official "
                      "model's (convert with vidclip convert-checkpoint to use its CLIP)", stacklevel=2)
    temporal = build_converted_temporal(conv, clip, where=str(p))
    ident = clip.identity
    model_cfg = ModelConfig(clip=ident.name, pretrained=ident.pretrained, temporal=conv.temporal,
                            temporal_args=dict(conv.temporal_args), max_frames=conv.max_frames)
    model = RetrievalModel(temporal, converted_logit_scale(conv.log_logit_scale), None).to(clip.device).eval()
    meta = {"converted_from": conv.spec() | {"file": str(p)}, "conversion_notes": conv.notes,
            "clip_identity": ident.to_dict()}
    return LoadedCheckpoint(model_cfg, clip, model, meta, p, {"name": p.stem})


# ----------------------------------------------------------------------------- text cache


def cached_text_embeddings(clip, captions: list[str], cache_dir: str | os.PathLike | None,
                           batch_size: int = 256) -> torch.Tensor:
    """Frozen-tower text embeddings float32 [C, D] (CPU, not normalised), cached on disk.

    The cache file is keyed by the model identity and the exact caption list, so a different
    model or dataset never reuses stale embeddings. ``cache_dir=None`` computes without caching.
    """
    h = hashlib.sha256()
    h.update(clip.identity.key().encode())
    for c in captions:
        h.update(c.encode("utf-8"))
        h.update(b"\0")
    path = Path(cache_dir) / f"text-{h.hexdigest()[:20]}.npy" if cache_dir else None
    if path is not None and path.is_file():
        emb = np.load(path)
        if emb.shape == (len(captions), clip.embed_dim):
            return torch.from_numpy(emb)
    # Unique captions once (MSR-VTT repeats many).
    uniq, inverse = np.unique(np.asarray(captions, dtype=object), return_inverse=True)
    emb = clip.encode_text([str(c) for c in uniq], batch_size=batch_size).float().cpu()[torch.from_numpy(inverse)]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, emb.numpy())
    return emb
