"""``--engine ray``: decode and encode a library's partitions on a Ray cluster, each staged as one
:class:`~vidclip.encode.protocol.EncodedShard` that the one driver commits exactly as it commits
the local engine's.

The only module that imports Ray, and only inside functions: ``import vidclip``, ``vidclip.index``
and the rest of ``vidclip.encode`` never load it; without Ray installed ``--engine ray`` is a
ConfigError naming ``pip install -e ".[ray]"``. It knows no caller's rules: what it stages is
what the local engine stages (vidclip/encode/protocol.py).

Work flow::

    driver: sorted items --chunks of `shard_size`--> partitions (content-derived ids)
      per partition, per video: decode task (num_cpus=1)  -> (meta, frames)   [object store]
      per partition: encoder actor (model loaded once; num_gpus when asked)
                     -> STAGING/.tmp-<id>-<rand>/  (store.json, shards/shard-000000/, manifest.json)
                     -> renamed to STAGING/<id>/   (finished: appears atomically)
    driver: yields finished partitions in partition order; the caller commits each one, then
            removes its staging folder.

Why Ray core and not Ray Data: a partition must end as one shard written by one process, its
videos in a fixed order, committed by the driver in partition order, and re-recognised after a
driver kill. Ray Data's ``map_batches`` regroups rows into blocks of its own choosing and owns
the writes; tasks + an actor pool say exactly what runs where, and Ray's own retries cover the
faults: decode tasks have ``max_retries``, encoder actors ``max_restarts`` /
``max_task_retries`` (a killed actor is restarted, reloads the model and redoes its partition
into a fresh ``.tmp-*`` folder; a retry finding the partition already finished returns it).

Partition ids: a hash of the model identity, sampler, encode settings and each video's (key,
path, size, mtime_ns, extra). A re-run after a driver kill builds the same partitions from what
is still to do (the committed ones form a prefix of the sorted list, and are no longer to do),
finds the finished staging folders by id, yields them without encoding anything, and redoes
only the rest; a folder whose id no current partition has (another model or sampler, a file
changed since, an unfinished ``.tmp-*``, the local engine's) is removed. The caller holds the
store's / index's writer lock while this runs.

Same result as the local engine: both encode in forward passes of exactly ``batch_frames`` rows,
padding the last (:class:`vidclip.encode.worker.FixedPassEncoder`), so on CPU fp32 a frame's stored
embedding does not depend on which videos shared its pass (the local engine's passes cross video
boundaries in completion order, a partition's in partition order). Bit-identity holds between
machines with the same CPU kernels; nodes with other instruction sets (AVX2 vs AVX-512) or GPUs
may differ in the last bits, as any two such runs do.

Shared filesystem: encoder actors write into the driver's staging folder, so on a multi-node
cluster that folder must be mounted at the same path on every node (NFS, a cluster filesystem);
an actor that cannot see it fails the run with a message saying so.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

from vidclip.core.errors import ConfigError, VidclipError, display_path
from vidclip.encode.options import EncodeOptions, RayOptions
from vidclip.encode.protocol import (
    EncodedShard,
    EncodeItem,
    EngineStats,
    ModelRef,
    ShardStager,
    close_staging,
    finished,
    sweep_staging,
)

# Test hook, comma-separated: "decode:MARKER" / "encode:MARKER" SIGKILL a decode task / encoder actor
# once (while MARKER does not exist); "driver:K" holds commits until every partition is staged, then
# SIGKILLs the driver after its K-th commit.
CRASH_ENV = "VIDCLIP_RAY_CRASH"
INSTALL_HINT = 'pip install -e ".[ray]"'


class RayEngine:
    """The Ray engine behind :class:`~vidclip.encode.protocol.Engine`; creating it checks that Ray is
    installed (a clear error before any work)."""

    name = "ray"

    def __init__(self):
        require_ray()
        self.stats = EngineStats()

    def run(self, items: Sequence[EncodeItem], model: ModelRef, options: EncodeOptions,
            staging: Path) -> Iterator[EncodedShard]:
        """Partitions of ``options.shard_size`` items (sorted by key), staged on the cluster, yielded
        in partition order. The driver never loads the model: the actors load ``model.identity``."""
        ray_options = options.ray or RayOptions()
        settings = {"model": model.identity, "sampler": options.sampler.to_dict(),
                    "batch_frames": int(options.batch_frames), "precision": ray_options.precision,
                    "gpu": float(ray_options.num_gpus) > 0}
        parts = make_partitions(items, options.shard_size, settings)
        if isinstance(options.progress, str):  # the caller's label, e.g. "index (ray)"
            options = replace(options, progress=f"{options.progress} (ray)")
        yield from stage_partitions(parts, staging, model.identity, options, self.stats)


@dataclass
class Partition:
    """A chunk of the sorted to-do list, named by its content."""

    index: int
    id: str
    items: list[EncodeItem]


# ----------------------------------------------------------------------------- partitions


def require_ray():
    """The ray module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--engine ray needs Ray, which is not installed here; install it with {INSTALL_HINT} "
                          "(or pip install 'ray[default]')") from None
    return ray


