"""Training: configs and overrides, schedule, exact resume, text-tower fine-tuning, checkpoints, CLI.

Runs on a tiny MSR-VTT-layout dataset whose frame features are written directly into a feature
store (tests/train_helpers.py) and the tiny random-init ``tiny-vit`` CLIP: no decoding, seconds
per run. Random weights: these tests check mechanics, never quality.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from train_helpers import COLORS, DIRECTIONS, make_feature_dataset, run_train, tiny_config

from vidclip.core.errors import ConfigError
from vidclip.train.config import (
    TrainConfig,
    apply_overrides,
    config_from_dict,
    dump_config,
    load_config,
)
from vidclip.train.trainer import epoch_order, lr_multiplier

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models: intra-op threads only add contention on the shared 2-core CI box (3x slower).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clip(tiny_clip):
    return tiny_clip


@pytest.fixture(scope="module")
def data(clip, tmp_path_factory):
    root = tmp_path_factory.mktemp("tinyds")
    return make_feature_dataset(root, clip.identity.to_dict(), clip.embed_dim)


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(x["step"], x["loss"]) for x in lines if x["type"] == "train"]


# ----------------------------------------------------------------------------- config


def test_config_file_overrides_and_errors(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  num_frames: 8\nmodel:\n  temporal: seq_transformer\noptim:\n  lr: 1e-4\n")
    cfg = load_config(f, ["optim.batch_size=32", "model.temporal_args.layers=2", "model.pretrained=none",
                          "optim.lr=3e-4", "mixed_precision=bf16"])
    assert cfg.name == "c"  # defaults to the file name
    assert cfg.data.num_frames == 8 and cfg.optim.batch_size == 32 and cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.model.temporal_args == {"layers": 2} and cfg.model.pretrained == "none"  # random, not implied
    assert cfg.mixed_precision == "bf16"
    # the YAML "1e-4" (a string to PyYAML) became a float
    assert isinstance(load_config(f).optim.lr, float)

    with pytest.raises(ConfigError, match=r"unknown key 'optim\.lrr'.*did you mean 'optim\.lr'"):
        apply_overrides(cfg, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"optim\.batch_size: expected an integer, got 'abc'"):
        apply_overrides(cfg, ["optim.batch_size=abc"])
    with pytest.raises(ConfigError, match=r"model\.text_tower must be one of"):
        apply_overrides(cfg, ["model.text_tower=half"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(cfg, ["optim.lr"])
    with pytest.raises(ConfigError, match=r"optim is a section"):
        apply_overrides(cfg, ["optim=3"])
    with pytest.raises(ConfigError, match=r"must be > 0"):
        apply_overrides(cfg, ["optim.batch_size=0"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1\n  epochs: two\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: optim\.epochs: expected an integer"):
        load_config(bad)
    bad.write_text("modle:\n  temporal: mean\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'modle'.*did you mean 'model'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_listed_rules_name_where_and_key():
    from vidclip.core.config import check_listed_rules

    rules = dict(choices={"a.mode": ("x", "y")}, positive={"a.n"}, non_negative={"a.m"})
    for key, ok in (("a.mode", "y"), ("a.n", 1), ("a.m", 0), ("a.free", -5)):
        check_listed_rules(key, ok, "f.yaml", **rules)  # no error
    for key, bad, match in (("a.mode", "z", r"f\.yaml: a\.mode must be one of \['x', 'y'\], got 'z'"),
                            ("a.n", 0, r"f\.yaml: a\.n must be > 0, got 0"),
                            ("a.m", -1, r"f\.yaml: a\.m must be >= 0, got -1")):
        with pytest.raises(ConfigError, match=match):
            check_listed_rules(key, bad, "f.yaml", **rules)


def test_dumped_config_round_trips():
    cfg = apply_overrides(TrainConfig(), ["optim.lr=0.5", "model.temporal_args.heads=4", "data.features=/x"])
    again = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def test_shipped_configs_are_valid():
    from vidclip.models.temporal.registry import list_temporal

    # (configs/pretrain_*.yaml belong to vidclip.train.pretrain and have their own schema)
    files = sorted((REPO / "configs").glob("msrvtt_*.yaml")) + sorted((REPO / "configs").glob("synth_*.yaml"))
    assert any(f.name.startswith("msrvtt_") for f in files) and any(f.name.startswith("synth_") for f in files)
    for f in files:
        cfg = load_config(f)
        assert cfg.model.temporal in list_temporal(), f
        assert cfg.name == f.stem


# ----------------------------------------------------------------------------- schedule / order


def test_lr_schedule_by_hand():
    # 10 steps, 20% warmup = 2 steps: 0.5, 1.0, then cosine over the remaining 8.
    assert lr_multiplier(0, 10, 0.2, "cosine") == pytest.approx(0.5)
    assert lr_multiplier(1, 10, 0.2, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(2, 10, 0.2, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(6, 10, 0.2, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert lr_multiplier(6, 10, 0.2, "linear") == pytest.approx(0.5)
    assert lr_multiplier(9, 10, 0.0, "constant") == 1.0


def test_epoch_order_is_a_seeded_permutation():
    a = epoch_order(10, 3, epoch=1, seed=0)
    assert a.shape == (3, 3) and len(set(a.ravel().tolist())) == 9  # last partial batch dropped
    assert (a == epoch_order(10, 3, epoch=1, seed=0)).all()
    assert not (a == epoch_order(10, 3, epoch=2, seed=0)).all()


def test_epoch_order_keeps_groups_in_one_batch():
    # 11 items in runs of 2: (0,1) (2,3) ... (8,9), then the short run (10) last
    a = epoch_order(11, 4, epoch=3, seed=1, group_size=2)
    assert a.shape == (2, 4) and len(set(a.ravel().tolist())) == 8
    for batch in a:
        assert sorted(batch.tolist()) == sorted({v - v % 2 for v in batch} | {v - v % 2 + 1 for v in batch})
    full = epoch_order(11, 11, epoch=3, seed=1, group_size=2).ravel()
    assert full[-1] == 10 and sorted(full.tolist()) == list(range(11))
    assert not (a == epoch_order(11, 4, epoch=4, seed=1, group_size=2)).all()
    # group_size 1 is the plain permutation (old runs resume unchanged)
    assert (epoch_order(10, 3, 1, 0, group_size=1) == epoch_order(10, 3, 1, 0)).all()


# ----------------------------------------------------------------------------- training runs


def test_train_writes_run_dir_and_checkpoint_loads(data, clip, tmp_path):
    from vidclip.eval.evaluate import FeatureSource, evaluate
    from vidclip.features.store import FeatureStore
    from vidclip.models.checkpoint import load_checkpoint, load_weights

    cfg = tiny_config(data, tmp_path, "model.temporal=seq_transformer")
    res = run_train(cfg, clip)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "last.safetensors", "best.safetensors", "state.pt", "rng-0.pt"):
        assert (run / name).is_file(), name
    assert res.global_step == 6 and res.epoch == 2 and not res.stopped  # 18 train videos // 6 x 2 epochs
    assert load_config(run / "config.yaml") .optim == cfg.optim
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [x for x in lines if x["type"] == "val"]
    assert [v["step"] for v in vals] == [3, 6] and all(0 <= v["t2v"]["R@1"] <= 100 for v in vals)
    assert all(np.isfinite(x["loss"]) for x in lines if x["type"] == "train")
    # best.safetensors = the best validation score, with config + identity in the metadata
    state, meta = load_weights(run / "best.safetensors")
    assert meta["step"] == res.best_step and meta["clip_identity"]["weights_digest"] == clip.identity.weights_digest
    assert any(k.startswith("temporal.") for k in state) and "logit_scale.log_scale" in state
    # the checkpoint rebuilds the model and reproduces the validation metrics it was selected on
    loaded = load_checkpoint(run, clip=clip)
    from vidclip.data.datasets import load_dataset, split_validation

    _, val = split_validation(load_dataset("msrvtt", data["root"], "train"), 0.25, 0)
    src = FeatureSource(FeatureStore(data["features"]), 6)
    again = evaluate(loaded.model.temporal, val.captions, val.caption_video, val.video_ids, src, clip=clip)
    for direction in ("t2v", "v2t"):
        assert again.metrics[direction] == pytest.approx(meta["val"][direction])
    # the run dir is protected from a second fresh start
    with pytest.raises(ConfigError, match="--resume"):
        run_train(cfg, clip)


def test_resume_continues_exactly(data, clip, tmp_path):
    # dropout in seq_transformer makes the RNG state part of what must be restored
    over = ("model.temporal=seq_transformer", "optim.epochs=3", "optim.warmup=0.2", "seed=3")
    full = tiny_config(data, tmp_path / "a", *over)
    run_train(full, clip)
    half = tiny_config(data, tmp_path / "b", *over)
    first = run_train(half, clip, stop_after=4)  # stops mid-epoch 2 (3 steps per epoch)
    assert first.stopped and first.global_step == 4
    # the checkpoint holds only what a safe load reads (tensors, plain values: no numpy arrays)
    rng_path = tmp_path / "b" / "run" / "rng-0.pt"
    for path in (tmp_path / "b" / "run" / "state.pt", rng_path):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path.name
    # an RNG file written the old way (numpy's key as an ndarray) still resumes exactly
    rng = torch.load(rng_path, weights_only=True)
    name, key, *rest = rng["state"]["numpy"]
    rng["state"]["numpy"] = (name, key.numpy().astype(np.uint32), *rest)
    torch.save(rng, rng_path)
    second = run_train(half, clip, resume=True)
    assert not second.stopped and second.global_step == 9
    a, b = train_losses(tmp_path / "a" / "run"), train_losses(tmp_path / "b" / "run")
    assert [s for s, _ in a] == list(range(1, 10)) and [s for s, _ in b] == list(range(1, 10))
    assert [x for _, x in a] == [x for _, x in b]  # bit-identical losses
    from vidclip.models.checkpoint import load_weights

    wa, _ = load_weights(tmp_path / "a" / "run" / "last.safetensors")
    wb, _ = load_weights(tmp_path / "b" / "run" / "last.safetensors")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # resuming with another config is refused, naming the difference
    changed = apply_overrides(half, ["optim.lr=0.5"])
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        run_train(changed, clip, resume=True)


def _touch(path):
    Path(path).write_text("code ran")


class _RunsCode:
    """Unpickling this calls _touch: what a run folder from someone else could hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return _touch, (self.marker,)


