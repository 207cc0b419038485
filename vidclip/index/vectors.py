"""Vector search over L2-normalised embeddings: a faiss index chosen by one string.

``VectorIndex(dim, design)`` wraps any faiss ``index_factory`` string with
``METRIC_INNER_PRODUCT``; vectors are L2-normalised on the way in, so scores are cosine
similarities. Designs:

* ``"Flat"`` — exact search (brute-force inner product). ``"auto"`` picks it up to
  ``flat_max`` vectors (default 200,000) and ``IVF{nlist},Flat`` above (see :func:`choose_design`).
* anything faiss understands: ``"IVF4096,Flat"``, ``"HNSW32"``, ``"IVF1024,PQ64"``,
  ``"OPQ64,IVF1024,PQ64"``, ``"IVF1024,SQ8"``, ... Designs that need training (IVF, PQ, OPQ)
  are trained on a random sample (``train_size``) of the first vectors added, or on an
  explicit :meth:`VectorIndex.train` call.

Every entry carries a caller-chosen int64 id. Indexes that cannot store ids themselves
(Flat, HNSW, ...) are wrapped in ``IndexIDMap2``; IVF indexes store ids natively. Removal
uses faiss ``remove_ids`` where the index supports it; where it does not (HNSW graphs),
removed ids become tombstones excluded at search time with an ``IDSelector``, so results are
still exactly k live entries. A tombstoned id cannot be added again until the index is rebuilt.

Search-time knobs: ``nprobe`` (IVF cells visited) and ``ef_search`` (HNSW beam width).
Saved files are one self-describing container written atomically (tmp file + ``os.replace``):

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
import struct
import uuid
from pathlib import Path
from typing import Iterable

import faiss
import numpy as np

from ..errors import ConfigError, IndexMismatchError, VidclipError

log = logging.getLogger(__name__)

DEFAULT_FLAT_MAX = 200_000
_MAGIC = b"VIDCLIPVEC\x01\n"
_ADD_CHUNK = 65_536  # rows normalised + added at a time: bounds the temporary copy


# ----------------------------------------------------------------------------- helpers


def l2_normalize(x) -> np.ndarray:
    """Rows scaled to unit L2 norm: float32 [N, D] (a 1-D input is one row). Zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def choose_design(n: int, flat_max: int = DEFAULT_FLAT_MAX) -> str:
    """The design ``"auto"`` resolves to for ``n`` vectors.

    Exact ``Flat`` up to ``flat_max``: below that size brute force is fast enough and has no
    training or recall loss. Above it, ``IVF{nlist},Flat`` with nlist the power of two nearest
    sqrt(n), clamped to [256, 65536]: at 1M vectors that is IVF1024, which with the default
    nprobe 16 measured recall@10 0.976 at 7 ms per query on 2 cores (BENCHMARKS.md), and whose
    k-means trains in seconds; faiss' larger 4..16 * sqrt(n) cells buy speed at a training cost
    that a 2-core machine pays in many minutes.
    """
    if n <= flat_max:
        return "Flat"
    nlist = 2 ** round(math.log2(math.sqrt(n)))
    return f"IVF{min(max(nlist, 256), 65536)},Flat"