def make_partitions(items: Sequence[EncodeItem], size: int, settings: dict) -> list[Partition]:
    """Sort ``items`` by key and cut them into chunks of ``size``; each chunk's id is a hash of
    ``settings`` (model identity, sampler, encode settings) and its items' identities."""
    if int(size) <= 0:
        raise ConfigError(f"partition size must be positive, got {size}")
    ordered = sorted(items, key=lambda it: it.key)
    head = json.dumps(settings, sort_keys=True, default=str)
    parts = []
    for n, start in enumerate(range(0, len(ordered), int(size))):
        chunk = ordered[start:start + int(size)]
        h = hashlib.blake2b(digest_size=12)
        h.update(head.encode())
        for it in chunk:
            h.update(json.dumps(it.identity(), sort_keys=True, default=str).encode())
        parts.append(Partition(n, h.hexdigest(), chunk))  # content only: a re-run finds it whatever precedes it
    return parts


# ----------------------------------------------------------------------------- remote side


def _crash_specs(crash: str | None) -> dict[str, str]:
    """``VIDCLIP_RAY_CRASH`` = "decode:MARKER,encode:MARKER,driver:K" (any subset) -> {where: arg}."""
    specs = {}
    for part in (crash or "").split(","):
        name, _, arg = part.strip().partition(":")
        if name and arg:
            specs[name] = arg
    return specs


def _maybe_crash(crash: str | None, where: str) -> None:
    """Test hook (``VIDCLIP_RAY_CRASH``, "decode:MARKER" / "encode:MARKER"): SIGKILL this worker the
    first time one gets here (creating MARKER, so that Ray's retry then goes through)."""
    marker = _crash_specs(crash).get(where)
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _decode_remote(key: str, path: str, sampler: dict, backend: str, image_size: int, crash: str | None):
    """One video -> (meta, payload): meta = {"key", "frames", "node"}, payload = the decode_job tuple
    (frames uint8 [T, S, S, 3]); both the Failure for a bad video. The driver reads only the small
    meta (progress, nodes); the encoder actor fetches the payload."""
    import torch

    from vidclip.encode.worker import Failure, decode_job

    torch.set_num_threads(1)  # one video per task; the CPU is the task's
    _maybe_crash(crash, "decode")
    result = decode_job(key, path, sampler, backend, image_size)
    if isinstance(result, Failure):
        return result, result
    return {"key": key, "frames": int(result[2].shape[0]), "node": _node_id()}, result