@pytest.mark.parametrize("name, what_to_do", [("state.pt", "start a new run"), ("rng-0.pt", "delete it")])
def test_resume_refuses_checkpoint_files_that_would_run_code(data, clip, tmp_path, monkeypatch, name,
                                                             what_to_do):
    cfg = tiny_config(data, tmp_path, "optim.epochs=2")
    run_train(cfg, clip, stop_after=2)
    path, marker = tmp_path / "run" / name, tmp_path / "marker"
    saved = torch.load(path, weights_only=False)  # ours: trusted
    torch.save({**saved, "extra": _RunsCode(str(marker))}, path)

    def build_temporal(*args, **kwargs):
        raise AssertionError("the model was built before the run folder was checked")

    monkeypatch.setattr("vidclip.train.trainer.build_temporal", build_temporal)
    with pytest.raises(ConfigError, match=rf"{name}: refused to load: it asks for [\w.]*_touch.*{what_to_do}"):
        run_train(cfg, clip, resume=True)
    assert not marker.exists()


def test_resume_drops_log_lines_past_the_checkpoint(data, clip, tmp_path):
    cfg = tiny_config(data, tmp_path, "optim.epochs=2", "save_every=2")
    run_train(cfg, clip, stop_after=2)
    log = tmp_path / "run" / "metrics.jsonl"
    # a killed run may have logged steps after its last checkpoint
    with open(log, "a") as f:
        f.write(json.dumps({"type": "train", "step": 3, "loss": 123.0}) + "\n")
    run_train(cfg, clip, resume=True)
    steps = [s for s, _ in train_losses(tmp_path / "run")]
    assert steps == list(range(1, 7))
    assert 123.0 not in [x for _, x in train_losses(tmp_path / "run")]


