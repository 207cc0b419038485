"""vidclip.models.clip: the frozen image CLIP.

``from vidclip.models.clip import load_clip`` and the other public names below are exported
lazily, so importing the package imports neither torch nor open_clip. The files:

- spec.py: the one parser of a model spec (``model`` string + ``pretrained``) -> ModelSpec
- load.py: FrozenCLIP and load_clip / load_clip_from_identity
- backend.py, open_clip_backend.py, hf_backend.py: what the backends share, and the two backends
- identity.py: ModelIdentity, the weights digest, the model-config registry (torch-free)
- geometry.py, preprocess.py: resize/crop geometry (torch-free) and batched torch preprocessing
- onnx_export.py, onnx_runtime.py: ONNX export of the towers, and their torch-free runtime
"""

from __future__ import annotations

from vidclip.core.lazy import lazy_getattr

_EXPORTS = {
    "FrozenCLIP": "vidclip.models.clip.load",
    "load_clip": "vidclip.models.clip.load",
    "load_clip_from_identity": "vidclip.models.clip.load",
    "text_features_from_ids": "vidclip.models.clip.load",
    "ModelSpec": "vidclip.models.clip.spec",
    "parse_model_spec": "vidclip.models.clip.spec",
    "resolve_pretrained": "vidclip.models.clip.spec",
    "identity_load_args": "vidclip.models.clip.spec",
    "ModelIdentity": "vidclip.models.clip.identity",
    "identity_key": "vidclip.models.clip.identity",
    "list_models": "vidclip.models.clip.identity",
    "register_config_dir": "vidclip.models.clip.identity",
    "state_dict_digest": "vidclip.models.clip.identity",
    "SHIPPED_WEIGHTS": "vidclip.models.clip.identity",
    "FrameFormatError": "vidclip.models.clip.preprocess",
    "preprocess_frames": "vidclip.models.clip.preprocess",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(globals(), _EXPORTS)
