"""The library index: incremental, crash-safe indexing of a video collection, and search.

Index directory::

    DIR/
      catalog.sqlite (+ -wal, -shm)   the source of truth (vidclip.index.catalog)
      features/                       frame embeddings: a FeatureStore (store.json, shards/)
      videos.faiss                    video-level vectors (vidclip.index.vectors), derived data
      segments.faiss                  window-level vectors, derived data
      .lock                           held (flock) by the one process writing the index

What is stored per video: every sampled frame's embedding (fp16, in a feature-store shard),
a video-level vector (the temporal module's pooling of all its frames) and one vector per
window (start, end seconds), the vectors L2-normalised float32 in the catalog and in faiss.

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
search also drops any id the catalog does not list as indexed.

Change detection: a file whose (size, mtime) equals its row's is unchanged without reading
it; otherwise its fast content hash (catalog.fast_hash) decides, and a touched-but-identical
file only gets its mtime updated. Files gone from the library are marked deleted (only rows
that came from the same library source: merged-in videos are left alone). Failed files are
retried when they change, or with ``retry_failed``.

Search: the query's text embedding is compared with the video-level vectors in faiss. With a
text-conditioned temporal module (X-Pool-style ``xpool``, ``query_scoring``), the faiss
candidates (mean-pooled vectors, ``rerank_depth`` of them) are re-scored by the module on their
stored frame embeddings. The time span reported for a video hit is its best-scoring window
(windows are the sampler's fixed-length windows, scored by their stored vectors): a window has
a fixed, predictable length and averages several frames, so it is less noisy than one frame's
similarity and needs no margin to tune. ``segments=True`` ranks the windows themselves.

Recall: :func:`check_recall` (``vidclip index --check-recall DIR``) measures recall@k of both faiss
indexes against exact search over the same stored vectors, so an approximate design (IVF, HNSW,
PQ, chosen by ``--design``) and its search knobs (``--nprobe``, ``--ef-search``, recorded in the
catalog) can be checked on the library itself.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.features import SHARDS_DIR, FeatureWriter, committed_shards, uniform_positions
from ..errors import ConfigError, DatasetError, IndexMismatchError, VidclipError
from .catalog import Catalog, fast_hash
from .vectors import DEFAULT_FLAT_MAX, VectorIndex, choose_design, l2_normalize, recall_at_k

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite"
FEATURES_DIR = "features"
VIDEO_VECTORS = "videos.faiss"
SEGMENT_VECTORS = "segments.faiss"
LOCK_FILE = ".lock"
CRASH_ENV = "VIDCLIP_INDEX_CRASH"  # test hook: "shard:K" | "commit:K" | "faiss:K" -> SIGKILL self there
LOCK_WAIT_S = 10.0  # how long a writer waits for the index lock (a reader saving faiss holds it for moments)
COMMIT_FRAMES = 65_536  # also commit once this many frames are pending (bounds memory for long videos)
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


# ----------------------------------------------------------------------------- the library


@dataclass
class LibraryItem:
    key: str  # path relative to the library root (absolute when outside it)
    path: Path  # absolute
    metadata: dict = field(default_factory=dict)


@dataclass
class Library:
    source: str  # absolute path of the folder / list / CSV
    root: Path
    items: list[LibraryItem]


def _video_extensions() -> tuple[str, ...]:
    from ..pipeline import VIDEO_EXTENSIONS

    return VIDEO_EXTENSIONS


def _item(root: Path, raw: str, metadata: dict | None = None) -> LibraryItem:
    p = Path(os.path.expanduser(raw))
    p = p if p.is_absolute() else root / p
    p = Path(os.path.normpath(p))
    try:
        key = p.relative_to(root).as_posix()
    except ValueError:
        key = p.as_posix()
    return LibraryItem(key, p, metadata or {})


def scan_library(spec: str | os.PathLike) -> Library:
    """Expand a library: a folder (recursive, by video extension), a CSV with a ``path`` column
    (other columns become the video's metadata) or a text file with one path per line (``#``
    comments and blank lines skipped). Relative paths in a list resolve against the list's folder,
    which is the library root. Listed files that do not exist are kept (they are recorded as
    failed, not silently dropped)."""
    spec_path = Path(spec).expanduser().resolve()
    if spec_path.is_dir():
        exts = _video_extensions()
        items = [_item(spec_path, f.relative_to(spec_path).as_posix())
                 for f in sorted(spec_path.rglob("*")) if f.is_file() and f.suffix.lower() in exts]
        return Library(str(spec_path), spec_path, items)
    if not spec_path.is_file():
        raise DatasetError(f"{spec}: no such folder or file (a library is a folder, a CSV with a 'path' column, "
                           "or a text file of paths)")
    root = spec_path.parent
    items: list[LibraryItem] = []
    seen: dict[Path, str] = {}
    if spec_path.suffix.lower() == ".csv":
        with open(spec_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in (reader.fieldnames or [])]
            if "path" not in fields:
                raise DatasetError(f"{spec_path}: header {fields} has no 'path' column")
            reader.fieldnames = fields
            for row_no, row in enumerate(reader, start=2):
                raw = (row.get("path") or "").strip()
                if not raw:
                    raise DatasetError(f"{spec_path}: row {row_no}: field 'path' is empty")
                meta = {k: v for k, v in row.items() if k != "path" and k is not None}
                item = _item(root, raw, meta)
                if item.path in seen:
                    raise DatasetError(f"{spec_path}: row {row_no}: path {raw!r} already listed ({seen[item.path]})")
                seen[item.path] = f"row {row_no}"
                items.append(item)
    else:
        try:
            lines = spec_path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise DatasetError(f"{spec_path}: not a text file of paths (is it a video? pass its folder instead)") from None
        for line_no, line in enumerate(lines, start=1):
            raw = line.strip()
            if not raw or raw.startswith("#"):
                continue
            item = _item(root, raw)
            if item.path in seen:
                raise DatasetError(f"{spec_path}: line {line_no}: path {raw!r} already listed ({seen[item.path]})")
            seen[item.path] = f"line {line_no}"
            items.append(item)
    return Library(str(spec_path), root, items)


# ----------------------------------------------------------------------------- pooling


class Pooler:
    """Frame embeddings -> L2-normalised video / window vectors; query-conditioned scoring.

    ``mean`` (the default): the normalised mean of the L2-normalised frame embeddings (CLIP4Clip
    "meanP"). A training checkpoint (``--temporal CKPT``): its temporal module, fed the stored
    frames as in training (raw embeddings, at most ``max_frames`` of them, uniformly subsampled);
    a text-conditioned module scores (query, video) pairs itself and the mean vectors serve as
    faiss candidates. Queries use the checkpoint's fine-tuned text tower when it has one.
    """

    def __init__(self, spec: dict, clip=None, loaded=None):
        self.spec = spec
        self.clip = clip
        self._loaded = loaded
        self.temporal = loaded.model.temporal if loaded is not None else None
        self.conditioned = bool(getattr(self.temporal, "text_conditioned", False))
        self.max_frames = int(getattr(loaded.config.model, "max_frames", 0) or 0) if loaded is not None else 0

    @classmethod
    def create(cls, temporal: str | os.PathLike | None, clip) -> "Pooler":
        """``temporal``: "mean" / None, or a training checkpoint (.safetensors or run dir)."""
        if temporal is None or str(temporal) == "mean":
            return cls({"name": "mean"}, clip)
        path = Path(temporal).expanduser().resolve()
        if not path.exists():
            raise ConfigError(f"--temporal {temporal}: neither 'mean' nor an existing checkpoint file / run dir")
        from ..train.model import load_checkpoint

        loaded = load_checkpoint(path, clip=clip, device=str(getattr(clip, "device", "cpu")))
        if getattr(loaded.model.temporal, "needs_pixels", False):
            raise ConfigError(f"--temporal {temporal}: module {loaded.config.model.temporal!r} works on pixels inside "
                              "the image encoder, but an index stores frame embeddings; use 'mean' or a checkpoint "
                              "of a frame-embedding module (seq_transformer, tdb, xpool, query_scoring)")
        digest = hashlib.blake2b(loaded.path.read_bytes(), digest_size=8).hexdigest()
        spec = {"name": "checkpoint", "path": str(loaded.path), "module": loaded.config.model.temporal,
                "digest": digest}
        return cls(spec, clip, loaded)

    @classmethod
    def from_spec(cls, spec: dict, clip) -> "Pooler":
        if spec.get("name", "mean") == "mean":
            return cls({"name": "mean"}, clip)
        pooler = cls.create(spec["path"], clip)
        if pooler.spec.get("digest") != spec.get("digest"):
            raise IndexMismatchError(f"{spec['path']}: temporal checkpoint changed since the index was built "
                                     f"(digest {pooler.spec.get('digest')}, index has {spec.get('digest')}); re-index")
        return pooler

    # -- pooling

    @staticmethod
    def mean_windows(frames: np.ndarray, windows: Sequence[tuple[float, float, int, int]]) -> np.ndarray:
        """Normalised mean of normalised frames per window: [W, D] (prefix sums, no per-window loop)."""
        unit = l2_normalize(frames)
        csum = np.concatenate([np.zeros((1, unit.shape[1]), np.float64), np.cumsum(unit, axis=0, dtype=np.float64)])
        first = np.array([w[2] for w in windows], dtype=np.int64)
        count = np.array([w[3] for w in windows], dtype=np.int64)
        return l2_normalize((csum[first + count] - csum[first]).astype(np.float32))

    def _module_batch(self, frames_list: list[np.ndarray]):
        import torch

        limit = self.max_frames or max(f.shape[0] for f in frames_list)
        dim = frames_list[0].shape[1]
        x = np.zeros((len(frames_list), limit, dim), np.float32)
        mask = np.zeros((len(frames_list), limit), bool)
        for b, f in enumerate(frames_list):
            if f.shape[0] > limit:
                f = f[uniform_positions(f.shape[0], limit)]
            x[b, :f.shape[0]] = f
            mask[b, :f.shape[0]] = True
        device = getattr(self.clip, "device", "cpu")
        return torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device)

    def video_and_windows(self, frames: np.ndarray, windows: Sequence[tuple[float, float, int, int]]
                          ) -> tuple[np.ndarray, np.ndarray]:
        """frames float [T, D] -> (video vector [D], window vectors [W, D]), all L2-normalised."""
        whole = [(0.0, 0.0, 0, frames.shape[0])]
        if self.temporal is None or self.conditioned:
            vecs = self.mean_windows(frames, whole + list(windows))
            return vecs[0], vecs[1:]
        import torch

        chunks = [frames] + [frames[w[2]:w[2] + w[3]] for w in windows]
        with torch.no_grad():
            x, mask = self._module_batch(chunks)
            out = self.temporal(x, mask).float().cpu().numpy()
        out = l2_normalize(out)
        return out[0], out[1:]

    # -- queries

    def encode_query(self, text: str):
        """Raw text embedding float32 tensor [D] (the checkpoint's fine-tuned text tower when it has one).

        Raw, as the temporal modules were trained on; normalise it for cosine search.
        """
        import torch

        with torch.no_grad():
            if self._loaded is not None and self._loaded.model.text_tower is not None:
                ids = self.clip.tokenize([text]).to(self.clip.device)
                q = self._loaded.model.encode_text(ids)
            else:
                q = self.clip.encode_text([text])
        return q.float()[0]

    def conditioned_scores(self, text, frames_list: list[np.ndarray]) -> np.ndarray:
        """Cosine of the raw query embedding ``text`` [D] with each video as the text-conditioned
        module pools it for that query: float32 [B]."""
        import torch

        with torch.no_grad():
            x, mask = self._module_batch(frames_list)
            scores = self.temporal.similarity(text[None, :].to(x.device), x, mask)  # [1, B]
        return scores[0].float().cpu().numpy()


# ----------------------------------------------------------------------------- reports


@dataclass
class IndexReport:
    indexed: int = 0  # newly indexed (new or changed files) this run
    unchanged: int = 0  # skipped: already indexed (or failed) and unchanged
    deleted: int = 0  # gone from the library, removed from the index
    failed: list[dict] = field(default_factory=list)  # {"path", "reason"} of this run
    frames: int = 0
    seconds: float = 0.0
    orphans_removed: int = 0  # uncommitted shards of a killed run, deleted
    total_indexed: int = 0  # indexed videos in the index after the run

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        d["videos_per_s"] = round(self.indexed / self.seconds, 3) if self.seconds else None
        d["frames_per_s"] = round(self.frames / self.seconds, 2) if self.seconds else None
        return d


# ----------------------------------------------------------------------------- index directory


class _DirLock:
    """Exclusive flock on DIR/.lock: one writer per index; released when the process dies."""

    def __init__(self, index_dir: Path):
        self.path = index_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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


def _sync_faiss(catalog: Catalog, index_dir: Path, kind: str, dim: int, *, current: VectorIndex | None = None,
                save: bool = True, flat_max: int = DEFAULT_FLAT_MAX) -> VectorIndex:
    """The faiss index of ``kind`` ("videos" / "segments") matching the catalog's generation.

    Reuses ``current`` or the saved file when stamped with the catalog's generation and design;
    otherwise rebuilds from the vectors stored in the catalog (re-using a compatible trained
    index, so an IVF is not retrained unless the library grew ``RETRAIN_GROWTH``-fold).
    """
    path = index_dir / (VIDEO_VECTORS if kind == "videos" else SEGMENT_VECTORS)
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
        ids, vectors = catalog.video_vectors(dim) if kind == "videos" else catalog.segment_vectors(dim)
    n = len(ids)
    design = choose_design(n, flat_max) if requested.lower() == "auto" else requested
    reuse = (current is not None and current.design == design and current.is_trained and current.dim == dim
             and not _outgrown(current, n))
    trained_on = None
    if reuse:
        index = current
        trained_on = current.metadata.get("trained_on")
        index.reset()
    else:
        index = VectorIndex(dim, design)
        if not index.is_trained:
            try:
                index.train(vectors)
                trained_on = n
            except VidclipError as e:  # e.g. fewer vectors than IVF cells
                log.warning("%s: cannot train %s on %d vectors (%s); using exact search until the library grows",
                            path, design, n, e)
                index = VectorIndex(dim, "Flat")
    _apply_search_settings(catalog, kind, index)
    index.add(vectors, ids)
    index.metadata = {"generation": generation, "requested": requested}
    if trained_on is not None:
        index.metadata["trained_on"] = int(trained_on)
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
            removed += 1
    tmp_root = features / SHARDS_DIR
    if tmp_root.is_dir():
        for stale in tmp_root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    return removed


def _default_windows(frames: int, duration: float, times: np.ndarray) -> list[tuple[float, float, int, int]]:
    """One window covering the whole video (sampler gave none, or the video is shorter than one)."""
    end = float(duration) if duration and duration > 0 else (float(times[-1]) if len(times) else 0.0)
    return [(0.0, end, 0, int(frames))]


class _Committer:
    """Buffers encoded videos and failures; commits them shard -> catalog -> in-memory faiss."""

    def __init__(self, catalog: Catalog, writer: FeatureWriter, video_index: VectorIndex,
                 segment_index: VectorIndex, dim: int):
        self.catalog, self.writer = catalog, writer
        self.video_index, self.segment_index = video_index, segment_index
        self.dim = dim
        self.pending: list[dict] = []  # encoded videos, in FeatureWriter order
        self.failures: list[dict] = []
        self.offset = 0

    def add_video(self, rec: dict, emb: np.ndarray, frame_index, times) -> None:
        """rec: catalog fields + "vector" [D] + "windows" + "window_vectors" [W, D] + "replaces"."""
        self.writer.add(rec["key"], rec["abs_path"], emb, frame_index, times, windows=rec["windows"],
                        duration=rec["duration"] or 0.0, fps=rec["fps"] or 0.0,
                        extra={"source": rec["source"], "hash": rec["hash"]})
        rec["offset"], rec["count"] = self.offset, int(emb.shape[0])
        self.offset += int(emb.shape[0])
        self.pending.append(rec)

    def add_failure(self, rec: dict) -> None:
        self.failures.append(rec)

    def commit(self) -> None:
        if not self.pending and not self.failures:
            return
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


def _video_record(item: LibraryItem, lib: Library, st: os.stat_result | None, hash_: str | None,
                  replaces: int | None) -> dict:
    return {"key": item.key, "source": lib.source, "root": str(lib.root), "path": item.key,
            "abs_path": str(item.path), "size": st.st_size if st else None, "mtime_ns": st.st_mtime_ns if st else None,
            "hash": hash_, "metadata": item.metadata, "replaces": replaces, "duration": None, "fps": None}


def index_library(
    library: str | os.PathLike,
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
) -> IndexReport:
    """Index (or bring up to date) the videos of ``library`` into ``index_dir``.

    ``clip``: a FrozenCLIP (must match the index's model when the index exists). ``sampler``: a
    SamplerConfig (default: windows of 10 s every 5 s at 1 fps; must match the index's).
    ``temporal``: "mean" or a training checkpoint. ``design`` / ``segment_design``: faiss designs
    ("auto" = exact up to 200k vectors, else IVF). ``nprobe`` / ``ef_search``: search-time knobs of
    IVF / HNSW designs, recorded in the index (None keeps the recorded value, else IVF nprobe 16 and
    faiss' HNSW default); :func:`check_recall` measures what they give. ``commit_every``: videos per shard + catalog
    transaction (the most a kill can cost).
    """
    from ..pipeline import Failure, iter_encoded
    from ..video.sample import SamplerConfig

    index_dir = Path(index_dir).expanduser().resolve()
    if sampler is None:
        sampler = SamplerConfig(name="windows", fps=1.0, window=10.0, stride=5.0)
    start = time.perf_counter()
    lib = scan_library(library)
    report = IndexReport()
    with _DirLock(index_dir):
        catalog = Catalog(index_dir / CATALOG_FILE)
        try:
            pooler = Pooler.create(temporal, clip)
            ident = clip.identity
            catalog.check_or_set_identity(ident.to_dict(), ident.key(), sampler.to_dict(), pooler.spec)
            _record_settings(catalog, lib, design, segment_design, nprobe, ef_search)
            features = index_dir / FEATURES_DIR
            report.orphans_removed = _remove_orphan_shards(catalog, features)
            dim = int(clip.embed_dim)
            vindex = _sync_faiss(catalog, index_dir, "videos", dim, save=False)
            sindex = _sync_faiss(catalog, index_dir, "segments", dim, save=False)

            todo, report.unchanged, deleted = _plan(catalog, lib, retry_failed)
            if deleted:
                gone = [r["id"] for r in deleted]
                with catalog.transaction() as cur:
                    gone_segments = catalog.segment_ids_of(cur, gone)
                    catalog.mark_deleted(cur, gone)
                    catalog.bump_generation(cur)
                vindex.remove(gone)
                sindex.remove(gone_segments)
                report.deleted = sum(1 for r in deleted if r["status"] == "indexed")

            writer = FeatureWriter(features, ident.to_dict(), sampler.to_dict(), shard_size=1 << 30)
            committer = _Committer(catalog, writer, vindex, sindex, dim)
            by_key = {rec["abs_path"]: (rec, item) for rec, item in todo}
            for rec in [rec for rec, _ in todo if rec["size"] is None]:
                rec["error"] = "file not found"
                committer.add_failure(rec)
                report.failed.append({"path": rec["abs_path"], "reason": rec["error"]})
            items = [(rec["abs_path"], rec["abs_path"]) for rec, _ in todo if rec["size"] is not None]
            results = iter_encoded(items, clip, sampler, workers=workers, backend=backend,
                                   decode_device=decode_device, batch_frames=batch_frames,
                                   progress="index" if progress else False) if items else ()
            for result in results:
                rec, item = by_key[result.key]
                if isinstance(result, Failure):
                    rec["error"] = result.reason
                    committer.add_failure(rec)
                    report.failed.append({"path": rec["abs_path"], "reason": result.reason})
                else:
                    emb = result.emb.detach().float().cpu().numpy()
                    if emb.shape[0] == 0:
                        rec["error"] = "no frames could be decoded"
                        committer.add_failure(rec)
                        report.failed.append({"path": rec["abs_path"], "reason": rec["error"]})
                        continue
                    info = result.info
                    times = np.asarray(result.valid_times, dtype=np.float64)
                    windows = [tuple(w) for w in result.windows] or _default_windows(emb.shape[0], info.duration, times)
                    # frames are stored fp16: pool what search will read back, so vectors and frames agree
                    emb16 = emb.astype(np.float16).astype(np.float32)
                    video_vec, window_vecs = pooler.video_and_windows(emb16, windows)
                    rec.update(duration=float(info.duration), fps=float(info.fps), vector=video_vec,
                               windows=windows, window_vectors=window_vecs)
                    if rec["hash"] is None:
                        rec["hash"] = fast_hash(item.path, rec["size"])
                    committer.add_video(rec, emb16, result.valid_indices, times)
                    report.indexed += 1
                    report.frames += int(emb.shape[0])
                if len(committer.pending) + len(committer.failures) >= commit_every or committer.offset >= COMMIT_FRAMES:
                    committer.commit()
            committer.commit()
            # faiss: rebuild if the design should change (auto crossing flat_max, untrained), then save
            for kind, idx in (("videos", vindex), ("segments", sindex)):
                idx.metadata["generation"] = catalog.generation if idx.is_trained else -1
                _sync_faiss(catalog, index_dir, kind, dim, current=_fit_or_none(catalog, kind, idx), save=True)
            report.total_indexed = catalog.counts()["indexed"]
        finally:
            catalog.close()
    report.seconds = time.perf_counter() - start
    return report


def _fit_or_none(catalog: Catalog, kind: str, idx: VectorIndex) -> VectorIndex | None:
    """``idx`` if its design is still what the catalog asks for at the current size, else None (rebuild)."""
    requested = catalog.get_meta(f"design_{kind}", "auto")
    n = idx.ntotal
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
    src = Catalog(other_dir / CATALOG_FILE, readonly=True)
    try:
        with _DirLock(index_dir):
            dst = Catalog(index_dir / CATALOG_FILE)
            try:
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
                features = index_dir / FEATURES_DIR
                report.orphans_removed = _remove_orphan_shards(dst, features)
                vindex = _sync_faiss(dst, index_dir, "videos", dim, save=False)
                sindex = _sync_faiss(dst, index_dir, "segments", dim, save=False)
                writer = FeatureWriter(features, model, src.get_meta("sampler"), shard_size=1 << 30)
                committer = _Committer(dst, writer, vindex, sindex, dim)
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
                        if row["shard"] not in shards:
                            sdir = other_dir / FEATURES_DIR / SHARDS_DIR / row["shard"]
                            shards[row["shard"]] = tuple(np.load(sdir / f"{n}.npy", mmap_mode="r")
                                                         for n in ("emb", "frame_index", "time"))
                        emb, fidx, times = shards[row["shard"]]
                        sl = slice(row["offset"], row["offset"] + row["count"])
                        segs, seg_vecs = src.segments_of([row["id"]], dim)[row["id"]]
                        vec = src.conn.execute("SELECT vector FROM videos WHERE id = ?", (row["id"],)).fetchone()[0]
                        rec.update(vector=np.frombuffer(vec, "<f4").astype(np.float32),
                                   windows=[(s["start"], s["end"], s["first"], s["count"]) for s in segs],
                                   window_vectors=seg_vecs)
                        committer.add_video(rec, np.asarray(emb[sl]), np.asarray(fidx[sl]), np.asarray(times[sl]))
                        report.indexed += 1
                        report.frames += int(row["count"])
                    if len(committer.pending) + len(committer.failures) >= commit_every:
                        committer.commit()
                committer.commit()
                for kind, idx in (("videos", vindex), ("segments", sindex)):
                    idx.metadata["generation"] = dst.generation if idx.is_trained else -1
                    _sync_faiss(dst, index_dir, kind, dim, current=_fit_or_none(dst, kind, idx), save=True)
                report.total_indexed = dst.counts()["indexed"]
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


# ----------------------------------------------------------------------------- recall check

RECALL_QUERIES = 200  # default number of queries of check_recall
RECALL_TIE_TOL = 1e-6  # cosine gap below which a result ties with the exact k-th one (float rounding)


def _frame_queries(catalog: Catalog, index_dir: Path, num_queries: int, seed: int) -> np.ndarray:
    """Stored frame embeddings drawn uniformly (without replacement) from all frames of the indexed
    videos: float32 [min(num_queries, frames), D], raw (recall_at_k normalises them)."""
    rows = catalog.videos(status="indexed")
    counts = np.array([r["count"] for r in rows], dtype=np.int64)
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    pick = np.sort(np.random.default_rng(seed).choice(total, size=min(num_queries, total), replace=False))
    which = np.searchsorted(ends, pick, side="right")  # the video each picked frame belongs to
    offsets = np.array([r["offset"] for r in rows], dtype=np.int64)[which] + (pick - (ends - counts)[which])
    shards = np.array([r["shard"] for r in rows], dtype=object)[which]
    out = None
    for shard in sorted(set(shards.tolist())):  # one memory-mapped read per shard, not per frame
        emb = np.load(index_dir / FEATURES_DIR / SHARDS_DIR / shard / "emb.npy", mmap_mode="r")
        sel = shards == shard
        if out is None:
            out = np.empty((len(pick), emb.shape[1]), np.float32)
        out[sel] = emb[offsets[sel]]
    return out if out is not None else np.zeros((0, 0), np.float32)


def _faiss_with_vectors(catalog: Catalog, index_dir: Path, kind: str, dim: int
                        ) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    """(faiss index as a reader would serve it, its ids [N], vectors [N, D]) of one catalog generation."""
    for _ in range(5):  # a concurrent indexer may commit between the two reads: retry until they agree
        index = _sync_faiss(catalog, index_dir, kind, dim, save=False)
        with catalog.conn:
            catalog.conn.execute("BEGIN")
            generation = catalog.generation
            ids, vectors = catalog.video_vectors(dim) if kind == "videos" else catalog.segment_vectors(dim)
        if index.metadata.get("generation") == generation:
            return index, ids, vectors
    raise VidclipError(f"{index_dir}: the index kept changing while its recall was being checked; try again")


def check_recall(
    index_dir: str | os.PathLike,
    k: int = 10,
    num_queries: int = RECALL_QUERIES,
    seed: int = 0,
    *,
    texts: Sequence[str] | None = None,
    clip=None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    tie_tol: float = RECALL_TIE_TOL,
) -> dict:
    """Recall@k of an index's faiss indexes (videos and segments) against exact search.

    Each faiss index is taken as a reader would serve it (the saved file, or rebuilt in memory when
    stale; nothing is written) and compared with exact inner-product search over the same stored
    vectors (the catalog's), by :func:`~vidclip.index.vectors.recall_at_k`: per query,
    |approx top-k ∩ exact top-k| / k, ties at rank k (duplicates, rounding within ``tie_tol``) counted
    as hits. A ``Flat`` design is exact, so it must report 1.0.

    Queries: by default ``num_queries`` stored frame embeddings, drawn uniformly without replacement
    from all frames of the indexed videos (``seed``). A single frame is never one of the indexed
    vectors (those are means over a video or window, except a one-frame window), but comes from the
    same distribution, like a held-out video. Text queries are further from every video than a frame
    is (CLIP's image-text modality gap), which can make approximate search harder; pass ``texts``
    (encoded with the index's model and query tower; ``clip`` to reuse a loaded model) to measure on
    real queries. ``nprobe`` / ``ef_search`` measure at another setting than the index's own.

    Returns {"index", "k", "queries", "query_source", "seed", "random_weights", "videos": {...},
    "segments": {...}}
    where each of "videos" / "segments" holds design, requested, nprobe, ef_search, vectors,
    exact (bool), recall and a one-line verdict.
    """
    index_dir = Path(index_dir).expanduser().resolve()
    if isinstance(k, bool) or int(k) != k or k <= 0:
        raise ConfigError(f"check_recall: k must be a positive integer, got {k!r}")
    if texts is None and (isinstance(num_queries, bool) or int(num_queries) != num_queries or num_queries <= 0):
        raise ConfigError(f"check_recall: the number of queries must be a positive integer, got {num_queries!r}")
    for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value <= 0):
            raise ConfigError(f"check_recall: {name} must be a positive integer, got {value!r}")
    if not _is_index_dir(index_dir):
        raise VidclipError(f"{index_dir}: not a vidclip index (no {CATALOG_FILE})")
    catalog = Catalog(index_dir / CATALOG_FILE, readonly=True)
    try:
        model = catalog.get_meta("model")
        if model is None or catalog.counts()["indexed"] == 0:
            raise VidclipError(f"{index_dir}: the index holds no videos; nothing to check")
        dim = int(model["embed_dim"])
        if texts is not None:
            texts = [t.strip() for t in texts if t and t.strip()]
            if not texts:
                raise ConfigError("check_recall: no text queries given (all empty)")
            queries = _text_queries(catalog, model, texts, clip)
            source = "texts"
        else:
            queries = _frame_queries(catalog, index_dir, int(num_queries), seed)
            source = "frames"
        result = {"index": str(index_dir), "k": int(k), "queries": int(len(queries)), "query_source": source,
                  "seed": int(seed) if source == "frames" else None,
                  "random_weights": bool(model.get("random_weights"))}
        for kind, label in (("videos", "video"), ("segments", "segment")):
            index, ids, vectors = _faiss_with_vectors(catalog, index_dir, kind, dim)
            if nprobe is not None and index.nprobe is not None:
                index.nprobe = int(nprobe)
            if ef_search is not None and "HNSW" in index.design.upper():
                index.ef_search = int(ef_search)
            recall = recall_at_k(index, vectors, queries, int(k), ids, tie_tol=tie_tol)
            result[kind] = _recall_entry(label, index, catalog.get_meta(f"design_{kind}", "auto"), len(ids),
                                         recall, int(k), len(queries), source)
        return result
    finally:
        catalog.close()


def _text_queries(catalog: Catalog, model: dict, texts: list[str], clip) -> np.ndarray:
    """Text embeddings [Q, D] as search computes them (the index's model; a checkpoint's text tower)."""
    if clip is None:
        from ..models.clip import load_clip_from_identity

        clip = load_clip_from_identity(model)
    elif clip.identity.key() != catalog.get_meta("model_key"):
        raise IndexMismatchError(f"check_recall: the index was built with model {model.get('name')!r}, "
                                 f"the given model is {clip.identity.name!r}")
    pooler = Pooler.from_spec(catalog.get_meta("temporal") or {"name": "mean"}, clip)
    return np.stack([pooler.encode_query(t).cpu().numpy() for t in texts]).astype(np.float32)


def _recall_entry(label: str, index: VectorIndex, requested: str, n: int, recall: float, k: int, q: int,
                  source: str) -> dict:
    exact = index.design.strip() == "Flat"
    ef = index.ef_search if index.ef_search is not None else (index._hnsw_ef() if "HNSW" in index.design.upper() else None)
    knobs = "".join(f" {name}={value}" for name, value in (("nprobe", index.nprobe), ("efSearch", ef)) if value is not None)
    notes = []
    if requested.strip().lower() != index.design.strip().lower():
        notes.append(f"requested {requested}")
    if exact:
        notes.append("exact search")
    verdict = (f"{label} index {index.design}{knobs}: recall@{k} = {recall:.3f} over {q} {source[:-1]} queries "
               f"({n} vectors{'; ' + ', '.join(notes) if notes else ''})")
    return {"design": index.design, "requested": requested, "nprobe": index.nprobe, "ef_search": ef,
            "vectors": int(n), "exact": exact, "recall": round(float(recall), 6), "verdict": verdict}


# ----------------------------------------------------------------------------- search


@dataclass
class SearchHit:
    video_id: int
    path: str  # relative to VideoIndex.library_root (absolute when outside it)
    score: float  # cosine similarity of the query with the video (or window)
    start: float  # best-matching time span, seconds
    end: float
    duration: float  # of the whole video

    def to_dict(self) -> dict:
        return asdict(self)


class VideoIndex:
    """Read side of a library index: search, catalog lookups. Safe to use from several threads.

    Picks up a concurrent indexer's commits: every search checks the catalog generation and
    reloads (or rebuilds in memory) the faiss indexes when it moved.
    """

    rerank_depth = 100  # faiss candidates re-scored by a text-conditioned temporal module

    def __init__(self, index_dir: Path, catalog: Catalog, clip, pooler: Pooler):
        self.index_dir = index_dir
        self.catalog = catalog
        self.clip = clip
        self.pooler = pooler
        self.identity: dict = catalog.get_meta("model")
        self.library_root = Path(catalog.get_meta("library_root") or index_dir)
        self.dim = int(self.identity["embed_dim"])
        self._lock = threading.RLock()
        self._shards: dict[str, np.ndarray] = {}
        self._video_index: VectorIndex | None = None
        self._segment_index: VectorIndex | None = None
        self._generation = -1
        self._refresh()

    @classmethod
    def open(cls, index_dir: str | os.PathLike, *, clip=None) -> "VideoIndex":
        """Open an index; loads the model named in it unless ``clip`` is given (then it must match)."""
        index_dir = Path(index_dir).expanduser().resolve()
        if not _is_index_dir(index_dir):
            raise VidclipError(f"{index_dir}: not a vidclip index (no {CATALOG_FILE}); build one with `vidclip index`")
        catalog = Catalog(index_dir / CATALOG_FILE)
        model = catalog.get_meta("model")
        if model is None:
            catalog.close()
            raise VidclipError(f"{index_dir}: the index holds no videos yet (no model recorded)")
        if clip is None:
            from ..models.clip import load_clip_from_identity

            clip = load_clip_from_identity(model)
        elif clip.identity.key() != catalog.get_meta("model_key"):
            stored_key = catalog.get_meta("model_key")
            catalog.close()
            raise IndexMismatchError(
                f"{index_dir}: index built with model {model.get('name')!r} (key {stored_key}), "
                f"but the given model is {clip.identity.name!r} (key {clip.identity.key()})")
        pooler = Pooler.from_spec(catalog.get_meta("temporal") or {"name": "mean"}, clip)
        return cls(index_dir, catalog, clip, pooler)

    def close(self) -> None:
        self.catalog.close()

    def __len__(self) -> int:
        return self.catalog.counts()["indexed"]

    def _refresh(self) -> None:
        gen = self.catalog.generation
        if gen == self._generation:
            return
        # Save a rebuilt faiss file only when no writer holds the index (it will save its own).
        lock = _DirLock(self.index_dir)
        can_save = os.access(self.index_dir, os.W_OK) and lock.acquire()
        try:
            self._video_index = _sync_faiss(self.catalog, self.index_dir, "videos", self.dim, save=can_save)
            self._segment_index = _sync_faiss(self.catalog, self.index_dir, "segments", self.dim, save=can_save)
        finally:
            lock.release()
        self._generation = int(self._video_index.metadata.get("generation", gen))

    def _frames(self, row: dict) -> np.ndarray:
        shard = row["shard"]
        if shard not in self._shards:
            self._shards[shard] = np.load(self.index_dir / FEATURES_DIR / SHARDS_DIR / shard / "emb.npy", mmap_mode="r")
        return np.asarray(self._shards[shard][row["offset"]:row["offset"] + row["count"]], dtype=np.float32)

    def search(self, query: str, k: int = 10, *, segments: bool = False) -> list[SearchHit]:
        """Top-k videos (or windows, ``segments=True``) for a text query, best first."""
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("search: the query text is empty")
        if k <= 0:
            raise ConfigError(f"search: k must be positive, got {k}")
        with self._lock:
            self._refresh()
            raw = self.pooler.encode_query(query)
            q = l2_normalize(raw.cpu().numpy())[0]
            if segments:
                return self._search_segments(q, k)
            return self._search_videos(q, k, raw)

    def _search_segments(self, q: np.ndarray, k: int) -> list[SearchHit]:
        scores, ids = self._segment_index.search(q, k)
        keep = ids[0] >= 0
        seg_rows = self.catalog.segments_by_ids(ids[0][keep])
        videos = self.catalog.videos_by_ids({r["video_id"] for r in seg_rows.values()})
        hits = []
        for sid, score in zip(ids[0][keep].tolist(), scores[0][keep].tolist()):
            seg = seg_rows.get(sid)
            row = videos.get(seg["video_id"]) if seg else None
            if row is None or row["status"] != "indexed":
                continue
            hits.append(SearchHit(row["id"], self._display_path(row), float(score), float(seg["start"]), float(seg["end"]),
                                  float(row["duration"] or 0.0)))
        return hits

    def _search_videos(self, q: np.ndarray, k: int, raw=None) -> list[SearchHit]:
        depth = max(k, self.rerank_depth) if self.pooler.conditioned else k
        scores, ids = self._video_index.search(q, depth)
        keep = ids[0] >= 0
        cand, cand_scores = ids[0][keep].tolist(), scores[0][keep]
        rows = self.catalog.videos_by_ids(cand)
        order = [i for i, vid in enumerate(cand) if vid in rows and rows[vid]["status"] == "indexed"]
        cand, cand_scores = [cand[i] for i in order], cand_scores[order]
        if self.pooler.conditioned and cand:
            cand_scores = self.pooler.conditioned_scores(raw, [self._frames(rows[v]) for v in cand])
            best = np.argsort(-cand_scores, kind="stable")
            cand, cand_scores = [cand[i] for i in best], cand_scores[best]
        cand, cand_scores = cand[:k], cand_scores[:k]
        windows = self.catalog.segments_of(cand, self.dim)
        hits = []
        for vid, score in zip(cand, cand_scores.tolist()):
            row = rows[vid]
            segs, vecs = windows.get(vid, ([], None))
            if segs:
                best = int(np.argmax(vecs @ q))
                start, end = float(segs[best]["start"]), float(segs[best]["end"])
            else:
                start, end = 0.0, float(row["duration"] or 0.0)
            hits.append(SearchHit(vid, self._display_path(row), float(score), start, end, float(row["duration"] or 0.0)))
        return hits

    def _display_path(self, row: dict) -> str:
        """Path relative to ``library_root`` (absolute for a file outside it, e.g. a merged library's)."""
        try:
            return Path(row["abs_path"]).relative_to(self.library_root).as_posix()
        except ValueError:
            return row["abs_path"]

    def get_video(self, video_id: int) -> dict | None:
        """Catalog row of an indexed video: id, path (as in SearchHit), abs_path, duration, fps, size,
        mtime_ns, hash, metadata (dict), windows [[start, end], ...], key, source, root, shard, offset,
        count, status, indexed_at."""
        with self._lock:
            row = self.catalog.video(int(video_id))
            if row is None or row["status"] != "indexed":
                return None
            row["path"] = self._display_path(row)
            segs, _ = self.catalog.segments_of([row["id"]], self.dim)[row["id"]]
            row["windows"] = [[s["start"], s["end"]] for s in segs]
            return row

    def video_path(self, video_id: int) -> Path | None:
        """Absolute path of an indexed video (None for unknown / failed / deleted ids)."""
        with self._lock:
            row = self.catalog.video(int(video_id))
        if row is None or row["status"] != "indexed":
            return None
        return Path(row["abs_path"])
