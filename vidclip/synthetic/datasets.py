"""Datasets of the synthetic world in the MSR-VTT layout: ``vidclip synth``.

Each clip gets several paraphrased captions that name the object and its motion
(:func:`vidclip.synthetic.captions.video_captions`).

The *test* split is made of time-reversed twins: for every test clip there is a second
test clip holding exactly the same frames in reverse order, whose captions state the
opposite motion (left <-> right, up <-> down, up-left <-> down-right ...).  A model that
pools frames without regard to order (mean pooling) gives both twins the same embedding
and so cannot do better than chance between them; a temporal model can.  Train clips are
independent random specs with balanced directions, or, with ``train_twins=True``, twin
pairs as well, which is what teaches a contrastive model the direction of motion.

``make_synthetic_dataset`` writes the layout the MSR-VTT reader
(:func:`vidclip.data.datasets.load_dataset` with ``kind="msrvtt"``) reads unchanged::

    OUT/
      videos/videoN.mp4            h264 yuv420p, ``size`` x ``size``, ``num_frames`` at ``fps``
      MSRVTT_data.json             {"info", "videos": [...], "sentences": [...]} (official keys)
      MSRVTT_train.9k.csv          column ``video_id``: the train videos
      MSRVTT_JSFUSION_test.csv     key,vid_key,video_id,sentence: one caption per test video
      synth_meta.json              config, and per video: split, spec, motion, twin, captions

Output is deterministic for a seed: byte-identical json files and identical rendered frames.
Decoded frames are identical with ``crf=0`` (lossless); at the default crf the x264 build that
PyAV wheels ship is not bit-reproducible (two encodes of the same frames can differ by a few
grey levels). Written atomically (built in a temporary sibling folder, then renamed into place).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vidclip.core.errors import ConfigError, DatasetError
from vidclip.synthetic.captions import video_captions
from vidclip.synthetic.world import (
    SHAPES,
    ClipSpec,
    SynthConfig,
    random_spec,
    render_clip,
    write_mp4,
)
from vidclip.video.provenance import SYNTH_META_FILE

#: SynthConfig is part of this module's interface: make_synthetic_dataset(out, SynthConfig(...)).
__all__ = ["META_VERSION", "SynthConfig", "make_synthetic_dataset", "load_synth_meta"]

META_VERSION = 1

# ----------------------------------------------------------------------------- plan


def _plan(cfg: SynthConfig) -> list[dict[str, Any]]:
    """Specs, splits, twins and captions of every video, drawn from ``cfg.seed`` alone."""
    rng = np.random.default_rng(cfg.seed)
    num_train, num_test = cfg.split_counts()
    dirs = cfg.directions
    # Balanced directions: each direction appears (almost) equally often in train and in
    # the test originals, so the train set always has both of every opposite pair.
    train_dirs = [dirs[i % len(dirs)] for i in range(num_train)]
    rng.shuffle(train_dirs)
    test_dirs = [dirs[i % len(dirs)] for i in range(num_test // 2)]
    rng.shuffle(test_dirs)

    plan: list[dict[str, Any]] = []
    if cfg.train_twins:
        # Each random clip is followed by its time-reversed twin (an odd count ends with one
        # single clip). Independent clips almost never put two clips that differ only in the
        # direction of motion into one training batch, so a contrastive loss is minimised by the
        # object's attributes alone and order-aware modules never have to learn direction.
        for k in range(num_train // 2):
            spec = random_spec(rng, cfg, train_dirs[k])
            a, b = f"video{2 * k}", f"video{2 * k + 1}"
            plan.append({"video_id": a, "split": "train", "spec": spec, "twin": b})
            plan.append({"video_id": b, "split": "train", "spec": spec.twin(), "twin": a})
        if num_train % 2:
            spec = random_spec(rng, cfg, train_dirs[-1])
            plan.append({"video_id": f"video{num_train - 1}", "split": "train", "spec": spec, "twin": None})
    else:
        for i, d in enumerate(train_dirs):
            plan.append(
                {
                    "video_id": f"video{i}",
                    "split": "train",
                    "spec": random_spec(rng, cfg, d),
                    "twin": None,
                }
            )
    # Test pairs differ in (shape, colour, size, motion axis) whenever the world has enough
    # combinations, so that a full caption singles out one pair and only the direction of
    # motion tells the two twins apart.
    used: set[tuple] = set()
    for k, d in enumerate(test_dirs):
        a, b = f"video{num_train + 2 * k}", f"video{num_train + 2 * k + 1}"
        for _ in range(200):
            spec = random_spec(rng, cfg, d)
            key = (spec.shape, spec.color, spec.size, frozenset((d, spec.twin().motion)))
            if key not in used:
                break
        used.add(key)
        plan.append({"video_id": a, "split": "test", "spec": spec, "twin": b})
        plan.append({"video_id": b, "split": "test", "spec": spec.twin(), "twin": a})
    # Captions come from their own stream so that changing captions_per_video leaves the
    # specs (and so the videos) of a seed unchanged.
    cap_rng = np.random.default_rng([cfg.seed, 1])
    for item in plan:
        item["captions"] = video_captions(item["spec"], cfg.captions_per_video, cap_rng)
    return plan


# ----------------------------------------------------------------------------- writing


def _dump_json(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    cfg: SynthConfig | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Render, encode and write a synthetic MSR-VTT-style dataset to ``out_dir``.

    Returns a summary: ``root``, ``videos_dir``, ``data_json``, ``train_csv``, ``test_csv``,
    ``meta_json`` (paths as str), ``num_videos``, ``num_train``, ``num_test``,
    ``num_captions`` and ``seconds`` (wall time).  Raises :class:`DatasetError` if
    ``out_dir`` exists and is not empty, unless ``overwrite=True``.
    """
    cfg = cfg or SynthConfig()
    t0 = time.perf_counter()
    out = Path(out_dir).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DatasetError(
            f"{out}: already exists and is not empty (pass overwrite=True to replace it)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)

    plan = _plan(cfg)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / "videos").mkdir()
        from vidclip.core.progress import progress_iter

        for item in progress_iter(plan, desc="synth videos", unit="video", disable=not progress):
            write_mp4(
                render_clip(item["spec"], cfg),
                tmp / "videos" / f"{item['video_id']}.mp4",
                cfg.fps,
                cfg.crf,
            )

        duration = cfg.num_frames / cfg.fps
        videos, sentences = [], []
        for item in plan:
            vid = item["video_id"]
            videos.append(
                {
                    "category": SHAPES.index(
                        item["spec"].shape
                    ),  # MSR-VTT has 20 genres; we use the shape
                    "url": "",
                    "video_id": vid,
                    "start time": 0.0,
                    "end time": duration,
                    "split": item["split"],
                    "id": int(vid[len("video") :]),
                }
            )
            for cap in item["captions"]:
                sentences.append({"caption": cap, "video_id": vid, "sen_id": len(sentences)})
        info = {
            "description": "vidclip synthetic moving-shapes dataset (MSR-VTT layout)",
            "version": META_VERSION,
            "seed": cfg.seed,
        }
        _dump_json(
            {"info": info, "videos": videos, "sentences": sentences}, tmp / "MSRVTT_data.json"
        )

        train = [it for it in plan if it["split"] == "train"]
        test = [it for it in plan if it["split"] == "test"]
        _write_csv(tmp / "MSRVTT_train.9k.csv", ["video_id"], [[it["video_id"]] for it in train])
        _write_csv(
            tmp / "MSRVTT_JSFUSION_test.csv",
            ["key", "vid_key", "video_id", "sentence"],
            [
                [
                    f"ret{k}",
                    "msr" + it["video_id"][len("video") :],
                    it["video_id"],
                    it["captions"][0],
                ]
                for k, it in enumerate(test)
            ],
        )
        meta = {
            "version": META_VERSION,
            "config": dataclasses.asdict(cfg),
            "videos": [
                {
                    "video_id": it["video_id"],
                    "split": it["split"],
                    "motion": it["spec"].motion,
                    "twin": it["twin"],
                    "spec": it["spec"].to_dict(),
                    "captions": it["captions"],
                }
                for it in plan
            ],
        }
        _dump_json(meta, tmp / SYNTH_META_FILE)

        # Commit: move any old tree aside, rename the finished one into place, drop the old.
        old = None
        if out.exists():
            if out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.replace(out, old / "x")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    return {
        "root": str(out),
        "videos_dir": str(out / "videos"),
        "data_json": str(out / "MSRVTT_data.json"),
        "train_csv": str(out / "MSRVTT_train.9k.csv"),
        "test_csv": str(out / "MSRVTT_JSFUSION_test.csv"),
        "meta_json": str(out / SYNTH_META_FILE),
        "num_videos": len(plan),
        "num_train": len(train),
        "num_test": len(test),
        "num_captions": len(sentences),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def load_synth_meta(root: str | os.PathLike) -> dict[str, Any]:
    """Read ``root/synth_meta.json``; each video entry's ``spec`` is returned as a
    :class:`ClipSpec` and ``config`` as a :class:`SynthConfig` (so frames can be re-rendered)."""
    path = Path(root) / SYNTH_META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found (is {root} a synthetic dataset?)") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON: {e}") from None
    if meta.get("version") != META_VERSION:
        raise DatasetError(f"{path}: version {meta.get('version')!r}, expected {META_VERSION}")
    try:
        meta["config"] = SynthConfig(**meta["config"])
        for i, v in enumerate(meta["videos"]):
            try:
                v["spec"] = ClipSpec.from_dict(v["spec"])
            except (KeyError, TypeError, ConfigError) as e:
                raise DatasetError(f"{path}: videos[{i}].spec: {e}") from None
    except (KeyError, TypeError, ConfigError) as e:
        raise DatasetError(f"{path}: malformed: {e}") from None
    return meta
