"""vidclip.index: the library index (SQLite catalog, frame-feature shards, faiss) and search.

Modules: ``scan`` (what a library holds), ``directory`` (:class:`IndexDir`, the index folder:
paths, writer's lock, catalog, damage checks, cleanup, faiss kept in step with the catalog),
``catalog`` (SQLite), ``designs`` (faiss designs and their search knobs), ``vectors`` (the faiss
wrapper), ``exact`` (numpy exact search, recall@k, chunk sources), ``build`` (index, merge,
report), ``search``, ``recall`` (approximate vs exact), ``verify`` (check and repair),
``commands`` (the CLI verbs).

Entry points: :class:`~vidclip.index.search.VideoIndex` (open + search),
:func:`~vidclip.index.build.index_library`, :func:`~vidclip.index.build.merge_index`,
:func:`~vidclip.index.recall.check_recall`, :class:`~vidclip.index.directory.IndexDir` (the
folder), :class:`~vidclip.index.vectors.VectorIndex` (faiss wrapper). Imported lazily so that
``import vidclip.index`` stays cheap.
"""

from vidclip.core.lazy import lazy_getattr

_EXPORTS = {
    "VideoIndex": "vidclip.index.search", "SearchHit": "vidclip.index.search", "index_library": "vidclip.index.build", "merge_index": "vidclip.index.build",
    "index_report": "vidclip.index.build", "scan_library": "vidclip.index.scan", "IndexReport": "vidclip.index.build", "check_recall": "vidclip.index.recall",
    "Pooler": "vidclip.features.pooling", "Library": "vidclip.index.scan", "LibraryItem": "vidclip.index.scan", "verify_index": "vidclip.index.verify",
    "VectorIndex": "vidclip.index.vectors", "recall_at_k": "vidclip.index.exact", "exact_search": "vidclip.index.exact", "choose_design": "vidclip.index.designs",
    "Catalog": "vidclip.index.catalog", "IndexDir": "vidclip.index.directory", "fast_hash": "vidclip.features.identity",
}


__getattr__ = lazy_getattr(globals(), _EXPORTS)


__all__ = sorted(_EXPORTS)
