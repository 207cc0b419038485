"""What only training needs of a model: the loss wrapper and writing checkpoint files.

The trained model itself (text tower, temporal module, loading) lives in
:mod:`vidclip.models.checkpoint`. :class:`TrainingModel` adds the contrastive loss as ``forward``
so that accelerate/DDP wraps everything that has gradients (including the cross-process gather
inside the loss). The frozen image backbone is never part of it: modules that need it (``ted``)
reach it through the ``clip`` handed to ``create_temporal``.

Checkpoint files (safetensors) hold the state dict (``temporal.*``, ``logit_scale.log_scale``
and, when fine-tuned, ``text_tower.net.*``); the metadata holds the resolved config (JSON), the
CLIP identity, step and epoch. Writes are atomic (tmp + os.replace).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from vidclip.core.fileio import atomic_path
from vidclip.models.checkpoint import CHECKPOINT_FORMAT, RetrievalModel
from vidclip.train.config import TrainConfig, config_to_dict
from vidclip.train.losses import conditioned_contrastive_loss, contrastive_loss

__all__ = ["TrainingModel", "save_weights", "atomic_torch_save"]


class TrainingModel(RetrievalModel):
    """A :class:`~vidclip.models.checkpoint.RetrievalModel` whose ``forward`` returns the loss.

    Args (forward):
        text_in: float [n, D] cached text embeddings (frozen text tower) or LongTensor [n, L]
            token ids (fine-tuned text tower).
        video_in: float [n, T, D] frame features (or what ``temporal.needs_pixels`` modules take).
        mask: bool [n, T], True = real frame.
    Returns:
        scalar local InfoNCE loss (see vidclip.train.losses; across processes its mean is the
        global-batch loss).
    """

    def forward(self, text_in: torch.Tensor, video_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        text = self.encode_text(text_in)
        scale = self.logit_scale()
        if getattr(self.temporal, "text_conditioned", False):
            return conditioned_contrastive_loss(self.temporal.similarity, text, video_in, mask, scale)
        return contrastive_loss(text, self.temporal(video_in, mask), scale)


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