@pytest.mark.parametrize("name", ["tiny-vit", "hf-tiny"])
def test_text_tower_copy_matches_frozen_tower_and_leaves_it_alone(name):
    from vidclip.models.checkpoint import TextTower
    from vidclip.models.clip.load import load_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = load_clip(name)
    tower = TextTower(frozen)
    texts = ["a red ball moves left", "green object going up"]
    out = tower(frozen.tokenize(texts))
    torch.testing.assert_close(out, frozen.encode_text(texts), atol=1e-5, rtol=1e-5)
    out.sum().backward()
    trainable = [n for n, p in tower.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in tower.parameters() if p.requires_grad)
    assert not any("visual" in n or "vision" in n or "logit_scale" in n for n in trainable)
    assert all(p.grad is None and not p.requires_grad for p in frozen.model.parameters())


def test_finetuned_text_tower_learns_direction_words(data, clip, tmp_path):
    """Frozen random text embeddings cannot tell "left" from "right"; the fine-tuned tower must.

    With mean pooling (no video-side parameters) only the text tower and the logit scale learn,
    so whatever the model gets right about directions was learned by the text side. Score: for
    each colour, does "a red ball moves left" pick the red-left videos over red-right/up/down?
    """
    from vidclip.eval.evaluate import encode_captions
    from vidclip.features.store import FeatureStore
    from vidclip.models.checkpoint import load_checkpoint

    cfg = tiny_config(data, tmp_path, "model.text_tower=finetune", "optim.text_lr=3e-3", "optim.epochs=20",
                      "eval_every=20", "optim.batch_size=9")
    run_train(cfg, clip)
    loaded = load_checkpoint(tmp_path / "run" / "last.safetensors", clip=clip)
    tower = loaded.model.text_tower
    assert tower is not None
    # the vision tower was never copied, so fine-tuning cannot have touched it
    assert not any(n.startswith("visual") for n, _ in tower.net.named_parameters())
    assert all(not p.requires_grad for p in clip.model.parameters())

    store = FeatureStore(data["features"])
    groups: dict = {}
    for vid in data["train_ids"]:
        groups.setdefault(data["labels"][vid], []).append(np.asarray(store.get(vid).emb, np.float32).mean(0))
    proto = {k: np.mean(v, 0) / np.linalg.norm(np.mean(v, 0)) for k, v in groups.items()}

    def direction_accuracy(embed) -> float:
        hits = 0
        for c in COLORS:
            e = torch.nn.functional.normalize(embed([f"a {c} ball moves {d}" for d in DIRECTIONS]), dim=-1).numpy()
            scores = e @ np.stack([proto[(c, d)] for d in DIRECTIONS]).T  # [text dir, video dir]
            hits += int((scores.argmax(1) == np.arange(len(DIRECTIONS))).sum())
        return hits / (len(COLORS) * len(DIRECTIONS))

    tuned = direction_accuracy(lambda t: encode_captions(t, clip, tower))
    frozen = direction_accuracy(lambda t: encode_captions(t, clip))
    assert tuned >= 0.9 and frozen <= 0.5, (tuned, frozen)


