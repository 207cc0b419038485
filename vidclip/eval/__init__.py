"""vidclip.eval: retrieval metrics (metrics.py) and the evaluation driver (evaluate.py).

Names are imported lazily so ``import vidclip.eval`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "retrieval_metrics": "vidclip.eval.metrics",
    "dual_softmax": "vidclip.eval.metrics",
    "evaluate": "vidclip.eval.evaluate",
    "zero_shot": "vidclip.eval.evaluate",
    "FeatureSource": "vidclip.eval.evaluate",
    "PixelSource": "vidclip.eval.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vidclip.eval' has no attribute {name!r}")