class _Encoder:
    """An encoder actor: loads the model once, turns partitions into staged shards."""

    def __init__(self, identity: dict, device: str, precision: str, crash: str | None):
        from vidclip.models.clip.load import load_clip_from_identity

        self.clip = load_clip_from_identity(identity, device=device, precision=precision)
        self.identity, self.crash = identity, crash

    def encode_partition(self, job: dict, payload_refs: list) -> dict:
        """Encode one partition's decoded videos and stage them; returns the manifest."""
        import ray

        from vidclip.encode.worker import Failure, FixedPassEncoder

        root = Path(job["staging"])
        if not root.is_dir():
            raise VidclipError(f"{display_path(root)}: not visible on Ray node {_node_id()}; the store / index "
                               "folder must be on a filesystem every node mounts at the same path")
        done = finished(root / job["id"])
        if done is not None:  # a retry of a call whose first attempt finished it
            return done
        items: list[EncodeItem] = job["items"]
        encoder = FixedPassEncoder(self.clip, job["batch_frames"], pad_last=True)
        encoded: dict[int, tuple] = {}
        failed: dict[int, str] = {}
        pending = {ref: n for n, ref in enumerate(payload_refs)}
        while pending:  # encode in completion order: fixed passes make the result order-free
            ready, _ = ray.wait(list(pending), num_returns=1)
            n = pending.pop(ready[0])
            try:
                payload = ray.get(ready[0])
            except Exception as e:  # the decode task died past its retries (segfault, OOM kill)
                payload = Failure(items[n].key, items[n].path, f"decode worker died: {type(e).__name__}: {e}")
            if isinstance(payload, Failure):
                failed[n] = payload.reason
                continue
            _key, _path, frames, sample, info = payload
            for (m, smp, inf), emb in encoder.add((n, sample, info), frames):
                encoded[m] = (emb, smp, inf)
            del payload, frames
        for (m, smp, inf), emb in encoder.finish():
            encoded[m] = (emb, smp, inf)
        _maybe_crash(self.crash, "encode")
        stager = ShardStager(root, job["id"], self.identity, job["sampler"])
        for n, item in enumerate(items):  # item order: the shard is the same whatever finished first
            if n in encoded:
                stager.add(item, *encoded[n])
            else:
                stager.fail(item, failed[n])
        return stager.finish(nodes=[_node_id()], padded_rows=encoder.padded_rows).manifest

    def node(self) -> str:
        return _node_id()


# ----------------------------------------------------------------------------- driver


def connect(address: str | None):
    """ray.init for this run; returns (ray, started) where started says whether to shut it down."""
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    import logging

    if address:
        _check_reachable(address, "--ray-address")
    elif os.environ.get("RAY_ADDRESS"):
        _check_reachable(os.environ["RAY_ADDRESS"], "RAY_ADDRESS")
    kwargs = {"include_dashboard": False} if address is None else {}
    # quiet by default: errors still surface (as exceptions); workers' own output stays in Ray's logs
    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR, **kwargs)
    return ray, True


def _check_reachable(address: str, name: str, timeout: float = 10.0) -> None:
    """A HOST:PORT address that nothing answers on is a ConfigError at once: ray.init would retry
    for minutes, printing its C++ connection warnings. 'auto', 'local' and ray:// are left to Ray."""
    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{name} {address!r}: expected HOST:PORT (as `ray start --head` prints it) or 'auto'")
    import socket

    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"{name} {address}: no Ray cluster answers there ({e.strerror or e}); "
                          "start one with `ray start --head` or check the address") from None


