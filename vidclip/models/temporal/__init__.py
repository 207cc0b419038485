"""vidclip.models.temporal: temporal modules behind one interface, and their registry.

Each module turns per-frame CLIP embeddings into video embeddings (the interface is
:class:`~vidclip.models.temporal.base.TemporalModule`); :func:`create_temporal` builds one by name:

===================  ==============  ===========================================================
``mean``             mean.py         CLIP4Clip "meanP": normalise frames, masked mean, normalise.
                                     0 params.
``query_scoring``    query.py        CLIP-Hitchhiker's query scoring: softmax(cos(text, frame) /
                                     tau) over the frames weights the *raw* frame embeddings.
                                     0 params.
``xpool``            xpool.py        X-Pool: text-conditioned single-head attention pooling.
``seq_transformer``  transformer.py  CLIP4Clip "seqTransf": frame positions + 4-layer transformer
                                     (from the CLIP text tower), residual, then meanP.
``tdb``              transformer.py  CLIP2Video Temporal Difference Block + the seqTransf
                                     transformer.
``ted``              ted.py          M2-CLIP TED adapters inside the frozen ViT; takes *pixels*,
                                     not frame embeddings (``needs_pixels = True``).
===================  ==============  ===========================================================

Padding convention: padded frames may sit anywhere for ``mean``/``query_scoring``/``xpool``;
``seq_transformer``/``tdb`` number frames 0..T-1 as the originals do, so their output is
invariant to padding that sits at the *end* of the sequence (what every collate in vidclip
produces). A video with no real frame at all never yields NaN: a zero vector for mean,
query_scoring, seq_transformer and tdb, a constant (LayerNorm bias) direction for xpool.

The registry (registry.py) names the modules by ``"module:Class"`` and imports one only when
it is built, so importing this package costs nothing.
"""

from __future__ import annotations

from vidclip.core.lazy import lazy_getattr

_EXPORTS = {
    "TemporalModule": "base",
    "create_temporal": "registry",
    "get_temporal": "registry",
    "list_temporal": "registry",
    "register_temporal": "registry",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(globals(), _EXPORTS)
