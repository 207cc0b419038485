"""vidclip.rerank: CLIPRerank (arXiv 2401.08449) of another system's result lists, at shot level.

:mod:`~vidclip.retrieval.fusion` holds the math (pooling, per-topic normalisation, fusion),
:mod:`~vidclip.rerank.bank` the candidates' frames in memory and a topic's rerank over them,
:mod:`~vidclip.rerank.inputs` the topic and shot-mapping readers,
:mod:`~vidclip.rerank.frames` where candidates' frames come from (a library index's stored
embeddings, or videos decoded and encoded on the fly into a cached feature store) and
:mod:`~vidclip.rerank.run` the whole ``vidclip rerank`` job. Evaluation: :mod:`vidclip.eval.trec`.
Imported lazily so that ``import vidclip.rerank`` stays cheap.
"""

from vidclip.core.lazy import lazy_getattr

_EXPORTS = {
    "pool_scores": "vidclip.retrieval.fusion", "normalize": "vidclip.retrieval.fusion", "fuse": "vidclip.retrieval.fusion", "rerank_topic": "vidclip.rerank.bank", "FrameBank": "vidclip.rerank.bank",
    "parse_pool": "vidclip.retrieval.fusion", "read_topics": "vidclip.rerank.inputs", "read_mapping": "vidclip.rerank.inputs", "rerank_run": "vidclip.rerank.run",
    "RerankConfig": "vidclip.rerank.run",
}

__getattr__ = lazy_getattr(globals(), _EXPORTS)

__all__ = sorted(_EXPORTS)
