"""vidclip.rerank: CLIPRerank (arXiv 2401.08449) of another system's result lists, at shot level.

:mod:`~vidclip.rerank.core` holds the math (frame scores, pooling, per-topic normalisation,
fusion), :mod:`~vidclip.rerank.inputs` the topic and shot-mapping readers,
:mod:`~vidclip.rerank.frames` where candidates' frames come from (a library index's stored
embeddings, or videos decoded and encoded on the fly into a cached feature store) and
:mod:`~vidclip.rerank.run` the whole ``vidclip rerank`` job. Evaluation: :mod:`vidclip.eval.trec`.
Imported lazily so that ``import vidclip.rerank`` stays cheap.
"""

from .._lazy import lazy_getattr

_EXPORTS = {
    "pool_scores": "core", "normalize": "core", "fuse": "core", "rerank_topic": "core", "FrameBank": "core",
    "parse_pool": "core", "read_topics": "inputs", "read_mapping": "inputs", "rerank_run": "run",
    "RerankConfig": "run",
}

__getattr__ = lazy_getattr(globals(), _EXPORTS)

__all__ = sorted(_EXPORTS)
