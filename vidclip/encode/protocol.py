"""The one seam between encode engines and their callers: items in, finished shards out.

An engine (vidclip/encode/engines/: ``local``, ``ray``) is given :class:`EncodeItem` s, a
:class:`ModelRef`, the :class:`~vidclip.encode.options.EncodeOptions` and a staging folder, and
yields :class:`EncodedShard` s: each a complete shard of videos written by :class:`ShardStager`
into the staging folder, the same layout whichever engine wrote it::

    STAGING/<name>/                 a one-shard feature store; appears by an atomic rename when complete
      store.json
      shards/shard-000000/          emb.npy (float16 [N, D]), frame_index.npy, time.npy, videos.jsonl
      manifest.json                 {"id", "videos", "frames", "failures": [{key, path, reason}],
                                     "warnings", "nodes", "padded_rows"}
    STAGING/.tmp-<name>-<8 hex>/    being written (a killed writer's: removed by the next run)

Every video with decodable input is stored as its sampler gave it (windows as sampled, zero
frames included); a file that cannot be decoded is a failure. What a caller keeps is its own
rule (the index: whole-video windows, zero-frame videos as failures, the content hash).

A caller commits every shard the same way, whatever the engine: read :meth:`EncodedShard.records`
(and :meth:`EncodedShard.frames` of each), rename its shard into its store
(:meth:`EncodedShard.commit`: FeatureWriter.adopt), record what it keeps in one step, then
:meth:`EncodedShard.remove` the staging folder. A shard it never commits (a killed caller)
stays staged: the Ray engine finds it by its content-derived name and yields it again without
encoding; the local engine removes it and encodes those videos afresh.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, Sequence

import numpy as np

from vidclip.core.fileio import atomic_write_text
from vidclip.encode.worker import Failure
from vidclip.features.store import SHARDS_DIR, FeatureStore, FeatureWriter

if TYPE_CHECKING:
    from vidclip.encode.options import EncodeOptions

STAGING_DIR = "staging"  # STORE/staging/<name>/ (a feature store's or an index's features/ folder)
MANIFEST = "manifest.json"
SHARD = "shard-000000"  # the one shard of a staged folder


@dataclass
class EncodeItem:
    """One video to encode. ``key`` / ``path`` / ``extra`` go into its stored record as given.

    ``size`` / ``mtime_ns``: the file as the caller saw it (None: stat it when needed); with
    ``extra`` they are the video's part of a Ray partition's id, so a changed file is redone.
    """

    key: str
    path: str
    extra: dict = field(default_factory=dict)
    size: int | None = None
    mtime_ns: int | None = None

    def identity(self) -> list:
        """What names this item's content: [key, path, size, mtime_ns, extra] (stat now where unknown)."""
        size, mtime = self.size, self.mtime_ns
        if size is None or mtime is None:
            try:
                st = os.stat(self.path)
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                pass
        return [self.key, self.path, size, mtime, self.extra]


@dataclass
class ModelRef:
    """The model to encode with: its ``identity`` dict (what stored features are of; what a remote
    worker loads with load_clip_from_identity) and ``load``, which returns the FrozenCLIP in this
    process (called by an engine only once it has something to encode)."""

    identity: dict
    load: Callable[[], object]

    @classmethod
    def of(cls, clip) -> ModelRef:
        return cls(clip.identity.to_dict(), lambda: clip)


@dataclass
class EngineStats:
    """What an engine's run did, for the caller's report."""

    shards: int = 0  # yielded
    reused: int = 0  # staged by an earlier (killed) run, yielded without encoding
    stale_removed: int = 0  # staging folders found and removed (unfinished, or no longer wanted)
    nodes: set = field(default_factory=set)  # Ray node ids that decoded or encoded (empty for the local engine)


