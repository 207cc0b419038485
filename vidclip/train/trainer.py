"""The training loop: cached frame features -> temporal module, symmetric InfoNCE, accelerate.

One call, :func:`train`, runs a whole configured run (``vidclip train CONFIG``):

1. **prepare**: load the training split, carve a validation split out of it (by video,
   ``split_validation``; the test split is never looked at), make sure every video has frame
   features in the feature store (``encode_videos`` for the missing ones; decoding and the
   frozen backbone are paid once) and, with a frozen text tower, embed every caption once
   (cached on disk). Modules that need pixels (``ted``) decode frames per step instead.
2. **loop**: each epoch visits every training video once in a seeded random order, paired with
   one of its captions drawn at random (X-Pool style: one caption per video per epoch keeps a
   video from being its own negative). Batches are *global*: ``optim.batch_size`` pairs are
   split over the processes and the loss gathers negatives from all of them (losses.py), so
   the optimisation does not depend on the number of processes.
3. **select**: every ``eval_every`` epochs, text-to-video metrics on the validation split;
   the best (``select_metric``) weights go to ``best.safetensors``.

Run dir::

    config.yaml          resolved config (what was run)
    metrics.jsonl        one JSON line per logged step / validation
    last.safetensors     weights at the end (and at each checkpoint)
    best.safetensors     weights with the best validation score
    state.pt             optimizer, scheduler, counters, model: what --resume continues from
    rng-<rank>.pt        each process's RNG states at that checkpoint

Resume is exact: the batch order is a pure function of (seed, epoch), RNG states are restored,
so N steps in one go and N/2 + resume + N/2 give the same losses (tests/test_train.py).
Distributed: build the caches once (``vidclip train CONFIG --prepare-only``), then launch
``accelerate launch --num_processes N -m vidclip train CONFIG`` (torchrun works too).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidclip.core.errors import ConfigError
from vidclip.core.fileio import atomic_write_text
from vidclip.features.cache import check_features, check_whole_videos
from vidclip.models.checkpoint import (
    LogitScale,
    RetrievalModel,
    TextTower,
    build_temporal,
    cached_text_embeddings,
)
from vidclip.train.config import TrainConfig, config_to_dict, dump_config
from vidclip.train.model import TrainingModel, atomic_torch_save, save_weights
from vidclip.train.run_state import (
    STATE_FILE,
    append_log_line,
    config_diff,
    load_checkpoint_file,
    load_run_config,
    rng_state,
    set_rng_state,
    truncate_log,
)

__all__ = ["TrainResult", "train", "prepare", "prepare_features", "epoch_order", "lr_multiplier", "select_score",
           "video_batches"]

@dataclass
class TrainResult:
    run_dir: Path
    global_step: int
    epoch: int  # completed epochs
    best_score: float | None
    best_step: int | None
    stopped: bool  # True when stop_after ended the call before the run was complete
    last_val: dict | None
    seconds: float
    is_main: bool = True  # False on the other processes of a distributed run


# ----------------------------------------------------------------------------- pure pieces


def epoch_order(num_items: int, batch_size: int, epoch: int, seed: int, group_size: int = 1) -> np.ndarray:
    """int64 [steps, batch_size]: the epoch's global batches (a seeded permutation, last partial
    batch dropped). A pure function of its arguments, which is what makes resume exact.

    ``group_size > 1`` permutes runs of that many consecutive items instead of single items, so
    a run shares a batch whenever ``group_size`` divides ``batch_size`` (a last, shorter run
    goes at the end of the epoch, where it cannot shift the others across batch boundaries)."""
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    steps = num_items // batch_size
    if group_size <= 1:
        order = rng.permutation(num_items)
    else:
        full = num_items // group_size
        runs = rng.permutation(full)[:, None] * group_size + np.arange(group_size)  # [full, group_size]
        order = np.concatenate([runs.ravel(), np.arange(full * group_size, num_items)])
    return order[: steps * batch_size].reshape(steps, batch_size)


def caption_choice(bounds: list[np.ndarray], epoch: int, seed: int) -> np.ndarray:
    """int64 [V]: for each video, one of its caption indices, drawn per (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch, 0xCA9])
    picks = rng.random(len(bounds))
    return np.array([b[int(p * len(b))] for p, b in zip(picks, bounds)], dtype=np.int64)


