"""``vidclip synth``: write a synthetic dataset (:func:`vidclip.synthetic.datasets.make_synthetic_dataset`).

Registered by :mod:`vidclip.cli.main` through :func:`add_synth_parser`.
"""

from __future__ import annotations

import argparse

from vidclip.cli.options import print_json
from vidclip.core.errors import display_path


def cmd_synth(ns: argparse.Namespace) -> int:
    from vidclip.synthetic.datasets import SynthConfig, make_synthetic_dataset

    cfg = SynthConfig(num_videos=ns.videos, seed=ns.seed, size=ns.size, num_frames=ns.frames,
                      train_twins=ns.train_twins)
    summary = make_synthetic_dataset(ns.out, cfg, progress=not ns.json)
    if ns.json:
        print_json(summary)
    else:
        seconds = summary["seconds"]
        rate = f", {summary['num_videos'] / seconds:.0f} videos/s" if seconds > 0 else ""
        print(f"wrote {summary['num_videos']} synthetic videos ({summary['num_train']} train, {summary['num_test']} "
              f"test, {summary['num_captions']} captions) to {display_path(summary['root'])} in {seconds:.1f} s{rate}")
    return 0


def add_synth_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("synth", help="write a synthetic MSR-VTT-style dataset (offline test data)",
                              description="Generate videos of simple moving objects with paraphrased captions, in "
                                          "the MSR-VTT layout. Every test video has a time-reversed twin with the "
                                          "opposite motion.")
    p.add_argument("out", help="output folder")
    p.add_argument("--videos", type=int, default=100, help="number of videos (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same dataset (default: %(default)s)")
    p.add_argument("--size", type=int, default=64, help="frame width and height in pixels (default: %(default)s)")
    p.add_argument("--frames", type=int, default=24, help="frames per video (default: %(default)s)")
    p.add_argument("--train-twins", action="store_true",
                   help="make the training videos time-reversed twin pairs too; order-aware modules need "
                        "them to learn the direction of motion (see BENCHMARKS.md, Temporal modelling)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_synth)
    return p
