"""``vidclip encode``: video files -> a :class:`~vidclip.features.store.FeatureStore`, on either engine.

:func:`start_engine` picks the engine the options name (vidclip/encode/engines/: ``local`` or
``ray``, both behind :class:`~vidclip.encode.protocol.Engine`); :func:`encode_videos` runs it and
commits each shard it yields into the store, the same way whatever the engine. The index
(vidclip/index/build.py) runs engines the same way and commits into its own store and catalog.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from vidclip.core.errors import ConfigError, VidclipError, display_path
from vidclip.core.fileio import atomic_write_text
from vidclip.encode.options import EncodeOptions
from vidclip.encode.protocol import STAGING_DIR, EncodeItem, Engine, ModelRef
from vidclip.encode.worker import Failure
from vidclip.features.store import STORE_FILE, FeatureStore, FeatureWriter
from vidclip.video.files import find_videos
from vidclip.video.sample import SamplerConfig


def start_engine(options: EncodeOptions) -> Engine:
    """The engine ``options.engine`` names, ready to run; the Ray engine checks here that Ray is
    installed, so a missing Ray is a clear error before any work."""
    if options.engine == "ray":
        from vidclip.encode.engines.ray import RayEngine

        return RayEngine()
    from vidclip.encode.engines.local import LocalEngine

    return LocalEngine()


@dataclass
class EncodeReport:
    """What :func:`encode_videos` did: videos stored, skipped (stored before), failed; frames and seconds."""

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
    options: EncodeOptions | SamplerConfig | None = None,
    **changes,
) -> EncodeReport:
    """Encode ``items`` = [(key, path)] into a FeatureStore at ``out_dir``; keys already stored there are skipped.

    ``options``: an :class:`~vidclip.encode.options.EncodeOptions` (its sampler is required), or a
    SamplerConfig for the defaults with that sampler; ``changes``: option fields to override
    (``workers=2``, ``progress=False``, ``engine="ray"``, ...). A killed run loses at most its
    last uncommitted shard (``shard_size`` videos); re-running resumes. Failures are written to
    ``out_dir/failures.jsonl`` and returned. Shards are staged under ``out_dir/staging`` by the
    engine and committed here in the order it yields them.
    """
    options = EncodeOptions.build(options, **changes)
    if options.sampler is None:
        raise ConfigError("encode_videos: no sampler given (pass a SamplerConfig, or EncodeOptions(sampler=...))")
    engine = start_engine(options)  # before any work: a missing Ray fails here
    sampler = options.sampler.to_dict()
    out_dir = Path(out_dir)
    done_keys: set[str] = set()
    if (out_dir / STORE_FILE).exists():
        store = FeatureStore(out_dir)
        if store.sampler and store.sampler != sampler:
            raise VidclipError(f"{out_dir}: store was sampled with {store.sampler}, not {sampler}; use another --out")
        done_keys = set(store.keys())
    report = EncodeReport()
    todo = [EncodeItem(k, str(p)) for k, p in items if k not in done_keys]
    report.skipped = len(items) - len(todo)
    writer = FeatureWriter(out_dir, clip.identity.to_dict(), sampler)
    start = time.perf_counter()
    try:
        for shard in engine.run(todo, ModelRef.of(clip), options.labelled("encode"), out_dir / STAGING_DIR):
            shard.commit(writer)
            report.failed.extend(shard.failures)
            report.warnings.extend(shard.warnings)
            report.done += shard.videos
            report.frames += shard.frames_total
            shard.remove()
    finally:
        report.seconds = time.perf_counter() - start
        atomic_write_text(out_dir / "failures.jsonl", "".join(json.dumps(f.to_dict()) + "\n" for f in report.failed))
    return report
