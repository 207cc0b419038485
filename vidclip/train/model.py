"""What training optimises and saves: temporal module + logit scale (+ text tower).

:class:`RetrievalModel` bundles the trainable parts into one ``nn.Module`` whose ``forward``
returns the contrastive loss, so that accelerate/DDP wraps everything that has gradients
(including the cross-process gather inside the loss). The frozen image backbone is never part
of it: modules that need it (``ted``) reach it through the ``clip`` handed to
``create_temporal``.

:class:`TextTower` is a trainable copy of a FrozenCLIP's text side (``text_tower: finetune``):
the vision tower is left out of the copy, so fine-tuning the text side cannot touch it.

Checkpoint files (safetensors) hold the state dict of a RetrievalModel: ``temporal.*``,
``logit_scale.log_scale`` and, when fine-tuned, ``text_tower.net.*``; the metadata holds the
resolved config (JSON), the CLIP identity, step and epoch. Writes are atomic (tmp + os.replace).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import ConfigError, VidclipError
from ..fileio import atomic_path
from .config import TrainConfig, config_from_dict, config_to_dict
from .losses import LogitScale, conditioned_contrastive_loss, contrastive_loss

__all__ = [
    "TextTower",
    "RetrievalModel",
    "build_temporal",
    "save_weights",
    "load_weights",
    "LoadedCheckpoint",
    "load_checkpoint",
    "cached_text_embeddings",
    "atomic_torch_save",
]

CHECKPOINT_FORMAT = "vidclip-train-1"


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
        from ..models.clip import text_features_from_ids

        return text_features_from_ids(self.net, self.family, ids, pad_id=self.pad_id, eos_id=self.eos_id)


def build_temporal(cfg: TrainConfig, clip) -> nn.Module:
    """``create_temporal`` from the config (module name, embed dim, max frames, extra args)."""
    from ..models.temporal import create_temporal, list_temporal

    name = cfg.model.temporal
    if name not in list_temporal():
        raise ConfigError(f"model.temporal: unknown temporal module {name!r}; one of {list_temporal()}")
    try:
        return create_temporal(name, clip.embed_dim, max_frames=cfg.model.max_frames, clip=clip,
                               **cfg.model.temporal_args)
    except TypeError as e:
        raise ConfigError(f"model.temporal_args: {e} (module {name!r})") from e


class RetrievalModel(nn.Module):
    """Temporal module + learnable logit scale (+ text tower); ``forward`` returns the loss.

    Args (forward):
        text_in: float [n, D] cached text embeddings (frozen text tower) or LongTensor [n, L]
            token ids (fine-tuned text tower).
        video_in: float [n, T, D] frame features (or what ``temporal.needs_pixels`` modules take).
        mask: bool [n, T], True = real frame.
    Returns:
        scalar local InfoNCE loss (see vidclip.train.losses; across processes its mean is the
        global-batch loss).
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

    def forward(self, text_in: torch.Tensor, video_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        text = self.encode_text(text_in)
        scale = self.logit_scale()
        if getattr(self.temporal, "text_conditioned", False):
            return conditioned_contrastive_loss(self.temporal.similarity, text, video_in, mask, scale)
        return contrastive_loss(text, self.temporal(video_in, mask), scale)


# ----------------------------------------------------------------------------- files


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_weights(path: str | os.PathLike, model: RetrievalModel, cfg: TrainConfig, clip_identity: dict,
                 **meta: Any) -> None:
    """Write the model's state dict as safetensors, with config and identity in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(config_to_dict(cfg)),
        "clip_identity": json.dumps(clip_identity),
        "temporal": cfg.model.temporal,
        "text_tower": cfg.model.text_tower,
        **{k: json.dumps(v) for k, v in meta.items()},
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


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
    """A trained model ready for evaluation."""

    config: TrainConfig
    clip: Any  # FrozenCLIP
    model: RetrievalModel
    meta: dict
    path: Path


def load_checkpoint(path: str | os.PathLike, *, device: str = "cpu", clip=None,
                    source: str | None = None) -> LoadedCheckpoint:
    """Rebuild the RetrievalModel of a checkpoint (a .safetensors file or a run dir: best, else last).

    The CLIP named in the checkpoint's config is loaded (or ``clip`` is used, after checking
    that its weights are the ones the checkpoint was trained on). An official CLIP4Clip /
    CLIP2Video / X-Pool file (``source=``, or a torch pickle file) is converted in memory by
    ``vidclip.train.convert_run.load_official`` (it needs ``clip``).
    """
    from ..models.convert import conform_converted, is_official_checkpoint
    from .convert_run import load_official

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
    cfg = config_from_dict(meta["config"], where=f"{p} (metadata)")
    ident = meta.get("clip_identity") or {}
    if clip is None:
        from ..models.clip import load_clip

        clip = load_clip(cfg.model.clip, cfg.model.pretrained, device=device)
    if ident.get("weights_digest") and clip.identity.weights_digest != ident["weights_digest"]:
        raise VidclipError(
            f"{p}: trained on CLIP weights {ident.get('weights_digest')} ({ident.get('name')}), but the "
            f"loaded model has {clip.identity.weights_digest}; pass the same --model/--pretrained")
    temporal = build_temporal(cfg, clip)
    if meta.get("converted_from"):  # official numerics the state dict does not hold (convert-checkpoint)
        conform_converted(temporal, meta["converted_from"])
    text_tower = TextTower(clip) if cfg.model.text_tower == "finetune" else None
    model = RetrievalModel(temporal, LogitScale(), text_tower)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VidclipError(f"{p}: checkpoint does not match model {cfg.model.temporal!r}: "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.to(clip.device).eval()
    return LoadedCheckpoint(cfg, clip, model, meta, p)


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