def exact_search(vectors, queries, k: int, ids=None, *, chunk: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with numpy: matmul + argpartition, in row chunks.

    vectors float [N, D], queries float [Q, D] (used as given: normalise them first for
    cosine). Returns (scores float32 [Q, k], ids int64 [Q, k]) best first; ``ids`` maps rows to
    ids (default: row numbers); missing entries (k > N) are -1 with score -inf.
    """
    vectors = np.asarray(vectors)
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    n, q = vectors.shape[0], queries.shape[0]
    best_s = np.full((q, 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((q, 0), dtype=np.int64)
    for lo in range(0, n, chunk):
        block = np.asarray(vectors[lo:lo + chunk], dtype=np.float32)
        s = queries @ block.T  # [Q, C]
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < s.shape[1] else np.broadcast_to(np.arange(s.shape[1]), (q, s.shape[1]))
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
        best_i = np.concatenate([best_i, part + lo], axis=1)
        if best_s.shape[1] > k:  # keep only the running top-k
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s = np.take_along_axis(best_s, keep, axis=1)
            best_i = np.take_along_axis(best_i, keep, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    best_s = np.take_along_axis(best_s, order, axis=1)
    best_i = np.take_along_axis(best_i, order, axis=1)
    if ids is not None:
        best_i = np.asarray(ids, dtype=np.int64)[best_i] if best_i.size else best_i
    pad = k - best_s.shape[1]
    if pad > 0:
        best_s = np.concatenate([best_s, np.full((q, pad), -np.inf, np.float32)], axis=1)
        best_i = np.concatenate([best_i, np.full((q, pad), -1, np.int64)], axis=1)
    return best_s.astype(np.float32), best_i.astype(np.int64)


def recall_at_k(index: "VectorIndex", exact_vectors, queries, k: int = 10, ids=None, *,
                tie_tol: float | None = None) -> float:
    """k-recall@k of ``index`` against exact search: mean over queries of |approx top-k ∩ exact top-k| / k.

    ``exact_vectors`` [N, D] are the vectors the index holds (row r has id ``ids[r]``, default r);
    queries [Q, D]; both sides see them L2-normalised, as the index does. When N < k a query's
    denominator is N.

    ``tie_tol``: None (default) counts only ids in the exact top-k (the definition BENCHMARKS.md
    uses). A float also counts a returned id whose exact score is within ``tie_tol`` of the k-th
    exact score: with duplicate vectors (identical clips, static windows) or float rounding (the
    index and numpy sum in different orders) several ids tie at rank k and exact search keeps an
    arbitrary one of them, which must not read as a miss (ann-benchmarks counts recall the same way).
    """
    queries = l2_normalize(queries)
    exact_vectors = np.asarray(exact_vectors, dtype=np.float32)
    n = exact_vectors.shape[0]
    # Normalise in chunks inside exact_search's loop would need a copy anyway; do it once here.
    vecs = np.concatenate([l2_normalize(exact_vectors[i:i + _ADD_CHUNK]) for i in range(0, n, _ADD_CHUNK)]) if n else exact_vectors
    truth_s, truth = exact_search(vecs, queries, k, ids)
    _, got = index.search(queries, k)
    valid_t = truth >= 0  # [Q, k]; False only where N < k
    per_query = valid_t.sum(axis=1)
    denom = int(per_query.sum())
    if not denom:
        return 1.0
    hit = ((got[:, :, None] == truth[:, None, :]) & valid_t[:, None, :]).any(axis=2) & (got >= 0)  # [Q, k]
    if tie_tol is not None:
        id_of_row = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        order = np.argsort(id_of_row, kind="stable")
        pos = np.clip(np.searchsorted(id_of_row[order], got), 0, max(n - 1, 0))
        known = (got >= 0) & (id_of_row[order][pos] == got)  # ids the exact side has at all
        rows = order[pos]
        # exact score of each returned id, one rank at a time: [Q, D] temporaries, not [Q, k, D]
        got_s = np.stack([np.einsum("qd,qd->q", queries, vecs[rows[:, j]]) for j in range(got.shape[1])], axis=1)
        kth = truth_s[np.arange(len(truth_s)), np.maximum(per_query - 1, 0)]
        hit |= known & (got_s >= kth[:, None] - tie_tol)
    # a query cannot score more hits than it has exact neighbours (guards against repeated ids)
    return float(np.minimum(hit.sum(axis=1), per_query).sum() / denom)


def _gpu_count() -> int:
    try:
        return int(faiss.get_num_gpus())
    except AttributeError:  # faiss-cpu build
        return 0


# ----------------------------------------------------------------------------- the index


class VectorIndex:
    """A faiss index over L2-normalised float32 [N, dim] vectors with int64 ids.

    ``design``: ``"Flat"``, ``"auto"`` (resolved by :meth:`build` from the number of vectors;
    a bare constructor treats it as Flat) or any faiss index_factory string. ``nprobe`` /
    ``ef_search``: search-time settings (None keeps faiss' default, or for IVF, 16).
    ``train_size``: vectors sampled for training (default max(20,000, 64 * nlist), never more
    than given). ``metadata``: free-form JSON saved with the index (e.g. a catalog generation).
    """

    def __init__(
        self,
        dim: int,
        design: str = "Flat",
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
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
        if nprobe is None and faiss.try_extract_index_ivf(self._index) is not None:
            nprobe = 16
        if nprobe is not None:
            self.nprobe = nprobe
        if ef_search is not None:
            self.ef_search = ef_search

    # -- construction

    def _create(self, design: str):
        try:
            index = faiss.index_factory(self.dim, design, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
            raise ConfigError(f"vector index design {design!r} is not a valid faiss index_factory string ({first})") from None
        if faiss.try_extract_index_ivf(index) is None and not isinstance(index, faiss.IndexIDMap):
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
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if faiss.try_extract_index_ivf(self._index) is None:
            raise ConfigError(f"vector index {self.design!r}: nprobe applies to IVF designs only")
        value = int(value)
        if value <= 0:
            raise ConfigError(f"vector index: nprobe must be positive, got {value}")
        faiss.ParameterSpace().set_index_parameter(self._index, "nprobe", value)
        self._nprobe = value
        self._gpu_index = None

    @property
    def ef_search(self) -> int | None:
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if "HNSW" not in self.design.upper():
            raise ConfigError(f"vector index {self.design!r}: ef_search applies to HNSW designs only")
        value = int(value)
        if value <= 0:
            raise ConfigError(f"vector index: ef_search must be positive, got {value}")
        # For IVF*_HNSW the graph is the coarse quantizer: faiss names that knob quantizer_efSearch.
        name = "efSearch" if faiss.try_extract_index_ivf(self._index) is None else "quantizer_efSearch"
        faiss.ParameterSpace().set_index_parameter(self._index, name, value)
        self._ef_search = value

    def settings(self) -> dict:
        return {"design": self.design, "dim": self.dim, "nprobe": self._nprobe, "ef_search": self._ef_search,
                "ntotal": self.ntotal, "trained": self.is_trained}

    # -- mutation

    def train(self, vectors) -> None:
        """Train on (a random sample of at most ``train_size`` of) ``vectors`` [N, D]; no-op if trained."""
        if self.is_trained:
            return
        vectors = np.asarray(vectors)
        n = vectors.shape[0]
        size = self.train_size
        if size is None:
            ivf = faiss.try_extract_index_ivf(self._index)
            size = max(20_000, 64 * (ivf.nlist if ivf is not None else 0))
        if n > size:
            rows = np.sort(np.random.default_rng(self.seed).choice(n, size, replace=False))
            vectors = vectors[rows]
        sample = l2_normalize(vectors)
        self._check_dim(sample)
        try:
            self._index.train(sample)
        except RuntimeError as e:
            raise VidclipError(f"vector index {self.design!r}: training on {len(sample)} vectors failed: "
                               f"{str(e).strip().splitlines()[-1]}") from None
        self._gpu_index = None

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

    def search(self, queries, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k live entries per query.

        queries float [Q, D] or [D] (normalised here). Returns (scores float32 [Q, k] cosine,
        best first; ids int64 [Q, k]); when fewer than k entries exist the tail is id -1, score -inf.
        """
        queries = l2_normalize(queries)
        self._check_dim(queries)
        k = int(k)
        if k <= 0:
            raise ConfigError(f"vector index: k must be positive, got {k}")
        if self._index.ntotal == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        flat = self._flat_view() if self._use_gpu is False or _gpu_count() == 0 else None
        if flat is not None:
            # Exact design on the CPU: a BLAS matmul over faiss' own storage (zero-copy) beats
            # faiss' flat scan here by 4-5x (tools/bench_index.py) and returns the same top-k.
            scores, ids = exact_search(flat[0], queries, k, flat[1])
        elif self._removed:
            scores, ids = self._index.search(queries, k, params=self._params_excluding_removed())
        else:
            scores, ids = self._searcher().search(queries, k)
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
        """Write the index atomically (tmp file in the same folder, fsync, ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({
            "dim": self.dim, "design": self.design, "nprobe": self._nprobe, "ef_search": self._ef_search,
            "train_size": self.train_size, "seed": self.seed, "metadata": self.metadata,
            "removed": len(self._removed),
        }).encode("utf-8")
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(_MAGIC)
                f.write(struct.pack("<Q", len(header)))
                f.write(header)
                f.write(np.array(sorted(self._removed), dtype="<i8").tobytes())
                writer = faiss.PyCallbackIOWriter(f.write)
                faiss.write_index(self._index, writer)
                del writer  # flushes its buffer into f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        try:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass

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
            if f.read(len(_MAGIC)) != _MAGIC:
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
        if header.get("nprobe"):
            self.nprobe = header["nprobe"]
        if header.get("ef_search"):
            self.ef_search = header["ef_search"]
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
