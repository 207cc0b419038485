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
import multiprocessing.context
import os
import sys
import time
import types
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from .data.features import STORE_FILE, FeatureStore, FeatureWriter
from .errors import VidclipError, display_path
from .video.files import VIDEO_EXTENSIONS, find_videos  # noqa: F401  (VIDEO_EXTENSIONS: re-exported)
from .video.sample import Sample, SamplerConfig, sample_video

if TYPE_CHECKING:
    import torch


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
    warnings: list[str] = field(default_factory=list)  # one line each, e.g. a file cut short

    def to_dict(self) -> dict:
        return {
            "done": self.done,
            "skipped": self.skipped,
            "failed": [f.to_dict() for f in self.failed],
            "warnings": list(self.warnings),
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "videos_per_s": round(self.done / self.seconds, 3) if self.seconds else None,
            "frames_per_s": round(self.frames / self.seconds, 3) if self.seconds else None,
        }


# ----------------------------------------------------------------------------- decoding jobs


def _watch_parent(parent: int) -> None:
    import time as _time

    while os.getppid() == parent:
        _time.sleep(0.5)
    os._exit(0)  # the parent is gone (killed): do not outlive it


def _init_worker(parent: int, pdeathsig: bool) -> None:
    """Runs first in each decode worker: die with the parent, one intra-op thread."""
    import threading

    if pdeathsig and sys.platform.startswith("linux"):
        # Linux: the kernel sends SIGKILL when the parent (the thread that started us) dies.
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # died before we got here
        os._exit(0)
    # Everywhere (and when the starting thread is not the main one): poll the parent's pid.
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="vidclip-parent-watch").start()
    import torch

    # Each worker decodes one video at a time; intra-op threads would only fight each other.
    torch.set_num_threads(1)


class _NoMainSpawnContext(mp.context.SpawnContext):
    """Spawned workers that do not re-import the main module: decode jobs are vidclip functions,
    so a plain script without ``if __name__ == "__main__"``, a notebook and ``python -`` all
    work (multiprocessing's spawn/forkserver would re-run the script, or open '<stdin>')."""

    class Process(mp.context.SpawnProcess):
        @staticmethod
        def _Popen(process_obj):
            from multiprocessing.popen_spawn_posix import Popen

            main = sys.modules.get("__main__")
            sys.modules["__main__"] = types.ModuleType("__main__")  # nothing to prepare
            try:
                return Popen(process_obj)
            finally:
                if main is not None:
                    sys.modules["__main__"] = main


def resolve_workers(workers, num_items: int) -> int:
    """``workers="auto"``: decode in this process for a few videos (no start-up cost), else up
    to 4 worker processes (one per core). An int is taken as given."""
    if workers == "auto":
        return 0 if num_items <= 4 else max(1, min(4, os.cpu_count() or 1))
    try:
        n = int(workers)
    except (TypeError, ValueError):
        raise VidclipError(f"workers: expected 'auto' or an int >= 0, got {workers!r}") from None
    if n < 0:
        raise VidclipError(f"workers: expected 'auto' or an int >= 0, got {workers!r}")
    return n


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
    if workers <= 0 or device != "cpu" or sys.platform == "win32":
        # GPU decoding keeps frames on the device, so it stays in this process.
        for key, path in items:
            yield decode_job(key, str(path), sampler_dict, backend, image_size, device)
        return
    import threading

    pdeathsig = threading.current_thread() is threading.main_thread()
    with ProcessPoolExecutor(max_workers=workers, mp_context=_NoMainSpawnContext(), initializer=_init_worker,
                             initargs=(os.getpid(), pdeathsig)) as pool:
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
    workers: int | str = "auto",
    backend: str = "auto",
    decode_device: str = "cpu",
    batch_frames: int = 256,
    progress: bool | str = True,
) -> Iterator[EncodedVideo | Failure]:
    """Decode, sample and encode ``items`` = [(key, path), ...] with a FrozenCLIP.

    ``workers``: decoding processes (0 = in this process; "auto" = :func:`resolve_workers`).
    Yields an EncodedVideo (emb float32 [T, D] for the T real frames) or a Failure per item, in
    completion order.
    """
    import torch
    from tqdm.auto import tqdm

    items = list(items)
    workers = resolve_workers(workers, len(items))
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


def collect_videos(inputs: Sequence[str | os.PathLike], problems: list | None = None) -> list[tuple[str, str]]:
    """Expand files and folders (recursive, by extension) to (key, path) pairs.

    The key of a file found under a folder is its path relative to that folder; a file named
    directly keys by its file name. Paths that cannot be read (missing, link loops, dangling
    links, FIFOs, devices, empty files; see :func:`vidclip.video.files.find_videos`) are
    appended to ``problems`` as ``(path, reason)`` when a list is given, else kept as items so
    that reading them reports them as failures.
    """
    found, bad = find_videos(inputs)
    items = list(found)
    if problems is not None:
        problems.extend(bad)
    else:
        items += [(os.path.basename(os.path.normpath(p)), p) for p, _ in bad]
    seen: dict[str, str] = {}
    for key, path in items:
        if key in seen and seen[key] != path:
            raise VidclipError(f"two inputs share the video key {display_path(key)!r}: {display_path(seen[key])} "
                               f"and {display_path(path)}; encode them to separate --out folders")
        seen[key] = path
    return list(seen.items())


def encode_videos(
    items: Sequence[tuple[str, str]],
    out_dir: str | os.PathLike,
    clip,
    sampler: SamplerConfig,
    *,
    workers: int | str = "auto",
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
            report.warnings.extend(getattr(info, "warnings", []))
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
