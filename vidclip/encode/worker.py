"""The decode -> encode worker both engines run: a video file -> sampled frames -> embeddings.

Decoding (and shrinking frames to the model's input size, which keeps inter-process traffic
small) runs in worker processes (:func:`decode_job`); the frozen CLIP encodes in forward passes
of exactly ``batch_frames`` frames taken across videos (:class:`FixedPassEncoder`), so a GPU is
never fed one short video at a time and, on CPU, what a frame encodes to does not depend on
which videos finished decoding first. One bad video yields a :class:`Failure` and the rest go on.

:func:`iter_encoded` chains the two in this process (the local engine, a query video); the Ray
engine runs :func:`decode_job` in its decode tasks and :class:`FixedPassEncoder` in its actors.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from vidclip.core.errors import VidclipError
from vidclip.core.processes import worker_context
from vidclip.core.progress import start_clock
from vidclip.video.sample import Sample, SamplerConfig, sample_video

if TYPE_CHECKING:
    import torch


@dataclass
class EncodedVideo:
    """One video through decode and encode: ``emb`` float32 [T, D] of the sample's T valid frames."""

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
    """A video that could not be decoded (``reason``: one line); the run goes on without it."""

    key: str
    path: str
    reason: str

    def to_dict(self) -> dict:
        return {"key": self.key, "path": self.path, "reason": self.reason}


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
    from vidclip.models.clip.preprocess import resize_center_crop

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
    with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(), initializer=_init_worker,
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


class FixedPassEncoder:
    """Encode the frames of a stream of videos in forward passes of exactly ``pass_frames`` rows.

    Why fixed passes: on CPU (fp32) a frame's embedding depends on the row count of the forward
    pass it is in, though not on which other frames share that pass or where it sits in it
    (measured on tiny-vit and vidclip-synth: batches of 1, 7 and 256 rows differ in the last
    bits, enough to flip a few fp16 values per thousand; permuted or re-padded 256-row passes
    agree bit for bit). Cutting every pass at exactly ``pass_frames`` rows, across video
    boundaries, makes each stored embedding independent of decode completion order and of the
    engine (local or Ray) that encoded it. With ``pad_last`` the final partial pass is padded
    with zero frames (their outputs dropped): at most ``pass_frames - 1`` wasted rows per
    :meth:`finish`; without it the last pass is simply shorter (cheap for one short video, as
    a query, but then not bit-comparable with other runs).

    ``add(tag, frames)`` (uint8 ``[T, S, S, 3]``, numpy or torch) returns ``[(tag, emb)]`` for the
    videos completed so far, in the order they were added; ``emb`` is float32 ``[T, D]`` on CPU.
    """

    def __init__(self, clip, pass_frames: int = 256, *, pad_last: bool = True):
        if int(pass_frames) <= 0:
            raise VidclipError(f"batch_frames: must be positive, got {pass_frames!r}")
        self.clip, self.pass_frames, self.pad_last = clip, int(pass_frames), pad_last
        self._queue: deque[list] = deque()  # [tag, frames tensor, encoded chunks, next row to encode]
        self._buffered = 0  # rows added but not encoded yet
        self.frames_done = 0
        self.passes = 0
        self.padded_rows = 0

    def add(self, tag, frames) -> list[tuple[object, torch.Tensor]]:
        import torch

        if isinstance(frames, np.ndarray) and not frames.flags.writeable:
            frames = frames.copy()  # e.g. from Ray's object store: torch wants a writable array
        frames = torch.as_tensor(frames)
        self._queue.append([tag, frames, [], 0])
        self._buffered += int(frames.shape[0])
        while self._buffered >= self.pass_frames:
            self._encode_pass(self.pass_frames)
        return self._pop_done()

    def finish(self) -> list[tuple[object, torch.Tensor]]:
        if self._buffered:
            self._encode_pass(self._buffered)
        return self._pop_done()

    def _encode_pass(self, rows: int) -> None:
        import torch

        pieces, need = [], rows
        for entry in self._queue:
            take = min(need, int(entry[1].shape[0]) - entry[3])
            if take > 0:
                pieces.append((entry, entry[3], entry[3] + take))
                need -= take
            if not need:
                break
        x = torch.cat([entry[1][a:b] for entry, a, b in pieces])
        size = self.pass_frames if self.pad_last else rows
        if size > rows:
            x = torch.cat([x, torch.zeros((size - rows, *x.shape[1:]), dtype=x.dtype, device=x.device)])
            self.padded_rows += size - rows
        emb = self.clip.encode_frames(x.to(self.clip.device), batch_size=size).float().cpu()[:rows]
        offset = 0
        for entry, a, b in pieces:
            entry[2].append(emb[offset:offset + b - a])
            entry[3] = b
            offset += b - a
        self._buffered -= rows
        self.frames_done += rows
        self.passes += 1

    def _pop_done(self) -> list[tuple[object, torch.Tensor]]:
        import torch

        done = []
        while self._queue and self._queue[0][3] >= int(self._queue[0][1].shape[0]):
            tag, frames, chunks, _ = self._queue.popleft()
            emb = torch.cat(chunks) if chunks else torch.zeros((0, self.clip.embed_dim), dtype=torch.float32)
            done.append((tag, emb))
        return done


def iter_encoded(
    items: Sequence[tuple[str, str]],
    clip,
    sampler: SamplerConfig,
    *,
    workers: int | str = "auto",
    backend: str = "auto",
    decode_device: str = "cpu",
    batch_frames: int = 256,
    pad_last_batch: bool = False,
    progress: bool | str = True,
) -> Iterator[EncodedVideo | Failure]:
    """Decode, sample and encode ``items`` = [(key, path), ...] with a FrozenCLIP.

    ``workers``: decoding processes (0 = in this process; "auto" = :func:`resolve_workers`).
    Frames are encoded in forward passes of exactly ``batch_frames`` rows across videos
    (:class:`FixedPassEncoder`); ``pad_last_batch`` pads the last one, which makes every
    embedding independent of the completion order (what stored features want).
    Yields an EncodedVideo (emb float32 [T, D] for the T real frames) or a Failure per item, in
    completion order.
    """
    from tqdm.auto import tqdm

    items = list(items)
    workers = resolve_workers(workers, len(items))
    bar = tqdm(total=len(items), unit="video", desc=progress if isinstance(progress, str) else "encode",
               disable=not progress, dynamic_ncols=True)
    start = None  # set when the first video is decoded: worker start-up is not part of the pace
    encoder = FixedPassEncoder(clip, batch_frames, pad_last=pad_last_batch)

    def tick(n: int):
        bar.update(n)
        elapsed = max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(videos_s=f"{bar.n / elapsed:.2f}", frames_s=f"{encoder.frames_done / elapsed:.1f}",
                        refresh=False)

    def encoded(done) -> Iterator[EncodedVideo]:
        for (key, path, sample, info), emb in done:
            tick(1)
            yield EncodedVideo(key, path, emb, sample, info)

    try:
        for result in _decoded_stream(items, sampler, backend, clip.image_size, workers, decode_device):
            if start is None:
                start_clock(bar)
                start = time.perf_counter()
            if isinstance(result, Failure):
                tick(1)
                yield result
                continue
            key, path, frames, sample, info = result
            yield from encoded(encoder.add((key, path, sample, info), frames))
        yield from encoded(encoder.finish())
    finally:
        bar.close()
