"""vidclip.index: the library index (SQLite catalog, frame-feature shards, faiss) and search.

Entry points: :class:`~vidclip.index.library.VideoIndex` (open + search),
:func:`~vidclip.index.library.index_library`, :func:`~vidclip.index.library.merge_index`,
:func:`~vidclip.index.library.check_recall`,
:class:`~vidclip.index.vectors.VectorIndex` (faiss wrapper). Imported lazily so that
``import vidclip.index`` stays cheap.
"""

from .._lazy import lazy_getattr

_EXPORTS = {
    "VideoIndex": "library", "SearchHit": "library", "index_library": "library", "merge_index": "library",
    "index_report": "library", "scan_library": "library", "IndexReport": "library", "check_recall": "library",
    "VectorIndex": "vectors", "recall_at_k": "vectors", "exact_search": "vectors", "choose_design": "vectors",
    "Catalog": "catalog", "fast_hash": "catalog",
}


__getattr__ = lazy_getattr(globals(), _EXPORTS)


__all__ = sorted(_EXPORTS)