@dataclass
class EncodedShard:
    """A finished shard of videos staged in ``dir`` (see the module docstring), with its ``manifest``."""

    dir: Path
    manifest: dict
    reused: bool = False  # staged by an earlier (killed) run

    @property
    def shard_dir(self) -> Path | None:
        """The shard's folder; None when the shard holds no video (every item failed)."""
        shard = self.dir / SHARDS_DIR / SHARD
        return shard if shard.is_dir() else None

    @property
    def videos(self) -> int:
        return int(self.manifest.get("videos", 0))

    @property
    def frames_total(self) -> int:
        return int(self.manifest.get("frames", 0))

    @property
    def failures(self) -> list[Failure]:
        return [Failure(f["key"], f["path"], f["reason"]) for f in self.manifest.get("failures", [])]

    @property
    def warnings(self) -> list[str]:
        return list(self.manifest.get("warnings", []))

    def records(self) -> list[dict]:
        """The stored videos' records in row order (videos.jsonl: key, path, offset, count, windows,
        duration, fps, extra, source)."""
        shard = self.shard_dir
        if shard is None:
            return []
        with open(shard / "videos.jsonl", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def frames(self, record: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One record's stored frames: (emb float16 [T, D] memory-mapped, frame_index int64 [T], time float64 [T])."""
        emb, frame_index, time = FeatureStore.open_shard(self.dir, SHARD, rows=record["offset"] + record["count"])
        sl = slice(record["offset"], record["offset"] + record["count"])
        return emb[sl], np.asarray(frame_index[sl]), np.asarray(time[sl])

    def commit(self, writer: FeatureWriter) -> str | None:
        """Rename the shard into ``writer``'s store as its next shard; returns its name (None: no videos)."""
        shard = self.shard_dir
        return writer.adopt(shard) if shard is not None else None

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class Engine(Protocol):
    """What ``--engine local`` and ``--engine ray`` both are (vidclip/encode/engines/)."""

    name: str
    stats: EngineStats

    def run(self, items: Sequence[EncodeItem], model: ModelRef, options: EncodeOptions,
            staging: Path) -> Iterator[EncodedShard]:
        """Encode ``items``; yield each finished shard once the caller may commit it (the caller
        commits and removes one before asking for the next)."""
        ...


class ShardStager:
    """Writes one :class:`EncodedShard` named ``name`` under ``staging``: videos (:meth:`add`, in
    the order they go into the shard) and failures (:meth:`fail`), then :meth:`finish`."""

    def __init__(self, staging: Path, name: str, identity: dict, sampler: dict):
        self.staging, self.name = Path(staging), name
        if not self.staging.is_dir():
            raise FileNotFoundError(self.staging)
        self.tmp = self.staging / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        self.writer = FeatureWriter(self.tmp, identity, sampler, shard_size=1 << 30)
        self.videos = self.frames = 0
        self.failures: list[dict] = []
        self.warnings: list[str] = []

    def __len__(self) -> int:
        """Items staged so far, failures included."""
        return self.videos + len(self.failures)

    def add(self, item: EncodeItem, emb, sample, info) -> None:
        """One video: ``emb`` float [T, D] (stored as float16) of the sample's T valid frames."""
        windows = [(w.start, w.end, w.first, w.count) for w in (sample.windows or [])]
        self.writer.add(item.key, item.path, emb, sample.indices[sample.mask], sample.timestamps[sample.mask],
                        windows=windows, duration=info.duration, fps=info.fps, extra=item.extra)
        self.warnings.extend(getattr(info, "warnings", []))
        self.videos += 1
        self.frames += int(emb.shape[0])

    def fail(self, item: EncodeItem, reason: str) -> None:
        self.failures.append({"key": item.key, "path": item.path, "reason": reason})

    def finish(self, **manifest) -> EncodedShard:
        """Write the shard and its manifest (``manifest``: extra fields), then rename the folder into
        place. Another attempt that finished the same name first wins (its shard is returned)."""
        self.writer.close()
        manifest = {"id": self.name, "videos": self.videos, "frames": self.frames, "failures": self.failures,
                    "warnings": self.warnings, **manifest}
        atomic_write_text(self.tmp / MANIFEST, json.dumps(manifest, indent=1))
        final = self.staging / self.name
        try:
            os.rename(self.tmp, final)
        except OSError:  # a retried attempt finished first
            shutil.rmtree(self.tmp, ignore_errors=True)
            done = finished(final)
            if done is None:
                raise
            return EncodedShard(final, done)
        return EncodedShard(final, manifest)


def finished(folder: Path) -> dict | None:
    """A staged folder's manifest when it is complete (manifest, and its shard when it has videos)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("videos") and not (folder / SHARDS_DIR / SHARD).is_dir():
        return None  # its shard was committed (adopted) already, or lost: not reusable
    return manifest


def sweep_staging(staging: Path, keep: Callable[[str], bool] = lambda name: False) -> tuple[dict[str, dict], int]:
    """Finished staged folders whose name ``keep`` accepts -> their manifests; every other entry
    under ``staging`` (unfinished, ``.tmp-*``, not wanted) is removed. Returns (kept, removed count)."""
    kept: dict[str, dict] = {}
    removed = 0
    if not staging.is_dir():
        return kept, removed
    for entry in sorted(staging.iterdir()):
        manifest = finished(entry) if keep(entry.name) else None
        if manifest is not None:
            kept[entry.name] = manifest
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        removed += 1
    return kept, removed


def close_staging(staging: Path) -> None:
    """After a run: drop what killed attempts left (``.tmp-*``) and the folder itself once empty."""
    for tmp in staging.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        staging.rmdir()
    except OSError:
        pass
