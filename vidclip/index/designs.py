"""faiss designs: which one ``"auto"`` picks, what a design's structure holds, how much it trains
on, and its search-time knobs as one faiss ``ParameterSpace``-style string.

A design is a faiss ``index_factory`` string (``"Flat"``, ``"IVF4096,SQfp16"``, ``"HNSW32"``,
``"IVF65536,PQ64x4fs,RFlat"``, ...); :class:`~vidclip.index.vectors.VectorIndex` builds and runs
it. Here: :func:`choose_design` (``"auto"`` by library size), :func:`default_nprobe`, the
structure questions VectorIndex asks of a built faiss index (does it store ids, do its codes
train, how large a training sample) and the search knobs.

Search knobs: one string such as ``"nprobe=16,efSearch=64"`` (:func:`parse_search_params`,
:func:`format_search_params`), the form ``vidclip index --search-params`` takes and the catalog
records (one ``search_params`` meta key):

* ``nprobe``: IVF cells a query visits (IVF designs);
* ``efSearch``: HNSW beam width (HNSW designs; the coarse quantiser's for ``IVF...,HNSW``);
* ``k_factor``: candidates per result a refined design (``...,RFlat``, ``...,Refine(SQ8)``)
  re-ranks exactly.

Which of them a built index has: :func:`search_knobs`.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping

import faiss

from vidclip.core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_FLAT_MAX = 200_000
TRAIN_MAX_BYTES = 2 << 30  # cap of a training sample (float32): 1M 512-d vectors
KMEANS_ITERATIONS = 10  # k-means iterations of an IVF coarse quantiser with >= 4096 cells
SQ8_ABOVE = 10_000_000  # "auto" stores fp16 up to this many vectors (1 KB each at 512-d), 8-bit above
REFINE_K_FACTOR = 32  # candidates per result a refined design (",RFlat", ",Refine(...)") re-ranks exactly

# knob name -> the designs that have it (said in errors); the order is the string's order
SEARCH_KNOBS = {"nprobe": "IVF designs", "efSearch": "HNSW designs",
                "k_factor": "refined designs (',RFlat', ',Refine(...)')"}


# ----------------------------------------------------------------------------- choosing a design


def choose_design(n: int, flat_max: int = DEFAULT_FLAT_MAX) -> str:
    """The design ``"auto"`` resolves to for ``n`` vectors.

    Exact ``Flat`` up to ``flat_max``: below that size brute force is fast enough and has no
    training or recall loss. Above it an IVF with ``nlist`` the power of two nearest 4 * sqrt(n)
    (clamped to [1024, 65536]; faiss' guideline is 4..16 * sqrt(n)) storing vectors as fp16
    (``SQfp16``: half of Flat's memory, the same recall); beyond ``SQ8_ABOVE`` vectors 8-bit
    (``SQ8``: a quarter, recall@10 ~0.02 lower). Measured on CLIP-shaped data (BENCHMARKS.md,
    *Vectors at scale*): at 1M, IVF4096,SQfp16 at the default nprobe (:func:`default_nprobe`)
    reaches recall@10 ~0.97 in about 1 ms per query on 2 cores, against ~100 ms for exact search.
    Many cells matter because CLIP-like data is clumped: with ~sqrt(n) cells the cells of the dense
    regions, where queries land, hold 10x the average and a query scans 5x more than nprobe/nlist.
    """
    if n <= flat_max:
        return "Flat"
    nlist = min(max(2 ** round(math.log2(4 * math.sqrt(n))), 1024), 65536)
    return f"IVF{nlist},{'SQ8' if n > SQ8_ABOVE else 'SQfp16'}"


def default_nprobe(nlist: int, design: str = "") -> int:
    """IVF cells a query visits unless told: max(16, nlist / 256), twice that for lossy codes (SQ8,
    SQ4, PQ; ``design`` names them). Measured at 1M CLIP-shaped vectors with 4096 cells (BENCHMARKS.md,
    *Vectors at scale*): SQfp16 at 16 probes recall@10 0.968 (0.997 at 32); SQ8 0.951 at 16, 0.978
    at 32. The visits grow with nlist, so the scanned fraction stays put as ``auto`` adds cells."""
    codes = design.upper().split(",")[1:]
    lossy = any(part.startswith(("SQ8", "SQ6", "SQ4", "PQ")) for part in codes)
    return max(16, (int(nlist) // 256) * (2 if lossy else 1))


# ----------------------------------------------------------------------------- a built design's structure


def stores_ids(index) -> bool:
    """Whether ``index`` keeps caller ids itself: an IVF (also behind a transform such as OPQ), an IDMap.

    A refined IVF (``IVF...,RFlat`` / ``Refine(...)``) does not: the refine stage looks its vectors
    up by the labels the IVF returns, which must be insertion numbers, so it needs an IDMap on top.
    """
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):
        return True
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return isinstance(index, faiss.IndexIVF)


def refine_stage(index):
    """The ``IndexRefine`` of a refined design (under its IDMap), else None."""
    inner = faiss.downcast_index(index.index if isinstance(index, faiss.IndexIDMap) else index)
    return inner if isinstance(inner, faiss.IndexRefine) else None


def codes_need_training(index) -> bool:
    """Whether the stored codes (not just IVF cells) are trained: PQ, SQ, OPQ, ... (not Flat)."""
    design_parts = []  # the code-holding parts: an IVF / flat base and any refine stage
    index = faiss.downcast_index(index)
    while True:
        if isinstance(index, faiss.IndexIDMap):
            index = faiss.downcast_index(index.index)
        elif isinstance(index, faiss.IndexPreTransform):
            return True  # OPQ / PCA: a trained transform
        elif isinstance(index, faiss.IndexRefine):
            design_parts.append(faiss.downcast_index(index.refine_index))
            index = faiss.downcast_index(index.base_index)
        else:
            break
    design_parts.append(index)
    return any(not isinstance(part, (faiss.IndexFlat, faiss.IndexIVFFlat, faiss.IndexHNSWFlat)) for part in design_parts)


def train_sample_size(index, dim: int, n: int, train_size: int | None = None) -> int:
    """How many of ``n`` vectors the faiss ``index`` (of ``dim``-d vectors) trains on: ``train_size``
    when given, else the rule

        min(n, max(20,000, 64 * nlist, 65,536 if the codes need training (PQ, SQ, OPQ)), cap)
        cap = max(39 * nlist, TRAIN_MAX_BYTES / (4 * dim))   (1M vectors at 512-d)

    64 points per IVF cell sit between faiss' minimum (it warns below 39 per centroid) and the 256
    at which its k-means subsamples; 65,536 = 256 * 256 is what faiss' PQ k-means uses per
    sub-quantiser. The cap bounds the sample's memory (2 GiB of float32) but never goes below 39
    per cell, so IVF65536 still gets its 2.6M points.
    """
    if train_size is not None:
        return min(int(n), int(train_size))
    ivf = faiss.try_extract_index_ivf(index)
    nlist = int(ivf.nlist) if ivf is not None else 0
    size = max(20_000, 64 * nlist)
    if codes_need_training(index):
        size = max(size, 65_536)
    cap = max(39 * nlist, TRAIN_MAX_BYTES // (4 * int(dim)))
    return int(min(int(n), size, cap))


def prepare_training(index, design: str, n: int) -> None:
    """Set up the faiss ``index`` to train on ``n`` vectors.

    Fewer k-means iterations for a large coarse quantiser (``KMEANS_ITERATIONS``): at nlist 4096+
    faiss' default 25 costs many minutes on a few cores, and 10 loses little recall (BENCHMARKS.md).
    One vidclip warning, instead of faiss' own C++ stderr line, when an IVF coarse quantiser gets
    fewer than faiss' 39 training points per cell (training still works; the cells may be poor).
    """
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return
    if ivf.nlist >= 4096:
        ivf.cp.niter = min(int(ivf.cp.niter), KMEANS_ITERATIONS)
    if n < ivf.nlist:  # fewer points than cells: faiss refuses, and the caller reports it
        return
    wanted = int(ivf.cp.min_points_per_centroid) * ivf.nlist
    if n < wanted:
        log.warning("vector index %r: %d training vectors for %d cells (faiss wants %d); its cells may be "
                    "poor: check with --check-recall", design, n, ivf.nlist, wanted)
        ivf.cp.min_points_per_centroid = 1  # said once here; keeps faiss from printing its own line


# ----------------------------------------------------------------------------- search knobs


def parse_search_params(spec: str | Mapping[str, int] | None) -> dict[str, int]:
    """Search knobs from a ParameterSpace-style string (``"nprobe=16,efSearch=64"``; spaces and an
    empty string allowed) or a mapping of the same (None values left out): {name: positive int}.
    The one check of knob names and values: a ConfigError names what is wrong."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        items = [(name, value) for name, value in spec.items() if value is not None]
    elif isinstance(spec, str):
        items = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise ConfigError(f"search parameters {spec!r}: {part!r} is not NAME=VALUE "
                                  "(e.g. 'nprobe=16,efSearch=64')")
            items.append((name.strip(), value.strip()))
    else:
        raise ConfigError(f"search parameters must be a string such as 'nprobe=16,efSearch=64', got {spec!r}")
    params: dict[str, int] = {}
    for name, value in items:
        if name not in SEARCH_KNOBS:
            raise ConfigError(f"search parameter {name!r}: unknown; known: {', '.join(SEARCH_KNOBS)}")
        try:
            number = None if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()) \
                else int(value)
        except (TypeError, ValueError):
            number = None
        if number is None or number <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        params[name] = number
    return params


def format_search_params(params: Mapping[str, int | None]) -> str:
    """``{"nprobe": 16, "efSearch": 64}`` -> ``"nprobe=16,efSearch=64"`` (knobs in ``SEARCH_KNOBS``
    order; None values left out)."""
    return ",".join(f"{name}={int(params[name])}" for name in SEARCH_KNOBS if params.get(name) is not None)


def search_knobs(index, design: str) -> set[str]:
    """The knobs of ``SEARCH_KNOBS`` the built faiss ``index`` of ``design`` has."""
    knobs = set()
    if faiss.try_extract_index_ivf(index) is not None:
        knobs.add("nprobe")
    if "HNSW" in design.upper():
        knobs.add("efSearch")
    if refine_stage(index) is not None:
        knobs.add("k_factor")
    return knobs
