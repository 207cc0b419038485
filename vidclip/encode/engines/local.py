"""``--engine local``: decode worker processes on this machine, encoding in this process.

Videos are staged in completion order; a shard is finished once it holds ``shard_size`` items
(failures included) or ``shard_frames`` frames, and when the input is done. Staging found at
the start (a killed run's, of either engine) is removed: those videos are encoded afresh.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator, Sequence

from vidclip.encode.options import EncodeOptions
from vidclip.encode.protocol import (
    EncodedShard,
    EncodeItem,
    EngineStats,
    ModelRef,
    ShardStager,
    close_staging,
    sweep_staging,
)
from vidclip.encode.worker import Failure, iter_encoded


class LocalEngine:
    name = "local"

    def __init__(self):
        self.stats = EngineStats()

    def run(self, items: Sequence[EncodeItem], model: ModelRef, options: EncodeOptions,
            staging: Path) -> Iterator[EncodedShard]:
        staging = Path(staging)
        _, self.stats.stale_removed = sweep_staging(staging)
        if not items:
            close_staging(staging)
            return
        clip = model.load()
        staging.mkdir(parents=True, exist_ok=True)
        sampler = options.sampler.to_dict()

        def stager() -> ShardStager:
            return ShardStager(staging, f"local-{uuid.uuid4().hex[:16]}", model.identity, sampler)

        current = None
        jobs = [(n, item.path) for n, item in enumerate(items)]  # keyed by position: keys need not be unique
        for result in iter_encoded(jobs, clip, options.sampler, workers=options.workers, backend=options.backend,
                                   decode_device=options.decode_device, batch_frames=options.batch_frames,
                                   pad_last_batch=True, progress=options.progress):
            item = items[result.key]
            if current is None:
                current = stager()
            if isinstance(result, Failure):
                current.fail(item, result.reason)
            else:
                current.add(item, result.emb, result.sample, result.info)
            if len(current) >= options.shard_size or current.frames >= options.shard_frames:
                yield self._done(current.finish())
                current = None
        if current is not None:
            yield self._done(current.finish())
        close_staging(staging)

    def _done(self, shard: EncodedShard) -> EncodedShard:
        self.stats.shards += 1
        return shard
