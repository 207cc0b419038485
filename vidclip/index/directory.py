"""The index folder (:class:`IndexDir`): its files, the writer's lock, opening the catalog, damage
checks, cleanup of a killed run's leftovers and the derived faiss files kept in step with the
catalog.

Index directory::

    DIR/
      catalog.sqlite (+ -wal, -shm)   the source of truth (vidclip.index.catalog)
      features/                       frame embeddings: a FeatureStore (store.json, shards/)
      videos.faiss                    video-level vectors (vidclip.index.vectors), derived data
      segments.faiss                  window-level vectors, derived data
      .lock                           held (flock) by the one process writing the index

``IndexDir(path)`` is the one way code outside ``vidclip.index`` reaches those files (search,
rerank, serve, the CLI): it knows the layout, opens the catalog, takes the lock.

faiss files are derived data: whoever opens the index rebuilds one from the vectors stored in
the catalog when it is stamped with an older catalog generation (keeping an IVF's training), so
search never serves a set different from the catalog's (:meth:`IndexDir.sync_faiss`). Their
search knobs are recorded in the catalog as one string (meta ``search_params``,
``"nprobe=16,efSearch=64"``; :func:`record_search_params`), which every design takes what it has
of. Leftovers of a killed run (shard ``.tmp-*`` folders, faiss ``.*.tmp`` files, shards no catalog
row references) are removed by the next writer.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import signal
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from vidclip.core.errors import ConfigError, IndexMismatchError, VidclipError, display_path
from vidclip.features.store import (
    SHARDS_DIR,
    STORE_FILE,
    FeatureStore,
    committed_shards,
    model_key,
    read_store_header,
    write_store_header,
)
from vidclip.index.catalog import Catalog
from vidclip.index.designs import (
    DEFAULT_FLAT_MAX,
    choose_design,
    format_search_params,
    parse_search_params,
)
from vidclip.index.exact import sample_chunks
from vidclip.index.vectors import VectorIndex

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite"
FEATURES_DIR = "features"
VIDEO_VECTORS = "videos.faiss"
SEGMENT_VECTORS = "segments.faiss"
LOCK_FILE = ".lock"
KINDS = ("videos", "segments")  # the two vector sets of an index: one per video, one per window
CRASH_ENV = "VIDCLIP_INDEX_CRASH"  # test hook: "shard:K" | "commit:K" | "faiss:K" -> SIGKILL self there
LOCK_WAIT_S = 10.0  # how long a writer waits for the index lock (a reader saving faiss holds it for moments)
RETRAIN_GROWTH = 4  # retrain a trained design once the library is this many times what it was trained on
SEARCH_PARAMS_KEY = "search_params"  # catalog meta: the faiss search knobs, one string for both kinds
# before SEARCH_PARAMS_KEY: one meta key per knob and kind ("nprobe_videos", "ef_search_segments", ...)
_LEGACY_KNOB_KEYS = {"nprobe": "nprobe", "efSearch": "ef_search"}

_crash_counts: Counter = Counter()


def crash_point(point: str) -> None:
    """Test hook: SIGKILL this process the K-th time ``point`` is reached (``VIDCLIP_INDEX_CRASH``)."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    name, _, k = spec.partition(":")
    if name != point:
        return
    _crash_counts[point] += 1
    if _crash_counts[point] >= int(k or 1):
        os.kill(os.getpid(), signal.SIGKILL)


