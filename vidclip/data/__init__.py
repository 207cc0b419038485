"""vidclip.data: datasets (datasets.py), the frame-feature store (features.py), which cached
features are current (feature_cache.py, identity.py) and the synthetic world (synth.py).

Names are imported lazily so ``import vidclip.data`` stays cheap (features.py imports torch).
"""

from __future__ import annotations

from vidclip.core.lazy import lazy_getattr

_EXPORTS = {
    "load_dataset": "vidclip.data.datasets",
    "split_validation": "vidclip.data.datasets",
    "FeatureStore": "vidclip.features.store",
    "FeatureWriter": "vidclip.features.store",
    "check_features": "vidclip.features.cache",
    "check_whole_videos": "vidclip.features.cache",
    "default_features_dir": "vidclip.features.cache",
    "file_identity": "vidclip.features.identity",
    "same_file": "vidclip.features.identity",
    "SynthConfig": "vidclip.synthetic.world",
    "make_synthetic_dataset": "vidclip.synthetic.world",
    "is_synthetic_footage": "vidclip.synthetic.world",
    "synthetic_model_warning": "vidclip.synthetic.world",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(globals(), _EXPORTS)
