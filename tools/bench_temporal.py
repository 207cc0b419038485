"""Temporal-modelling benchmark: can a module tell a clip from its time-reversed twin?

With the shipped synthetic-domain CLIP (vidclip/assets/vidclip-synth.safetensors) frozen, each
temporal module is trained by the project's trainer (``vidclip.train.trainer.train`` with
``configs/synth_<module>.yaml``) on a ``vidclip synth`` set, then evaluated (text -> video, the
project's ``retrieval_metrics``) on its test split. That split is made of twin pairs: two clips
with exactly the same frames in opposite order, whose full captions differ only in the direction
of motion, and different pairs differ in shape / colour / size / motion axis. So:

* order-blind pooling (``mean``, ``query_scoring``; ``xpool`` too: attention pooling is a
  weighted *set* function) sees the same set of frames in both twins, so for any caption the
  two score (nearly) the same: t2v R@1 can be at most ~50%. (Nearly: each twin is h264-encoded
  on its own, so their decoded frames differ by a little compression noise, which decides
  between them at random.)
* order-aware modules (``seq_transformer``, ``tdb``, ``ted``) can reach ~100%.

The training clips come in twin pairs as well (``vidclip synth --train-twins``): with
independent random clips a contrastive batch almost never holds two clips that differ only in
direction, and order-aware modules then do not learn direction at all (``--independent-train``
runs that baseline).

Besides R@1/5/10 the table gives **twin accuracy**: the share of test captions scoring their own
clip strictly above its twin (50% is chance, where order-blind modules sit), and results.json
breaks the failures down by what the wrongly top-ranked clip gets wrong (motion alone = the twin won;
shape, colour, ... = the frozen CLIP misread the object).

    python tools/bench_temporal.py --out .bench/temporal                     # every module
    python tools/bench_temporal.py --out .bench/temporal --modules seq_transformer,tdb

The dataset, the frame-feature cache and every run live under ``--out`` (reused by a second
call: the dataset and cached features are kept, runs are redone unless ``--keep-runs``).
Results: ``{out}/results.json`` (written atomically) and a markdown table on stdout (the one in
BENCHMARKS.md). Exit status 1 when an order-aware module stays below 90% t2v R@1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vidclip.core.errors import ConfigError  # noqa: E402

ASSET = REPO / "vidclip" / "assets" / "vidclip-synth.safetensors"
ALL_MODULES = ("mean", "query_scoring", "xpool", "seq_transformer", "tdb", "ted")
ORDER_AWARE = ("seq_transformer", "tdb", "ted")


def make_data(root: Path, videos: int, seed: int, test_fraction: float, train_twins: bool, progress: bool) -> dict:
    """The benchmark's ``vidclip synth`` dataset (made once; checked against the requested settings).

    ``train_twins``: training clips come in time-reversed twin pairs too (``vidclip synth
    --train-twins``). Without them, two clips of one training batch almost never differ in the
    direction of motion alone, so the contrastive loss never asks a module for direction.
    """
    from vidclip.synthetic.datasets import SynthConfig, load_synth_meta, make_synthetic_dataset

    want = SynthConfig(num_videos=videos, seed=seed, test_fraction=test_fraction, train_twins=train_twins)
    if not (root / "synth_meta.json").is_file():
        make_synthetic_dataset(root, want, progress=progress)
    meta = load_synth_meta(root)
    if meta["config"] != want:
        raise ConfigError(f"{root}: holds a synth dataset with other settings ({meta['config']}); "
                          f"use another --out or delete it")
    return meta


def check_twin_sampling(clip_frames: int, encode_frames: int, num_frames: int) -> None:
    """Refuse frame counts whose uniform sampling picks different frames in a clip and its twin.

    12 of 24 frames are frames 1, 3, ..., 23 of a clip but 0, 2, ..., 22 of its reversed twin: the
    twin's frames sit half a step further back along its motion, which even mean pooling learns to
    read (twin accuracy ~80% for ``mean`` in such a run). 8 of 24 (frames 1, 4, ..., 22) is the
    same set both ways.
    """
    from vidclip.features.store import uniform_positions

    stored = uniform_positions(clip_frames, encode_frames)
    used = stored[uniform_positions(encode_frames, num_frames)] if num_frames < encode_frames else stored
    if set((clip_frames - 1 - used).tolist()) != set(used.tolist()):
        raise ConfigError(f"data.encode_frames={encode_frames}, data.num_frames={num_frames}: uniform sampling of "
                          f"{clip_frames}-frame clips picks frames {used.tolist()}, not the same set in a clip and "
                          f"its time-reversed twin, so order-blind pooling could tell them apart; pick counts "
                          f"whose frame set is symmetric (e.g. 8 of 24)")


def error_breakdown(sim: np.ndarray, caption_video: np.ndarray, keys: list[str], spec_of: dict) -> dict[str, int]:
    """What the wrongly ranked-first clip gets wrong, per failed caption: ``{"shape+motion": 3, ...}``.

    Tells a temporal failure (``motion`` alone: the twin won) from a recognition failure of the
    frozen CLIP (shape, colour, size, background).
    """
    out: dict[str, int] = {}
    top = sim.argmax(1)
    for want, got in zip(caption_video, top):
        if want == got:
            continue
        a, b = spec_of[keys[want]], spec_of[keys[got]]
        diff = [k for k in ("shape", "color", "size", "background") if getattr(a, k) != getattr(b, k)]
        diff += ["motion"] if a.motion != b.motion else []
        label = "+".join(diff) or "same attributes"
        out[label] = out.get(label, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def twin_accuracy(sim: np.ndarray, caption_video: np.ndarray, keys: list[str], twin_of: dict[str, str]) -> float:
    """Share of captions whose own clip scores strictly above its time-reversed twin.

    Args:
        sim: float [C, V] caption x video similarities; caption_video: int [C] own column.
        keys: the V video ids (column order); twin_of: video id -> its twin's id.
    """
    col = {k: i for i, k in enumerate(keys)}
    twin_col = np.array([col[twin_of[keys[v]]] for v in caption_video])
    rows = np.arange(len(caption_video))
    return float(np.mean(sim[rows, caption_video] > sim[rows, twin_col]))


def run_module(name: str, *, root: Path, out: Path, clip, weights: Path, meta: dict, progress: bool,
               overrides: list[str], keep_runs: bool) -> dict:
    """Train ``configs/synth_<name>.yaml`` on the benchmark data, evaluate on its test split."""
    from vidclip.data.datasets import load_dataset
    from vidclip.eval.evaluate import FeatureSource, PixelSource, encode_captions, similarity_matrix
    from vidclip.eval.metrics import retrieval_metrics
    from vidclip.features.store import FeatureStore
    from vidclip.models.checkpoint import load_checkpoint
    from vidclip.models.temporal.base import trainable_parameters
    from vidclip.train.config import load_config
    from vidclip.train.trainer import prepare_features, train

    cfg = load_config(REPO / "configs" / f"synth_{name}.yaml", [
        f"data.root={root}", f"data.cache_dir={out / 'cache' / clip.identity.weights_digest}", f"run_dir={out / 'runs' / name}",
        f"model.pretrained={weights}", *overrides])
    check_twin_sampling(meta["config"].num_frames, cfg.data.encode_frames, cfg.data.num_frames)
    run_dir = cfg.resolved_run_dir
    if run_dir.exists() and not keep_runs:
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    if not (run_dir / "state.pt").is_file():
        train(cfg, clip=clip, progress=progress)
    train_seconds = time.perf_counter() - t0

    ck = load_checkpoint(run_dir, clip=clip)
    temporal, text_tower = ck.model.temporal, ck.model.text_tower
    test = load_dataset(cfg.data.kind, cfg.data.root, cfg.data.test_split)
    keys = test.video_ids
    if getattr(temporal, "needs_pixels", False):
        source = PixelSource({v.video_id: str(v.path) for v in test.videos}, cfg.data.num_frames,
                             clip.image_size, cfg.data.backend)
    else:
        prepared = prepare_features(cfg, clip, [test], progress=progress)
        root_dir, failures = prepared[0], prepared[-1]  # (root, [missing,] failures)
        if failures:
            raise ConfigError(f"{len(failures)} test videos failed to encode: {failures[:3]}")
        source = FeatureSource(FeatureStore(root_dir), cfg.data.num_frames)
    t1 = time.perf_counter()
    text = encode_captions(test.captions, clip, text_tower)
    sim = similarity_matrix(temporal, text, source, keys, device=clip.device, batch_videos=64)
    metrics = retrieval_metrics(sim, test.caption_video)
    twin_of = {v["video_id"]: v["twin"] for v in meta["videos"] if v["twin"]}
    spec_of = {v["video_id"]: v["spec"] for v in meta["videos"]}
    text_params = trainable_parameters(text_tower) if text_tower is not None else 0
    return {
        "module": name,
        "temporal_params": trainable_parameters(temporal),
        "text_tower_params": text_params,
        "t2v": metrics["t2v"],
        "v2t": metrics["v2t"],
        "twin_accuracy": twin_accuracy(sim, test.caption_video, keys, twin_of),
        "errors": error_breakdown(sim, test.caption_video, keys, spec_of),
        "test_videos": len(keys),
        "test_captions": len(test.captions),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - t1, 1),
        "best_step": ck.meta.get("step"),
        "config": str(Path("configs") / f"synth_{name}.yaml"),
        "overrides": overrides,
    }


def markdown(results: list[dict]) -> str:
    lines = ["| module | trainable params (module + text tower) | t2v R@1 | R@5 | R@10 | twin acc. | train time |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        t = r["t2v"]
        lines.append(f"| {r['module']} | {r['temporal_params']:,} + {r['text_tower_params']:,} | {t['R@1']:.1f} | "
                     f"{t['R@5']:.1f} | {t['R@10']:.1f} | {100 * r['twin_accuracy']:.1f}% | "
                     f"{r['train_seconds'] / 60:.1f} min |")
    return "\n".join(lines)


def _atomic_json(path: Path, obj) -> None:
    from vidclip.core.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".bench/temporal", help="work folder (default: %(default)s)")
    p.add_argument("--modules", default=",".join(ALL_MODULES), help="comma separated (default: all)")
    p.add_argument("--videos", type=int, default=1400, help="synth clips in all (default: %(default)s)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of clips in the twin test split (default: %(default)s)")
    p.add_argument("--independent-train", action="store_true",
                   help="train on independent clips instead of time-reversed twin pairs (the baseline that "
                        "shows why the pairs are needed)")
    p.add_argument("--seed", type=int, default=0, help="synth seed (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu | auto (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--weights", default=str(ASSET),
                   help="vidclip-synth checkpoint to freeze (default: the shipped one)")
    p.add_argument("--keep-runs", action="store_true", help="reuse finished runs instead of retraining")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every module")
    ns = p.parse_args(argv)

    from vidclip.models.clip.load import load_clip

    if ns.threads:
        torch.set_num_threads(ns.threads)
    modules = [m.strip() for m in ns.modules.split(",") if m.strip()]
    unknown = [m for m in modules if not (REPO / "configs" / f"synth_{m}.yaml").is_file()]
    if unknown:
        raise SystemExit(f"--modules: no configs/synth_<module>.yaml for {unknown}")
    out = Path(ns.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    train_twins = not ns.independent_train
    root = out / ("data" if train_twins else "data-independent")
    meta = make_data(root, ns.videos, ns.seed, ns.test_fraction, train_twins, progress=not ns.quiet)
    n_train = sum(v["split"] == "train" for v in meta["videos"])
    n_test = sum(v["split"] == "test" for v in meta["videos"])
    weights = Path(ns.weights).resolve()
    clip = load_clip("vidclip-synth", str(weights), device="cuda" if ns.device == "auto" and torch.cuda.is_available()
                     else "cpu")
    overrides = list(ns.overrides) + [f"device={'cpu' if ns.device == 'cpu' else 'auto'}"]

    results_path = out / "results.json"
    old = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results = {r["module"]: r for r in old.get("results", [])}
    for name in modules:
        print(f"== {name}", file=sys.stderr, flush=True)
        results[name] = run_module(name, root=root, out=out, clip=clip, weights=weights, meta=meta, progress=not ns.quiet,
                                   overrides=overrides, keep_runs=ns.keep_runs)
        r = results[name]
        print(f"   {name}: t2v R@1 {r['t2v']['R@1']:.1f}  twin acc {100 * r['twin_accuracy']:.1f}%  "
              f"train {r['train_seconds']:.0f} s  errors {r['errors']}", file=sys.stderr, flush=True)
        ordered = [results[m] for m in ALL_MODULES if m in results]
        _atomic_json(results_path, {
            "command": "python tools/bench_temporal.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "data": {"root": str(root), "train_videos": n_train, "test_videos": n_test, "seed": ns.seed,
                     "train_twins": train_twins},
            "clip": clip.identity.to_dict(),
            "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "platform": platform.platform(), "torch": torch.__version__,
                        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
            "results": ordered,
        })
    ordered = [results[m] for m in ALL_MODULES if m in results]
    print(markdown(ordered))
    missed = [r["module"] for r in ordered if r["module"] in ORDER_AWARE and r["t2v"]["R@1"] < 90]
    if missed:
        print(f"order-aware modules below 90% t2v R@1: {missed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