def lr_multiplier(step: int, total: int, warmup: float, schedule: str) -> float:
    """LR factor at ``step`` (0-based): linear warmup over ``warmup * total`` steps, then
    cosine / linear decay to 0 at ``total``, or constant."""
    warm = int(round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, total - warm)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def select_score(metrics: dict, select_metric: str) -> float:
    """Model-selection score from validation metrics (higher is better)."""
    t2v = metrics["t2v"]
    if select_metric == "t2v_r1":
        return float(t2v["R@1"])
    return float(t2v["R@1"] + t2v["R@5"] + t2v["R@10"])


def param_groups(model: RetrievalModel, cfg) -> list[dict]:
    """AdamW groups: no weight decay on biases / norms / embeddings / logit scale; the text
    tower gets its own (smaller) learning rate."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        text = name.startswith("text_tower.")
        no_decay = (p.ndim < 2 or "logit_scale" in name or "embedding" in name or "norm" in name
                    or name.endswith(".bias") or "ln_" in name)
        groups.setdefault((text, no_decay), []).append(p)
    out = []
    for (text, no_decay), params in sorted(groups.items()):
        out.append({"params": params, "lr": cfg.text_lr if text else cfg.lr,
                    "weight_decay": 0.0 if no_decay else cfg.weight_decay})
    return out


# ----------------------------------------------------------------------------- prepare


def prepare_features(cfg: TrainConfig, clip, datasets, *, progress: bool = True, encode: bool = True):
    """Open (and, where videos are missing or changed, fill) the feature store of ``cfg``.

    :func:`vidclip.features.cache.check_features` on ``cfg.features_dir`` with the uniform
    sampler of ``data.encode_frames`` frames, then ``encode_videos`` for what it reports missing
    (``encode=False`` only reports). Refuses a store written by another model or sampler;
    re-encodes videos whose file changed since they were encoded (warning once). Returns (store
    root, missing [(key, path)] before encoding, failures of this encode).
    """
    check_whole_videos(datasets)
    videos = [(v.video_id, str(v.path)) for ds in datasets for v in ds.videos]
    found = check_features(cfg.features_dir, clip.identity, videos, encode_frames=cfg.data.encode_frames,
                           for_encoding=encode, elsewhere="point data.features / data.cache_dir elsewhere")
    failures = []
    if found.missing and encode:
        from vidclip.encode.pipeline import encode_videos
        from vidclip.video.sample import SamplerConfig

        if found.changed:
            warnings.warn(f"{found.root}: {len(found.changed)} videos changed since their features were "
                          f"encoded (first: {found.changed[0]}); encoding them again", stacklevel=2)
        report = encode_videos(found.missing, found.root, clip,
                               SamplerConfig("uniform", num_frames=cfg.data.encode_frames),
                               workers=cfg.data.encode_workers, backend=cfg.data.backend, progress=progress)
        failures = report.failed
    return found.root, found.missing, failures


def prepare(cfg: TrainConfig, *, clip=None, progress: bool = True) -> dict:
    """The prepare step alone (``vidclip train CONFIG --prepare-only``): frame features of the
    training and validation videos, and (frozen text tower) the caption embeddings.

    Run it once in a single process before a multi-process run: distributed training refuses
    to start while videos lack features (encoding in one process while the others wait would
    outlast the collective timeouts).
    """
    from vidclip.data.datasets import load_dataset, split_validation

    if clip is None:
        from vidclip.models.clip.load import load_clip

        clip = load_clip(cfg.model.clip, cfg.model.pretrained, device="cuda" if (
            cfg.device != "cpu" and torch.cuda.is_available()) else "cpu")
    full = load_dataset(cfg.data.kind, cfg.data.root, cfg.data.train_split)
    train_ds, val_ds = split_validation(full, cfg.data.val_fraction, cfg.data.val_seed, cfg.data.group_size)
    from vidclip.models.temporal.registry import get_temporal

    cls = get_temporal(cfg.model.temporal)
    summary: dict = {"features": None, "encoded": 0, "failed": []}
    if cls is None or not getattr(cls, "needs_pixels", False):
        root, todo, failures = prepare_features(cfg, clip, [train_ds, val_ds], progress=progress)
        summary.update(features=str(root), encoded=len(todo) - len(failures),
                       failed=[f.to_dict() for f in failures])
    if cfg.model.text_tower == "frozen":
        cache = cfg.resolved_cache_dir / "text"
        cached_text_embeddings(clip, train_ds.captions, cache)
        cached_text_embeddings(clip, val_ds.captions, cache)
        summary["text_cache"] = str(cache)
    return summary


# ----------------------------------------------------------------------------- train


class _Run:
    """State shared by the steps of one train() call (kept out of train() for readability)."""

    def __init__(self, cfg: TrainConfig, accelerator, clip, progress: bool):
        self.cfg = cfg
        self.acc = accelerator
        self.clip = clip
        self.progress = progress
        self.run_dir = cfg.resolved_run_dir
        self.log_path = self.run_dir / "metrics.jsonl"
        self.is_main = accelerator.is_main_process
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        self.device = accelerator.device


def _load_data(run: _Run):
    from vidclip.data.datasets import load_dataset, split_validation

    cfg = run.cfg
    full = load_dataset(cfg.data.kind, cfg.data.root, cfg.data.train_split)
    if full.split in ("test", "val"):
        raise ConfigError(f"data.train_split: {cfg.data.train_split!r} is a {full.split} split; train on training data")
    return split_validation(full, cfg.data.val_fraction, cfg.data.val_seed, cfg.data.group_size)


def _video_sources(run: _Run, temporal, train_ds, val_ds):
    """FeatureSource (cached features) or PixelSource (needs_pixels); drops videos that failed
    to encode (with a warning) -> (source, train_ds, val_ds)."""
    from vidclip.eval.evaluate import FeatureSource, PixelSource
    from vidclip.features.store import FeatureStore

    cfg = run.cfg
    if getattr(temporal, "needs_pixels", False):
        check_whole_videos([train_ds, val_ds])
        paths = {v.video_id: str(v.path) for ds in (train_ds, val_ds) for v in ds.videos}
        return PixelSource(paths, cfg.data.num_frames, run.clip.image_size, cfg.data.backend), train_ds, val_ds
    if run.world > 1:
        root, todo, _ = prepare_features(cfg, run.clip, [train_ds, val_ds], encode=False)
        if todo:
            raise ConfigError(
                f"{root}: {len(todo)} training/validation videos have no current cached features (first: "
                f"{todo[0][0]}: not encoded, or its file changed since); "
                "build the cache in one process first: `vidclip train CONFIG --prepare-only`")
    else:
        root, _, failures = prepare_features(cfg, run.clip, [train_ds, val_ds], progress=run.progress)
        for f in failures:
            warnings.warn(f"{f.path}: not encoded ({f.reason}); left out of training", stacklevel=2)
    store = FeatureStore(root)

    def keep(ds):
        idx = [i for i, v in enumerate(ds.videos) if v.video_id in store]
        return ds if len(idx) == len(ds) else ds.subset(idx)

    return FeatureSource(store, cfg.data.num_frames), keep(train_ds), keep(val_ds)


class _StepBatches(torch.utils.data.Dataset):
    """Item i = the video batch of step i (lets a DataLoader decode ahead in worker processes)."""

    def __init__(self, source, keys_per_step: list[list[str]]):
        self.source, self.keys_per_step = source, keys_per_step

    def __len__(self) -> int:
        return len(self.keys_per_step)

    def __getitem__(self, i: int):
        return self.source.batch(self.keys_per_step[i])


def video_batches(source, keys_per_step: list[list[str]], workers: int):
    """Yield ``source.batch(keys)`` for each step, in order.

    Cached features are memory-mapped reads and are fetched inline; pixel sources decode video
    files, which runs ``workers`` steps ahead in DataLoader worker processes. Decoding is
    deterministic, so prefetching changes nothing about the batches (resume stays exact).
    The workers are spawned (:func:`vidclip.core.processes.worker_context`): forking a process that
    holds other threads (Ray, a server, the test suite) can leave a worker waiting forever on a
    lock one of them held.
    """
    from vidclip.core.processes import worker_context
    from vidclip.eval.evaluate import PixelSource

    if not isinstance(source, PixelSource) or workers <= 0 or len(keys_per_step) <= 1:
        for keys in keys_per_step:
            yield source.batch(keys)
        return
    loader = torch.utils.data.DataLoader(_StepBatches(source, keys_per_step), batch_size=None, shuffle=False,
                                         num_workers=min(workers, len(keys_per_step)), prefetch_factor=2,
                                         multiprocessing_context=worker_context())
    yield from loader


def _validate(run: _Run, model: RetrievalModel, source, val_ds, val_text) -> dict:
    from vidclip.eval.evaluate import evaluate

    res = evaluate(model.temporal, val_ds.captions, val_ds.caption_video, val_ds.video_ids, source,
                   clip=run.clip, text_emb=val_text, text_tower=model.text_tower, device=run.device,
                   batch_videos=run.cfg.eval_batch, name="val")
    return res.metrics


def train(cfg: TrainConfig, *, resume: bool = False, stop_after: int | None = None, progress: bool = True,
          clip=None) -> TrainResult:
    """Run (or resume) the training run described by ``cfg``; see the module docstring.

    Args:
        cfg: a checked TrainConfig (``load_config``).
        resume: continue the run in ``cfg.run_dir`` from its last checkpoint (its config.yaml
            must equal ``cfg``).
        stop_after: stop after this many optimizer steps *in this call* (saving a resumable
            checkpoint); the schedule still follows the config.
        progress: show a tqdm bar (main process only).
        clip: an already loaded FrozenCLIP matching ``cfg.model`` (saves reloading in tests).
    """
    run_dir = cfg.resolved_run_dir
    created = not run_dir.exists()
    try:
        return _train(cfg, resume=resume, stop_after=stop_after, progress=progress, clip=clip)
    except BaseException:
        # A run that fails before writing anything leaves no empty runs/<name>/ behind; a folder
        # that existed before, or holds anything, is left as it is.
        if created:
            try:
                run_dir.rmdir()  # only succeeds when empty
            except OSError:
                pass
        raise


def _train(cfg: TrainConfig, *, resume: bool = False, stop_after: int | None = None, progress: bool = True,
          clip=None) -> TrainResult:
    """The body of :func:`train` (which removes an empty run dir it created on failure)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from vidclip.core.progress import start_clock

    start_time = time.perf_counter()
    _reset_accelerator_state()
    acc = Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision)
    if cfg.optim.batch_size % acc.num_processes:
        raise ConfigError(f"optim.batch_size: {cfg.optim.batch_size} does not divide over {acc.num_processes} processes")
    run_dir = cfg.resolved_run_dir
    state_path = run_dir / STATE_FILE
    if resume:
        if not state_path.is_file():
            raise ConfigError(f"{run_dir}: nothing to resume (no {STATE_FILE}); start it without --resume")
        saved = load_run_config(run_dir)
        diff = config_diff(config_to_dict(saved), config_to_dict(cfg))
        if diff:
            raise ConfigError(f"{run_dir}: cannot resume with a different config: {'; '.join(diff[:5])}")
        # Read (safely) before the model loads, so a refused file is reported at once.
        state = load_checkpoint_file(state_path, what_to_do="start a new run (without --resume) if you do not "
                                      "trust where this run folder came from")
        rng_path = run_dir / f"rng-{acc.process_index}.pt"
        rng = load_checkpoint_file(
            rng_path, numpy_arrays=True,  # numpy arrays: files written before the RNG state was plain
            what_to_do="delete it to resume without it (dropout noise will then differ)",
        ) if rng_path.is_file() else None
    elif state_path.is_file():
        raise ConfigError(f"{run_dir}: already holds a run; pass --resume to continue it, or set name=/run_dir= for a new one")

    set_seed(cfg.seed)
    if clip is None:
        from vidclip.models.clip.load import load_clip

        clip = load_clip(cfg.model.clip, cfg.model.pretrained, device=acc.device)
    run = _Run(cfg, acc, clip, progress)
    if run.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if clip.identity.random_weights:
            warnings.warn(f"model.clip {cfg.model.clip!r} has RANDOM weights (pretrained: null): the trained "
                          "model is for testing the pipeline only, its numbers mean nothing", stacklevel=2)

    # -- data, features, text -------------------------------------------------------------
    train_ds, val_ds = _load_data(run)
    temporal = build_temporal(cfg.model, clip)
    source, train_ds, val_ds = _video_sources(run, temporal, train_ds, val_ds)
    text_tower = TextTower(clip) if cfg.model.text_tower == "finetune" else None
    if text_tower is None:
        text_cache = cfg.resolved_cache_dir / "text"
        with acc.main_process_first():
            train_text = cached_text_embeddings(clip, train_ds.captions, text_cache)
            val_text = cached_text_embeddings(clip, val_ds.captions, text_cache)
        train_tokens = None
    else:
        train_text = val_text = None
        train_tokens = clip.tokenize(train_ds.captions)  # [C, L], once

    items = np.array([i for i in range(len(train_ds)) if len(train_ds.caption_indices(i))], dtype=np.int64)
    bounds = [train_ds.caption_indices(int(i)) for i in items]
    keys = train_ds.video_ids
    batch = cfg.optim.batch_size
    local = batch // run.world
    steps_per_epoch = len(items) // batch
    if steps_per_epoch == 0:
        raise ConfigError(f"optim.batch_size: {batch} is larger than the {len(items)} training videos "
                          f"({cfg.data.root}, after holding out {len(val_ds)} for validation)")
    total = cfg.optim.max_steps or cfg.optim.epochs * steps_per_epoch
    num_epochs = math.ceil(total / steps_per_epoch)

    model = TrainingModel(temporal, LogitScale(cfg.optim.logit_scale_init), text_tower).to(acc.device)
    # Weights are initialised identically everywhere (seed above; DDP also broadcasts rank 0's);
    # training noise (dropout) gets a seed per process so processes do not drop the same units.
    set_seed(cfg.seed + run.rank)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim), betas=(cfg.optim.beta1, cfg.optim.beta2),
                                  eps=cfg.optim.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, total, cfg.optim.warmup, cfg.optim.schedule))
    # The scheduler is stepped by hand once per optimizer step (accelerate's wrapper would
    # step it once per process).
    model, optimizer = acc.prepare(model, optimizer)
    core: RetrievalModel = acc.unwrap_model(model)

    epoch = step_in_epoch = global_step = 0
    best_score: float | None = None
    best_step: int | None = None
    last_val: dict | None = None
    if resume:
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if acc.scaler is not None and state.get("scaler"):
            acc.scaler.load_state_dict(state["scaler"])
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        best_score, best_step, last_val = state["best_score"], state["best_step"], state.get("last_val")
        if rng is not None and rng.get("global_step") == global_step:
            set_rng_state(rng["state"])
        else:
            warnings.warn(f"{rng_path}: no RNG state for step {global_step}; dropout noise will differ",
                          stacklevel=2)
        if run.is_main:
            truncate_log(run.log_path, global_step)
    elif run.is_main:
        atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    acc.wait_for_everyone()

    saved_at = global_step if resume else -1

    def save_checkpoint() -> None:
        nonlocal saved_at
        if saved_at == global_step:
            return
        saved_at = global_step
        # Every process saves its RNG; the main process then commits state.pt (the file resume
        # reads), so a kill between the two leaves the previous consistent checkpoint.
        atomic_torch_save({"global_step": global_step, "state": rng_state()}, run_dir / f"rng-{run.rank}.pt")
        acc.wait_for_everyone()
        if run.is_main:
            ident = clip.identity.to_dict()
            save_weights(run_dir / "last.safetensors", core, cfg, ident, step=global_step, epoch=epoch)
            atomic_torch_save({
                "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                "best_score": best_score, "best_step": best_step,
                # JSON round trip: plain floats/ints only (numpy scalars would need a full unpickle)
                "last_val": json.loads(json.dumps(last_val)),
                "world_size": run.world, "config": config_to_dict(cfg),
            }, state_path)
        acc.wait_for_everyone()

    def end_of_epoch() -> None:
        nonlocal best_score, best_step, last_val
        finished = epoch + 1
        if finished % cfg.eval_every == 0 or global_step >= total:
            if run.is_main:
                metrics = _validate(run, core, source, val_ds, val_text)
                score = select_score(metrics, cfg.select_metric)
                improved = best_score is None or score > best_score
                if improved:
                    best_score, best_step = score, global_step
                    save_weights(run_dir / "best.safetensors", core, cfg, clip.identity.to_dict(),
                                 step=global_step, epoch=finished, val=metrics)
                last_val = metrics
                append_log_line(run.log_path, {"type": "val", "step": global_step, "epoch": finished, "score": score,
                                         "best": improved, **metrics})
            acc.wait_for_everyone()

    bar = tqdm(total=total, initial=global_step, desc=f"train {cfg.name}", unit="step", dynamic_ncols=True,
               disable=not (progress and run.is_main))
    steps_this_call = 0
    stopped = False
    window_start, window_samples = time.perf_counter(), 0
    model.train()
    try:
        while epoch < num_epochs and global_step < total:
            order = epoch_order(len(items), batch, epoch, cfg.seed, cfg.data.group_size)
            chosen = caption_choice(bounds, epoch, cfg.seed)
            steps = range(step_in_epoch, min(steps_per_epoch, step_in_epoch + total - global_step))
            mine = [order[s, run.rank * local:(run.rank + 1) * local] for s in steps]  # this process's rows
            videos = video_batches(source, [[keys[int(v)] for v in items[r]] for r in mine], cfg.data.encode_workers)
            for rows, (video_in, mask) in zip(mine, videos):
                caps_t = torch.from_numpy(chosen[rows])
                text_in = train_text[caps_t] if train_tokens is None else train_tokens[caps_t]
                loss = model(text_in.to(acc.device), video_in.to(acc.device), mask.to(acc.device))
                acc.backward(loss)
                if cfg.optim.grad_clip > 0:
                    acc.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                lr = optimizer.param_groups[0]["lr"]  # the rate this step used
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                core.logit_scale.clamp_()
                global_step += 1
                step_in_epoch += 1
                steps_this_call += 1
                window_samples += batch
                loss_value = acc.reduce(loss.detach().float(), reduction="mean").item()
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                if steps_this_call == 1:
                    # The first step carried the start-up (decode workers starting, optimizer
                    # state, first-call costs): the bar's clock and pace start after it.
                    start_clock(bar, done=1)
                else:
                    bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", samples_s=f"{window_samples / elapsed:.0f}",
                                refresh=False)
                if run.is_main and (global_step % cfg.log_every == 0 or global_step == total):
                    append_log_line(run.log_path, {
                        "type": "train", "step": global_step, "epoch": epoch + step_in_epoch / steps_per_epoch,
                        "loss": loss_value, "lr": lr, "logit_scale": float(core.logit_scale().item()),
                        "samples_per_s": window_samples / elapsed})
                    window_start, window_samples = time.perf_counter(), 0
                elif steps_this_call == 1:
                    window_start, window_samples = time.perf_counter(), 0  # the pace leaves out start-up
                if stop_after is not None and steps_this_call >= stop_after and global_step < total:
                    stopped = True
                    break
                if cfg.save_every and global_step % cfg.save_every == 0 and step_in_epoch < steps_per_epoch:
                    save_checkpoint()
            videos.close()  # stops prefetching workers, if any
            if step_in_epoch == steps_per_epoch:
                end_of_epoch()
                epoch, step_in_epoch = epoch + 1, 0  # the next epoch draws its own order
                save_checkpoint()
            if stopped:
                break
        if global_step >= total and step_in_epoch and steps_this_call:
            # max_steps ended mid-epoch: validate once more so best.safetensors sees the end.
            end_of_epoch()
        save_checkpoint()
    finally:
        bar.close()
    return TrainResult(run_dir=run_dir, global_step=global_step, epoch=epoch, best_score=best_score,
                       best_step=best_step, stopped=stopped, last_val=last_val,
                       seconds=time.perf_counter() - start_time, is_main=run.is_main)


def _reset_accelerator_state() -> None:
    """Let one process run several trainings with different precisions (tests, notebooks).

    accelerate keeps the first Accelerator's settings in a process-wide singleton and refuses
    another mixed_precision afterwards. The distributed part (PartialState: process group,
    ranks) is kept; only the per-run settings are cleared.
    """
    try:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=False)
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - other accelerate versions
        pass
