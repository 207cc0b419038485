"""vidclip.train: symmetric InfoNCE (exact across processes), accelerate training loop, checkpoints.

``train(load_config("configs/synth_seq_transformer.yaml"))`` is what ``vidclip train`` runs.
Names are imported lazily so ``import vidclip.train`` stays cheap.
"""

from __future__ import annotations

from vidclip.core.lazy import lazy_getattr

_EXPORTS = {
    "TrainConfig": "vidclip.train.config",
    "load_config": "vidclip.train.config",
    "apply_overrides": "vidclip.train.config",
    "train": "vidclip.train.trainer",
    "TrainResult": "vidclip.train.trainer",
    "contrastive_loss": "vidclip.train.losses",
    "all_gather_with_grad": "vidclip.train.losses",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(globals(), _EXPORTS)