class IndexLock:
    """Exclusive flock on DIR/.lock: one writer per index; released when the process dies.

    ``with lock:`` waits up to ``LOCK_WAIT_S`` (a reader saving its faiss files holds it for
    moments); :meth:`acquire` tries once (or blocks with ``blocking=True``)."""

    def __init__(self, index_dir: IndexDir):
        self.index_dir = index_dir
        self.path = index_dir.lock_path
        self.fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        self.index_dir.check_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise IndexMismatchError(f"{display_path(self.path)}: is a directory, but it must be the index's lock "
                                     "file; remove it (it holds no data)") from None
        except OSError as e:
            raise VidclipError(f"{display_path(self.path)}: cannot open the index lock ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "IndexLock":
        deadline = time.monotonic() + LOCK_WAIT_S
        while not self.acquire():
            if time.monotonic() > deadline:
                raise VidclipError(f"{self.path.parent}: another vidclip process is writing this index; wait for it")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@dataclass
class Damage:
    """A part of an index that a writer (``vidclip index``, merge) refuses to work with.

    ``problem``: what is wrong with ``path``; ``advice``: what the user can do; ``repair``: a
    function that repairs it from what is stored and returns what it did (None: not repairable
    from the index itself). ``vidclip index --verify`` reports and repairs them (verify.py).
    """

    path: Path
    problem: str
    advice: str
    repair: Callable[[], str] | None = None

    def error(self) -> IndexMismatchError:
        return IndexMismatchError(f"{display_path(self.path)}: {self.problem}; {self.advice}")


# ----------------------------------------------------------------------------- search knobs, retraining


def recorded_search_params(catalog: Catalog, kind: str = "videos") -> dict[str, int]:
    """The faiss search knobs recorded in the index ({} when none): meta ``search_params``, or in an
    index written before it, the per-kind keys ``nprobe_<kind>`` / ``ef_search_<kind>``."""
    spec = catalog.get_meta(SEARCH_PARAMS_KEY)
    if spec is not None:
        return parse_search_params(spec)
    return parse_search_params({knob: catalog.get_meta(f"{old}_{kind}") or None
                                for knob, old in _LEGACY_KNOB_KEYS.items()})


def record_search_params(catalog: Catalog, cur: sqlite3.Cursor, params: str | Mapping[str, int] | None) -> str:
    """Record ``params`` (``"nprobe=32"`` or a dict; checked) over the recorded knobs, in one meta
    key for both kinds (each faiss index takes the knobs its design has); an older index's per-kind
    keys are folded in and dropped. Returns the string now recorded."""
    merged = {**recorded_search_params(catalog), **parse_search_params(params)}
    text = format_search_params(merged)
    if text or catalog.get_meta(SEARCH_PARAMS_KEY) is not None:
        catalog.set_meta(cur, SEARCH_PARAMS_KEY, text)
    for old in _LEGACY_KNOB_KEYS.values():
        for kind in KINDS:
            catalog.delete_meta(cur, f"{old}_{kind}")
    return text


def outgrown(index: VectorIndex, n: int) -> bool:
    """A trained design (IVF, PQ) whose training sample no longer represents ``n`` vectors."""
    trained_on = index.metadata.get("trained_on")
    return trained_on is not None and n > RETRAIN_GROWTH * max(int(trained_on), 1)


# ----------------------------------------------------------------------------- the folder


class IndexDir:
    """An index folder at ``path`` (``~`` expanded, resolved); need not exist yet.

    Path-like (``os.fspath``), so it goes wherever a path does. Cheap to create: nothing is read
    until a method asks. Layout and what each file is: the module docstring.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"IndexDir({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, IndexDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # -- layout

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG_FILE

    @property
    def features(self) -> Path:
        """The frame-feature store (store.json, shards/)."""
        return self.path / FEATURES_DIR

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    def faiss_path(self, kind: str) -> Path:
        """DIR/videos.faiss or DIR/segments.faiss."""
        return self.path / (VIDEO_VECTORS if kind == "videos" else SEGMENT_VECTORS)

    def is_index(self) -> bool:
        """Whether a catalog file is here (nothing opened)."""
        return self.catalog_path.is_file()

    # -- checks a verb makes before it loads a model

    def check_path(self) -> None:
        """A clear error when the folder exists but is not a folder (e.g. ``--index`` given a file)."""
        if os.path.lexists(self.path) and not self.path.is_dir():
            raise ConfigError(f"--index {display_path(self.path)}: exists and is not a directory; an index is a "
                              "folder (give a new or an existing index directory)")

    def require_catalog(self, shown: str | None = None) -> None:
        """A VidclipError unless a catalog is here; ``shown``: how the message names the folder."""
        if not self.is_index():
            raise VidclipError(f"{shown or display_path(self.path)}: not a vidclip index (no {CATALOG_FILE}); "
                               "build one with `vidclip index`")

    @classmethod
    def require(cls, path: str | os.PathLike, option: str = "--index") -> "IndexDir":
        """The folder of an existing index that holds videos, or a VidclipError saying what ``path``
        is instead (missing, a file, a folder without a catalog, a damaged or empty catalog); the
        message names it as ``option PATH`` as given. Cheap (file checks and one read-only catalog
        query), so a verb calls it before it loads a model."""
        index_dir = cls(path)
        shown = f"{option} {display_path(path)}" if option else display_path(index_dir.path)
        if not os.path.lexists(index_dir.path):
            raise VidclipError(f"{shown}: no such folder; build an index with `vidclip index LIBRARY --index DIR`")
        if not index_dir.path.is_dir():
            raise VidclipError(f"{shown}: is a file, not an index folder (an index is the folder `vidclip index` "
                               "writes)")
        index_dir.require_catalog(shown)
        index_dir.refuse_damage()
        if index_dir.read_meta("model")["model"] is None:
            raise VidclipError(f"{shown}: the index holds no videos yet (no model recorded)")
        return index_dir

    # -- reading

    def open_catalog(self, readonly: bool = False) -> Catalog:
        """The catalog (created when missing unless ``readonly``); close it (or use ``with``)."""
        return Catalog(self.catalog_path, readonly=readonly)

    def read_meta(self, *keys: str) -> dict:
        """{key: catalog meta value (None when unset)}; {} when there is no catalog here."""
        if not self.is_index():
            return {}
        with self.open_catalog(readonly=True) as catalog:
            return {k: catalog.get_meta(k) for k in keys}

    def open_shard(self, shard: str, rows: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Memory-mapped (emb float16 [N, D], frame_index int64 [N], time float64 [N]) of a committed
        shard (:meth:`FeatureStore.open_shard`; ``rows``: the least its records need)."""
        return FeatureStore.open_shard(self.features, shard, rows=rows)

    # -- writing

    def lock(self) -> IndexLock:
        """The writer's lock (``with index_dir.lock():``)."""
        return IndexLock(self)

    def find_damage(self, catalog: Catalog | None = None) -> list[Damage]:
        """What a writer of this index refuses to work with: the one check that ``vidclip index``
        (:meth:`refuse_damage`) and ``vidclip index --verify`` both run.

        Without ``catalog``: the catalog file itself (call it before opening the catalog for writing,
        which would turn a 0-byte file into a new, empty catalog): empty, unreadable, or recording no
        index while frames are stored beside it (the catalog was lost; the frames cannot be matched to
        files without it). With ``catalog`` (open, with a model): the parts beside it: the features
        folder, its ``store.json`` (missing, unreadable, of another model: rewritten from the catalog
        by repair) and faiss paths that are directories.
        """
        return self._catalog_damage() if catalog is None else self._damage_beside(catalog)

    def _catalog_damage(self) -> list[Damage]:
        features, path = self.features, self.catalog_path
        stored = _stored_frames(features)
        lost = (f"delete {display_path(features)} and {CATALOG_FILE}* (frames cannot be matched to files without "
                f"the catalog), then run `vidclip index LIBRARY --index {display_path(self.path)}` again: it encodes "
                "the library afresh")
        if os.path.lexists(path) and not path.is_file():
            return [Damage(path, "is not a file, but it must be the index's catalog (SQLite)", lost)]
        if not path.is_file():
            return [Damage(path, f"missing, but {display_path(features)} holds {stored} shard(s) of encoded frames",
                           lost)] if stored else []
        if path.stat().st_size == 0:
            # a new index killed before its first commit leaves a 0-byte catalog and nothing else: fine
            return [Damage(path, f"empty (0 bytes), but {display_path(features)} holds {stored} shard(s) of encoded "
                                 "frames: the record of what is indexed is lost", lost)] if stored else []
        try:
            cat = self.open_catalog(readonly=True)
        except VidclipError as e:
            return [Damage(path, str(e).removeprefix(f"{path}: "), lost)]
        with cat:
            model = cat.get_meta("model")
        if model is None and stored:
            return [Damage(path, f"records no index, but {display_path(features)} holds {stored} shard(s) of encoded "
                                 "frames: the record of what is indexed is lost", lost)]
        return []

    def _damage_beside(self, catalog: Catalog) -> list[Damage]:
        model = catalog.get_meta("model")
        if model is None:
            return []
        features = self.features
        found: list[Damage] = []
        verify = f"`vidclip index --verify {display_path(self.path)}` repairs it"
        for path, what in ((features, "the index's frame features (a folder)"),
                           (features / SHARDS_DIR, "the folder of the index's frame shards")):
            if os.path.lexists(path) and not path.is_dir():
                found.append(Damage(path, f"is not a directory, but it must be {what}",
                                    f"move it away; then {verify.removesuffix(' repairs it')} marks the videos whose "
                                    "frames are lost, and the next `vidclip index` of their library re-encodes them"))
                return found
        store = features / STORE_FILE

        def rewrite_store() -> str:
            write_store_header(features, model, catalog.get_meta("sampler") or {})
            return "written again from the model and sampler recorded in the catalog"

        if os.path.lexists(store) or _stored_frames(features):
            problem = None
            if not store.is_file():
                problem = "missing" if not os.path.lexists(store) else "is not a file"
            else:
                try:
                    header = read_store_header(features)
                    if model_key(header.get("model") or {}) != model_key(model):
                        problem = (f"names model {model_key(header.get('model') or {})}, but the catalog's frames "
                                   f"come from {model_key(model)}")
                except VidclipError as e:
                    problem = str(e).removeprefix(f"{store}: ")
            if problem is not None and store.is_dir():
                found.append(Damage(store, problem, f"remove it; then {verify.removesuffix(' repairs it')} writes it "
                                                    "again"))
            elif problem is not None:
                found.append(Damage(store, problem, verify, rewrite_store))
        for kind in KINDS:
            path = self.faiss_path(kind)
            if path.is_dir():
                found.append(Damage(path, f"is a directory, but it must be the index's {kind} vector file",
                                    "remove it (derived data: it is rebuilt from the catalog)"))
        return found

    def refuse_damage(self, catalog: Catalog | None = None) -> None:
        """Raise the first :meth:`find_damage` finding as an IndexMismatchError (a writer's check)."""
        damage = self.find_damage(catalog)
        if damage:
            raise damage[0].error()

    def remove_stale_temps(self) -> list[Path]:
        """Delete the ``.videos.faiss.<hex>.tmp`` / ``.segments.faiss.<hex>.tmp`` files of a save that
        was killed (VectorIndex.save writes one, then renames it). Call only while holding the lock:
        every save happens under it, so no temp file then belongs to a live save. Returns what went."""
        removed = []
        for name in (VIDEO_VECTORS, SEGMENT_VECTORS):
            for tmp in self.path.glob(f".{name}.*.tmp"):
                try:
                    tmp.unlink()
                    removed.append(tmp)
                except IsADirectoryError:
                    shutil.rmtree(tmp, ignore_errors=True)
                    removed.append(tmp)
                except OSError:
                    pass
        return removed

    def remove_orphan_shards(self, catalog: Catalog) -> int:
        """Delete committed shards no indexed row references (a killed run's, or fully superseded)
        and the ``.tmp-*`` folders of unfinished ones. Returns how many committed shards went."""
        keep = catalog.referenced_shards()
        removed = 0
        for shard in committed_shards(self.features):
            if shard.name not in keep:
                shutil.rmtree(shard, ignore_errors=True)
                removed += not os.path.lexists(shard)  # what could not be removed is tried again next run
        tmp_root = self.features / SHARDS_DIR
        if tmp_root.is_dir():
            for stale in tmp_root.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        return removed

    def damaged_shards(self, catalog: Catalog, dim: int | None = None) -> dict[str, str]:
        """Shard name -> what is wrong, for every shard indexed rows reference whose stored frames are
        not all there: a missing or unreadable array, fewer rows than the catalog's records need (a
        truncated ``emb.npy``), or embeddings of another width. Reads only the arrays' headers."""
        need: dict[str, int] = {}
        for shard, end in catalog.conn.execute(
                "SELECT shard, MAX(offset + count) FROM videos WHERE status = 'indexed' AND shard IS NOT NULL "
                "GROUP BY shard"):
            need[shard] = int(end or 0)
        bad: dict[str, str] = {}
        for shard, rows in need.items():
            try:
                emb = self.open_shard(shard, rows=rows)[0]
            except VidclipError as e:
                bad[shard] = str(e)
                continue
            if dim is not None and (emb.ndim != 2 or emb.shape[1] != dim):
                bad[shard] = (f"{display_path(self.features / SHARDS_DIR / shard / 'emb.npy')}: shape {emb.shape}, "
                              f"expected [N, {dim}]")
        return bad

    def mark_lost_frames(self, catalog: Catalog, dim: int | None = None) -> list[dict]:
        """Find the indexed videos whose stored frames are damaged (:meth:`damaged_shards`) and mark
        them lost in one transaction (:meth:`Catalog.mark_lost`), so the next index of their library
        re-encodes exactly them and search no longer serves them. Returns [{"id", "path", "reason"}]."""
        bad = self.damaged_shards(catalog, dim)
        if not bad:
            return []
        lost = []
        with catalog.transaction() as cur:
            for shard, reason in bad.items():
                rows = cur.execute("SELECT id, abs_path FROM videos WHERE status = 'indexed' AND shard = ?", (shard,)
                                   ).fetchall()
                ids = [r[0] for r in rows]
                catalog.mark_lost(cur, ids, f"stored frames lost ({reason}); re-index to encode it again")
                lost += [{"id": int(r[0]), "path": os.fsdecode(r[1]), "reason": reason} for r in rows]
            catalog.bump_generation(cur)
        return lost

    # -- faiss, derived from the catalog

    def sync_faiss(self, catalog: Catalog, kind: str, dim: int, *, current: VectorIndex | None = None,
                   save: bool = True, flat_max: int = DEFAULT_FLAT_MAX) -> VectorIndex:
        """The faiss index of ``kind`` ("videos" / "segments") matching the catalog's generation,
        with the recorded search knobs (:func:`recorded_search_params`) set.

        Reuses ``current`` or the saved file when stamped with the catalog's generation and design;
        otherwise rebuilds from the vectors stored in the catalog (re-using a compatible trained
        index, so an IVF is not retrained unless the library grew ``RETRAIN_GROWTH``-fold).
        ``save``: write it (stamped) when it is not the saved file; hold the lock.

        A rebuild never holds all stored vectors: it streams them from the catalog
        (``Catalog.iter_vectors``, one chunk at a time, in id order), one pass to draw the training
        sample of a design that needs one (:meth:`VectorIndex.train_sample_size`) and one to add them,
        both inside one read transaction, so they see one generation while writers commit.
        """
        path = self.faiss_path(kind)
        if path.is_dir():
            raise IndexMismatchError(f"{display_path(path)}: is a directory, but it must be the index's {kind} "
                                     "vector file; remove it (derived data: it is rebuilt from the catalog)")
        requested = catalog.get_meta(f"design_{kind}", "auto")
        knobs = recorded_search_params(catalog, kind)
        with catalog.conn:  # one read snapshot: generation and vectors agree
            catalog.conn.execute("BEGIN")
            generation = catalog.generation
            from_file = current is None
            if current is None and path.is_file():
                try:
                    current = VectorIndex.load(path)
                except VidclipError as e:
                    log.warning("%s: unreadable (%s); rebuilding from the catalog", path, e)
            if (current is not None and current.metadata.get("generation") == generation
                    and current.metadata.get("requested") == requested and current.is_trained):
                current.set_search_params(knobs, only_applicable=True)
                if save and not from_file:
                    crash_point("faiss")
                    current.save(path)
                return current
            n = catalog.count_vectors(kind)

            def chunks():
                return catalog.iter_vectors(kind, dim)

            design = choose_design(n, flat_max) if requested.lower() == "auto" else requested
            reuse = (current is not None and current.design == design and current.is_trained and current.dim == dim
                     and not outgrown(current, n))
            trained_on = untrainable = None
            if reuse:
                index = current
                trained_on = current.metadata.get("trained_on")
                index.reset()
            else:
                index = VectorIndex(dim, design)
                if not index.is_trained:
                    try:
                        index.train(sample_chunks(chunks(), n, index.train_sample_size(n), index.seed), in_place=True)
                        trained_on = n
                    except VidclipError as e:  # e.g. fewer vectors than IVF cells (an empty new index: say nothing)
                        if n:
                            log.warning("%s: cannot train %s on %d vectors (%s); using exact search until the library "
                                        "grows", path, design, n, e)
                        index, untrainable = VectorIndex(dim, "Flat"), n
            index.set_search_params(knobs, only_applicable=True)
            index.fill(chunks, n)
        index.metadata = {"generation": generation, "requested": requested}
        if trained_on is not None:
            index.metadata["trained_on"] = int(trained_on)
        if untrainable is not None:  # the exact stand-in for `requested` at this size (build.py's _fit_or_none)
            index.metadata["untrainable_at"] = int(untrainable)
        if save:
            crash_point("faiss")
            index.save(path)
        return index


def _stored_frames(features: Path) -> int:
    """Committed shards under ``features``: frames encoded (0 when it is not a readable folder)."""
    try:
        return len(committed_shards(features))
    except OSError:
        return 0
