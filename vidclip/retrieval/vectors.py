"""Unit-length vectors, so that inner products are cosine similarities (numpy only).

The one numpy L2 normalisation of the package: index search and its exact reference, the faiss
wrapper and rerank's frame banks all use it. Torch code uses ``torch.nn.functional.normalize``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["l2_normalize"]

#: floor of a row norm: a zero row stays zero instead of becoming NaN
NORM_EPS = 1e-12
IN_PLACE_CHUNK = 65_536  # rows normalised at a time in place: bounds the temporary norms and quotients


def l2_normalize(x, *, in_place: bool = False) -> np.ndarray:
    """Rows scaled to unit L2 norm: float32 [N, D] (a 1-D input is one row). Zero rows stay zero.

    A new C-contiguous array by default. ``in_place=True``: ``x`` (float32 [N, D], which the caller
    owns) is normalised in place, chunk by chunk, and returned: no copy of a large array.
    """
    if in_place:
        if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2):
            raise TypeError("l2_normalize(in_place=True) needs a float32 [N, D] numpy array")
        for lo in range(0, len(x), IN_PLACE_CHUNK):
            block = x[lo:lo + IN_PLACE_CHUNK]
            block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), NORM_EPS)
        return x
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, NORM_EPS), dtype=np.float32)
