"""vidclip.index: the library index (SQLite catalog, frame-feature shards, faiss) and search.

Modules: ``scan`` (what a library holds), ``pooling`` (frames -> vectors, queries), ``directory``
(the index folder: lock, crash hooks, temp cleanup, faiss kept in step with the catalog),
``catalog`` (SQLite), ``vectors`` (faiss), ``exact`` (numpy exact search, recall@k, chunk
sources), ``build`` (index, merge, report), ``search``,
``recall`` (approximate vs exact), ``verify`` (check and repair), ``commands`` (the CLI verbs).

Entry points: :class:`~vidclip.index.search.VideoIndex` (open + search),
:func:`~vidclip.index.build.index_library`, :func:`~vidclip.index.build.merge_index`,
:func:`~vidclip.index.recall.check_recall`,
:class:`~vidclip.index.vectors.VectorIndex` (faiss wrapper). Imported lazily so that
``import vidclip.index`` stays cheap.
"""

from .._lazy import lazy_getattr

_EXPORTS = {
    "VideoIndex": "search", "SearchHit": "search", "index_library": "build", "merge_index": "build",
    "index_report": "build", "scan_library": "scan", "IndexReport": "build", "check_recall": "recall",
    "Pooler": "pooling", "Library": "scan", "LibraryItem": "scan", "verify_index": "verify",
    "VectorIndex": "vectors", "recall_at_k": "exact", "exact_search": "exact", "choose_design": "vectors",
    "Catalog": "catalog", "fast_hash": "vidclip.data.identity",
}


__getattr__ = lazy_getattr(globals(), _EXPORTS)


__all__ = sorted(_EXPORTS)