def test_bf16_mixed_precision_trains(data, clip, tmp_path):
    cfg = tiny_config(data, tmp_path, "model.temporal=xpool", "mixed_precision=bf16", "optim.epochs=1")
    res = run_train(cfg, clip)
    losses = [x for _, x in train_losses(tmp_path / "run")]
    assert res.global_step == 3 and all(np.isfinite(losses))


def test_segment_datasets_are_refused(clip, tmp_path):
    from vidclip.data.datasets import load_dataset
    from vidclip.features.cache import check_whole_videos

    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "train.jsonl").write_text(json.dumps({"video": "a.mp4", "caption": "x", "start": 1, "end": 3}) + "\n")
    ds = load_dataset("jsonl", tmp_path / "train.jsonl", "train")
    with pytest.raises(ConfigError, match=r"is a segment \(1.0-3.0 s\)"):
        check_whole_videos([ds])


def test_prepare_features_reports_missing_videos_without_encoding(data, clip, tmp_path):
    """What a distributed run checks before starting: missing = not stored and not a known failure."""
    from vidclip.data.datasets import load_dataset
    from vidclip.features.store import FeatureWriter
    from vidclip.train.trainer import prepare_features

    feats = tmp_path / "partial"
    videos = data["root"] / "videos"
    with FeatureWriter(feats, clip.identity.to_dict(), {"name": "uniform", "num_frames": 8}) as w:
        w.add("video0", str(videos / "video0.mp4"), np.zeros((2, clip.embed_dim)), [0, 1], [0.0, 0.5])
        # video2's features came from another file than the one there now (size 999): changed
        w.add("video2", str(videos / "video2.mp4"), np.zeros((2, clip.embed_dim)), [0, 1], [0.0, 0.5],
              source={"size": 999, "mtime_ns": 1, "hash": "0" * 32})
        # a record from before file identities were stored cannot be checked: changed too
        w.add("video3", str(videos / "video3.mp4"), np.zeros((2, clip.embed_dim)), [0, 1], [0.0, 0.5],
              source={})
    (feats / "failures.jsonl").write_text(json.dumps({"key": "video1", "path": "p", "reason": "bad"}) + "\n")
    cfg = tiny_config(data, tmp_path, f"data.features={feats}")
    ds = load_dataset("msrvtt", data["root"], "train")
    root, todo, failures = prepare_features(cfg, clip, [ds], encode=False)
    assert root == feats and failures == []
    assert [k for k, _ in todo] == data["train_ids"][2:]  # video2, video3 changed; video1 failed before


