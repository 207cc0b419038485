"""vidclip.eval: retrieval metrics (metrics.py) and the evaluation driver (evaluate.py).

Names are imported lazily so ``import vidclip.eval`` stays cheap.
"""

from __future__ import annotations

from vidclip.core.lazy import lazy_getattr

_EXPORTS = {
    "retrieval_metrics": "vidclip.eval.metrics",
    "dual_softmax": "vidclip.eval.metrics",
    "evaluate": "vidclip.eval.evaluate",
    "zero_shot": "vidclip.eval.evaluate",
    "FeatureSource": "vidclip.eval.evaluate",
    "PixelSource": "vidclip.eval.evaluate",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(globals(), _EXPORTS)
