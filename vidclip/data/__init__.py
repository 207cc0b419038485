"""vidclip.data: datasets (datasets.py), the frame-feature store (features.py), which cached
features are current (feature_cache.py, identity.py) and the synthetic world (synth.py).

Names are imported lazily so ``import vidclip.data`` stays cheap (features.py imports torch).
"""

from __future__ import annotations

from .._lazy import lazy_getattr

_EXPORTS = {
    "load_dataset": "datasets",
    "split_validation": "datasets",
    "FeatureStore": "features",
    "FeatureWriter": "features",
    "check_features": "feature_cache",
    "check_whole_videos": "feature_cache",
    "default_features_dir": "feature_cache",
    "file_identity": "identity",
    "same_file": "identity",
    "SynthConfig": "synth",
    "make_synthetic_dataset": "synth",
    "is_synthetic_footage": "synth",
    "synthetic_model_warning": "synth",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(globals(), _EXPORTS)