def test_store_sampled_differently_is_refused(data, clip, tmp_path):
    from vidclip.data.datasets import load_dataset
    from vidclip.features.store import FeatureWriter
    from vidclip.train.trainer import prepare_features

    feats = tmp_path / "twelve"
    with FeatureWriter(feats, clip.identity.to_dict(), {"name": "uniform", "num_frames": 12}) as w:
        w.add("video0", "x.mp4", np.zeros((2, clip.embed_dim)), [0, 1], [0.0, 0.5])
    cfg = tiny_config(data, tmp_path, f"data.features={feats}", "data.encode_frames=8")
    ds = load_dataset("msrvtt", data["root"], "train")
    with pytest.raises(ConfigError, match="sampled with uniform 12 frames, not uniform 8; point data.features"):
        prepare_features(cfg, clip, [ds], encode=False)


def test_batch_larger_than_dataset_is_a_clear_error(data, clip, tmp_path):
    cfg = tiny_config(data, tmp_path, "optim.batch_size=64")
    with pytest.raises(ConfigError, match="larger than the 18 training videos"):
        run_train(cfg, clip)


def test_failed_run_leaves_no_empty_run_dir(data, clip, tmp_path):
    """Issue 7: a failed `vidclip train` removed the runs/<name>/ it created when nothing was written."""
    cfg = tiny_config(data, tmp_path, "optim.batch_size=64")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="larger than"):
        run_train(cfg, clip)
    assert not (tmp_path / "run").exists()
    # a folder that was there before is the user's: kept (and anything in it)
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="larger than"):
        run_train(cfg, clip)
    assert (tmp_path / "run").is_dir()


def test_store_from_another_model_is_refused(data, clip, tmp_path):
    cfg = tiny_config(data, tmp_path, "model.clip=hf-tiny")
    with pytest.raises(ConfigError, match="features were encoded with"):
        run_train(cfg, None)


