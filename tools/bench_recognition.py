"""Benchmark: zero-shot vs few-shot video classification on a synthetic action set.

Classes: object colour x motion direction (``red_moving_left``, ...: 2 x 4 = 8 classes), from
the synthetic world, with held-out test videos; features from the shipped ``vidclip-synth`` CLIP,
pooled by ``mean`` and, with ``--temporal CKPT``, also by a ``vidclip train`` checkpoint's
order-aware module (the same stored frame features; its zero-shot text weights come from the
checkpoint's text tower when it was fine-tuned). For K in 1, 2, 4, 8, 16 shots (3 shot draws
each), every method's test top-1 and fit time (hyper-parameter search included); the search uses
a split carved from the K shots only. Then a smoke run of the real-data path on the labelled
clips of ../shared/videos.

    nice python tools/bench_recognition.py [--out DIR] [--json FILE] [--temporal CKPT]

About two minutes on 2 CPU cores, plus about one per checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from vidclip.core.fileio import atomic_write_text
from vidclip.features.pooling import Pooler
from vidclip.models.clip.load import load_clip
from vidclip.recognition.datasets import read_class_folders, read_class_names, sample_shots
from vidclip.recognition.fewshot import METHODS
from vidclip.recognition.run import (
    Featurizer,
    classification_metrics,
    fit_few_shot,
    zero_shot_classifier,
)
from vidclip.recognition.zeroshot import read_templates
from vidclip.synthetic.actions import make_synthetic_actions
from vidclip.video.sample import SamplerConfig

SHOTS = (1, 2, 4, 8, 16)
SEEDS = (0, 1, 2)
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "videos"


def labelled(feats: Featurizer, videos, desc):
    F, ok = feats.features(videos.paths, desc)
    return F, torch.tensor(videos.labels)[torch.from_numpy(ok)]


def synthetic(work: Path, clip, frames: int, pooler: Pooler, methods=METHODS) -> dict:
    root = work / "actions"
    t0 = time.perf_counter()
    if not root.exists():
        make_synthetic_actions(root, train_per_class=16, test_per_class=8, seed=0)
    feats = Featurizer(clip, work / "features", SamplerConfig("uniform", num_frames=frames), pooler,
                       workers=0, progress=False)  # one store: a second pooler re-pools, decodes nothing
    train, test = read_class_folders(root / "train"), read_class_folders(root / "test")
    Ftr, ytr = labelled(feats, train, "train")
    Fte, yte = labelled(feats, test, "test")
    prep = time.perf_counter() - t0
    names = read_class_names(root / "class_names.txt")
    base = zero_shot_classifier(clip, train.classes, templates=read_templates(root / "templates.txt"), names=names,
                                temporal=pooler.spec, text_tower=pooler.text_tower)
    zs = classification_metrics(base.logits(Fte), yte, base.classes)
    rows = []
    for k in SHOTS:
        for method in methods:
            accs, secs, chosen = [], [], []
            for seed in SEEDS:
                shots = sample_shots(train, k, seed)
                index = {p: i for i, p in enumerate(train.paths)}
                idx = torch.tensor([index[p] for p in shots.paths])
                t = time.perf_counter()
                clf = fit_few_shot(base, method, Ftr[idx], ytr[idx], shots=k, seed=seed)
                secs.append(time.perf_counter() - t)
                accs.append(classification_metrics(clf.logits(Fte), yte, base.classes)["top1"])
                chosen.append(clf.params)
            rows.append({"shots": k, "method": method, "top1": statistics.mean(accs), "top1_per_seed": accs,
                         "fit_s": statistics.mean(secs), "params": chosen})
            print(f"  K={k:2d} {method:7s} top-1 {100 * statistics.mean(accs):5.1f}%  fit {statistics.mean(secs):7.3f} s",
                  flush=True)
    return {"temporal": pooler.spec, "classes": train.classes, "train_videos": len(ytr), "test_videos": len(yte),
            "prepare_s": prep,
            "zero_shot": {k: zs[k] for k in ("top1", "top5", "mean_class_accuracy")}, "rows": rows,
            "zero_shot_confusion": zs["confusion"]}


def shared_smoke(work: Path, clip, frames: int) -> dict | None:
    manifest = SHARED / "MANIFEST.tsv"
    if not manifest.is_file():
        return None
    items = []
    with open(manifest, encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            label = row.get("caption or label", "")
            if "class" in label or "action" in label:
                items.append((str(SHARED / row["file"]), label.split('"')[1]))
    classes = sorted({lab for _, lab in items})
    feats = Featurizer(clip, work / "shared-features", SamplerConfig("uniform", num_frames=frames),
                       Pooler.create("mean", clip), workers=0, progress=False)
    F, ok = feats.features([p for p, _ in items], "shared")
    y = torch.tensor([classes.index(lab) for (_, lab), g in zip(items, ok) if g])
    base = zero_shot_classifier(clip, classes)
    m = classification_metrics(base.logits(F), y, classes)
    return {"videos": [Path(p).name for p, _ in items], "classes": classes, "scored": int(len(y)),
            "failed": [f.to_dict() for f in feats.failures], "top1": m["top1"],
            "note": "smoke test of the real-data path only: vidclip-synth knows only the synthetic world, "
                    "so this accuracy means nothing"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="work folder (default: a temporary one)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--temporal", action="append", default=[], metavar="CKPT",
                   help="also pool by this `vidclip train` checkpoint / run dir (repeatable)")
    p.add_argument("--no-mean", action="store_true", help="only the --temporal checkpoints (skip mean pooling)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated few-shot methods (default: all)")
    ns = p.parse_args(argv)
    torch.set_num_threads(2)
    work = Path(ns.out) if ns.out else Path(tempfile.mkdtemp(prefix="bench-recognition-"))
    clip = load_clip("vidclip-synth", device="cpu")
    res = {}
    methods = [m for m in ns.methods.split(",") if m]
    for temporal in ([] if ns.no_mean else ["mean"]) + ns.temporal:
        pooler = Pooler.create(temporal, clip)
        label = pooler.spec.get("module", "mean")
        print(f"synthetic action set (colour x direction, 8 classes, 16 train / 8 test per class), vidclip-synth, "
              f"{label} ({temporal}), {ns.frames} frames; work dir {work}", flush=True)
        out = res["synthetic" if temporal == "mean" else f"synthetic {temporal}"] = synthetic(work, clip, ns.frames,
                                                                                                pooler, methods)
        zs = out["zero_shot"]
        print(f"zero-shot: top-1 {100 * zs['top1']:.1f}%, top-5 {100 * zs['top5']:.1f}%")
        print("| method | " + " | ".join(f"K={k}" for k in SHOTS) + " | fit s (K=16) |")
        print("|---|" + "---:|" * (len(SHOTS) + 1))
        print("| zero-shot | " + " | ".join(f"{100 * zs['top1']:.1f}" for _ in SHOTS) + " | 0 |")
        for method in methods:
            rows = {r["shots"]: r for r in out["rows"] if r["method"] == method}
            print(f"| {method} | " + " | ".join(f"{100 * rows[k]['top1']:.1f}" for k in SHOTS)
                  + f" | {rows[16]['fit_s']:.3f} |")
    smoke = shared_smoke(work, clip, ns.frames)
    res["shared_smoke"] = smoke
    if smoke is None:
        print("../shared/videos absent: real-data smoke test skipped")
    else:
        print(f"real clips with action labels ({', '.join(smoke['videos'])}): scored {smoke['scored']}, failed "
              f"{len(smoke['failed'])}, top-1 {100 * smoke['top1']:.0f}% -- {smoke['note']}")
    if ns.json:
        atomic_write_text(ns.json, json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
