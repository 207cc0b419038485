"""vidclip.data: the text-video retrieval dataset readers (datasets.py: msrvtt, msvd, didemo,
jsonl -> videos and captions).

The other names below lived here before issue 17 moved them to their own packages; they are
still exported, for code written against ``vidclip.data``, from their new homes:
the frame-feature store and its cache checks (:mod:`vidclip.features`) and the synthetic-footage
check (:mod:`vidclip.video.provenance`). New code imports them from there. The synthetic world sits
above this layer (it writes datasets), so its names are exported by :mod:`vidclip` and
:mod:`vidclip.synthetic`, not here.

Names are imported lazily so ``import vidclip.data`` stays cheap (the feature store imports torch).
"""

from __future__ import annotations

from vidclip.core.lazy import lazy_getattr

_EXPORTS = {
    "load_dataset": "vidclip.data.datasets",
    "split_validation": "vidclip.data.datasets",
    # moved (issue 17): kept for compatibility
    "FeatureStore": "vidclip.features.store",
    "FeatureWriter": "vidclip.features.store",
    "check_features": "vidclip.features.cache",
    "check_whole_videos": "vidclip.features.cache",
    "default_features_dir": "vidclip.features.cache",
    "file_identity": "vidclip.features.identity",
    "same_file": "vidclip.features.identity",
    "is_synthetic_footage": "vidclip.video.provenance",
    "synthetic_model_warning": "vidclip.video.provenance",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(globals(), _EXPORTS)
