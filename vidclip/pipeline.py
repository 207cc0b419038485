"""Video files -> frame embeddings: parallel decoding feeding batched encoding.

Decoding (and shrinking frames to the model's input size, which keeps inter-process traffic
small) runs in worker processes; the frozen CLIP encodes in the main process in batches of
about ``batch_frames`` frames taken across videos, so a GPU is never fed one short video at a
time. One bad video yields a :class:`Failure` and the rest go on.

``encode_videos`` puts this behind ``vidclip encode``: it writes a
:class:`~vidclip.data.features.FeatureStore` and skips videos already committed there.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .data.features import STORE_FILE, FeatureStore, FeatureWriter
from .errors import VidclipError
from .video.sample import Sample, SamplerConfig, sample_video

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")


@dataclass
class EncodedVideo:
    key: str
    path: str
    emb: torch.Tensor  # float32 [T, D], real frames only
    sample: Sample
    info: object  # vidclip.video.decode.VideoInfo

    @property
    def windows(self) -> list[tuple[float, float, int, int]]:
        return [(w.start, w.end, w.first, w.count) for w in (self.sample.windows or [])]

    @property
    def valid_indices(self) -> np.ndarray:
        return self.sample.indices[self.sample.mask]

    @property
    def valid_times(self) -> np.ndarray:
        return self.sample.timestamps[self.sample.mask]


@dataclass
class Failure:
    key: str
    path: str
    reason: str

    def to_dict(self) -> dict:
        return {"key": self.key, "path": self.path, "reason": self.reason}


@dataclass
class EncodeReport:
    done: int = 0
    skipped: int = 0
    frames: int = 0
    seconds: float = 0.0
    failed: list[Failure] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "done": self.done,
            "skipped": self.skipped,
            "failed": [f.to_dict() for f in self.failed],
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "videos_per_s": round(self.done / self.seconds, 3) if self.seconds else None,
            "frames_per_s": round(self.frames / self.seconds, 3) if self.seconds else None,
        }


# ----------------------------------------------------------------------------- decoding jobs


def _init_worker() -> None:
    # Each worker decodes one video at a time; intra-op threads would only fight each other.
    torch.set_num_threads(1)


def decode_job(key: str, path: str, sampler: dict, backend: str, image_size: int, device: str = "cpu"):
    """Decode and sample one video, shrinking frames to ``image_size`` (uint8 [T, S, S, 3]).

    Runs in a worker process; returns a tuple, or a Failure for a bad video.
    """
    from .video.preprocess import resize_center_crop

    try:
        sampled = sample_video(path, SamplerConfig.from_dict(sampler), backend=backend, device=device)
        frames = resize_center_crop(sampled.frames, image_size)
        if device == "cpu":
            frames = frames.numpy()
        return key, path, frames, sampled.sample, sampled.info
    except VidclipError as e:
        reason = getattr(e, "reason", None) or str(e)
        return Failure(key, path, reason)
    except Exception as e:  # never let one file stop a batch; keep the type for the report
        return Failure(key, path, f"{type(e).__name__}: {e}")


def _decoded_stream(items, sampler: SamplerConfig, backend: str, image_size: int, workers: int, device: str):
    """Yield decode_job results in completion order, at most ``4 * workers`` jobs in flight."""
    sampler_dict = sampler.to_dict()
    if workers <= 0 or device != "cpu":
        # GPU decoding keeps frames on the device, so it stays in this process.
        for key, path in items:
            yield decode_job(key, str(path), sampler_dict, backend, image_size, device)
        return
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        todo = deque(items)
        running: set[Future] = set()
        while todo or running:
            while todo and len(running) < 4 * workers:
                key, path = todo.popleft()
                running.add(pool.submit(decode_job, key, str(path), sampler_dict, backend, image_size))
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                yield fut.result()


def iter_encoded(
    items: Sequence[tuple[str, str]],
    clip,
    sampler: SamplerConfig,
    *,
    workers: int = 2,
    backend: str = "auto",
    decode_device: str = "cpu",
    batch_frames: int = 256,
    progress: bool | str = True,
) -> Iterator[EncodedVideo | Failure]:
    """Decode, sample and encode ``items`` = [(key, path), ...] with a FrozenCLIP.

    Yields an EncodedVideo (emb float32 [T, D] for the T real frames) or a Failure per item, in
    completion order.
    """
    from tqdm.auto import tqdm

    items = list(items)
    bar = tqdm(total=len(items), unit="video", desc=progress if isinstance(progress, str) else "encode",
               disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    frames_done = 0
    pending: list[tuple] = []
    pending_frames = 0

    def encode_pending():
        nonlocal frames_done
        frames = [torch.as_tensor(p[2]) for p in pending]
        counts = [f.shape[0] for f in frames]
        emb = clip.encode_frames(torch.cat(frames).to(clip.device)).float().cpu()
        frames_done += sum(counts)
        out = []
        for (key, path, _, sample, info), chunk in zip(pending, torch.split(emb, counts)):
            out.append(EncodedVideo(key, path, chunk, sample, info))
        return out

    def tick(n: int):
        bar.update(n)
        elapsed = max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(videos_s=f"{bar.n / elapsed:.2f}", frames_s=f"{frames_done / elapsed:.1f}", refresh=False)

    try:
        for result in _decoded_stream(items, sampler, backend, clip.image_size, workers, decode_device):
            if isinstance(result, Failure):
                tick(1)
                yield result
                continue
            pending.append(result)
            pending_frames += result[2].shape[0]
            if pending_frames >= batch_frames:
                for encoded in encode_pending():
                    tick(1)
                    yield encoded
                pending, pending_frames = [], 0
        if pending:
            for encoded in encode_pending():
                tick(1)
                yield encoded
    finally:
        bar.close()


# ----------------------------------------------------------------------------- vidclip encode


def collect_videos(inputs: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """Expand files and folders (recursive, by extension) to (key, path) pairs.

    The key of a file found under a folder is its path relative to that folder; a file named
    directly keys by its stem-less name as given. Missing inputs are kept so that they are
    reported as failures, not silently dropped.
    """
    items: list[tuple[str, str]] = []
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS:
                    items.append((f.relative_to(p).as_posix(), str(f)))
        else:
            items.append((p.name, str(p)))
    seen: dict[str, str] = {}
    for key, path in items:
        if key in seen and seen[key] != path:
            raise VidclipError(f"two inputs share the video key {key!r}: {seen[key]} and {path}; encode them to separate --out folders")
        seen[key] = path
    return list(seen.items())


def encode_videos(
    items: Sequence[tuple[str, str]],
    out_dir: str | os.PathLike,
    clip,
    sampler: SamplerConfig,
    *,
    workers: int = 2,
    backend: str = "auto",
    decode_device: str = "cpu",
    batch_frames: int = 256,
    shard_size: int = 256,
    progress: bool = True,
) -> EncodeReport:
    """Encode videos into a FeatureStore at ``out_dir``; keys already stored there are skipped.

    A killed run loses at most its last uncommitted shard (``shard_size`` videos); re-running
    resumes. Failures are written to ``out_dir/failures.jsonl`` and returned.
    """
    out_dir = Path(out_dir)
    done_keys: set[str] = set()
    if (out_dir / STORE_FILE).exists():
        store = FeatureStore(out_dir)
        if store.sampler and store.sampler != sampler.to_dict():
            raise VidclipError(
                f"{out_dir}: store was sampled with {store.sampler}, not {sampler.to_dict()}; use another --out"
            )
        done_keys = set(store.keys())
    report = EncodeReport()
    todo = [(k, p) for k, p in items if k not in done_keys]
    report.skipped = len(items) - len(todo)
    writer = FeatureWriter(out_dir, clip.identity.to_dict(), sampler.to_dict(), shard_size=shard_size)
    start = time.perf_counter()
    try:
        for result in iter_encoded(todo, clip, sampler, workers=workers, backend=backend,
                                   decode_device=decode_device, batch_frames=batch_frames, progress=progress):
            if isinstance(result, Failure):
                report.failed.append(result)
                continue
            info = result.info
            writer.add(
                result.key, result.path, result.emb, result.valid_indices, result.valid_times,
                windows=result.windows, duration=info.duration, fps=info.fps,
            )
            report.done += 1
            report.frames += int(result.emb.shape[0])
    finally:
        writer.close()
        report.seconds = time.perf_counter() - start
        tmp = out_dir / ".failures.jsonl.tmp"
        tmp.write_text("".join(json.dumps(f.to_dict()) + "\n" for f in report.failed), encoding="utf-8")
        os.replace(tmp, out_dir / "failures.jsonl")
    return report