def test_two_processes_train_like_one(data, clip, tmp_path):
    """torchrun/accelerate launch with 2 CPU processes: same global batches, same losses.

    The text tower is fine-tuned too, so gradients cross processes through both the gathered
    text embeddings and the gathered video embeddings."""
    import os
    import subprocess
    import sys

    paths = {}
    for name in ("one", "two"):
        cfg = tiny_config(data, tmp_path / name, "model.temporal=seq_transformer", "model.temporal_args.num_layers=1",
                          "optim.epochs=2", "model.text_tower=finetune", "optim.text_lr=1e-3")
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(dump_config(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    base = [sys.executable, "-m"]
    subprocess.run(base + ["vidclip", "train", str(paths["one"]), "--quiet"], check=True, env=env,
                   capture_output=True, timeout=180)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    two = subprocess.run(base + ["torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), "-m",
                                 "vidclip", "train", str(paths["two"]), "--quiet"],
                         env=env, capture_output=True, text=True, timeout=180)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("done:") == 1  # one summary, from the main process
    one_losses = train_losses(tmp_path / "one" / "run")
    two_losses = train_losses(tmp_path / "two" / "run")
    assert [s for s, _ in one_losses] == [s for s, _ in two_losses] == list(range(1, 7))
    np.testing.assert_allclose([x for _, x in two_losses], [x for _, x in one_losses], rtol=1e-5)
    assert (tmp_path / "two" / "run" / "rng-1.pt").is_file()  # every process saved its RNG


def test_ted_trains_through_the_backbone_from_decoded_frames(clip, tmp_path):
    """needs_pixels modules get decoded frames (prefetched by DataLoader workers), the adapters
    learn, and the frozen backbone does not change."""
    from vidclip.models.checkpoint import load_weights
    from vidclip.models.clip.load import state_dict_digest
    from vidclip.synthetic.datasets import SynthConfig, make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "synth", SynthConfig(num_videos=14, seed=0, size=32, num_frames=6),
                           progress=False)
    digest = state_dict_digest(clip.model)
    cfg = config_from_dict({
        "name": "ted", "run_dir": str(tmp_path / "run"), "device": "cpu", "log_every": 1,
        "data": {"root": str(tmp_path / "synth"), "cache_dir": str(tmp_path / "cache"), "num_frames": 4,
                 "val_fraction": 0.2, "encode_workers": 1},
        "model": {"clip": "tiny-vit", "pretrained": None, "temporal": "ted", "max_frames": 4},
        "optim": {"batch_size": 4, "epochs": 1, "lr": 1e-2, "warmup": 0.0},
    })
    res = run_train(cfg, clip)
    assert res.global_step == 2  # 12 train videos - 2 held out = 10 // 4
    assert not (tmp_path / "cache" / "features").exists()  # pixels: no feature cache
    assert state_dict_digest(clip.model) == digest
    state, _ = load_weights(tmp_path / "run" / "last.safetensors")
    assert any(k.startswith("temporal.adapters.") for k in state)
    assert not any(".visual." in k or k.startswith("temporal.clip") for k in state)  # backbone not saved
    # the adapters' last projections start at zero (identity at init, as M2-CLIP): non-zero now
    fc2 = [v for k, v in state.items() if k.endswith("te_fc2.weight")]
    assert fc2 and any(v.abs().sum() > 0 for v in fc2)


def test_prepare_only_builds_the_caches_that_training_then_reuses(clip, tmp_path, capsys, monkeypatch):
    """Real decoded videos: `--prepare-only` encodes the train+val videos and the captions once;
    training afterwards encodes nothing."""
    import vidclip.encode.pipeline
    from vidclip.cli.main import main
    from vidclip.synthetic.datasets import SynthConfig, make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "synth", SynthConfig(num_videos=14, seed=0, size=32, num_frames=6),
                           progress=False)
    cfg = config_from_dict({
        "name": "prep", "run_dir": str(tmp_path / "run"), "device": "cpu",
        "data": {"root": str(tmp_path / "synth"), "cache_dir": str(tmp_path / "cache"), "num_frames": 4,
                 "encode_frames": 4, "val_fraction": 0.2, "encode_workers": 0},
        "model": {"clip": "tiny-vit", "pretrained": None, "temporal": "mean"},
        "optim": {"batch_size": 4, "epochs": 1},
    })
    f = tmp_path / "prep.yaml"
    f.write_text(dump_config(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", str(f), "--prepare-only", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["encoded"] == 12 and summary["failed"] == []  # 14 videos - 2 test twins
    from vidclip.features.store import FeatureStore

    store = FeatureStore(tmp_path / "cache" / "features")
    assert len(store) == 12 and all(store.get(k).emb.shape[0] == 4 for k in store.keys())
    assert len(list((tmp_path / "cache" / "text").glob("text-*.npy"))) == 2  # train and val captions

    def no_encoding(*a, **k):
        raise AssertionError("training encoded videos although the cache was complete")

    monkeypatch.setattr(vidclip.encode.pipeline, "encode_videos", no_encoding)
    res = run_train(cfg, clip)
    assert res.global_step == 2


# ----------------------------------------------------------------------------- CLI


def test_cli_train_print_config_and_bad_override(data, tmp_path, capsys):
    from vidclip.cli.main import main

    f = tmp_path / "c.yaml"
    f.write_text(dump_config(tiny_config(data, tmp_path)))
    assert main(["train", str(f), "optim.lr=0.25", "--print-config"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["optim"]["lr"] == 0.25
    assert main(["train", str(f), "optim.lrr=1"]) == 2
    assert "unknown key 'optim.lrr'" in capsys.readouterr().err


def test_cli_train_then_eval_checkpoint(data, tmp_path, capsys):
    from vidclip.cli.main import main

    f = tmp_path / "c.yaml"
    f.write_text(dump_config(tiny_config(data, tmp_path, "optim.epochs=1")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", str(f), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["global_step"] == 3 and summary["best_step"] == 3
        out = tmp_path / "eval.json"
        assert main(["eval", str(tmp_path / "run"), "--json", "--dsl", "--no-encode", "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res == json.loads(out.read_text())
    assert res["split"] == "test" and res["num_videos"] == 8 and res["num_captions"] == 8
    assert set(res["results"]) == {"mean"} and set(res["dsl"]) == {"mean"}
    assert "RANDOM" in res["warning"]
