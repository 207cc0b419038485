"""Frame features on disk: a sharded, memory-mappable store of per-frame CLIP embeddings.

The backbone is paid for once: ``vidclip encode`` (and the library index) write here, and
training, evaluation, search and reranking read from here.

Layout (see docs/architecture.md)::

    ROOT/
      store.json                  {"format": 1, "model": {...}, "sampler": {...}}
      shards/shard-000000/        a committed shard: appears atomically (directory rename)
        emb.npy                   float16 [N, D]  every frame of the shard's videos, video after video
        frame_index.npy           int64   [N]     decoded frame index of each row
        time.npy                  float64 [N]     presentation time (s) of each row
        videos.jsonl              one JSON object per video: key, path, offset, count, duration,
                                  fps, windows [[start_s, end_s, first, count], ...], extra,
                                  source (the file's identity when encoded: size, mtime_ns, hash)
      failures.jsonl              videos the last encode could not decode (pipeline.encode_videos)
      sources-confirmed.json      copies whose content was checked after their mtime moved (feature_cache)

Shards are immutable once committed. A killed writer leaves at most a ``.tmp-*`` directory,
which the next writer removes; every video in a committed shard is complete. A video key
appears in at most one shard per writer session; when a key is written again later (a changed
file), the newest shard wins on read. A record ``{"key": K, "removed": true}`` in a later shard
(:meth:`FeatureWriter.forget`) drops K's features, so that the next encode writes them afresh.

``source`` (:func:`vidclip.features.identity.file_identity`) is what the features were computed
from; :func:`vidclip.features.cache.check_features` reports a video whose file no longer
matches it (records from before it existed have none and count as changed).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from vidclip.core.errors import VidclipError
from vidclip.core.fileio import atomic_write_text, fsync_dir
from vidclip.features.identity import file_identity

if TYPE_CHECKING:  # torch is imported where it is used: the index's read side needs none
    import torch

FORMAT_VERSION = 1
STORE_FILE = "store.json"
SHARDS_DIR = "shards"


@dataclass
class VideoFeatures:
    """The stored frames of one video. ``emb`` is a read-only memory-mapped view."""

    key: str
    path: str
    emb: np.ndarray  # float16 [T, D]
    frame_index: np.ndarray  # int64 [T]
    time: np.ndarray  # float64 [T] seconds
    windows: list[tuple[float, float, int, int]] = field(default_factory=list)
    duration: float = 0.0
    fps: float = 0.0
    extra: dict = field(default_factory=dict)
    source: dict | None = None  # file identity when encoded (size, mtime_ns, hash); None if unknown


def uniform_positions(count: int, num: int) -> np.ndarray:
    """Evaluation-mode uniform positions floor((k + 0.5) * count / num), k < num, for count >= num."""
    return np.floor((np.arange(num) + 0.5) * count / num).astype(np.int64)


def read_store_header(root: str | os.PathLike) -> dict:
    path = Path(root) / STORE_FILE
    if not path.is_file():
        raise VidclipError(f"{root}: not a feature store (no {STORE_FILE}); create one with `vidclip encode`")
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise VidclipError(f"{path}: corrupt store header: {e}") from e
    if header.get("format") != FORMAT_VERSION:
        raise VidclipError(f"{path}: unsupported store format {header.get('format')!r} (this vidclip reads {FORMAT_VERSION})")
    return header


def write_store_header(root: str | os.PathLike, model: dict, sampler: dict) -> None:
    """Write ``root/store.json`` (atomically) for features of ``model`` sampled with ``sampler``."""
    header = {"format": FORMAT_VERSION, "model": model, "sampler": sampler}
    atomic_write_text(Path(root) / STORE_FILE, json.dumps(header, indent=2, sort_keys=True))


def committed_shards(root: str | os.PathLike) -> list[Path]:
    shards = Path(root) / SHARDS_DIR
    if not shards.is_dir():
        return []
    return sorted(p for p in shards.iterdir() if p.is_dir() and p.name.startswith("shard-"))


class FeatureStore:
    """Read-only view of the committed shards under ``root``.

    Opening maps each shard's arrays lazily (``np.load(mmap_mode="r")``), so opening a store
    of millions of frames costs only its ``videos.jsonl`` manifests.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        header = read_store_header(self.root)
        self.model: dict = header["model"]
        self.sampler: dict = header.get("sampler", {})
        self._shards: list[Path] = committed_shards(self.root)
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._records: dict[str, tuple[int, dict]] = {}
        for shard_no, shard in enumerate(self._shards):
            with open(shard / "videos.jsonl", encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        rec = json.loads(line)
                        if rec.get("removed"):  # a tombstone (FeatureWriter.forget)
                            self._records.pop(rec["key"], None)
                        else:
                            self._records[rec["key"]] = (shard_no, rec)  # later shards win

    def keys(self) -> list[str]:
        return list(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    @property
    def embed_dim(self) -> int:
        return int(self.model.get("embed_dim", 0))

    def _shard_arrays(self, shard_no: int):
        if shard_no not in self._arrays:
            self._arrays[shard_no] = self.open_shard(self.root, self._shards[shard_no].name)
        return self._arrays[shard_no]

    @staticmethod
    def open_shard(root: str | os.PathLike, shard: str, *, rows: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Memory-map the committed shard named ``shard`` under store ``root`` without reading any
        manifest: (emb float16 [N, D], frame_index int64 [N], time float64 [N]).

        ``rows``: the least number of rows the caller's records need; a missing, unreadable or
        shorter (truncated) array is a VidclipError naming the file.
        """
        folder = Path(root) / SHARDS_DIR / shard
        arrays = []
        for name in ("emb", "frame_index", "time"):
            path = folder / f"{name}.npy"
            try:
                arr = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                raise VidclipError(f"{path}: missing (the shard was deleted or moved)") from None
            except (OSError, ValueError) as e:
                raise VidclipError(f"{path}: unreadable array ({e})") from None
            if rows is not None and arr.shape[0] < rows:
                raise VidclipError(f"{path}: holds {arr.shape[0]} rows, its records need {rows} (truncated?)")
            arrays.append(arr)
        return arrays[0], arrays[1], arrays[2]

    def record(self, key: str) -> dict:
        try:
            return self._records[key][1]
        except KeyError:
            raise KeyError(f"{self.root}: no features for video {key!r}") from None

    def get(self, key: str) -> VideoFeatures:
        shard_no, rec = self._records.get(key, (None, None))
        if rec is None:
            raise KeyError(f"{self.root}: no features for video {key!r}")
        emb, frame_index, time = self._shard_arrays(shard_no)
        sl = slice(rec["offset"], rec["offset"] + rec["count"])
        return VideoFeatures(
            key=key,
            path=rec.get("path", ""),
            emb=emb[sl],
            frame_index=np.asarray(frame_index[sl]),
            time=np.asarray(time[sl]),
            windows=[tuple(w) for w in rec.get("windows", [])],
            duration=float(rec.get("duration", 0.0)),
            fps=float(rec.get("fps", 0.0)),
            extra=rec.get("extra") or {},
            source=rec.get("source"),
        )

    def batch(self, keys: Sequence[str], num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack videos to a fixed frame count.

        Returns (float32 [B, num_frames, D], bool mask [B, num_frames]). Videos with more stored
        frames are subsampled with the evaluation-mode uniform rule; shorter ones are zero-padded
        with mask False.
        """
        import torch

        dim = self.embed_dim or self.get(keys[0]).emb.shape[1]
        out = np.zeros((len(keys), num_frames, dim), dtype=np.float32)
        mask = np.zeros((len(keys), num_frames), dtype=bool)
        for b, key in enumerate(keys):
            emb = self.get(key).emb
            count = emb.shape[0]
            if count > num_frames:
                emb = emb[uniform_positions(count, num_frames)]
                count = num_frames
            out[b, :count] = emb
            mask[b, :count] = True
        return torch.from_numpy(out), torch.from_numpy(mask)


class FeatureWriter:
    """Appends videos to a store, committing a shard every ``shard_size`` videos.

    The first writer creates ``store.json``; later writers must use the same model identity
    (a store never mixes encoders). ``close()`` (or leaving the ``with`` block) commits the last
    partial shard.
    """

    def __init__(self, root: str | os.PathLike, model: dict, sampler: dict, shard_size: int = 256):
        self.root = Path(root)
        self.shard_size = max(1, int(shard_size))
        self.root.mkdir(parents=True, exist_ok=True)
        header_path = self.root / STORE_FILE
        if header_path.exists():
            header = read_store_header(self.root)
            if model_key(header["model"]) != model_key(model):
                raise VidclipError(
                    f"{self.root}: store was written with model {model_key(header['model'])}, "
                    f"refusing to add features from {model_key(model)}; use another --out directory"
                )
        else:
            write_store_header(self.root, model, sampler)
            header = {"model": model}
        shards = self.root / SHARDS_DIR
        shards.mkdir(exist_ok=True)
        for stale in shards.glob(".tmp-*"):  # left by a killed writer: never committed
            shutil.rmtree(stale, ignore_errors=True)
        existing = committed_shards(self.root)
        self._next_shard = 1 + max((int(p.name.split("-")[1]) for p in existing), default=-1)
        self._pending: list[tuple[dict, np.ndarray, np.ndarray, np.ndarray]] = []
        self._embed_dim = int(header["model"].get("embed_dim") or 0)

    def add(
        self,
        key: str,
        path: str,
        emb,
        frame_index,
        time,
        windows: Iterable = (),
        duration: float = 0.0,
        fps: float = 0.0,
        extra: dict | None = None,
        source: dict | None = None,
    ) -> None:
        """Queue one video: emb float [T, D] (any float dtype, numpy or torch), frame_index [T], time [T].

        ``source``: the identity of the file the features come from
        (:func:`~vidclip.features.identity.file_identity`); by default that of ``path`` now.
        """
        if hasattr(emb, "detach"):  # a torch tensor (without importing torch for numpy input)
            emb = emb.detach().float().cpu().numpy()
        emb = np.asarray(emb, dtype=np.float16)
        frame_index = np.asarray(frame_index, dtype=np.int64).reshape(-1)
        time = np.asarray(time, dtype=np.float64).reshape(-1)
        if emb.ndim != 2 or not (emb.shape[0] == frame_index.shape[0] == time.shape[0]):
            raise ValueError(
                f"{key}: emb {emb.shape}, frame_index {frame_index.shape} and time {time.shape} disagree"
            )
        rec = {
            "key": key,
            "path": str(path),
            "count": int(emb.shape[0]),
            "duration": float(duration),
            "fps": float(fps),
            "windows": [[float(w[0]), float(w[1]), int(w[2]), int(w[3])] for w in windows],
            "extra": extra or {},
            "source": source if source is not None else file_identity(path),
        }
        self._pending.append((rec, emb, frame_index, time))
        if len(self._pending) >= self.shard_size:
            self.flush()

    def forget(self, keys: Iterable[str]) -> str | None:
        """Drop the stored features of ``keys`` (a committed shard of tombstones; queued videos
        are committed first). Returns the shard name (None for no keys)."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return None
        self.flush()
        empty = np.zeros((0, self._embed_dim), np.float16)
        for key in keys:
            rec = {"key": key, "removed": True, "count": 0}
            self._pending.append((rec, empty, np.zeros(0, np.int64), np.zeros(0, np.float64)))
        return self.flush()

    def flush(self) -> str | None:
        """Commit the queued videos as one shard; returns the shard name (None if nothing queued)."""
        if not self._pending:
            return None
        name = f"shard-{self._next_shard:06d}"
        shards = self.root / SHARDS_DIR
        tmp = shards / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        offset = 0
        for rec, *_ in self._pending:
            rec["offset"] = offset
            offset += rec["count"]
        rows = [p[1] for p in self._pending if p[1].shape[0]]  # tombstones hold no rows
        emb = np.concatenate(rows) if rows else np.zeros((0, self._embed_dim), np.float16)
        np.save(tmp / "emb.npy", emb)
        np.save(tmp / "frame_index.npy", np.concatenate([p[2] for p in self._pending]))
        np.save(tmp / "time.npy", np.concatenate([p[3] for p in self._pending]))
        with open(tmp / "videos.jsonl", "w", encoding="utf-8") as f:
            for rec, *_ in self._pending:
                f.write(json.dumps(rec) + "\n")
        for child in tmp.iterdir():
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())
        os.rename(tmp, shards / name)
        fsync_dir(shards)  # the rename itself durable
        self._next_shard += 1
        self._pending = []
        return name

    def adopt(self, shard_dir: str | os.PathLike) -> str:
        """Commit a complete shard another FeatureWriter wrote elsewhere on the same filesystem (a
        shard an encode engine staged, vidclip/encode/protocol.py): queued videos are committed first, then
        the folder is renamed into place as the next shard. Returns its name."""
        self.flush()
        name = f"shard-{self._next_shard:06d}"
        shards = self.root / SHARDS_DIR
        os.rename(shard_dir, shards / name)
        fsync_dir(shards)  # the rename itself durable
        self._next_shard += 1
        return name

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "FeatureWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def model_key(model: dict) -> str:
    """What a store's model must match to add features to it: family, name, weights."""
    return "{}:{}:{}".format(model.get("family"), model.get("name"), model.get("weights_digest") or model.get("pretrained"))
