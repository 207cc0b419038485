"""``vidclip encode``: video files -> a frame-feature store, on the local engine or on Ray.

Registered by :mod:`vidclip.cli.main` through :func:`add_encode_parser`; the work is one call to
:func:`vidclip.encode.pipeline.encode_videos` with an :class:`~vidclip.encode.options.EncodeOptions`.
"""

from __future__ import annotations

import argparse
import os
import sys

from vidclip.cli.options import (
    add_engine_args,
    add_model_args,
    add_sampler_args,
    check_out_folder,
    check_runtime_args,
    model_from_args,
    print_json,
    ray_options_from_args,
    sampler_from_args,
)
from vidclip.core.errors import ConfigError, VidclipError, display_path


def _workers_arg(value: str):
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number >= 0, got {value!r}")
    return n


def cmd_encode(ns: argparse.Namespace) -> int:
    from vidclip.encode.options import EncodeOptions
    from vidclip.encode.pipeline import collect_videos, encode_videos
    from vidclip.features.store import STORE_FILE, read_store_header

    sampler = sampler_from_args(ns)
    ray = ray_options_from_args(ns)  # a bad --encoders / --num-gpus fails before any model loads
    check_out_folder(ns.out)
    check_runtime_args(ns)
    if ns.batch_frames <= 0 or ns.shard_size <= 0:
        raise ConfigError(f"--batch-frames and --shard-size must be positive, got {ns.batch_frames} and {ns.shard_size}")
    options = EncodeOptions(sampler=sampler, workers=ns.workers, backend=ns.backend, decode_device=ns.decode_device,
                            batch_frames=ns.batch_frames, shard_size=ns.shard_size,
                            progress=not ns.json and not ns.quiet, engine=ns.engine, ray=ray)
    if os.path.isfile(os.path.join(ns.out, STORE_FILE)):
        read_store_header(ns.out)  # a corrupt or foreign store, before the model loads
    problems: list[tuple[str, str]] = []
    items = collect_videos(ns.inputs, problems)
    for path, reason in problems:
        print(f"vidclip encode: {display_path(path)}: {reason}", file=sys.stderr)
    if not items:  # nothing to encode: create no store
        raise VidclipError(f"no videos found in {' '.join(display_path(p) for p in ns.inputs)}")
    clip = model_from_args(ns)
    if clip.identity.random_weights:
        print("vidclip encode: note: the model has RANDOM weights; features are for testing only, not meaningful.",
              file=sys.stderr)
    report = encode_videos(items, ns.out, clip, options)
    for f in report.failed:
        print(f"vidclip encode: {display_path(f.path)}: {f.reason}", file=sys.stderr)
    for w in report.warnings:
        print(f"vidclip encode: warning: {w}", file=sys.stderr)
    if ns.json:
        print_json(report.to_dict())
    else:
        r = report.to_dict()
        print(f"encoded {r['done']} videos ({r['frames']} frames, {r['frames_per_s'] or 0:.1f} frames/s), "
              f"skipped {r['skipped']} already done, failed {len(report.failed) + len(problems)} -> {ns.out}")
    return 1 if report.failed or problems else 0


def add_encode_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("encode", help="encode videos' frames with a frozen CLIP into a feature store",
                              description="Decode, sample and encode videos into a sharded fp16 feature store (see "
                                          "docs/architecture.md). Re-running skips videos already stored; bad "
                                          "files are reported and skipped.")
    p.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="video files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, help="feature store folder")
    p.add_argument("--workers", type=_workers_arg, default="auto",
                   help="decoding worker processes; 0 decodes in this process; auto: in this process for up to 4 "
                        "videos, else one worker per core up to 4 (default: %(default)s)")
    p.add_argument("--batch-frames", type=int, default=256, help="frames per encoder batch (default: %(default)s)")
    p.add_argument("--shard-size", type=int, default=256,
                   help="videos per committed shard; with --engine ray also per partition (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p, runtime=True)
    add_sampler_args(p)
    add_engine_args(p)
    p.set_defaults(func=cmd_encode)
    return p
