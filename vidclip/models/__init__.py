"""vidclip.models: the frozen CLIP (clip/), temporal modules and their registry (temporal/), trained
checkpoints (checkpoint.py) and their conversion from other codebases (convert.py).

Names are exported lazily so ``import vidclip.models`` stays cheap (open_clip / transformers
are only imported when a model is actually loaded).
"""

from __future__ import annotations

from vidclip.core.lazy import lazy_getattr

_EXPORTS = {
    "ModelIdentity": "vidclip.models.clip",
    "FrozenCLIP": "vidclip.models.clip",
    "load_clip": "vidclip.models.clip",
    "load_clip_from_identity": "vidclip.models.clip",
    "list_models": "vidclip.models.clip",
    "create_temporal": "vidclip.models.temporal",
    "list_temporal": "vidclip.models.temporal",
    "register_temporal": "vidclip.models.temporal",
    "TemporalModule": "vidclip.models.temporal",
    "ModelConfig": "vidclip.models.checkpoint",
    "LoadedCheckpoint": "vidclip.models.checkpoint",
    "load_checkpoint": "vidclip.models.checkpoint",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(globals(), _EXPORTS)
