"""Tiny MSR-VTT-layout datasets with pre-written frame features, for train/eval tests.

No decoding happens: the feature store is written directly with FeatureWriter (the video files
are empty placeholders the dataset reader only checks for existence), so tests exercise the
training and evaluation logic in seconds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

COLORS = ("red", "green", "blue")
DIRECTIONS = ("left", "right", "up", "down")


def make_feature_dataset(root: Path, model_identity: dict, embed_dim: int, *, num_train: int = 24,
                         num_test: int = 8, captions_per_video: int = 2, seed: int = 0) -> dict:
    """Write ``root``: MSR-VTT files, empty videos, and a feature store at ``root/features``.

    Video ``i`` has a colour and a direction; its frames are ``colour prototype + t/T *
    direction prototype + noise`` (direction lives in the frame *order*), its captions name both.
    Returns {"root", "features", "train_ids", "test_ids", "labels"}.
    """
    from vidclip.features.store import FeatureWriter

    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    color_proto = rng.standard_normal((len(COLORS), embed_dim))
    dir_proto = rng.standard_normal((len(DIRECTIONS), embed_dim))
    videos, sentences, labels = [], [], {}
    train_ids = [f"video{i}" for i in range(num_train)]
    test_ids = [f"video{num_train + i}" for i in range(num_test)]
    writer = FeatureWriter(root / "features", model_identity, {"name": "uniform", "num_frames": 8}, shard_size=10)
    for n, vid in enumerate(train_ids + test_ids):
        color, direction = COLORS[n % len(COLORS)], DIRECTIONS[(n // len(COLORS)) % len(DIRECTIONS)]
        labels[vid] = (color, direction)
        split = "train" if vid in train_ids else "test"
        videos.append({"video_id": vid, "id": n, "split": split, "category": 0, "url": "",
                       "start time": 0.0, "end time": 1.0})
        for k in range(captions_per_video):
            text = [f"a {color} ball moves {direction}", f"{color} object going {direction}"][k % 2]
            sentences.append({"caption": text, "video_id": vid, "sen_id": len(sentences)})
        (root / "videos" / f"{vid}.mp4").write_bytes(b"")
        t = int(rng.integers(3, 9))
        ramp = np.linspace(0, 1, t)[:, None]
        emb = color_proto[COLORS.index(color)] + ramp * dir_proto[DIRECTIONS.index(direction)]
        emb = emb + 0.1 * rng.standard_normal((t, embed_dim))
        writer.add(vid, str(root / "videos" / f"{vid}.mp4"), emb, np.arange(t), np.arange(t) / 2.0,
                   duration=t / 2.0, fps=2.0)
    writer.close()
    (root / "MSRVTT_data.json").write_text(json.dumps({"info": {}, "videos": videos, "sentences": sentences}))
    with open(root / "MSRVTT_train.9k.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id"])
        w.writerows([[v] for v in train_ids])
    with open(root / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, vid in enumerate(test_ids):
            color, direction = labels[vid]
            w.writerow([f"ret{i}", f"msr{vid[5:]}", vid, f"a {color} ball moves {direction}"])
    return {"root": root, "features": root / "features", "train_ids": train_ids, "test_ids": test_ids,
            "labels": labels}


def run_train(cfg, clip, **kw):
    """``vidclip.train.trainer.train(cfg, clip=clip, ...)`` without progress bars or warnings
    (random weights: tests of mechanics warn about them on purpose)."""
    import warnings

    from vidclip.train.trainer import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(cfg, clip=clip, progress=False, **kw)


def tiny_config(data: dict, tmp: Path, *overrides: str):
    """A TrainConfig for the tiny dataset on CPU, then ``overrides`` ("optim.lr=0.1", ...)."""
    from vidclip.train.config import apply_overrides, config_from_dict

    cfg = config_from_dict({
        "name": "tiny", "seed": 0, "run_dir": str(tmp / "run"), "device": "cpu", "log_every": 1,
        "data": {"root": str(data["root"]), "features": str(data["features"]), "cache_dir": str(tmp / "cache"),
                 "num_frames": 6, "encode_frames": 8, "val_fraction": 0.25},  # the store holds 8 per video
        "model": {"clip": "tiny-vit", "pretrained": None, "temporal": "mean", "max_frames": 8},
        "optim": {"batch_size": 6, "epochs": 2, "lr": 1e-2, "warmup": 0.0, "weight_decay": 0.0},
    })
    return apply_overrides(cfg, list(overrides))
