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

Step 1 is an encode engine's (vidclip/encode/protocol.py; ``--engine local`` or ``ray``): it
stages each finished shard of ``commit_every`` videos under ``features/staging/<name>/`` (renamed
into place when complete); this process, the only writer of the catalog and faiss, applies the
index's rules to it (:func:`_index_videos`: a whole-video window for a video without sampler
windows, a video without one decodable frame a failure, the content hash), pools its stored fp16
frames, renames its shard into ``shards/`` and does 2 and 3 exactly as above, shard by shard in
the order the engine yields them, the same code for either engine. A kill before the rename
leaves a staging folder: the Ray engine commits it on the next run without encoding (the local
engine removes it and encodes those videos again); a kill between rename and 2 leaves an orphan
shard (deleted) and a staging folder without its shard (redone). :func:`merge_index` commits
through the same :class:`_Committer`.

Change detection: a file whose (size, mtime) equals its row's is unchanged without reading
it; otherwise its fast content hash (catalog.fast_hash) decides, and a touched-but-identical
file only gets its mtime updated. Files gone from the library are marked deleted (only rows
that came from the same library source: merged-in videos are left alone). Failed files are
retried when they change, or with ``retry_failed``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from vidclip.core.errors import ConfigError, IndexMismatchError, display_path
from vidclip.encode.options import ENCODE_FIELDS, SHARD_FRAMES, EncodeOptions
from vidclip.encode.pipeline import start_engine
from vidclip.encode.protocol import STAGING_DIR, EncodedShard, EncodeItem, Engine, ModelRef
from vidclip.features.identity import fast_hash
from vidclip.features.pooling import Pooler
from vidclip.features.store import FeatureWriter
from vidclip.index.catalog import Catalog
from vidclip.index.designs import choose_design, format_search_params
from vidclip.index.directory import (
    IndexDir,
    crash_point,
    outgrown,
    record_search_params,
    recorded_search_params,
)
from vidclip.index.queries import export_query_tower
from vidclip.index.scan import Library, LibraryItem, scan_library
from vidclip.index.texts import TextSources
from vidclip.index.vectors import VectorIndex
from vidclip.video.sample import SamplerConfig

