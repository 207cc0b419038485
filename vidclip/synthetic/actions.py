"""A synthetic action-recognition set from the synthetic world: colour x motion direction.

Classes are ``<colour>_moving_<direction>`` (e.g. ``red_moving_left``); each video shows one
object of that colour (random shape, size, background, start) moving that way. (Colour, not
shape: the shipped model names colours without error but shapes only 82% of the time on single
frames, and much worse on mean-pooled frames.) Written in the
folder-per-class layout, ``OUT/train/<class>/*.mp4`` and ``OUT/test/<class>/*.mp4``, with
``OUT/class_names.txt`` (prompt names the synthetic model's captions use) and
``OUT/templates.txt``. Deterministic for a seed. Opposite directions have the same frames in
reverse order on average, so order-blind pooling (``mean``) confuses them; that is the point.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from vidclip.core.errors import ConfigError
from vidclip.core.fileio import atomic_write_text
from vidclip.synthetic.captions import DIRECTION_WORDS
from vidclip.synthetic.world import DIRECTIONS, SynthConfig, random_spec, render_clip, write_mp4

DEFAULT_COLORS = ("red", "blue")
DEFAULT_DIRECTIONS = ("left", "right", "up", "down")
#: Templates in the synthetic captions' own phrasing (the shipped model knows no other).
SYNTH_TEMPLATES = ("a {}", "{}", "a video of a {}")


def class_name(color: str, direction: str) -> str:
    """``red_moving_up_left`` for ("red", "up-left"): a class's folder and name."""
    return f"{color}_moving_{direction.replace('-', '_')}"


def make_synthetic_actions(out: str | os.PathLike, *, train_per_class: int = 16, test_per_class: int = 8,
                           colors=DEFAULT_COLORS, directions=DEFAULT_DIRECTIONS, seed: int = 0,
                           size: int = 64, num_frames: int = 8) -> dict:
    """Write the set to ``out`` (built in a temporary sibling, then renamed); returns a summary."""
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out}: already exists; remove it or choose another folder")
    cfg = SynthConfig(num_videos=1, seed=seed, size=size, num_frames=num_frames, crf=20)
    rng = np.random.default_rng(seed)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    classes = [class_name(c, d) for c in colors for d in directions]
    try:
        for split, n in (("train", train_per_class), ("test", test_per_class)):
            for color in colors:
                for d in directions:
                    folder = tmp / split / class_name(color, d)
                    folder.mkdir(parents=True)
                    for i in range(n):
                        spec = None
                        while spec is None or spec.color != color:  # random_spec draws every attribute
                            spec = random_spec(rng, cfg, direction=d)
                        write_mp4(render_clip(spec, cfg), folder / f"{split}_{i:03d}.mp4", cfg.fps, cfg.crf)
        # The prompt says the motion with the captions' first phrase ("to the left", "up").
        names = "".join(f"{class_name(c, d)}\t{c} object moves {DIRECTION_WORDS[d][0]}\n"
                        for c in colors for d in directions)
        atomic_write_text(tmp / "class_names.txt", names)
        atomic_write_text(tmp / "templates.txt", "".join(t + "\n" for t in SYNTH_TEMPLATES))
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"root": str(out), "classes": classes, "train_per_class": train_per_class,
            "test_per_class": test_per_class}


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m vidclip.synthetic.actions",
                                description="Write a synthetic folder-per-class action set (colour x motion direction).")
    p.add_argument("out")
    p.add_argument("--train", type=int, default=16, help="training videos per class (default: %(default)s)")
    p.add_argument("--test", type=int, default=8, help="test videos per class (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--diagonal", action="store_true", help="8 directions instead of 4")
    ns = p.parse_args(argv)
    dirs = tuple(DIRECTIONS) if ns.diagonal else DEFAULT_DIRECTIONS
    s = make_synthetic_actions(ns.out, train_per_class=ns.train, test_per_class=ns.test, seed=ns.seed,
                               directions=dirs)
    print(f"wrote {len(s['classes'])} classes ({ns.train} train, {ns.test} test videos each) to {s['root']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