def stage_partitions(partitions: Sequence[Partition], staging: str | os.PathLike, identity: dict,
                     options: EncodeOptions, stats: EngineStats | None = None) -> Iterator[EncodedShard]:
    """Run ``partitions`` on Ray; yield each finished shard (named by its partition's id) in
    partition order.

    ``staging``: the folder the shards are staged in. ``identity``: the model's identity dict (each
    actor loads it with load_clip_from_identity). ``options``: sampler, backend, batch_frames,
    progress and ``ray`` (RayOptions). The caller commits each yielded shard, then calls its
    ``remove()``; one it does not commit (a killed driver) stays staged for the next run.
    """
    from tqdm.auto import tqdm

    ray_options = options.ray or RayOptions()
    sampler = options.sampler.to_dict() if options.sampler is not None else {}
    progress = options.progress
    stats = stats if stats is not None else EngineStats()
    root = Path(staging)
    root.mkdir(parents=True, exist_ok=True)
    staged, stats.stale_removed = sweep_staging(root, keep={p.id for p in partitions}.__contains__)
    ready: dict[int, EncodedShard] = {}
    for p in partitions:
        if p.id in staged:
            ready[p.index] = EncodedShard(root / p.id, staged[p.id], reused=True)
            stats.reused += 1
    todo = [p for p in partitions if p.index not in ready]
    order = [p.index for p in partitions]
    sizes = {p.index: len(p.items) for p in partitions}
    total_videos = sum(sizes.values())
    bar = None
    start = time.perf_counter()
    frames_done = decoded = 0
    crash = os.environ.get(CRASH_ENV) or None
    kill_after = int(_crash_specs(crash)["driver"]) if "driver" in _crash_specs(crash) else None

    phase = "starting Ray"  # what the bar waits for before the workers run; then ray_stage says
    shown = 0.0
    actors: list = []
    waiting_actors: dict = {}  # actor.node() ref -> actor no: resolves once that actor has loaded the model
    decoded_of: dict[int, int] = {}  # partition index -> its videos through decoding

    def show(refresh: bool = True, coming: int = 0) -> None:
        """Set the bar's postfix (``coming``: videos about to be added by the update that draws it)."""
        nonlocal shown
        stage = phase
        if stage is None and next_pos < len(order) and partitions[next_pos].index not in ready:
            head = partitions[next_pos]  # the partition the bar waits for (commits go in partition order)
            stage = ray_stage(len(actors) - len(waiting_actors), len(actors), next_pos, len(order),
                              decoded_of.get(head.index, 0), len(head.items))
        elapsed = max(time.perf_counter() - start, 1e-9)
        postfix = {"videos_s": f"{(bar.n + coming) / elapsed:.2f}", "frames_s": f"{frames_done / elapsed:.1f}",
                   "decoded": decoded}
        bar.set_postfix(({"stage": stage} if stage else {}) | postfix, refresh=refresh)
        shown = time.perf_counter()

    def advance(index: int, shard: EncodedShard) -> None:
        nonlocal frames_done
        frames_done += shard.frames_total
        stats.nodes.update(shard.manifest.get("nodes", []))
        stats.shards += 1
        show(refresh=False, coming=sizes[index])  # before update(), which draws the bar
        bar.update(sizes[index])

    next_pos = 0
    # one bar for the whole cluster, shown from the start: its stage= says what it waits for (Ray's
    # start-up, the encoders' model load, the first partition's decoding) while it stands at 0
    bar = tqdm(total=total_videos, unit="video", desc=progress if isinstance(progress, str) else "encode (ray)",
               disable=not progress or not total_videos, dynamic_ncols=True)  # nothing to do: no bar
    if todo:
        bar.set_postfix(stage=phase + (f" (connecting to {ray_options.address})" if ray_options.address else ""))
    try:
        ray, started = connect(ray_options.address) if todo else (None, False)
    except BaseException:
        bar.close()
        raise
    try:
        bar.reset(total=total_videos)  # its clock and rate count from here: Ray's start-up is not encoding time
        start = time.perf_counter()
        try:
            if todo:
                phase = f"starting {ray_options.encoders} encoder(s)"
                show()
                actors, decode = _start_workers(ray, identity, ray_options, crash)
                limit = ray_options.decode_workers or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
                waiting_actors.update({a.node.remote(): n for n, a in enumerate(actors)})  # queued before any work
            phase = None
            queue = list(todo)
            calls: dict = {}  # encode call ref -> (partition, actor no, payload refs)
            metas: dict = {}  # decode meta ref -> partition index
            load = [0] * len(actors)
            while next_pos < len(order):
                while (next_pos < len(order) and order[next_pos] in ready  # in partition order
                       and (kill_after is None or len(ready) == len(order) - next_pos)):
                    if kill_after is not None and next_pos >= kill_after:
                        os.kill(os.getpid(), signal.SIGKILL)  # test hook: the driver dies, staging stays
                    index = order[next_pos]
                    shard = ready.pop(index)
                    next_pos += 1
                    advance(index, shard)  # after next_pos moved: the bar's stage is about the next partition
                    yield shard
                if next_pos >= len(order):
                    break
                # dispatch: an actor with under 2 partitions queued, and decode work under the limit
                while queue and min(load) < 2 and (len(metas) < limit or not metas):
                    p = queue.pop(0)
                    a = load.index(min(load))
                    meta_refs, payload_refs = [], []
                    for it in p.items:
                        m, pl = decode.remote(it.key, it.path, sampler, options.backend,
                                              int(identity["image_size"]), crash)
                        meta_refs.append(m)
                        payload_refs.append(pl)
                    job = {"id": p.id, "staging": str(root), "items": p.items, "sampler": sampler,
                           "batch_frames": int(options.batch_frames)}
                    call = actors[a].encode_partition.remote(job, payload_refs)
                    calls[call] = (p, a, payload_refs)
                    metas.update({m: p.index for m in meta_refs})
                    load[a] += 1
                done, _ = ray.wait(list(calls) + list(metas) + list(waiting_actors), num_returns=1, timeout=1.0)
                for ref in done:
                    if ref in waiting_actors:
                        waiting_actors.pop(ref)
                        try:
                            stats.nodes.add(ray.get(ref))
                        except Exception:  # noqa: BLE001  (its encode calls report it, and are retried)
                            pass
                        continue
                    if ref in metas:
                        part = metas.pop(ref)
                        decoded_of[part] = decoded_of.get(part, 0) + 1
                        try:
                            meta = ray.get(ref)
                        except Exception:  # noqa: BLE001  (the actor reports it per file)
                            meta = None
                        decoded += 1
                        if isinstance(meta, dict):
                            stats.nodes.add(meta["node"])
                        continue
                    p, a, _refs = calls.pop(ref)
                    load[a] -= 1
                    manifest = ray.get(ref)  # a VidclipError / RayError here fails the run
                    ready[p.index] = EncodedShard(root / p.id, manifest)
                if time.perf_counter() - shown >= 0.5:
                    show()
            close_staging(root)  # attempts of killed actors (every call has returned); the folder once empty
        finally:
            bar.close()
    finally:
        if started:
            ray.shutdown()