COMMIT_FRAMES = SHARD_FRAMES  # merge_index also commits once this many frames are pending (bounds memory)


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
    text_updated: int = 0  # unchanged videos whose words were read again (a sidecar added, changed or removed)
    warnings: list[str] = field(default_factory=list)  # malformed subtitles, refused clip.json (file: line / key)

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

    def __init__(self, catalog: Catalog, index_dir: IndexDir, model: dict, sampler: dict, dim: int,
                 report: IndexReport):
        self.catalog, self.index_dir, self.dim, self.report = catalog, index_dir, dim, report
        self.features = index_dir.features
        report.lost = index_dir.mark_lost_frames(catalog, dim)  # re-encoded (they look changed)
        report.orphans_removed = index_dir.remove_orphan_shards(catalog)
        report.temps_removed = len(index_dir.remove_stale_temps())
        self.video_index = index_dir.sync_faiss(catalog, "videos", dim, save=False)
        self.segment_index = index_dir.sync_faiss(catalog, "segments", dim, save=False)
        self.writer = FeatureWriter(self.features, model, sampler, shard_size=1 << 30)
        self.pending: list[dict] = []  # videos of the next shard, in its row order
        self.texts: TextSources | None = None  # set by index_library: read each video's words
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

    def add_failure(self, rec: dict, reason: str) -> None:
        """A file that could not be indexed: a "failed" row (and a line of the report)."""
        rec["error"] = reason
        self.failures.append(rec)
        self.report.failed.append({"path": rec["abs_path"], "reason": reason})

    def full(self, commit_every: int) -> bool:
        return len(self.pending) + len(self.failures) >= commit_every or self.offset >= COMMIT_FRAMES

    def commit(self, staged: EncodedShard | None = None) -> None:
        """Commit what is pending: the shard (``staged``, renamed into place, or written by
        FeatureWriter now), then one catalog transaction, then the in-memory faiss indexes. A
        staged shard none of whose videos is pending (all failed) is not taken into the store."""
        if not self.pending and not self.failures:
            return
        if not self.pending:
            shard = None
        elif staged is not None:
            shard = staged.commit(self.writer)
        else:
            shard = self.writer.flush()
        crash_point("shard")
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
                if rec.get("text") is not None:  # its words, in the transaction of its row
                    self.catalog.set_text(cur, vid, rec["text"], rec["text_fp"])
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
        crash_point("commit")
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
        self.report.superseded_removed = self.index_dir.remove_orphan_shards(self.catalog)
        for kind, idx in (("videos", self.video_index), ("segments", self.segment_index)):
            idx.metadata["generation"] = self.catalog.generation if idx.is_trained else -1
            self.index_dir.sync_faiss(self.catalog, kind, self.dim, current=_fit_or_none(self.catalog, kind, idx),
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


def _whole_video_window(frames: int, duration: float, times: np.ndarray) -> list[tuple[float, float, int, int]]:
    """One window [(0, end, 0, frames)] covering the whole video: what an index stores for a video
    whose sampler gave no windows (another sampler, or a video shorter than one window)."""
    end = float(duration) if duration and duration > 0 else (float(times[-1]) if len(times) else 0.0)
    return [(0.0, end, 0, int(frames))]


@dataclass
class IndexOptions:
    """How :func:`index_library` indexes: ``encode`` (sampler, engine, workers, batch_frames, ...;
    its ``shard_size`` is ``commit_every``, the videos per shard + catalog transaction, so the most
    a kill can cost; with Ray, the partition size) and the index's own settings.

    ``encode.sampler``: None = windows of 10 s every 5 s at 1 fps (must match the index's).
    ``temporal``: "mean" or a training checkpoint. ``design`` / ``segment_design``: faiss designs
    ("auto" = exact up to 200k vectors, else IVF). ``search_params``: faiss search knobs
    (``"nprobe=32,efSearch=64"`` or a dict), recorded in the index over the recorded ones (unset:
    IVF nprobe 16+, faiss' HNSW default); :func:`check_recall` measures what they give.
    ``retry_failed``: encode again the files that failed before although they did not change.
    """

    encode: EncodeOptions = field(default_factory=lambda: EncodeOptions(workers=2, shard_size=64))
    temporal: str | os.PathLike | None = "mean"
    design: str | None = None
    segment_design: str | None = None
    search_params: str | dict | None = None
    retry_failed: bool = False
    #: the ``--metadata`` CSV (a path, or what :func:`vidclip.index.metadata.read_metadata_csv` read
    #: from one): per-video keys added to the catalog's metadata and text channel for this run
    metadata: str | os.PathLike | dict | None = None
    #: export the text tower to ONNX into the index (``<index>/onnx/``) for torch-free text search
    #: (:func:`vidclip.index.queries.export_query_tower`); skipped with a warning when it cannot be made
    onnx_text: bool = True

    @classmethod
    def build(cls, options: IndexOptions | SamplerConfig | None = None, **changes) -> IndexOptions:
        """``options`` (a SamplerConfig: the defaults with that sampler) with ``changes`` applied:
        IndexOptions fields, EncodeOptions fields, or ``commit_every`` (= ``encode.shard_size``)."""
        if isinstance(options, SamplerConfig):
            changes = {"sampler": options, **changes}
            options = None
        if options is not None and not isinstance(options, cls):
            raise ConfigError(f"options: expected IndexOptions or a SamplerConfig, got {type(options).__name__}")
        options = options if options is not None else cls()
        if "commit_every" in changes:
            changes["shard_size"] = changes.pop("commit_every")
        encode = {k: changes.pop(k) for k in list(changes) if k in ENCODE_FIELDS}
        if encode:
            changes["encode"] = replace(changes.get("encode", options.encode), **encode)
        return replace(options, **changes) if changes else options


def index_library(
    library: str | os.PathLike | Library,
    index_dir: str | os.PathLike,
    clip,
    options: IndexOptions | SamplerConfig | None = None,
    **changes,
) -> IndexReport:
    """Index (or bring up to date) the videos of ``library`` (a library spec, or a Library that
    :func:`~vidclip.index.scan.scan_library` returned) into ``index_dir``.

    ``clip``: a FrozenCLIP (must match the index's model when the index exists), or a zero-argument
    function returning the index's own model: then it is called only when a video must be encoded
    (a run with nothing new loads no model; with the Ray engine the driver never loads it).
    ``options``: an :class:`IndexOptions`, or a SamplerConfig for the defaults with that sampler;
    ``changes``: fields to override, of IndexOptions or of its EncodeOptions (``workers=0``,
    ``commit_every=16``, ``engine="ray"``, ``ray=RayOptions(...)``, ``temporal=CKPT``, ...).
    Frames are encoded in passes of exactly ``batch_frames`` rows, the last one padded, so
    results do not depend on the engine; either engine's shards are committed here in the order
    it yields them (:func:`_index_videos`).
    """
    options = IndexOptions.build(options, **changes)
    engine = start_engine(options.encode)  # before any work: a missing Ray fails here
    index_dir = IndexDir(index_dir)
    index_dir.check_path()
    sampler = options.encode.sampler or SamplerConfig.index_default()
    encode = replace(options.encode, sampler=sampler).labelled("index")
    temporal = options.temporal
    start = time.perf_counter()
    lib = library if isinstance(library, Library) else scan_library(library)
    extra = options.metadata
    if extra is not None and not isinstance(extra, dict):
        from vidclip.index.metadata import read_metadata_csv

        extra = read_metadata_csv(extra)
    texts = TextSources(extra)
    report = IndexReport(engine=engine.name)
    report.failed.extend(lib.problems)  # unreadable folder entries: one line each, never silently skipped
    with index_dir.lock():
        index_dir.refuse_damage()  # before opening the catalog for writing (a 0-byte one would become a new one)
        catalog = index_dir.open_catalog()
        try:
            index_dir.refuse_damage(catalog)
            stored = catalog.get_meta("model")
            lazy = not hasattr(clip, "identity") and stored is not None and (temporal is None or str(temporal) == "mean")
            if lazy:  # the index's own model, loaded by the engine only if a video must be encoded
                pooler = Pooler({"name": "mean"})
                catalog.check_or_set_identity(stored, catalog.get_meta("model_key"), sampler.to_dict(),
                                              {"name": "mean"})
                dim = int(stored["embed_dim"])

                once: list = []  # the model, loaded at most once (by the engine, or for the ONNX export)

                def load():
                    if once:
                        return once[0]
                    loaded = clip()
                    if loaded.identity.key() != catalog.get_meta("model_key"):
                        raise IndexMismatchError(f"{display_path(index_dir.path)}: the model loaded for this index "
                                                 f"({loaded.identity.name!r}) is not the one it was built with")
                    once.append(loaded)
                    return loaded
                model = ModelRef(stored, load)
            else:
                clip = clip if hasattr(clip, "identity") else clip()
                pooler = Pooler.create(temporal, clip)
                model = ModelRef.of(clip)
                catalog.check_or_set_identity(model.identity, clip.identity.key(), sampler.to_dict(), pooler.spec)
                dim = int(clip.embed_dim)
            _record_settings(catalog, lib, options.design, options.segment_design, options.search_params)
            committer = _Committer(catalog, index_dir, model.identity, sampler.to_dict(), dim, report)
            committer.texts = texts
            todo, report.unchanged, deleted, retext = _plan(catalog, lib, options.retry_failed, texts)
            committer.delete(deleted)
            report.deleted = sum(1 for r in deleted if r["status"] == "indexed")
            for rec in [rec for rec, _ in todo if rec["size"] is None]:
                committer.add_failure(rec, "file not found")
            committer.commit()
            todo = [(rec, item) for rec, item in todo if rec["size"] is not None]
            _index_videos(todo, engine, model, encode, committer, pooler, report)
            _update_text(catalog, retext, texts, report)
            report.warnings = texts.warnings
            report.partitions_reused, report.staging_removed = engine.stats.reused, engine.stats.stale_removed
            report.nodes = sorted(engine.stats.nodes)
            report.total_indexed = committer.finish()
            if options.onnx_text and pooler.spec.get("name", "mean") == "mean" and report.total_indexed:
                export_query_tower(index_dir, catalog, model.load)
        finally:
            catalog.close()
    report.seconds = time.perf_counter() - start
    return report


def _index_videos(todo: list[tuple[dict, LibraryItem]], engine: Engine, model: ModelRef, options: EncodeOptions,
                  committer: _Committer, pooler: Pooler, report: IndexReport) -> None:
    """Encode ``todo`` = [(record, item)] with ``engine``; commit each shard it yields, applying
    the index's rules: a video without one decodable frame is a failure, one without sampler
    windows gets a window covering it, and every indexed file gets its content hash. Vectors are
    pooled from the stored (fp16) frames, read back from the shard whichever engine wrote it."""
    by_path = {rec["abs_path"]: (rec, item) for rec, item in todo}
    # the shard record as an index stores it: the library key, the absolute path, the library source;
    # size and mtime as the plan saw them (what a Ray partition's id is made of)
    items = [EncodeItem(rec["key"], rec["abs_path"], {"source": rec["source"]}, rec["size"], rec["mtime_ns"])
             for rec, _ in todo]
    for shard in engine.run(items, model, options, committer.features / STAGING_DIR):
        for r in shard.records():
            rec, item = by_path[r["path"]]
            if not r["count"]:
                committer.add_failure(rec, "no frames could be decoded")
                continue
            emb16, _, times = shard.frames(r)
            windows = r["windows"] or _whole_video_window(r["count"], r["duration"], times)
            _pool_into(rec, pooler, np.asarray(emb16, dtype=np.float32), windows, r["duration"], r["fps"])
            rec["hash"] = rec["hash"] or fast_hash(item.path, rec["size"])
            if committer.texts is not None:  # fingerprint first: a sidecar changed while read is seen next run
                rec["text_fp"] = committer.texts.fingerprint(item.key, item.path, item.metadata)
                rec["text"], rec["metadata"] = committer.texts.read(item.key, item.path, item.metadata)
            rec["offset"], rec["count"] = int(r["offset"]), int(r["count"])
            committer.add_staged(rec)
            report.indexed += 1
            report.frames += rec["count"]
        for f in shard.failures:
            committer.add_failure(by_path[f.path][0], f.reason)
        committer.commit(shard)
        shard.remove()


def _fit_or_none(catalog: Catalog, kind: str, idx: VectorIndex) -> VectorIndex | None:
    """``idx`` if its design is still what the catalog asks for at the current size, else None (rebuild)."""
    requested = catalog.get_meta(f"design_{kind}", "auto")
    n = idx.ntotal
    if idx.metadata.get("untrainable_at") == n and idx.metadata.get("requested") == requested:
        return idx  # the exact stand-in for a design that could not train at this size: not retried (or re-warned)
    design = choose_design(n) if requested.lower() == "auto" else requested
    if idx.design != design or not idx.is_trained or outgrown(idx, n):
        return None
    idx.metadata["requested"] = requested
    return idx


def _record_settings(catalog: Catalog, lib: Library | None, design: str | None, segment_design: str | None,
                     search_params: str | dict | None = None) -> None:
    with catalog.transaction() as cur:
        record_search_params(catalog, cur, search_params)  # one setting for both indexes
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


def _update_text(catalog: Catalog, retext: list[tuple[int, LibraryItem]], texts: TextSources, report: IndexReport,
                 batch: int = 256) -> None:
    """Read again the words of unchanged videos whose text sources changed; one transaction per
    ``batch`` videos replaces their words, metadata and fingerprint together (a kill loses at most
    a batch, which the next run finds still changed)."""
    for lo in range(0, len(retext), batch):
        done = []
        for vid, item in retext[lo:lo + batch]:
            fp = texts.fingerprint(item.key, item.path, item.metadata)
            entries, metadata = texts.read(item.key, item.path, item.metadata)
            done.append((vid, entries, fp, metadata))
        with catalog.transaction() as cur:
            for vid, entries, fp, metadata in done:
                catalog.set_text(cur, vid, entries, fp, metadata)
        crash_point("text")
        report.text_updated += len(done)


def _plan(catalog: Catalog, lib: Library, retry_failed: bool, texts: TextSources | None = None
          ) -> tuple[list[tuple[dict, LibraryItem]], int, list[dict], list[tuple[int, LibraryItem]]]:
    """(to encode: [(record, item)], unchanged count, rows to mark deleted, unchanged indexed videos
    whose words must be read again: [(id, item)])."""
    live = catalog.live()
    fingerprints = catalog.text_fingerprints() if texts is not None else {}
    retext: list[tuple[int, LibraryItem]] = []
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
                    _check_text(row, item, texts, fingerprints, retext)
                    continue
            elif row["hash"] is not None and row["size"] == st.st_size and fast_hash(item.path, st.st_size) == row["hash"]:
                touched.append((row["id"], st.st_mtime_ns))  # touched, same content
                if row["status"] == "indexed" or not retry_failed:
                    unchanged += 1
                    _check_text(row, item, texts, fingerprints, retext)
                    continue
        h = None
        todo.append((_video_record(item, lib, st, h, row["id"] if row is not None else None), item))
    if touched:
        with catalog.transaction() as cur:
            for vid, mtime in touched:
                catalog.touch(cur, vid, mtime)
    deleted = [r for p, r in live.items() if r["source"] == lib.source and p not in seen]
    return todo, unchanged, deleted, retext


def _check_text(row: dict, item: LibraryItem, texts: TextSources | None, fingerprints: dict[int, str],
                retext: list) -> None:
    """Queue an unchanged indexed video whose text sources changed (or were never read: an index
    made before the text channel) for :func:`_update_text`."""
    if texts is not None and row["status"] == "indexed" and \
            fingerprints.get(row["id"]) != texts.fingerprint(item.key, item.path, item.metadata):
        retext.append((row["id"], item))


# ----------------------------------------------------------------------------- merge, report


def merge_index(other_dir: str | os.PathLike, index_dir: str | os.PathLike, *, commit_every: int = 256) -> IndexReport:
    """Copy every indexed (and failed) video of ``other_dir`` into ``index_dir``.

    Both must use the same model, sampler and temporal module (an empty ``index_dir`` adopts
    ``other_dir``'s). A video already in ``index_dir`` (same absolute path) is kept when its
    content hash matches, else the newer file version (by mtime) wins. Frame embeddings are
    copied into new shards of ``index_dir``, so the two indexes stay independent.
    """
    other_dir, index_dir = IndexDir(other_dir), IndexDir(index_dir)
    if other_dir == index_dir:
        raise ConfigError(f"--merge {other_dir.path}: cannot merge an index into itself")
    other_dir.require_catalog(str(other_dir.path))
    start = time.perf_counter()
    report = IndexReport()
    other_dir.refuse_damage()
    src = other_dir.open_catalog(readonly=True)
    try:
        with index_dir.lock():
            index_dir.refuse_damage()
            dst = index_dir.open_catalog()
            try:
                index_dir.refuse_damage(dst)
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
                        committer.add_failure(rec, row["error"])
                    else:
                        sl = slice(row["offset"], row["offset"] + row["count"])
                        if row["shard"] not in shards or shards[row["shard"]][0].shape[0] < sl.stop:
                            shards[row["shard"]] = other_dir.open_shard(row["shard"], rows=sl.stop)
                        emb, fidx, times = shards[row["shard"]]
                        segs, seg_vecs = src.segments_of([row["id"]], dim)[row["id"]]
                        vec = src.conn.execute("SELECT vector FROM videos WHERE id = ?", (row["id"],)).fetchone()[0]
                        _copy_text(src, row["id"], rec)
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


def _copy_text(src: Catalog, video_id: int, rec: dict) -> None:
    """Put the stored words of ``video_id`` in ``src`` (and their fingerprint) into ``rec``, for the
    merged row's transaction; nothing when ``src`` predates the text channel."""
    if not src.has_text_tables():
        return
    from vidclip.index.textsearch import TextEntry

    rows = src.conn.execute('SELECT kind, text, start, "end", source FROM text_spans WHERE video_id = ? ORDER BY id',
                            (int(video_id),)).fetchall()
    fp = src.conn.execute("SELECT fingerprint FROM text_state WHERE video_id = ?", (int(video_id),)).fetchone()
    rec["text"] = [TextEntry(r[0], r[1], r[2], r[3], r[4]) for r in rows]
    rec["text_fp"] = fp[0] if fp else ""  # "" matches no fingerprint: indexing its library reads them again


def index_report(index_dir: str | os.PathLike) -> dict:
    """Counts, settings and the failed videos (path, reason) of an index."""
    index_dir = IndexDir(index_dir)
    catalog = index_dir.open_catalog(readonly=True)
    try:
        return {
            "index": str(index_dir.path),
            "counts": catalog.counts(),
            "model": catalog.get_meta("model"),
            "sampler": catalog.get_meta("sampler"),
            "temporal": catalog.get_meta("temporal"),
            "designs": {"videos": catalog.get_meta("design_videos"), "segments": catalog.get_meta("design_segments")},
            "search_params": format_search_params(recorded_search_params(catalog)),
            "libraries": catalog.get_meta("libraries", []),
            "generation": catalog.generation,
            "failed": [{"id": r["id"], "path": r["abs_path"], "reason": r["error"]}
                       for r in catalog.videos(status="failed")],
        }
    finally:
        catalog.close()
