"""The index directory: its files, the writer's lock, crash-test hooks, temp cleanup and the
derived faiss files kept in step with the catalog.

Index directory::

    DIR/
      catalog.sqlite (+ -wal, -shm)   the source of truth (vidclip.index.catalog)
      features/                       frame embeddings: a FeatureStore (store.json, shards/)
      videos.faiss                    video-level vectors (vidclip.index.vectors), derived data
      segments.faiss                  window-level vectors, derived data
      .lock                           held (flock) by the one process writing the index

faiss files are derived data: whoever opens the index rebuilds one from the vectors stored in
the catalog when it is stamped with an older catalog generation (keeping an IVF's training), so
search never serves a set different from the catalog's. Leftovers of a killed run (shard
``.tmp-*`` folders, faiss ``.*.tmp`` files, shards no catalog row references) are removed by the
next writer.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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
from vidclip.index.exact import sample_chunks
from vidclip.index.vectors import DEFAULT_FLAT_MAX, VectorIndex, choose_design

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite"
FEATURES_DIR = "features"
VIDEO_VECTORS = "videos.faiss"
SEGMENT_VECTORS = "segments.faiss"
LOCK_FILE = ".lock"
CRASH_ENV = "VIDCLIP_INDEX_CRASH"  # test hook: "shard:K" | "commit:K" | "faiss:K" -> SIGKILL self there
LOCK_WAIT_S = 10.0  # how long a writer waits for the index lock (a reader saving faiss holds it for moments)
RETRAIN_GROWTH = 4  # retrain a trained design once the library is this many times what it was trained on

_crash_counts: Counter = Counter()


def _crash_point(point: str) -> None:
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


class _DirLock:
    """Exclusive flock on DIR/.lock: one writer per index; released when the process dies."""

    def __init__(self, index_dir: Path):
        self.path = index_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        check_index_path(self.path.parent)
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

    def __enter__(self) -> "_DirLock":
        # A reader refreshing its faiss files holds the lock for moments: wait a little for it.
        deadline = time.monotonic() + LOCK_WAIT_S
        while not self.acquire():
            if time.monotonic() > deadline:
                raise VidclipError(f"{self.path.parent}: another vidclip process is writing this index; wait for it")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _is_index_dir(index_dir: Path) -> bool:
    return (index_dir / CATALOG_FILE).is_file()


def check_index_path(index_dir: Path) -> None:
    """A clear error when ``index_dir`` exists but is not a folder (e.g. ``--index`` given a file)."""
    if os.path.lexists(index_dir) and not index_dir.is_dir():
        raise ConfigError(f"--index {display_path(index_dir)}: exists and is not a directory; an index is a folder "
                          "(give a new or an existing index directory)")


def require_index(index_dir: str | os.PathLike, option: str = "--index") -> Path:
    """The resolved folder of an existing index that holds videos, or a VidclipError saying what
    ``index_dir`` is instead (missing, a file, a folder without a catalog, a damaged or empty
    catalog). Cheap (file checks and one read-only catalog query), so a verb calls it before it
    loads a model."""
    path = Path(index_dir).expanduser().resolve()
    shown = f"{option} {display_path(index_dir)}" if option else display_path(path)
    if not os.path.lexists(path):
        raise VidclipError(f"{shown}: no such folder; build an index with `vidclip index LIBRARY --index DIR`")
    if not path.is_dir():
        raise VidclipError(f"{shown}: is a file, not an index folder (an index is the folder `vidclip index` writes)")
    if not _is_index_dir(path):
        raise VidclipError(f"{shown}: not a vidclip index (no {CATALOG_FILE}); build one with `vidclip index`")
    damage = find_damage(path)
    if damage:
        raise damage[0].error()
    catalog = Catalog(path / CATALOG_FILE, readonly=True)
    try:
        if catalog.get_meta("model") is None:
            raise VidclipError(f"{shown}: the index holds no videos yet (no model recorded)")
    finally:
        catalog.close()
    return path


# ----------------------------------------------------------------------------- damage a writer refuses


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


def _stored_frames(features: Path) -> int:
    """Committed shards under ``features``: frames encoded (0 when it is not a readable folder)."""
    try:
        return len(committed_shards(features))
    except OSError:
        return 0


def find_damage(index_dir: Path, catalog: Catalog | None = None) -> list[Damage]:
    """What a writer of the index at ``index_dir`` refuses to work with: the one check that
    ``vidclip index`` (:func:`refuse_damage`) and ``vidclip index --verify`` both run.

    Without ``catalog``: the catalog file itself (call it before opening the catalog for writing,
    which would turn a 0-byte file into a new, empty catalog): empty, unreadable, or recording no
    index while frames are stored beside it (the catalog was lost; the frames cannot be matched to
    files without it). With ``catalog`` (open, with a model): the parts beside it: the features
    folder, its ``store.json`` (missing, unreadable, of another model: rewritten from the catalog
    by repair) and faiss paths that are directories.
    """
    features = index_dir / FEATURES_DIR
    if catalog is None:
        path = index_dir / CATALOG_FILE
        stored = _stored_frames(features)
        lost = (f"delete {display_path(features)} and {CATALOG_FILE}* (frames cannot be matched to files without "
                f"the catalog), then run `vidclip index LIBRARY --index {display_path(index_dir)}` again: it encodes "
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
            cat = Catalog(path, readonly=True)
        except VidclipError as e:
            return [Damage(path, str(e).removeprefix(f"{path}: "), lost)]
        try:
            model = cat.get_meta("model")
        finally:
            cat.close()
        if model is None and stored:
            return [Damage(path, f"records no index, but {display_path(features)} holds {stored} shard(s) of encoded "
                                 "frames: the record of what is indexed is lost", lost)]
        return []

    model = catalog.get_meta("model")
    if model is None:
        return []
    found: list[Damage] = []
    verify = f"`vidclip index --verify {display_path(index_dir)}` repairs it"
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
                    problem = (f"names model {model_key(header.get('model') or {})}, but the catalog's frames come "
                               f"from {model_key(model)}")
            except VidclipError as e:
                problem = str(e).removeprefix(f"{store}: ")
        if problem is not None and store.is_dir():
            found.append(Damage(store, problem, f"remove it; then {verify.removesuffix(' repairs it')} writes it again"))
        elif problem is not None:
            found.append(Damage(store, problem, verify, rewrite_store))
    for kind in ("videos", "segments"):
        path = faiss_path(index_dir, kind)
        if path.is_dir():
            found.append(Damage(path, f"is a directory, but it must be the index's {kind} vector file",
                                "remove it (derived data: it is rebuilt from the catalog)"))
    return found


def refuse_damage(index_dir: Path, catalog: Catalog | None = None) -> None:
    """Raise the first :func:`find_damage` finding as an IndexMismatchError (a writer's check)."""
    damage = find_damage(index_dir, catalog)
    if damage:
        raise damage[0].error()


def faiss_path(index_dir: Path, kind: str) -> Path:
    """DIR/videos.faiss or DIR/segments.faiss."""
    return index_dir / (VIDEO_VECTORS if kind == "videos" else SEGMENT_VECTORS)


def remove_stale_temps(index_dir: Path) -> list[Path]:
    """Delete the ``.videos.faiss.<hex>.tmp`` / ``.segments.faiss.<hex>.tmp`` files of a save that was
    killed (VectorIndex.save writes one, then renames it). Call only while holding the index lock:
    every save happens under it, so no temp file then belongs to a live save. Returns what went."""
    removed = []
    for name in (VIDEO_VECTORS, SEGMENT_VECTORS):
        for tmp in index_dir.glob(f".{name}.*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except IsADirectoryError:
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
            except OSError:
                pass
    return removed


def damaged_shards(catalog: Catalog, features: Path, dim: int | None = None) -> dict[str, str]:
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
            emb = FeatureStore.open_shard(features, shard, rows=rows)[0]
        except VidclipError as e:
            bad[shard] = str(e)
            continue
        if dim is not None and (emb.ndim != 2 or emb.shape[1] != dim):
            bad[shard] = f"{display_path(features / SHARDS_DIR / shard / 'emb.npy')}: shape {emb.shape}, expected [N, {dim}]"
    return bad


def _sync_faiss(catalog: Catalog, index_dir: Path, kind: str, dim: int, *, current: VectorIndex | None = None,
                save: bool = True, flat_max: int = DEFAULT_FLAT_MAX) -> VectorIndex:
    """The faiss index of ``kind`` ("videos" / "segments") matching the catalog's generation.

    Reuses ``current`` or the saved file when stamped with the catalog's generation and design;
    otherwise rebuilds from the vectors stored in the catalog (re-using a compatible trained
    index, so an IVF is not retrained unless the library grew ``RETRAIN_GROWTH``-fold).

    A rebuild never holds all stored vectors: it streams them from the catalog
    (``Catalog.iter_vectors``, one chunk at a time, in id order), one pass to draw the training
    sample of a design that needs one (:meth:`VectorIndex.train_sample_size`) and one to add them,
    both inside one read transaction, so they see one generation while writers commit.
    """
    path = faiss_path(index_dir, kind)
    if path.is_dir():
        raise IndexMismatchError(f"{display_path(path)}: is a directory, but it must be the index's {kind} vector file; "
                                 "remove it (derived data: it is rebuilt from the catalog)")
    requested = catalog.get_meta(f"design_{kind}", "auto")
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
            _apply_search_settings(catalog, kind, current)
            if save and not from_file:
                _crash_point("faiss")
                current.save(path)
            return current
        n = catalog.count_vectors(kind)

        def chunks():
            return catalog.iter_vectors(kind, dim)

        design = choose_design(n, flat_max) if requested.lower() == "auto" else requested
        reuse = (current is not None and current.design == design and current.is_trained and current.dim == dim
                 and not _outgrown(current, n))
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
                        log.warning("%s: cannot train %s on %d vectors (%s); using exact search until the library grows",
                                    path, design, n, e)
                    index, untrainable = VectorIndex(dim, "Flat"), n
        _apply_search_settings(catalog, kind, index)
        index.fill(chunks, n)
    index.metadata = {"generation": generation, "requested": requested}
    if trained_on is not None:
        index.metadata["trained_on"] = int(trained_on)
    if untrainable is not None:  # the exact stand-in for `requested` at this size (build.py's _fit_or_none)
        index.metadata["untrainable_at"] = int(untrainable)
    if save:
        _crash_point("faiss")
        index.save(path)
    return index


def _apply_search_settings(catalog: Catalog, kind: str, index: VectorIndex) -> None:
    """Set the recorded ``nprobe`` / ``ef_search`` (``vidclip index --nprobe/--ef-search``) on ``index``
    where its design has that knob (an IVF / an HNSW); a design without it ignores the setting."""
    nprobe = catalog.get_meta(f"nprobe_{kind}")
    if nprobe and index.nprobe is not None and index.nprobe != nprobe:
        index.nprobe = nprobe
    ef_search = catalog.get_meta(f"ef_search_{kind}")
    if ef_search and "HNSW" in index.design.upper() and index.ef_search != ef_search:
        index.ef_search = ef_search


def _outgrown(index: VectorIndex, n: int) -> bool:
    """A trained design (IVF, PQ) whose training sample no longer represents ``n`` vectors."""
    trained_on = index.metadata.get("trained_on")
    return trained_on is not None and n > RETRAIN_GROWTH * max(int(trained_on), 1)


def _remove_orphan_shards(catalog: Catalog, features: Path) -> int:
    """Delete committed shards no indexed row references (a killed run's, or fully superseded)."""
    keep = catalog.referenced_shards()
    removed = 0
    for shard in committed_shards(features):
        if shard.name not in keep:
            shutil.rmtree(shard, ignore_errors=True)
            removed += not os.path.lexists(shard)  # what could not be removed is tried again next run
    tmp_root = features / SHARDS_DIR
    if tmp_root.is_dir():
        for stale in tmp_root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    return removed


def mark_lost_frames(catalog: Catalog, features: Path, dim: int | None = None) -> list[dict]:
    """Find the indexed videos whose stored frames are damaged (:func:`damaged_shards`) and mark them
    lost in one transaction (:meth:`Catalog.mark_lost`), so the next index of their library
    re-encodes exactly them and search no longer serves them. Returns [{"id", "path", "reason"}]."""
    bad = damaged_shards(catalog, features, dim)
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

