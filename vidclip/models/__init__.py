"""vidclip.models: frozen CLIP loading (clip.py; its parts clip_config.py, clip_backend.py and the
backends clip_open_clip.py, clip_hf.py), temporal modules (registry.py, temporal.py,
temporal_transformer.py, ted.py), trained checkpoints (checkpoint.py) and their conversion (convert.py).

Names are exported lazily so ``import vidclip.models`` stays cheap (open_clip / transformers
are only imported when a model is actually loaded).
"""

from __future__ import annotations

from vidclip.core.lazy import lazy_getattr

_EXPORTS = {
    "ModelIdentity": "vidclip.models.clip.load",
    "FrozenCLIP": "vidclip.models.clip.load",
    "load_clip": "vidclip.models.clip.load",
    "load_clip_from_identity": "vidclip.models.clip.load",
    "list_models": "vidclip.models.clip.load",
    "create_temporal": "vidclip.models.temporal.registry",
    "list_temporal": "vidclip.models.temporal.registry",
    "register_temporal": "vidclip.models.temporal.registry",
    "TemporalModule": "vidclip.models.temporal.base",
    "ModelConfig": "vidclip.models.checkpoint",
    "LoadedCheckpoint": "vidclip.models.checkpoint",
    "load_checkpoint": "vidclip.models.checkpoint",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(globals(), _EXPORTS)
