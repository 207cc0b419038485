"""Building an index: incremental, crash-safe indexing of a library (:func:`index_library`),
merging indexes (:func:`merge_index`) and the report of an index (:func:`index_report`).

Commit order (what makes a SIGKILL at any moment harmless):

1. frame embeddings of a batch of videos are written as a shard (``shards/.tmp-*`` renamed
   into place by FeatureWriter.flush);
2. one catalog transaction inserts their rows (shard, offset, count, vectors, windows), turns
   the rows they replace into ``deleted``, records failures and increments ``generation``;
3. faiss is updated in memory and saved atomically at the end of the run, stamped with the
   catalog generation it reflects.

A kill between 1 and 2 leaves a shard no catalog row references: the next run deletes it
("orphan") and re-encodes those videos, which the catalog never claimed. A kill after 2 loses
nothing: the next run sees the videos as indexed and unchanged. A kill before 3 leaves faiss
files of an older generation: whoever opens the index next rebuilds them from the stored vectors
(keeping an IVF's training), so search never serves a set different from the catalog's.
Ids are never reused (AUTOINCREMENT), so a stale faiss id can only miss, never mislead;
search also drops any id the catalog does not list as indexed. A shard all of whose videos a run
deletes (files gone) or replaces (files changed) is referenced by no row after that run's commits
and is deleted at the end of the run, so only a killed run ever leaves an orphan.

With ``engine="ray"`` (vidclip/encode/ray_engine.py) step 1 happens on the cluster: an encoder actor
writes a partition of ``commit_every`` videos as a shard into ``features/staging/<id>/`` (with its
manifest, renamed into place when complete); this process, the only writer of the catalog and
faiss, then renames that shard into ``shards/`` and does 2 and 3 exactly as above, partition by
partition in partition order. A kill before the rename leaves a finished staging folder, which
the next run commits without encoding; a kill between rename and 2 leaves an orphan shard
(deleted) and a staging folder without its shard (redone). Either engine goes through
:class:`_Committer`, as does :func:`merge_index`.

Change detection: a file whose (size, mtime) equals its row's is unchanged without reading
it; otherwise its fast content hash (catalog.fast_hash) decides, and a touched-but-identical
file only gets its mtime updated. Files gone from the library are marked deleted (only rows
that came from the same library source: merged-in videos are left alone). Failed files are
retried when they change, or with ``retry_failed``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vidclip.core.errors import ConfigError, IndexMismatchError, VidclipError, display_path
from vidclip.features.identity import fast_hash
from vidclip.features.pooling import Pooler
from vidclip.features.store import FeatureStore, FeatureWriter
from vidclip.index.catalog import Catalog
from vidclip.index.directory import (
    CATALOG_FILE,
    FEATURES_DIR,
    _crash_point,
    _DirLock,
    _is_index_dir,
    _outgrown,
    _remove_orphan_shards,
    _sync_faiss,
    check_index_path,
    mark_lost_frames,
    refuse_damage,
    remove_stale_temps,
)
from vidclip.index.scan import Library, LibraryItem, scan_library
from vidclip.index.vectors import VectorIndex, choose_design

COMMIT_FRAMES = 65_536  # also commit once this many frames are pending (bounds memory for long videos)


@dataclass
class IndexReport:
    indexed: int = 0  # newly indexed (new or changed files) this run
    unchanged: int = 0  # skipped: already indexed (or failed) and unchanged
    deleted: int = 0  # gone from the library, removed from the index
    failed: list[dict] = field(default_factory=list)  # {"path", "reason"} of this run
    frames: int = 0
    seconds: float = 0.0
    orphans_removed: int = 0  # uncommitted shards of a killed run, deleted
    superseded_removed: int = 0  # shards whose videos were all deleted or re-encoded by this run, deleted
    temps_removed: int = 0  # faiss temp files of a killed save, deleted
    lost: list[dict] = field(default_factory=list)  # {"id", "path", "reason"}: stored frames found damaged
    total_indexed: int = 0  # indexed videos in the index after the run
    engine: str = "local"  # "local" or "ray"
    partitions_reused: int = 0  # ray: partitions a killed run had staged, committed now without encoding
    staging_removed: int = 0  # ray: staged partitions no longer wanted (other model / sampler / file version)
    nodes: list[str] = field(default_factory=list)  # ray: ids of the nodes that decoded or encoded

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        d["videos_per_s"] = round(self.indexed / self.seconds, 3) if self.seconds else None
        d["frames_per_s"] = round(self.frames / self.seconds, 2) if self.seconds else None
        return d


class _Committer:
    """The one commit path of index_library (either engine) and merge_index.

    Opening it does what every writer does first: marks videos with lost frames, deletes orphan
    shards and faiss temp files, loads the faiss indexes in step with the catalog. Videos come in
    as written here (:meth:`add_video`, FeatureWriter) or as already written in a staged shard
    (:meth:`add_staged` + ``commit(shard_dir)``); :meth:`commit` puts them in one catalog
    transaction (the order of the module docstring), :meth:`finish` commits the rest and saves
    faiss stamped with the catalog's generation.
    """

    def __init__(self, catalog: Catalog, index_dir: Path, model: dict, sampler: dict, dim: int,
                 report: IndexReport):
        self.catalog, self.index_dir, self.dim, self.report = catalog, index_dir, dim, report
        self.features = index_dir / FEATURES_DIR
        report.lost = mark_lost_frames(catalog, self.features, dim)  # re-encoded (they look changed)
        report.orphans_removed = _remove_orphan_shards(catalog, self.features)
        report.temps_removed = len(remove_stale_temps(index_dir))
        self.video_index = _sync_faiss(catalog, index_dir, "videos", dim, save=False)
        self.segment_index = _sync_faiss(catalog, index_dir, "segments", dim, save=False)
        self.writer = FeatureWriter(self.features, model, sampler, shard_size=1 << 30)
        self.pending: list[dict] = []  # videos of the next shard, in its row order
        self.failures: list[dict] = []
        self.offset = 0

    def delete(self, rows: list[dict]) -> None:
        """Mark ``rows`` (catalog rows of files gone from the library) deleted, in catalog and faiss."""
        if not rows:
            return
        gone = [r["id"] for r in rows]
        with self.catalog.transaction() as cur:
            gone_segments = self.catalog.segment_ids_of(cur, gone)
            self.catalog.mark_deleted(cur, gone)
            self.catalog.bump_generation(cur)
        self.video_index.remove(gone)
        self.segment_index.remove(gone_segments)

    def add_video(self, rec: dict, emb: np.ndarray, frame_index, times) -> None:
        """rec: catalog fields + "vector" [D] + "windows" + "window_vectors" [W, D] + "replaces"."""
        self.writer.add(rec["key"], rec["abs_path"], emb, frame_index, times, windows=rec["windows"],
                        duration=rec["duration"] or 0.0, fps=rec["fps"] or 0.0,
                        extra={"source": rec["source"], "hash": rec["hash"]})
        rec["offset"], rec["count"] = self.offset, int(emb.shape[0])
        self.offset += int(emb.shape[0])
        self.pending.append(rec)

    def add_staged(self, rec: dict) -> None:
        """A video already written in a staged shard (rec carries its "offset" and "count" there)."""
        self.pending.append(rec)

    def add_failure(self, rec: dict) -> None:
        self.failures.append(rec)

    def full(self, commit_every: int) -> bool:
        return len(self.pending) + len(self.failures) >= commit_every or self.offset >= COMMIT_FRAMES

    def commit(self, shard_dir: Path | None = None) -> None:
        """Commit what is pending: the shard (written by FeatureWriter now, or ``shard_dir`` adopted),
        then one catalog transaction, then the in-memory faiss indexes."""
        if not self.pending and not self.failures:
            return
        if shard_dir is not None:
            shard = self.writer.adopt(shard_dir)
        else:
            shard = self.writer.flush() if self.pending else None
        _crash_point("shard")
        new_v, new_vv, new_s, new_sv = [], [], [], []
        gone = [int(rec["replaces"]) for rec in self.pending + self.failures if rec.get("replaces") is not None]
        with self.catalog.transaction() as cur:
            gone_segments = self.catalog.segment_ids_of(cur, gone)
            self.catalog.mark_deleted(cur, gone)
            for rec in self.pending:
                vid = self.catalog.insert_video(
                    cur, key=rec["key"], source=rec["source"], root=rec["root"], path=rec["path"],
                    abs_path=rec["abs_path"], size=rec["size"], mtime_ns=rec["mtime_ns"], hash=rec["hash"],
                    status="indexed", duration=rec["duration"], fps=rec["fps"], metadata=rec["metadata"],
                    shard=shard, offset=rec["offset"], count=rec["count"], vector=rec["vector"])
                self.catalog.insert_segments(cur, vid, rec["windows"], rec["window_vectors"])
                seg_ids = [r[0] for r in cur.execute("SELECT id FROM segments WHERE video_id = ? ORDER BY id", (vid,))]
                new_v.append(vid)
                new_vv.append(rec["vector"])
                new_s.extend(seg_ids)
                new_sv.append(rec["window_vectors"])
            for rec in self.failures:
                self.catalog.insert_video(
                    cur, key=rec["key"], source=rec["source"], root=rec["root"], path=rec["path"],
                    abs_path=rec["abs_path"], size=rec["size"], mtime_ns=rec["mtime_ns"], hash=rec["hash"],
                    status="failed", error=rec["error"], metadata=rec["metadata"])
            if new_v or gone:
                self.catalog.bump_generation(cur)
        _crash_point("commit")
        # In-memory faiss follows the committed catalog (saved, stamped, at the end of the run).
        if gone:
            self.video_index.remove(gone)
            self.segment_index.remove(gone_segments)
        if new_v and self.video_index.is_trained:
            self.video_index.add(np.stack(new_vv), new_v)
        if new_s and self.segment_index.is_trained:
            self.segment_index.add(np.concatenate(new_sv), new_s)
        self.pending, self.failures, self.offset = [], [], 0

    def finish(self) -> int:
        """Commit what is left; delete the shards this run's commits superseded; save faiss (rebuilt
        if the design should change: auto crossing flat_max, untrained). Returns the number of
        indexed videos."""
        self.commit()
        # A shard whose videos this run all deleted or replaced is referenced by no row any more:
        # deleted now, not left for the next run to find (and report) as a killed run's orphan.
        self.report.superseded_removed = _remove_orphan_shards(self.catalog, self.features)
        for kind, idx in (("videos", self.video_index), ("segments", self.segment_index)):
            idx.metadata["generation"] = self.catalog.generation if idx.is_trained else -1
            _sync_faiss(self.catalog, self.index_dir, kind, self.dim, current=_fit_or_none(self.catalog, kind, idx),
                        save=True)
        return self.catalog.counts()["indexed"]


def _video_record(item: LibraryItem, lib: Library, st: os.stat_result | None, hash_: str | None,
                  replaces: int | None) -> dict:
    return {"key": item.key, "source": lib.source, "root": str(lib.root), "path": item.key,
            "abs_path": str(item.path), "size": st.st_size if st else None, "mtime_ns": st.st_mtime_ns if st else None,
            "hash": hash_, "metadata": item.metadata, "replaces": replaces, "duration": None, "fps": None}


def _pool_into(rec: dict, pooler: Pooler, emb16: np.ndarray, windows, duration: float, fps: float) -> None:
    """Fill rec's duration, fps, vector and window vectors from the stored (fp16-rounded) frames
    float32 [T, D]: pooling what search reads back keeps vectors and frames in agreement."""
    windows = [tuple(w) for w in windows]
    video_vec, window_vecs = pooler.video_and_windows(emb16, windows)
    rec.update(duration=float(duration), fps=float(fps), vector=video_vec, windows=windows,
               window_vectors=window_vecs)


def index_library(
    library: str | os.PathLike | Library,
    index_dir: str | os.PathLike,
    clip,
    sampler=None,
    *,
    temporal: str | os.PathLike | None = "mean",
    design: str | None = None,
    segment_design: str | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    workers: int = 2,
    backend: str = "auto",
    decode_device: str = "cpu",
    batch_frames: int = 256,
    commit_every: int = 64,
    retry_failed: bool = False,
    progress: bool = True,
    engine: str = "local",
    ray=None,
) -> IndexReport:
    """Index (or bring up to date) the videos of ``library`` (a library spec, or a Library that
    :func:`~vidclip.index.scan.scan_library` returned) into ``index_dir``.

    ``clip``: a FrozenCLIP (must match the index's model when the index exists), or a zero-argument
    function returning the index's own model: then it is called only when a video must be encoded
    (a run with nothing new loads no model; with the Ray engine the driver never loads it). ``sampler``: a
    SamplerConfig (default: windows of 10 s every 5 s at 1 fps; must match the index's).
    ``temporal``: "mean" or a training checkpoint. ``design`` / ``segment_design``: faiss designs
    ("auto" = exact up to 200k vectors, else IVF). ``nprobe`` / ``ef_search``: search-time knobs of
    IVF / HNSW designs, recorded in the index (None keeps the recorded value, else IVF nprobe 16 and
    faiss' HNSW default); :func:`check_recall` measures what they give. ``commit_every``: videos per shard + catalog
    transaction (the most a kill can cost; with Ray, the partition size). ``batch_frames``: rows of
    every encoder forward pass (the last one padded, so results do not depend on the engine).
    ``engine``: "local" (decode ``workers`` here, encode in this process) or "ray"
    (vidclip.encode.ray_engine; ``ray`` = its RayOptions: partitions staged under ``features/staging``
    on the cluster, committed here in partition order).
    """
    from vidclip.video.sample import SamplerConfig

    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine: expected 'local' or 'ray', got {engine!r}")
    if engine == "ray":
        from vidclip.encode.ray_engine import require_ray

        require_ray()  # a clear error before any work when Ray is not installed
    index_dir = Path(index_dir).expanduser().resolve()
    check_index_path(index_dir)
    if sampler is None:
        sampler = SamplerConfig(name="windows", fps=1.0, window=10.0, stride=5.0)
    start = time.perf_counter()
    lib = library if isinstance(library, Library) else scan_library(library)
    report = IndexReport(engine=engine)
    report.failed.extend(lib.problems)  # unreadable folder entries: one line each, never silently skipped
    with _DirLock(index_dir):
        refuse_damage(index_dir)  # before opening the catalog for writing (a 0-byte one would become a new one)
        catalog = Catalog(index_dir / CATALOG_FILE)
        try:
            refuse_damage(index_dir, catalog)
            stored = catalog.get_meta("model")
            lazy = not hasattr(clip, "identity") and stored is not None and (temporal is None or str(temporal) == "mean")
            if lazy:  # the index's own model, loaded below only if a video must be encoded
                ident_dict, pooler = stored, Pooler({"name": "mean"})
                catalog.check_or_set_identity(stored, catalog.get_meta("model_key"), sampler.to_dict(),
                                              {"name": "mean"})
                dim = int(stored["embed_dim"])
            else:
                clip = clip if hasattr(clip, "identity") else clip()
                pooler = Pooler.create(temporal, clip)
                ident = clip.identity
                ident_dict = ident.to_dict()
                catalog.check_or_set_identity(ident_dict, ident.key(), sampler.to_dict(), pooler.spec)
                dim = int(clip.embed_dim)
            _record_settings(catalog, lib, design, segment_design, nprobe, ef_search)
            committer = _Committer(catalog, index_dir, ident_dict, sampler.to_dict(), dim, report)
            todo, report.unchanged, deleted = _plan(catalog, lib, retry_failed)
            committer.delete(deleted)
            report.deleted = sum(1 for r in deleted if r["status"] == "indexed")
            for rec in [rec for rec, _ in todo if rec["size"] is None]:
                rec["error"] = "file not found"
                committer.add_failure(rec)
                report.failed.append({"path": rec["abs_path"], "reason": rec["error"]})
            todo = [(rec, item) for rec, item in todo if rec["size"] is not None]
            if engine == "ray":
                _index_on_ray(todo, committer, pooler, ident_dict, sampler, report, backend=backend,
                              batch_frames=batch_frames, commit_every=commit_every, options=ray, progress=progress)
            else:
                if (committer.features / "staging").is_dir():  # a killed Ray run's: redone here
                    from vidclip.encode.ray_engine import remove_staging

                    report.staging_removed = remove_staging(committer.features)
                if todo and lazy:
                    clip = clip()
                    if clip.identity.key() != catalog.get_meta("model_key"):
                        raise IndexMismatchError(f"{display_path(index_dir)}: the model loaded for this index "
                                                 f"({clip.identity.name!r}) is not the one it was built with")
                _index_locally(todo, committer, clip, pooler, sampler, report, workers=workers, backend=backend,
                               decode_device=decode_device, batch_frames=batch_frames, commit_every=commit_every,
                               progress=progress)
            report.total_indexed = committer.finish()
        finally:
            catalog.close()
    report.seconds = time.perf_counter() - start
    return report


def _index_locally(todo, committer: _Committer, clip, pooler: Pooler, sampler, report: IndexReport, *, workers,
                   backend, decode_device, batch_frames, commit_every, progress) -> None:
    """Encode ``todo`` = [(record, item)] here: decode workers, fixed-size encoder passes, a commit
    every ``commit_every`` videos (or COMMIT_FRAMES frames), in completion order."""
    if not todo:
        return
    from vidclip.encode.pipeline import Failure, iter_encoded

    by_key = {rec["abs_path"]: (rec, item) for rec, item in todo}
    items = [(rec["abs_path"], rec["abs_path"]) for rec, _ in todo]
    for result in iter_encoded(items, clip, sampler, workers=workers, backend=backend, decode_device=decode_device,
                               batch_frames=batch_frames, pad_last_batch=True,
                               progress="index" if progress else False):
        rec, item = by_key[result.key]
        emb = None if isinstance(result, Failure) else result.emb.detach().float().cpu().numpy()
        if emb is None or emb.shape[0] == 0:
            rec["error"] = result.reason if emb is None else "no frames could be decoded"
            committer.add_failure(rec)
            report.failed.append({"path": rec["abs_path"], "reason": rec["error"]})
        else:
            from vidclip.encode.pipeline import whole_video_window

            info = result.info
            times = np.asarray(result.valid_times, dtype=np.float64)
            windows = result.windows or whole_video_window(emb.shape[0], info.duration, times)
            emb16 = emb.astype(np.float16).astype(np.float32)  # what is stored
            _pool_into(rec, pooler, emb16, windows, info.duration, info.fps)
            if rec["hash"] is None:
                rec["hash"] = fast_hash(item.path, rec["size"])
            committer.add_video(rec, emb16, result.valid_indices, times)
            report.indexed += 1
            report.frames += int(emb.shape[0])
        if committer.full(commit_every):
            committer.commit()


def _index_on_ray(todo, committer: _Committer, pooler: Pooler, ident_dict: dict, sampler, report: IndexReport, *,
                  backend, batch_frames, commit_every, options, progress) -> None:
    """Encode ``todo`` on Ray (vidclip.encode.ray_engine): one partition per ``commit_every`` videos, each
    staged as a shard by an encoder actor; here each is pooled from its stored frames and committed
    (shard adopted, one catalog transaction) in partition order."""
    from vidclip.encode.ray_engine import (
        RayOptions,
        StageStats,
        item_identity,
        make_partitions,
        remove_staging,
        stage_partitions,
    )

    options = options or RayOptions()
    by_path = {rec["abs_path"]: (rec, item) for rec, item in todo}
    items = []
    for rec, _item in todo:
        # the shard record as the local engine writes it: the library key, the absolute path
        it = item_identity(rec["key"], rec["abs_path"], {"source": rec["source"], "hash": None})
        it["size"], it["mtime_ns"] = rec["size"], rec["mtime_ns"]  # the plan's view of the file
        items.append(it)
    settings = {"model": ident_dict, "sampler": sampler.to_dict(), "batch_frames": int(batch_frames),
                "precision": options.precision, "gpu": float(options.num_gpus) > 0, "kind": "index"}
    parts = make_partitions(items, commit_every, settings)
    if not parts:
        report.staging_removed = remove_staging(committer.features)
        return
    stats = StageStats()
    for staged in stage_partitions(parts, committer.features, identity=ident_dict, sampler=sampler.to_dict(),
                                   backend=backend, batch_frames=batch_frames, whole_window=True,
                                   require_frames=True, options=options, progress="index (ray)" if progress else False,
                                   stats=stats):
        store = staged.store()
        for r in staged.records():
            rec, item = by_path[r["path"]]
            emb16 = np.asarray(store.get(r["key"]).emb, dtype=np.float32)
            _pool_into(rec, pooler, emb16, r["windows"], r["duration"], r["fps"])
            rec["hash"] = rec["hash"] or (r.get("extra") or {}).get("hash") or fast_hash(item.path, rec["size"])
            rec["offset"], rec["count"] = int(r["offset"]), int(r["count"])
            committer.add_staged(rec)
            report.indexed += 1
            report.frames += int(r["count"])
        for f in staged.manifest["failures"]:
            rec, _ = by_path[f["path"]]
            rec["error"] = f["reason"]
            committer.add_failure(rec)
            report.failed.append({"path": rec["abs_path"], "reason": f["reason"]})
        committer.commit(staged.shard_dir)
        staged.remove()
    report.partitions_reused, report.staging_removed = stats.reused, stats.stale_removed
    report.nodes = sorted(stats.nodes)


def _fit_or_none(catalog: Catalog, kind: str, idx: VectorIndex) -> VectorIndex | None:
    """``idx`` if its design is still what the catalog asks for at the current size, else None (rebuild)."""
    requested = catalog.get_meta(f"design_{kind}", "auto")
    n = idx.ntotal
    if idx.metadata.get("untrainable_at") == n and idx.metadata.get("requested") == requested:
        return idx  # the exact stand-in for a design that could not train at this size: not retried (or re-warned)
    design = choose_design(n) if requested.lower() == "auto" else requested
    if idx.design != design or not idx.is_trained or _outgrown(idx, n):
        return None
    idx.metadata["requested"] = requested
    return idx


def _record_settings(catalog: Catalog, lib: Library | None, design: str | None, segment_design: str | None,
                     nprobe: int | None = None, ef_search: int | None = None) -> None:
    for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    with catalog.transaction() as cur:
        for kind in ("videos", "segments"):  # one setting for both indexes: each uses it if its design has the knob
            if nprobe is not None:
                catalog.set_meta(cur, f"nprobe_{kind}", int(nprobe))
            if ef_search is not None:
                catalog.set_meta(cur, f"ef_search_{kind}", int(ef_search))
        if design:
            catalog.set_meta(cur, "design_videos", design)
        elif catalog.get_meta("design_videos") is None:
            catalog.set_meta(cur, "design_videos", "auto")
        if segment_design:
            catalog.set_meta(cur, "design_segments", segment_design)
        elif catalog.get_meta("design_segments") is None:
            catalog.set_meta(cur, "design_segments", "auto")
        if lib is not None:
            libs = catalog.get_meta("libraries", [])
            if lib.source not in [x["source"] for x in libs]:
                libs.append({"source": lib.source, "root": str(lib.root)})
                catalog.set_meta(cur, "libraries", libs)
            if catalog.get_meta("library_root") is None:
                catalog.set_meta(cur, "library_root", str(lib.root))


def _plan(catalog: Catalog, lib: Library, retry_failed: bool) -> tuple[list[tuple[dict, LibraryItem]], int, list[dict]]:
    """(to encode: [(record, item)], unchanged count, rows to mark deleted)."""
    live = catalog.live()
    todo, unchanged = [], 0
    seen: set[str] = set()
    touched: list[tuple[int, int]] = []
    for item in lib.items:
        abs_path = str(item.path)
        seen.add(abs_path)
        try:
            st = item.path.stat()
        except OSError:
            st = None
        row = live.get(abs_path)
        if row is not None:
            if st is None:
                if row["status"] == "failed" and row["size"] is None:
                    unchanged += 1  # still missing
                    continue
            elif row["size"] == st.st_size and row["mtime_ns"] == st.st_mtime_ns:
                if row["status"] == "indexed" or not retry_failed:
                    unchanged += 1
                    continue
            elif row["hash"] is not None and row["size"] == st.st_size and fast_hash(item.path, st.st_size) == row["hash"]:
                touched.append((row["id"], st.st_mtime_ns))  # touched, same content
                if row["status"] == "indexed" or not retry_failed:
                    unchanged += 1
                    continue
        h = None
        todo.append((_video_record(item, lib, st, h, row["id"] if row is not None else None), item))
    if touched:
        with catalog.transaction() as cur:
            for vid, mtime in touched:
                catalog.touch(cur, vid, mtime)
    deleted = [r for p, r in live.items() if r["source"] == lib.source and p not in seen]
    return todo, unchanged, deleted


# ----------------------------------------------------------------------------- merge, report


def merge_index(other_dir: str | os.PathLike, index_dir: str | os.PathLike, *, commit_every: int = 256) -> IndexReport:
    """Copy every indexed (and failed) video of ``other_dir`` into ``index_dir``.

    Both must use the same model, sampler and temporal module (an empty ``index_dir`` adopts
    ``other_dir``'s). A video already in ``index_dir`` (same absolute path) is kept when its
    content hash matches, else the newer file version (by mtime) wins. Frame embeddings are
    copied into new shards of ``index_dir``, so the two indexes stay independent.
    """
    other_dir = Path(other_dir).expanduser().resolve()
    index_dir = Path(index_dir).expanduser().resolve()
    if other_dir == index_dir:
        raise ConfigError(f"--merge {other_dir}: cannot merge an index into itself")
    if not _is_index_dir(other_dir):
        raise VidclipError(f"{other_dir}: not a vidclip index (no {CATALOG_FILE})")
    start = time.perf_counter()
    report = IndexReport()
    refuse_damage(other_dir)
    src = Catalog(other_dir / CATALOG_FILE, readonly=True)
    try:
        with _DirLock(index_dir):
            refuse_damage(index_dir)
            dst = Catalog(index_dir / CATALOG_FILE)
            try:
                refuse_damage(index_dir, dst)
                model = src.get_meta("model")
                dst.check_or_set_identity(model, src.get_meta("model_key"), src.get_meta("sampler"),
                                          src.get_meta("temporal"))
                _record_settings(dst, None, None, None)
                with dst.transaction() as cur:
                    libs = dst.get_meta("libraries", [])
                    for lib in src.get_meta("libraries", []):
                        if lib["source"] not in [x["source"] for x in libs]:
                            libs.append(lib)
                    dst.set_meta(cur, "libraries", libs)
                    if dst.get_meta("library_root") is None and src.get_meta("library_root") is not None:
                        dst.set_meta(cur, "library_root", src.get_meta("library_root"))
                dim = int(model["embed_dim"])
                committer = _Committer(dst, index_dir, model, src.get_meta("sampler"), dim, report)
                live = dst.live()
                rows = [r for r in src.videos() if r["status"] in ("indexed", "failed")]
                shards: dict[str, tuple] = {}
                for row in rows:
                    old = live.get(row["abs_path"])
                    if old is not None:
                        same = old["hash"] is not None and old["hash"] == row["hash"] and old["status"] == row["status"]
                        if same or (old["mtime_ns"] or 0) >= (row["mtime_ns"] or 0):
                            report.unchanged += 1
                            continue
                    rec = {k: row[k] for k in ("key", "source", "root", "path", "abs_path", "size", "mtime_ns", "hash",
                                               "metadata", "duration", "fps")}
                    rec["replaces"] = old["id"] if old is not None else None
                    if row["status"] == "failed":
                        rec["error"] = row["error"]
                        committer.add_failure(rec)
                        report.failed.append({"path": row["abs_path"], "reason": row["error"]})
                    else:
                        sl = slice(row["offset"], row["offset"] + row["count"])
                        if row["shard"] not in shards or shards[row["shard"]][0].shape[0] < sl.stop:
                            shards[row["shard"]] = FeatureStore.open_shard(other_dir / FEATURES_DIR, row["shard"],
                                                                           rows=sl.stop)
                        emb, fidx, times = shards[row["shard"]]
                        segs, seg_vecs = src.segments_of([row["id"]], dim)[row["id"]]
                        vec = src.conn.execute("SELECT vector FROM videos WHERE id = ?", (row["id"],)).fetchone()[0]
                        rec.update(vector=np.frombuffer(vec, "<f4").astype(np.float32),
                                   windows=[(s["start"], s["end"], s["first"], s["count"]) for s in segs],
                                   window_vectors=seg_vecs)
                        committer.add_video(rec, np.asarray(emb[sl]), np.asarray(fidx[sl]), np.asarray(times[sl]))
                        report.indexed += 1
                        report.frames += int(row["count"])
                    if committer.full(commit_every):
                        committer.commit()
                report.total_indexed = committer.finish()
            finally:
                dst.close()
    finally:
        src.close()
    report.seconds = time.perf_counter() - start
    return report


def index_report(index_dir: str | os.PathLike) -> dict:
    """Counts, settings and the failed videos (path, reason) of an index."""
    index_dir = Path(index_dir).expanduser().resolve()
    catalog = Catalog(index_dir / CATALOG_FILE, readonly=True)
    try:
        return {
            "index": str(index_dir),
            "counts": catalog.counts(),
            "model": catalog.get_meta("model"),
            "sampler": catalog.get_meta("sampler"),
            "temporal": catalog.get_meta("temporal"),
            "designs": {"videos": catalog.get_meta("design_videos"), "segments": catalog.get_meta("design_segments")},
            "search_settings": {k: catalog.get_meta(k) for k in ("nprobe_videos", "ef_search_videos",
                                                                  "nprobe_segments", "ef_search_segments")},
            "libraries": catalog.get_meta("libraries", []),
            "generation": catalog.generation,
            "failed": [{"id": r["id"], "path": r["abs_path"], "reason": r["error"]}
                       for r in catalog.videos(status="failed")],
        }
    finally:
        catalog.close()