def ray_stage(encoders_ready: int, encoders: int, position: int, partitions: int, decoded: int, videos: int) -> str:
    """What the Ray bar waits for while the partition at ``position`` (0-based, of ``partitions``)
    is not committed yet: the encoders' model load, then its ``videos`` being decoded (``decoded``
    so far), then encoded."""
    if encoders_ready < encoders:
        return f"loading the model on {encoders - encoders_ready} of {encoders} encoder(s)"
    if decoded < videos:
        return f"decoding partition {position + 1}/{partitions} ({decoded}/{videos} videos)"
    return f"encoding partition {position + 1}/{partitions}"


def _start_workers(ray, identity: dict, options: RayOptions, crash: str | None):
    gpus = float(options.num_gpus)
    cpus = options.encoder_cpus if options.encoder_cpus is not None else (0.0 if gpus > 0 else 1.0)
    device = "cuda" if gpus > 0 else "cpu"
    Encoder = ray.remote(_Encoder).options(num_cpus=cpus, num_gpus=gpus, max_restarts=3, max_task_retries=3)
    actors = [Encoder.remote(identity, device, options.precision, crash) for _ in range(int(options.encoders))]
    decode = ray.remote(_decode_remote).options(num_cpus=1, num_returns=2, max_retries=3)
    return actors, decode
