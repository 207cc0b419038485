"""Vector search over L2-normalised embeddings: a faiss index chosen by one string.

``VectorIndex(dim, design)`` wraps any faiss ``index_factory`` string with
``METRIC_INNER_PRODUCT``; vectors are L2-normalised on the way in, so scores are cosine
similarities. Designs (:mod:`vidclip.index.designs`: what ``"auto"`` picks, what each needs):

* ``"Flat"`` — exact search (brute-force inner product). ``"auto"`` picks it up to
  ``flat_max`` vectors (default 200,000) and ``IVF{~4 sqrt n},SQfp16`` above, ``SQ8`` beyond 10M
  (see :func:`~vidclip.index.designs.choose_design`, :func:`~vidclip.index.designs.default_nprobe`).
* anything faiss understands: ``"IVF4096,SQ8"``, ``"IVF65536,PQ64x4fs,RFlat"`` (fast-scan PQ
  re-ranked exactly: ``k_factor`` candidates per result), ``"IVF4096,PQ64x4fs,Refine(SQ8)"``,
  ``"HNSW32"``, ``"OPQ64,IVF1024,PQ64"``, ... Designs that need training (IVF, PQ, SQ, OPQ) are
  trained on a uniform random sample of :meth:`VectorIndex.train_sample_size` vectors.

Millions of vectors: :meth:`VectorIndex.build_chunked` / :meth:`VectorIndex.fill` take a chunk
source (a callable starting a pass of ``(ids, vectors)`` chunks: ``Catalog.iter_vectors``,
:func:`~vidclip.index.exact.array_chunks`), draw the training sample in one pass
(:func:`~vidclip.index.exact.sample_chunks`) and add in a second, so memory is the index plus the
sample plus one chunk. Exact search, recall@k against it and the chunk sources live in
:mod:`vidclip.index.exact` (numpy only).

Every entry carries a caller-chosen int64 id. Indexes that cannot store ids themselves
(Flat, HNSW, ...) are wrapped in ``IndexIDMap2``, a refined IVF in ``IndexIDMap``; IVF indexes
store ids natively. Removal uses faiss ``remove_ids`` where the index supports it; where it does
not (HNSW graphs, refine stages), removed ids become tombstones excluded at search time (an
``IDSelector``, or over-fetching), so results are still exactly k live entries. A tombstoned id
cannot be added again until the index is rebuilt.

Filtered search: ``search(queries, k, allowed_ids=ids)`` restricts the search inside faiss with an
``IDSelector`` (a bitmap of ids, or a hash set for sparse / huge ids: :func:`id_selector`) passed
in the design's search parameters, with nprobe / efSearch widened by the inverse selectivity so
``k`` hits come back when only 1% of the entries are allowed (rule: :meth:`VectorIndex._search_allowed`).

Single queries (up to ``FEW_QUERIES``) run on one OpenMP thread, batches on all (see
:meth:`VectorIndex.search`).

Search-time knobs: one ParameterSpace-style string, ``"nprobe=16,efSearch=64,k_factor=32"``
(:meth:`VectorIndex.set_search_params`, :attr:`VectorIndex.search_params`; parsed and checked by
:func:`~vidclip.index.designs.parse_search_params`). Saved files are one self-describing
container written atomically (tmp file + ``os.replace``):

    b"VIDCLIPVEC\\x01\\n" | uint64 LE header length | header JSON | int64 tombstones | faiss bytes

When faiss sees a GPU (``faiss.get_num_gpus() > 0``, a faiss-gpu build) searches run on a GPU
copy of the index; the CPU index stays the master for add/remove/save. Never required: any
failure to use the GPU falls back to the CPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import faiss
import numpy as np

from vidclip.core.errors import ConfigError, IndexMismatchError, VidclipError
from vidclip.core.fileio import atomic_path
from vidclip.index.designs import (
    DEFAULT_FLAT_MAX,
    REFINE_K_FACTOR,
    SEARCH_KNOBS,
    choose_design,
    default_nprobe,
    parse_search_params,
    prepare_training,
    refine_stage,
    search_knobs,
    stores_ids,
    train_sample_size,
)
from vidclip.index.exact import exact_search, sample_chunks
from vidclip.retrieval.vectors import l2_normalize

log = logging.getLogger(__name__)

FILE_MAGIC = b"VIDCLIPVEC\x01\n"
_ADD_CHUNK = 65_536  # rows normalised + added at a time: bounds the temporary copy
FEW_QUERIES = 4  # searches of at most this many queries run on one OpenMP thread (see VectorIndex.search)


EXACT_ALLOWED_MAX = 4096  # allowed ids up to which a filtered HNSW / PQ search scores them all exactly
BITMAP_MIN_BYTES = 1 << 20  # an id bitmap of up to this size (ids < 8M), or 16 bytes per allowed id, beats a hash set


# ----------------------------------------------------------------------------- helpers


def id_selector(allowed: np.ndarray):
    """A faiss ``IDSelector`` for the int64 ids ``allowed`` (any order, duplicates allowed):
    (selector, buffer to keep alive while it is used, number of distinct ids).

    ``IDSelectorBitmap`` (one bit per id up to the largest) when the ids are non-negative and the
    bitmap is at most max(``BITMAP_MIN_BYTES``, 16 bytes per allowed id), else ``IDSelectorBatch``
    (a hash set with a Bloom pre-filter). Measured at 1M 512-d vectors, exact design, one query
    (BENCHMARKS.md, *Filtered search*): at 10% selectivity the bitmap is built in 0.1 ms against the
    hash set's 6.6 ms, and the search is 30 ms against 32 ms.
    """
    allowed = np.asarray(allowed, dtype=np.int64).reshape(-1)
    if allowed.size and allowed.min() >= 0:  # no sort: at 100k ids np.unique alone costs more than the search
        nbytes = int(allowed.max()) // 8 + 1
        if nbytes <= max(BITMAP_MIN_BYTES, 16 * allowed.size):
            bits = np.zeros(nbytes * 8, dtype=bool)
            bits[allowed] = True
            bitmap = np.packbits(bits, bitorder="little")
            return faiss.IDSelectorBitmap(nbytes, faiss.swig_ptr(bitmap)), bitmap, int(np.count_nonzero(bits))
    ids = np.unique(allowed)
    return faiss.IDSelectorBatch(ids), ids, int(ids.size)



@contextmanager
def _omp_threads(n: int | None) -> Iterator[None]:
    """faiss' OpenMP thread count set to at most ``n`` inside the block (None: unchanged).

    OpenMP keeps the count per calling thread (libgomp / libomp store it in the thread's own task
    settings), so a server thread searching one query on one thread leaves others' batches alone.
    """
    before = faiss.omp_get_max_threads()
    if n is None or before <= n:
        yield
        return
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _gpu_count() -> int:
    try:
        return int(faiss.get_num_gpus())
    except AttributeError:  # faiss-cpu build
        return 0


# ----------------------------------------------------------------------------- the index


class VectorIndex:
    """A faiss index over L2-normalised float32 [N, dim] vectors with int64 ids.

    ``design``: ``"Flat"``, ``"auto"`` (resolved by :meth:`build` from the number of vectors;
    a bare constructor treats it as Flat) or any faiss index_factory string. ``search_params``:
    search-time knobs, ``"nprobe=16,efSearch=64"`` or a dict (:meth:`set_search_params`; each must
    be one the design has). Unset knobs keep faiss' default, except an IVF's ``nprobe``
    (:func:`~vidclip.index.designs.default_nprobe`) and a refined design's ``k_factor``, the
    candidates per result it re-ranks with its exact / finer codes (``REFINE_K_FACTOR``).
    ``train_size``: vectors sampled for training (default :meth:`train_sample_size`).
    ``metadata``: free-form JSON saved with the index (e.g. a catalog generation).
    """

    def __init__(
        self,
        dim: int,
        design: str = "Flat",
        *,
        search_params: str | Mapping[str, int] | None = None,
        train_size: int | None = None,
        use_gpu: bool | str = "auto",
        seed: int = 0,
        metadata: dict | None = None,
    ):
        if int(dim) <= 0:
            raise ConfigError(f"vector index: dim must be positive, got {dim}")
        self.dim = int(dim)
        design = (design or "Flat").strip()
        if design.lower() == "auto":
            design = "Flat"
        self.design = design
        self.train_size = train_size
        self.seed = int(seed)
        self.metadata: dict = dict(metadata or {})
        self._use_gpu = use_gpu
        self._removed: set[int] = set()
        self._gpu_index = None
        self._index = self._create(design)
        self._nprobe: int | None = None
        self._ef_search: int | None = None
        defaults = {}
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is not None:
            defaults["nprobe"] = default_nprobe(ivf.nlist, design)
        if refine_stage(self._index) is not None:
            defaults["k_factor"] = REFINE_K_FACTOR
        self.set_search_params({**defaults, **parse_search_params(search_params)})

    # -- construction

    def _create(self, design: str):
        try:
            index = faiss.index_factory(self.dim, design, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
            raise ConfigError(f"vector index design {design!r} is not a valid faiss index_factory string ({first})") from None
        if isinstance(faiss.downcast_index(index), faiss.IndexRefine):
            # A refined IVF addresses its refine stage by insertion number: map ids on top. A plain
            # IDMap (8 bytes per vector), not IDMap2, whose reverse hash map costs ~6x that.
            index = faiss.IndexIDMap(index)
        elif not stores_ids(index):
            # Flat, HNSW, PQ, LSH, ... store no ids of their own: map them.
            index = faiss.IndexIDMap2(index)
        return index

    @classmethod
    def build(
        cls,
        vectors,
        ids=None,
        design: str = "auto",
        *,
        flat_max: int = DEFAULT_FLAT_MAX,
        **kwargs,
    ) -> "VectorIndex":
        """Create, train (if the design needs it) and fill an index. vectors [N, D]; ids [N] (default 0..N-1)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ConfigError(f"vector index: vectors must be [N, D], got shape {vectors.shape}")
        if design.strip().lower() == "auto":
            design = choose_design(vectors.shape[0], flat_max)
        index = cls(vectors.shape[1], design, **kwargs)
        if ids is None:
            ids = np.arange(vectors.shape[0], dtype=np.int64)
        index.add(vectors, ids)
        return index

    @classmethod
    def build_chunked(
        cls,
        chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
        n: int,
        dim: int,
        design: str = "auto",
        *,
        flat_max: int = DEFAULT_FLAT_MAX,
        **kwargs,
    ) -> "VectorIndex":
        """:meth:`build` for more vectors than fit in memory: train on a sample, add chunk by chunk.

        ``chunks()`` starts a pass of (ids int64 [C], vectors [C, dim]) steps over the ``n`` vectors
        (``Catalog.iter_vectors``, :func:`~vidclip.index.exact.array_chunks`); see :meth:`fill`. Peak memory is the index
        itself plus the training sample (:meth:`train_sample_size`) plus one chunk.
        """
        if design.strip().lower() == "auto":
            design = choose_design(int(n), flat_max)
        index = cls(int(dim), design, **kwargs)
        index.fill(chunks, int(n))
        return index

    # -- properties

    @property
    def ntotal(self) -> int:
        """Number of live entries (tombstoned ones excluded)."""
        return int(self._index.ntotal) - len(self._removed)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def nprobe(self) -> int | None:
        """IVF cells a query visits (None: not an IVF design)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.set_search_params({"nprobe": value})

    @property
    def ef_search(self) -> int | None:
        """The HNSW beam width set here (None: faiss' default, or not an HNSW design)."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self.set_search_params({"efSearch": value})

    @property
    def k_factor(self) -> int | None:
        """Candidates per result a refined design re-ranks exactly (faiss' IndexRefine.k_factor), else None."""
        refine = refine_stage(self._index)
        return None if refine is None else int(refine.k_factor)

    @k_factor.setter
    def k_factor(self, value: int) -> None:
        self.set_search_params({"k_factor": value})

    @property
    def search_params(self) -> dict[str, int]:
        """The knobs this design has, at the values its searches use (faiss' default where none was
        set): e.g. {"nprobe": 16} for an IVF, {"efSearch": 16} for an HNSW; {} for Flat."""
        knobs = search_knobs(self._index, self.design)
        values = {"nprobe": self._nprobe, "efSearch": self._ef_search or self._hnsw_ef(), "k_factor": self.k_factor}
        return {name: int(values[name]) for name in SEARCH_KNOBS if name in knobs and values[name] is not None}

    def set_search_params(self, params: str | Mapping[str, int] | None, *, only_applicable: bool = False) -> None:
        """Set search-time knobs: ``"nprobe=16,efSearch=64"`` or {name: value}
        (:func:`~vidclip.index.designs.parse_search_params` checks them). A knob the design lacks is a
        ConfigError, or skipped with ``only_applicable`` (one recorded setting serves indexes of
        several designs: each takes the knobs it has)."""
        knobs = search_knobs(self._index, self.design)
        for name, value in parse_search_params(params).items():
            if name not in knobs:
                if only_applicable:
                    continue
                raise ConfigError(f"vector index {self.design!r}: {name} applies to {SEARCH_KNOBS[name]} only")
            if name == "k_factor":
                refine_stage(self._index).k_factor = float(value)
            elif name == "nprobe":
                faiss.ParameterSpace().set_index_parameter(self._index, "nprobe", value)
                self._nprobe = value
            else:
                # For IVF*_HNSW the graph is the coarse quantizer: faiss names that knob quantizer_efSearch.
                faiss_name = "efSearch" if faiss.try_extract_index_ivf(self._index) is None else "quantizer_efSearch"
                faiss.ParameterSpace().set_index_parameter(self._index, faiss_name, value)
                self._ef_search = value
        self._gpu_index = None

    # -- mutation

    def train_sample_size(self, n: int) -> int:
        """How many of ``n`` vectors training uses: ``train_size`` when given, else the rule of
        :func:`~vidclip.index.designs.train_sample_size` (at most 1M at 512-d; 64 per IVF cell)."""
        return train_sample_size(self._index, self.dim, n, self.train_size)

    def train(self, vectors, *, in_place: bool = False) -> None:
        """Train on (a random sample of :meth:`train_sample_size` of) ``vectors`` [N, D]; no-op if trained.

        ``in_place=True``: ``vectors`` is a float32 sample drawn for this (:func:`sample_chunks`) and
        may be normalised in place, so the training sample is held once, not twice.
        """
        if self.is_trained:
            return
        owned = in_place
        vectors = np.asarray(vectors)
        if vectors.size == 0:
            raise VidclipError(f"vector index {self.design!r}: no vectors to train on")
        n = vectors.shape[0]
        size = self.train_sample_size(n)
        if n > size:
            rows = np.sort(np.random.default_rng(self.seed).choice(n, size, replace=False))
            vectors, owned = vectors[rows], True
        if (owned and vectors.ndim == 2 and vectors.dtype == np.float32 and vectors.flags.c_contiguous
                and vectors.flags.writeable):
            sample = l2_normalize(vectors, in_place=True)  # a copy this method owns
        else:
            sample = l2_normalize(vectors)
        self._check_dim(sample)
        prepare_training(self._index, self.design, len(sample))
        try:
            self._index.train(sample)
        except RuntimeError as e:
            # faiss prefixes its reason with the C++ function and source line; keep only the reason
            reason = re.sub(r"^Error in .*? at \S+:\d+: (Error: )?", "", str(e).strip().splitlines()[-1])
            raise VidclipError(f"vector index {self.design!r}: training on {len(sample)} vectors failed: "
                               f"{reason}") from None
        self._gpu_index = None

    def fill(self, chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], n: int) -> None:
        """Train (if needed) and add from a chunk source, never holding more than the training sample
        plus one chunk: ``chunks()`` starts a pass of (ids int64 [C], vectors [C, D]) steps over the
        ``n`` vectors (``Catalog.iter_vectors``, :func:`~vidclip.index.exact.array_chunks`). An untrained design takes one
        pass to draw :meth:`train_sample_size` vectors uniformly (:func:`sample_chunks`, ``seed``),
        then one pass to add them all."""
        if not self.is_trained:
            self.train(sample_chunks(chunks(), n, self.train_sample_size(n), self.seed), in_place=True)
        for ids, vectors in chunks():
            self.add(vectors, ids)

    def add(self, vectors, ids) -> None:
        """Add vectors [N, D] (normalised here) under int64 ids [N]. Trains first if the design needs it."""
        vectors = np.asarray(vectors)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        if vectors.shape[0] != ids.shape[0]:
            raise ConfigError(f"vector index: {vectors.shape[0]} vectors but {ids.shape[0]} ids")
        if vectors.shape[0] == 0:
            return
        self._check_dim(vectors)
        if self._removed and not self._removed.isdisjoint(ids.tolist()):
            raise IndexMismatchError(f"vector index {self.design!r}: ids {sorted(self._removed & set(ids.tolist()))[:5]} "
                                     "were removed from this index and cannot be reused before it is rebuilt")
        if not self.is_trained:
            self.train(vectors)
        for lo in range(0, vectors.shape[0], _ADD_CHUNK):
            self._index.add_with_ids(l2_normalize(vectors[lo:lo + _ADD_CHUNK]), ids[lo:lo + _ADD_CHUNK])
        self._gpu_index = None

    def remove(self, ids: Iterable[int]) -> int:
        """Remove entries by id; returns how many were live. Unknown ids are ignored."""
        ids = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64))
        ids = ids[~np.isin(ids, np.fromiter(self._removed, np.int64, len(self._removed)))] if self._removed else ids
        if ids.size == 0:
            return 0
        try:
            removed = int(self._index.remove_ids(ids))
        except RuntimeError:
            # The structure cannot delete (an HNSW graph): tombstone the ids that are present.
            present = self._present(ids)
            self._removed.update(int(i) for i in present)
            removed = int(present.size)
        self._gpu_index = None
        return removed

    def _present(self, ids: np.ndarray) -> np.ndarray:
        if isinstance(self._index, faiss.IndexIDMap):
            have = faiss.vector_to_array(self._index.id_map)
            return ids[np.isin(ids, have)]
        return ids

    def reset(self) -> None:
        """Drop every entry (and tombstone) but keep the training, so a rebuild need not retrain."""
        self._index.reset()
        self._removed.clear()
        self._gpu_index = None

    def _check_dim(self, vectors: np.ndarray) -> None:
        if vectors.shape[-1] != self.dim:
            raise IndexMismatchError(f"vector index holds {self.dim}-d vectors, got {vectors.shape[-1]}-d")

    # -- search

    def search(self, queries, k: int = 10, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k live entries per query.

        queries float [Q, D] or [D] (normalised here). Returns (scores float32 [Q, k] cosine,
        best first; ids int64 [Q, k]); when fewer than k entries exist the tail is id -1, score -inf.

        ``allowed_ids`` (int64 array, any order, duplicates and unknown ids allowed): search only
        those entries, inside faiss (an ``IDSelector``; see :meth:`_search_allowed` for the rule that
        keeps k hits when few are allowed). None: the whole index.

        Up to ``FEW_QUERIES`` queries run on one OpenMP thread (the calling thread's setting only,
        restored after): same results, and on a shared 2-core machine a fast-scan design's single
        query took 0.34 ms on one thread against 24 ms on two (BENCHMARKS.md, *Vectors at scale*).
        """
        queries = l2_normalize(queries)
        self._check_dim(queries)
        k = int(k)
        if k <= 0:
            raise ConfigError(f"vector index: k must be positive, got {k}")
        if self._index.ntotal == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        if allowed_ids is not None:
            with _omp_threads(1 if len(queries) <= FEW_QUERIES else None):
                scores, ids = self._search_allowed(queries, k, allowed_ids)
            scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
            return scores, ids.astype(np.int64)
        flat = self._flat_view() if self._use_gpu is False or _gpu_count() == 0 else None
        if flat is not None:
            # Exact design on the CPU: a BLAS matmul over faiss' own storage (zero-copy) beats
            # faiss' flat scan here by 4-5x (tools/bench_index.py) and returns the same top-k.
            scores, ids = exact_search(flat[0], queries, k, flat[1])
        else:
            searcher = self._index if self._removed else self._searcher()
            # A few queries run on one OpenMP thread: faiss parallelises over queries, so a single query
            # has nothing to split, and waking (and on a busy machine waiting for) a thread team per
            # call costs more than it saves. Batches keep every thread.
            with _omp_threads(1 if len(queries) <= FEW_QUERIES and searcher is self._index else None):
                if self._removed:
                    scores, ids = self._search_excluding_removed(queries, k)
                else:
                    scores, ids = searcher.search(queries, k)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids.astype(np.int64)

    def _flat_view(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(vectors float32 [N, D], ids int64 [N]) viewing an IDMap2(IndexFlatIP)'s memory, else None.

        Views, not copies: valid until the next add/remove, so taken afresh for every search.
        """
        if not isinstance(self._index, faiss.IndexIDMap) or self._removed:
            return None
        inner = faiss.downcast_index(self._index.index)
        if type(inner) not in (faiss.IndexFlat, faiss.IndexFlatIP) or inner.metric_type != faiss.METRIC_INNER_PRODUCT:
            return None
        n = int(inner.ntotal)
        vectors = faiss.rev_swig_ptr(inner.get_xb(), n * self.dim).reshape(n, self.dim)
        ids = faiss.rev_swig_ptr(self._index.id_map.data(), n)
        return vectors, ids

    def _search_allowed(self, queries: np.ndarray, k: int, allowed_ids) -> tuple[np.ndarray, np.ndarray]:
        """Top-k among ``allowed_ids`` (tombstones excluded), always on the CPU index.

        The filter is an ``IDSelector`` (:func:`id_selector`) in faiss' search parameters, so the
        design only scores allowed entries. The rule that keeps k hits when few are allowed, with
        ``frac`` = allowed ids / stored entries:

        * Flat: every allowed vector is scored (exact filtered search).
        * IVF (also refined, behind OPQ, with an HNSW quantiser): nprobe / frac cells, at most all
          of them, so a query scans about as many allowed vectors as an unfiltered search scans
          vectors (recall as unfiltered for a filter unrelated to content); at frac <= nprobe/nlist
          that is every cell, i.e. every allowed vector scored. A query still short of min(k,
          allowed) hits is searched again over all cells.
        * the rest (HNSW graphs, PQ, ... under an IDMap): when at most ``EXACT_ALLOWED_MAX`` ids are
          allowed, or a query comes back short, the allowed vectors are reconstructed and searched
          exactly; otherwise HNSW's beam is max(efSearch, k) / frac (at most the entry count).
        """
        allowed = np.asarray(allowed_ids).reshape(-1)
        if allowed.size and not np.issubdtype(allowed.dtype, np.integer):
            raise ConfigError(f"vector index: allowed ids must be integers, got {allowed.dtype}")
        allowed = allowed.astype(np.int64, copy=False)
        if self._removed:
            allowed = allowed[~np.isin(allowed, np.fromiter(self._removed, np.int64, len(self._removed)))]
        nq = len(queries)
        if allowed.size == 0:
            return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
        sel, keep, count = id_selector(allowed)
        frac = min(1.0, count / max(1, int(self._index.ntotal)))
        wanted = min(k, count)
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is not None:
            nprobe = self._nprobe or 1
            scaled = min(int(ivf.nlist), int(math.ceil(nprobe / frac)))
            scores, ids = self._index.search(queries, k, params=self._filtered_params(sel, nprobe=scaled))
            if scaled < ivf.nlist and ((ids >= 0).sum(axis=1) < wanted).any():
                scores, ids = self._index.search(queries, k, params=self._filtered_params(sel, nprobe=int(ivf.nlist)))
            return scores, ids
        inner = faiss.downcast_index(self._index.index) if isinstance(self._index, faiss.IndexIDMap) else None
        exact_ok = inner is not None and type(inner) not in (faiss.IndexFlat, faiss.IndexFlatIP)
        if exact_ok and count <= EXACT_ALLOWED_MAX:
            return self._exact_over(queries, k, allowed)
        ef = None
        if "HNSW" in self.design.upper():
            ef = min(max(int(self._index.ntotal), 1), int(math.ceil(max(self._ef_search or self._hnsw_ef(), k) / frac)))
        scores, ids = self._index.search(queries, k, params=self._filtered_params(sel, ef_search=ef))
        if exact_ok and ((ids >= 0).sum(axis=1) < wanted).any():
            return self._exact_over(queries, k, allowed)
        return scores, ids

    def _filtered_params(self, sel, *, nprobe: int | None = None, ef_search: int | None = None):
        """faiss search parameters restricting a search of this design to ``sel`` (caller ids), at the
        given nprobe / efSearch (None: the recorded ones). References that must outlive the search
        are kept on the returned object."""
        refine = refine_stage(self._index)
        if refine is not None:
            # The refined base is searched by insertion number (the IDMap on top maps to ids), and the
            # IDMap translates only the top-level selector: translate the base's one here.
            translated = faiss.IDSelectorTranslated(self._index.id_map, sel)
            base = self._design_params(faiss.downcast_index(refine.base_index), translated, nprobe, ef_search)
            params = faiss.IndexRefineSearchParameters(sel=sel, k_factor=float(refine.k_factor),
                                                       base_index_params=base)
            params._keep = (sel, translated, base)
            return params
        params = self._design_params(self._index, sel, nprobe, ef_search)
        params._keep = (sel,)
        return params

    def _design_params(self, index, sel, nprobe, ef_search):
        if faiss.try_extract_index_ivf(index) is not None:
            return faiss.SearchParametersIVF(sel=sel, nprobe=int(nprobe or self._nprobe or 1))
        if "HNSW" in self.design.upper():
            return faiss.SearchParametersHNSW(sel=sel, efSearch=int(ef_search or self._ef_search or self._hnsw_ef()))
        return faiss.SearchParameters(sel=sel)

    def _exact_over(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the stored (reconstructed) vectors of the ``allowed`` ids of an IDMap'd design."""
        n = int(self._index.ntotal)
        stored = faiss.rev_swig_ptr(self._index.id_map.data(), n)
        rows = np.flatnonzero(np.isin(stored, allowed))
        if rows.size == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        inner = faiss.downcast_index(self._index.index)
        vectors = inner.reconstruct_batch(rows.astype(np.int64))
        return exact_search(vectors, queries, k, np.array(stored[rows], dtype=np.int64))

    def _search_excluding_removed(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search skipping tombstones: an IDSelector where the design takes search parameters, else
        (a refined IVF) k + |tombstones| results with the tombstoned ones dropped."""
        try:
            return self._index.search(queries, k, params=self._params_excluding_removed())
        except RuntimeError:
            pass
        scores, ids = self._index.search(queries, k + len(self._removed))
        dead = np.isin(ids, np.fromiter(self._removed, np.int64, len(self._removed)))
        order = np.argsort(dead, axis=1, kind="stable")[:, :k]  # live first, rank order kept
        ids = np.take_along_axis(np.where(dead, -1, ids), order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        return scores, ids

    def _params_excluding_removed(self):
        removed = np.fromiter(self._removed, np.int64, len(self._removed))
        sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(removed))
        if faiss.try_extract_index_ivf(self._index) is not None:
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self._nprobe or 1)
        elif "HNSW" in self.design.upper():
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=self._ef_search or self._hnsw_ef())
        else:
            params = faiss.SearchParameters(sel=sel)
        params._keep = (sel, removed)  # the selector must outlive the search call
        return params

    def _hnsw_ef(self) -> int:
        inner = self._index.index if isinstance(self._index, faiss.IndexIDMap) else self._index
        hnsw = getattr(faiss.downcast_index(inner), "hnsw", None)
        return int(hnsw.efSearch) if hnsw is not None else 16

    def _searcher(self):
        """The GPU copy when faiss has GPUs and the design runs there; else the CPU index."""
        if self._use_gpu is False or _gpu_count() == 0:
            return self._index
        if self._gpu_index is None:
            try:
                gpu = faiss.index_cpu_to_all_gpus(self._index)
                if self._nprobe is not None:
                    faiss.GpuParameterSpace().set_index_parameter(gpu, "nprobe", self._nprobe)
                self._gpu_index = gpu
            except (RuntimeError, AttributeError) as e:
                if self._use_gpu is True:
                    log.warning("faiss GPU search unavailable for %s (%s); using the CPU", self.design, e)
                self._use_gpu = False
                return self._index
        return self._gpu_index

    # -- persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write the index atomically and durably (:func:`vidclip.core.fileio.atomic_path`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({
            "dim": self.dim, "design": self.design, "nprobe": self._nprobe, "ef_search": self._ef_search,
            "train_size": self.train_size, "seed": self.seed, "metadata": self.metadata,
            "removed": len(self._removed),
        }).encode("utf-8")
        with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
            f.write(FILE_MAGIC)
            f.write(struct.pack("<Q", len(header)))
            f.write(header)
            f.write(np.array(sorted(self._removed), dtype="<i8").tobytes())
            writer = faiss.PyCallbackIOWriter(f.write)
            faiss.write_index(self._index, writer)
            del writer  # flushes its buffer into f

    @classmethod
    def load(cls, path: str | os.PathLike, *, use_gpu: bool | str = "auto") -> "VectorIndex":
        path = Path(path)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise VidclipError(f"{path}: vector index file not found") from None
        except IsADirectoryError:
            raise IndexMismatchError(f"{path}: is a directory, not a vector index file") from None
        except OSError as e:
            raise IndexMismatchError(f"{path}: cannot read the vector index ({e.strerror})") from None
        with f:
            if f.read(len(FILE_MAGIC)) != FILE_MAGIC:
                raise IndexMismatchError(f"{path}: not a vidclip vector index (bad magic bytes)")
            try:
                (hlen,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(hlen).decode("utf-8"))
                if not isinstance(header, dict):
                    raise ValueError("header is not a JSON object")
                for name, kind in (("dim", int), ("design", str), ("removed", int)):
                    if not isinstance(header.get(name), kind) or isinstance(header.get(name), bool):
                        raise ValueError(f"header field {name!r} is missing or not a {kind.__name__}")
                removed = np.frombuffer(f.read(8 * int(header["removed"])), dtype="<i8")
                reader = faiss.PyCallbackIOReader(f.read)
                index = faiss.read_index(reader)
                del reader
            except (struct.error, ValueError, KeyError, RuntimeError, OverflowError, MemoryError) as e:
                raise IndexMismatchError(f"{path}: corrupt vector index ({str(e)[:200]})") from None
        self = cls.__new__(cls)
        self.dim = int(header["dim"])
        self.design = header["design"]
        self.train_size = header.get("train_size")
        self.seed = int(header.get("seed", 0))
        self.metadata = header.get("metadata") or {}
        self._use_gpu = use_gpu
        self._removed = set(removed.tolist())
        self._gpu_index = None
        self._index = index
        self._nprobe = None
        self._ef_search = None
        if index.d != self.dim:
            raise IndexMismatchError(f"{path}: header says {self.dim}-d, faiss index is {index.d}-d")
        # the header's knob fields predate the one-string form; k_factor lives in faiss' own bytes
        self.set_search_params({"nprobe": header.get("nprobe") or None, "efSearch": header.get("ef_search") or None})
        return self

    def nbytes(self) -> int:
        """Serialized size of the faiss index in bytes (counted, not materialised)."""
        total = 0

        def count(b) -> int:
            nonlocal total
            total += len(b)
            return len(b)

        writer = faiss.PyCallbackIOWriter(count)
        faiss.write_index(self._index, writer)
        del writer
        return total
