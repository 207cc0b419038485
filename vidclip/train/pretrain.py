"""Pretrain ``vidclip-synth``: a small CLIP that knows only the ``vidclip synth`` world.

The project cannot download CLIP weights, yet its tests, its demo and the temporal-modelling
benchmark need an image-text model whose embeddings *mean* something. This recipe trains one
from scratch, on single frames of a ``vidclip synth`` dataset, with the project's own
contrastive code (:func:`vidclip.train.losses.contrastive_loss`, :class:`~vidclip.models.checkpoint.LogitScale`, the
trainer's LR schedule). It is deterministic (seeded data, batches and captions; deterministic
torch kernels) and runs in a few minutes on two CPU cores::

    vidclip pretrain-synth configs/pretrain_synth_clip.yaml [--out DIR] [KEY=VALUE ...]

**What it learns.** Each training pair is ONE decoded frame and a caption generated for that
frame from the clip's spec (shape, colour, size, background) and the object's *position in
that frame* (``object_path`` gives the centre; a 3x3 grid names it: "top left", "center",
"bottom" ...), e.g. "a small red circle in the top left on a gray background". Captions
sometimes name only some attributes ("a red dot at the bottom"). Motion words are never
used: motion is not visible in one frame. (The caption grammar is the synthetic world's:
:mod:`vidclip.synthetic.captions`.) Position matters downstream: order-aware temporal
modules trained on this frozen model's frame embeddings must see *where* the object is in
each frame to tell a clip from its time-reversed twin.

**What makes shape and position learnable** (measured on held-out clips; see
vidclip/assets/vidclip-synth.json):

* the ViT's patch positions are fixed 2-D sin-cos embeddings (``pos_embed_type: sin_cos_2d`` in
  vidclip-synth.json). With open_clip's default *learnt* positions the same recipe gave frame
  embeddings from which a linear probe recovers the object centre with R^2 ~0.1; with sin-cos,
  0.9 and more;
* hard batches (:func:`batch_rows`): half of each batch comes in groups of clips sharing colour,
  background and size, which are visible at once and learnt first; inside a group only shape and
  position tell the frames apart. Groups sharing only colour and background left shape at ~0.6
  held-out accuracy (size and position were enough to win those batches);
* 1500 steps at lr 5e-4: 2.5e-4 learnt shape more slowly (0.55 held-out at 1500 steps; 0.82
  at 5e-4). The price is ~22 minutes on one CPU thread.

**What it ships.** The open_clip state dict (fp16 safetensors, ~16 MB: the 49408-token
embedding dominates) plus a JSON sidecar with the recipe, the loss curve, and frame->caption
attribute accuracies on frames of held-out videos. Load it with
``load_clip("vidclip-synth", "<dir>/vidclip-synth.safetensors")``. The model knows nothing
but coloured shapes on plain backgrounds: its embeddings of real footage are meaningless.

Data flow (shapes)::

    synth dataset --decode (PyAV)--> frames uint8 [N, S, S, 3]  (frames_per_video per video)
                  --labels--------> attrs int64 [N, 5] (shape, color, size, background, position),
                                    centre float [N, 2] (x, y as fractions of the side)
    batch: frames [B, S, S, 3] -> pixels [B, 3, 64, 64] -> image emb [B, 128]
           captions (B strings) -> ids [B, 32]           -> text emb  [B, 128]
           -> symmetric InfoNCE (losses.contrastive_loss)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vidclip.core.errors import ConfigError, DatasetError
from vidclip.core.fileio import atomic_path, atomic_write_text
from vidclip.synthetic.captions import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    canonical_caption,
    frame_caption,
    position_index,
)
from vidclip.synthetic.datasets import load_synth_meta, make_synthetic_dataset
from vidclip.synthetic.world import SynthConfig, object_path

if typing.TYPE_CHECKING:
    import torch  # imported where used: `vidclip --help` builds this module's parser without torch

__all__ = [
    "PretrainData",
    "PretrainOptim",
    "PretrainConfig",
    "PretrainResult",
    "FrameSet",
    "load_pretrain_config",
    "prepare_frames",
    "attribute_accuracy",
    "pretrain",
]

CHECKPOINT_FORMAT = "vidclip-synth-clip-1"

# ----------------------------------------------------------------------------- config


@dataclass
class PretrainData:
    """The ``vidclip synth`` dataset whose frames are trained on (made when missing)."""

    root: str = "data/synth-pretrain"  # dataset folder; generated here with the fields below if absent
    videos: int = 1500  # clips in the dataset (train + held-out test)
    seed: int = 1000  # synth seed; differs from the benchmark's data (seed 0) so no clip is shared
    size: int = 64  # frame side (px)
    num_frames: int = 24  # frames per clip
    test_fraction: float = 0.1  # held-out clips (their frames are only evaluated on)
    diagonal: bool = True  # also the four diagonal directions (more positions visited)
    frames_per_video: int = 8  # evenly spaced frames of each clip kept for training / evaluation


@dataclass
class PretrainOptim:
    """AdamW with linear warmup and cosine decay (vidclip.train.trainer.lr_multiplier)."""

    batch_size: int = 128  # frames per step, each from a different clip
    steps: int = 1500
    lr: float = 5.0e-4  # 2.5e-4 learns shape more slowly (held-out 0.55 vs 0.82 at 1500 steps)
    weight_decay: float = 0.1  # not on biases, norms, embeddings, positions, logit scale
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1.0e-6
    warmup: float = 0.1  # fraction of the steps
    schedule: str = "cosine"  # cosine | linear | constant
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    logit_scale_init: float = 1.0 / 0.07


@dataclass
class PretrainConfig:
    name: str = "pretrain_synth_clip"
    seed: int = 0  # initial weights, batch order and caption draws
    model: str = "vidclip-synth"  # an open_clip config registered by vidclip.models.clip.load
    out: str = "runs/{name}"  # where {model}.safetensors and {model}.json are written
    threads: int = 1  # torch CPU threads (0 = torch's default); recorded, as results depend on it
    full_caption_prob: float = 0.5  # share of captions naming all five attributes
    hard_groups: int = 8  # groups per batch of clips that share the hard_by attributes; 0 = random batches
    hard_by: str = "color,background,size"  # comma-separated ATTRIBUTES shared inside a hard group (batch_rows)
    log_every: int = 10  # steps between loss-curve points
    data: PretrainData = field(default_factory=PretrainData)
    optim: PretrainOptim = field(default_factory=PretrainOptim)


_CHOICES = {"optim.schedule": ("cosine", "linear", "constant")}
_POSITIVE = {"data.videos", "data.size", "data.num_frames", "data.frames_per_video", "optim.batch_size",
             "optim.steps", "optim.lr", "log_every"}
_NON_NEGATIVE = {"optim.weight_decay", "optim.grad_clip", "threads", "hard_groups"}


def _check(dotted: str, value: Any, where: str) -> None:
    """The recipe's value rules (a :data:`vidclip.core.config.ValueCheck`)."""
    from vidclip.core.config import (
        check_listed_rules,  # loaded already: only its parsing calls this
    )

    check_listed_rules(dotted, value, where, choices=_CHOICES, positive=_POSITIVE, non_negative=_NON_NEGATIVE)
    if dotted in ("data.test_fraction",) and not 0 < value < 1:
        raise ConfigError(f"{where}: {dotted} must be in (0, 1), got {value!r}")
    if dotted == "hard_by" and not set(value.split(",")) <= set(ATTRIBUTES[:4]):
        raise ConfigError(f"{where}: hard_by must name attributes among {list(ATTRIBUTES[:4])}, got {value!r}")
    if dotted in ("full_caption_prob", "optim.warmup") and not 0 <= value <= 1:
        raise ConfigError(f"{where}: {dotted} must be in [0, 1], got {value!r}")


# The parsing (types, unknown keys, dotted.key=value overrides) is vidclip.core.config's generic
# dataclass machinery, imported when used: it needs PyYAML, which `vidclip --help` does not.


def config_from_dict(data: dict, where: str = "config") -> PretrainConfig:
    """A checked :class:`PretrainConfig` from a nested dict (missing keys keep their defaults)."""
    from vidclip.core.config import build_dataclass

    return build_dataclass(PretrainConfig, data or {}, where, _check)


def load_pretrain_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Read the YAML recipe (``None``: the built-in defaults, which equal
    configs/pretrain_synth_clip.yaml) and apply ``dotted.key=value`` overrides.

    Errors (:class:`~vidclip.core.errors.ConfigError`) name the file or the override and the dotted key.
    """
    from vidclip.core.config import load_dataclass_yaml

    return load_dataclass_yaml(PretrainConfig, path, overrides, _check, example="optim.steps=100",
                               missing_hint="pretraining recipe not found (see configs/pretrain_synth_clip.yaml)")


# ----------------------------------------------------------------------------- data


@dataclass
class FrameSet:
    """Decoded frames with their labels.

    Attributes:
        frames: uint8 ``[N, S, S, 3]``.
        video: int64 ``[N]`` index of the frame's clip (into ``video_ids``).
        attrs: int64 ``[N, 5]`` shape, colour, size, background, position (:data:`ATTRIBUTES`).
        centre: float32 ``[N, 2]`` object centre (x, y) as fractions of the side.
        video_ids: the clips' ids.
    """

    frames: np.ndarray
    video: np.ndarray
    attrs: np.ndarray
    centre: np.ndarray
    video_ids: list[str]

    def __len__(self) -> int:
        return len(self.frames)


def _synth_config(d: PretrainData):
    return SynthConfig(num_videos=d.videos, seed=d.seed, size=d.size, num_frames=d.num_frames,
                       test_fraction=d.test_fraction, diagonal=d.diagonal)


def _ensure_dataset(d: PretrainData, progress: bool) -> dict:
    """Make the synth dataset of ``d`` (or check the one at ``d.root``) -> its synth_meta."""
    want = _synth_config(d)
    root = Path(d.root)
    if not (root / "synth_meta.json").is_file():
        make_synthetic_dataset(root, want, progress=progress)
    meta = load_synth_meta(root)
    if meta["config"] != want:
        have, need = dataclasses.asdict(meta["config"]), dataclasses.asdict(want)
        diff = {k: (have[k], need[k]) for k in need if have[k] != need[k]}
        raise ConfigError(f"{root}/synth_meta.json: dataset was made with different settings than the "
                          f"recipe's data section ({diff}, as (found, wanted)); delete it or set data.root")
    return meta


def prepare_frames(d: PretrainData, progress: bool = True) -> tuple[FrameSet, FrameSet]:
    """(train frames, held-out test frames) of the recipe's synth dataset.

    ``frames_per_video`` evenly spaced frames of every clip are decoded (PyAV, as the rest of
    vidclip decodes them, so the pretraining sees the same h264 artefacts as the benchmark) and
    labelled from the clip's spec and the object's centre in that frame.
    """
    from vidclip.video.decode import open_video

    meta = _ensure_dataset(d, progress)
    cfg = meta["config"]
    sel = np.unique(np.linspace(0, cfg.num_frames - 1, d.frames_per_video).round().astype(np.int64))
    index = {name: {v: i for i, v in enumerate(ATTRIBUTE_VALUES[name])} for name in ATTRIBUTES[:4]}
    out = {}
    for split in ("train", "test"):
        items = [v for v in meta["videos"] if v["split"] == split]
        frames, attrs, centres = [], [], []
        for item in _progress(items, f"decode {split}", progress):
            path = Path(d.root) / "videos" / f"{item['video_id']}.mp4"
            with open_video(path, backend="pyav") as reader:
                if len(reader) != cfg.num_frames:
                    raise DatasetError(f"{path}: {len(reader)} frames, synth_meta.json says {cfg.num_frames}")
                frames.append(reader.get_frames(sel).numpy())
            spec = item["spec"]
            path_px = object_path(spec, cfg)  # [T, 2] centre in each *rendered* frame
            if spec.reverse:  # a reversed clip shows the rendered frames backwards
                path_px = path_px[::-1]
            centre = path_px[sel] / cfg.size  # [K, 2]
            centres.append(centre)
            static = [index["shape"][spec.shape], index["color"][spec.color], index["size"][spec.size],
                      index["background"][spec.background]]
            attrs.append(np.column_stack([np.tile(static, (len(sel), 1)), position_index(centre)]))
        k = len(sel)
        out[split] = FrameSet(
            frames=np.concatenate(frames) if frames else np.zeros((0, cfg.size, cfg.size, 3), np.uint8),
            video=np.repeat(np.arange(len(items), dtype=np.int64), k),
            attrs=np.concatenate(attrs).astype(np.int64) if attrs else np.zeros((0, 5), np.int64),
            centre=np.concatenate(centres).astype(np.float32) if centres else np.zeros((0, 2), np.float32),
            video_ids=[v["video_id"] for v in items],
        )
    if len(out["train"].video_ids) == 0 or len(out["test"].video_ids) == 0:
        raise ConfigError(f"data: {d.videos} videos give an empty train or test split "
                          f"(test_fraction {d.test_fraction})")
    return out["train"], out["test"]


def _progress(items, desc: str, enabled: bool):
    from vidclip.core.progress import progress_iter

    return progress_iter(items, desc=desc, unit="video", disable=not enabled, leave=False)


# ----------------------------------------------------------------------------- evaluation


def attribute_accuracy(clip, frames: FrameSet, probe: FrameSet | None = None, batch: int = 512) -> dict:
    """Frame -> caption zero-shot accuracy on ``frames`` (held-out clips).

    Every frame is scored against the canonical caption of every attribute combination
    (5 shapes x 6 colours x 2 sizes x 4 backgrounds x 9 positions = 2160 captions). For each
    attribute, the prediction is the best caption among those that differ from the truth in
    that attribute only (chance = 1 / number of values); ``all`` is top-1 over all 2160.
    With ``probe`` (training frames), ``position_r2`` is the R^2 of a least-squares linear map
    from normalised frame embeddings to the object centre, fitted on ``probe`` and scored on
    ``frames``: how finely (beyond the 3x3 words) the embedding keeps the position.
    """
    import torch

    with torch.no_grad():
        return _attribute_accuracy(clip, frames, probe, batch)


def _attribute_accuracy(clip, frames: FrameSet, probe: FrameSet | None, batch: int) -> dict:
    import torch

    sizes = [len(ATTRIBUTE_VALUES[a]) for a in ATTRIBUTES]
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in sizes], indexing="ij"), -1).reshape(-1, 5)
    text = torch.nn.functional.normalize(clip.encode_text([canonical_caption(a) for a in grid]), dim=-1)
    img = _encode(clip, frames.frames, batch)
    sim = (img @ text.t()).reshape(len(frames), *sizes)  # [N, 5, 6, 2, 4, 9]
    truth = torch.from_numpy(frames.attrs)
    res: dict[str, Any] = {"frames": len(frames), "videos": len(frames.video_ids)}
    for k, name in enumerate(ATTRIBUTES):
        scores = _take(sim, truth, k)  # [N, n_k]: the other attributes fixed at the truth
        res[name] = float((scores.argmax(1) == truth[:, k]).float().mean())
        res[f"{name}_chance"] = 1.0 / sizes[k]
    flat = sim.reshape(len(frames), -1).argmax(1)
    target = torch.from_numpy(np.ravel_multi_index(frames.attrs.T, sizes))
    res["all"] = float((flat == target).float().mean())
    res["all_chance"] = 1.0 / int(np.prod(sizes))
    if probe is not None:
        res["position_r2"] = _position_r2(_encode(clip, probe.frames, batch), probe.centre, img, frames.centre)
    return res


def _take(sim: torch.Tensor, truth: torch.Tensor, k: int) -> torch.Tensor:
    """``sim [N, *sizes]`` -> ``[N, sizes[k]]``: every axis but ``k`` indexed at ``truth``."""
    import torch

    x = sim.movedim(k + 1, -1)  # attribute k last
    n = x.shape[0]
    rows = torch.arange(n)
    others = [truth[:, j] for j in range(5) if j != k]
    return x[(rows, *others)]


def _encode(clip, frames: np.ndarray, batch: int) -> torch.Tensor:
    import torch

    emb = clip.encode_frames(torch.from_numpy(frames), batch_size=batch)
    return torch.nn.functional.normalize(emb.float().cpu(), dim=-1)


def _position_r2(x_fit: torch.Tensor, y_fit: np.ndarray, x_test: torch.Tensor, y_test: np.ndarray) -> float:
    """R^2 (both coordinates pooled) of ridge-regularised least squares with a bias."""
    import torch

    def design(x):
        return torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)

    a, b = design(x_fit), torch.from_numpy(np.asarray(y_fit, np.float64))
    w = torch.linalg.solve(a.T @ a + 1e-3 * torch.eye(a.shape[1], dtype=torch.float64), a.T @ b)
    y = torch.from_numpy(np.asarray(y_test, np.float64))
    resid = ((design(x_test) @ w - y) ** 2).sum()
    total = ((y - y.mean(0)) ** 2).sum()
    return float(1.0 - resid / total)


# ----------------------------------------------------------------------------- training


@dataclass
class PretrainResult:
    checkpoint: Path  # {out}/{model}.safetensors
    metadata: Path  # {out}/{model}.json
    losses: list[float]  # every step's loss
    metrics: dict  # attribute_accuracy of the saved (fp16) weights on held-out clips
    seconds: float  # wall time of the whole call
    train_seconds: float  # wall time of the optimisation steps alone


@contextlib.contextmanager
def _torch_settings(threads: int):
    """Deterministic kernels and a fixed thread count while inside (restored after)."""
    import torch

    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        if threads:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _param_groups(net: torch.nn.Module, scale: torch.nn.Module, o: PretrainOptim) -> list[dict]:
    decay, no_decay = [], list(scale.parameters())
    for name, p in net.named_parameters():
        if name == "logit_scale" or name == "logit_bias":
            continue  # the LogitScale module replaces CLIP's own during training
        skip = (p.ndim < 2 or "embedding" in name or "ln_" in name or name.endswith(".bias")
                or "class_embedding" in name)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def batch_rows(train: FrameSet, batch_size: int, step: int, seed: int, groups: int = 0,
               by: Sequence[str] = ("color", "background")) -> np.ndarray:
    """int64 ``[B]`` frame rows of step ``step``: ``B`` distinct clips, one random frame of each
    (two frames of one clip would be near-duplicate negatives). Pure in (seed, step).

    ``groups > 0`` makes hard batches: ``B // (2 * groups)`` clips from each of ``groups`` random
    values of the attributes ``by`` (default: (colour, background) pairs); the other half of
    the batch at random. Colour and background are
    visible in every pixel and are learnt first; a batch of random frames can then be told
    apart almost by them alone, so the gradient towards shape, size and position (what the
    object is and *where*) fades. Within a group only those attributes separate the frames.
    """
    nvid = len(train.video_ids)
    if batch_size > nvid:
        raise ConfigError(f"optim.batch_size: {batch_size} exceeds the {nvid} training clips")
    per = len(train) // nvid
    rng = np.random.default_rng([seed, step, 0xF5A])
    if groups <= 0:
        vids = rng.choice(nvid, size=batch_size, replace=False)
    else:
        first = train.attrs[::per]  # [V, 5] one row per clip (the static attributes are shared)
        cols = [ATTRIBUTES.index(a) for a in by]
        key = np.ravel_multi_index(first[:, cols].T, [64] * len(cols))  # one int per value of `by`
        size = batch_size // (2 * groups)
        keys, counts = np.unique(key, return_counts=True)
        usable = keys[counts >= size]
        if len(usable) < groups:
            raise ConfigError(f"hard_groups: {groups} groups of {size} clips need {groups} values of "
                              f"({', '.join(by)}) with >= {size} training clips each; only {len(usable)} have that many")
        picked = [rng.choice(np.flatnonzero(key == k), size=size, replace=False)
                  for k in rng.choice(usable, size=groups, replace=False)]
        taken = np.concatenate(picked)
        rest = rng.choice(np.setdiff1d(np.arange(nvid), taken), size=batch_size - len(taken), replace=False)
        vids = np.concatenate([taken, rest])
    return vids * per + rng.integers(per, size=batch_size)


def _captions(train: FrameSet, rows: np.ndarray, step: int, seed: int, full_prob: float) -> list[str]:
    rng = np.random.default_rng([seed, step, 0xCA9])
    return [frame_caption(train.attrs[r], rng, full_prob) for r in rows]


def _fresh_model(name: str, seed: int):
    """A randomly initialised open_clip model ``name`` (seeded) with its tokenizer and
    preprocessing, as :func:`vidclip.models.clip.load.load_clip` would pair them.

    Built here rather than with ``load_clip(name, None)``, which gives the *shipped* weights for
    ``vidclip-synth``. Returns (trainable net, texts -> ids [B, L], uint8 frames -> pixels).
    """
    import open_clip
    import torch

    from vidclip.models.clip.load import list_models
    from vidclip.models.clip.preprocess import preprocess_frames

    if name not in list_models():  # (also registers vidclip/models/configs with open_clip)
        raise ConfigError(f"model: unknown model config {name!r}")
    if name not in open_clip.list_models():
        raise ConfigError(f"model: {name!r} is not an open_clip config; the recipe trains open_clip models")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = open_clip.create_model(name, pretrained=None)
    # open_clip leaves every parameter trainable except fixed ones (sin-cos positions): keep those.
    pp = net.visual.preprocess_cfg
    size = pp["size"][0] if isinstance(pp["size"], (tuple, list)) else pp["size"]
    tokenizer = open_clip.get_tokenizer(name)

    def preprocess(frames: torch.Tensor) -> torch.Tensor:
        return preprocess_frames(frames, int(size), pp["mean"], pp["std"], pp.get("interpolation", "bicubic"))

    def tokenize(texts: list[str]) -> torch.Tensor:
        return tokenizer(texts).long()

    return net, tokenize, preprocess


def pretrain(cfg: PretrainConfig, out: str | os.PathLike | None = None, *, progress: bool = True,
             log=None, command: str | None = None) -> PretrainResult:
    """Run the recipe; write ``{out}/{model}.safetensors`` and ``{out}/{model}.json``.

    Args:
        cfg: the recipe (:func:`load_pretrain_config`).
        out: output folder (default ``cfg.out``).
        progress: tqdm bars.
        log: ``print``-like callable for a line per ``log_every`` steps (default: none).
        command: the command line to record in the metadata (default: the recipe's command).
    """
    import torch

    from vidclip.models.checkpoint import LogitScale
    from vidclip.models.clip.load import load_clip
    from vidclip.train.losses import contrastive_loss
    from vidclip.train.trainer import lr_multiplier

    t_start = time.perf_counter()
    out_dir = Path(out if out is not None else cfg.out.format(name=cfg.name))
    with _torch_settings(cfg.threads):
        train, test = prepare_frames(cfg.data, progress=progress)
        net, tokenize, preprocess = _fresh_model(cfg.model, cfg.seed)
        net.train()
        o = cfg.optim
        scale = LogitScale(o.logit_scale_init)
        opt = torch.optim.AdamW(_param_groups(net, scale, o), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, o.steps, o.warmup, o.schedule))
        params = [p for g in opt.param_groups for p in g["params"]]

        losses: list[float] = []
        curve: list[dict] = []
        t_train = time.perf_counter()
        from tqdm.auto import tqdm

        from vidclip.core.progress import start_clock

        bar = tqdm(total=o.steps, desc=f"pretrain {cfg.model}", unit="step", disable=not progress)
        for step in range(o.steps):
            rows = batch_rows(train, o.batch_size, step, cfg.seed, cfg.hard_groups, cfg.hard_by.split(","))
            pixels = preprocess(torch.from_numpy(train.frames[rows]))  # [B, 3, S, S]
            ids = tokenize(_captions(train, rows, step, cfg.seed, cfg.full_caption_prob))  # [B, L]
            loss = contrastive_loss(net.encode_text(ids), net.encode_image(pixels), scale())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
            opt.step()
            sched.step()
            scale.clamp_()
            losses.append(float(loss.item()))
            if step == 0:
                start_clock(bar, done=1)  # the first step carried one-time costs (optimizer state)
            else:
                bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if (step + 1) % cfg.log_every == 0 or step + 1 == o.steps:
                point = {"step": step + 1, "loss": float(np.mean(losses[-cfg.log_every:])),
                         "logit_scale": float(scale().item()), "seconds": round(time.perf_counter() - t_train, 1)}
                curve.append(point)
                if log:
                    log(json.dumps(point))
        bar.close()
        train_seconds = time.perf_counter() - t_train

        with torch.no_grad():  # CLIP's own logit scale holds the learnt one in the checkpoint
            net.logit_scale.copy_(scale.log_scale.clamp(max=scale.max_log).reshape(net.logit_scale.shape))
        state = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in net.state_dict().items()}
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt = out_dir / f"{cfg.model}.safetensors"
        _save_safetensors(state, ckpt, {"format": CHECKPOINT_FORMAT, "model": cfg.model,
                                        "recipe": json.dumps(dataclasses.asdict(cfg))})

        # Evaluate what was shipped: the fp16 file, loaded the normal way.
        shipped = load_clip(cfg.model, str(ckpt))
        probe_rows = np.arange(0, len(train), max(1, len(train) // 4000))
        probe = FrameSet(train.frames[probe_rows], train.video[probe_rows], train.attrs[probe_rows],
                         train.centre[probe_rows], train.video_ids)
        metrics = attribute_accuracy(shipped, test, probe=probe)

    meta = {
        "format": CHECKPOINT_FORMAT,
        "model": cfg.model,
        "description": ("A small CLIP trained from scratch on single frames of the vidclip synth world "
                        "(coloured shapes on plain backgrounds). It knows ONLY that synthetic world: its "
                        "embeddings of real footage are meaningless."),
        "command": command or "vidclip pretrain-synth configs/pretrain_synth_clip.yaml",
        "model_config": _model_config(cfg.model),
        "recipe": dataclasses.asdict(cfg),
        "checkpoint": {"file": ckpt.name, "bytes": ckpt.stat().st_size, "sha256": _sha256(ckpt),
                       "dtype": "float16", "weights_digest": shipped.identity.weights_digest,
                       "parameters": sum(v.numel() for v in state.values())},
        "data": {"train_videos": len(train.video_ids), "train_frames": len(train),
                 "test_videos": len(test.video_ids), "test_frames": len(test)},
        "heldout_metrics": metrics,
        "loss_curve": curve,
        "train_seconds": round(train_seconds, 1),
        "machine": {"torch_threads": torch.get_num_threads() if not cfg.threads else cfg.threads,
                    "cpu_count": os.cpu_count(), "torch": torch.__version__, "device": "cpu"},
    }
    meta_path = out_dir / f"{cfg.model}.json"
    atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")
    return PretrainResult(ckpt, meta_path, losses, metrics, time.perf_counter() - t_start, train_seconds)


def _model_config(name: str) -> dict | None:
    """The open_clip config the model was built from (recorded: the weights depend on it)."""
    import open_clip

    from vidclip.models.clip.load import list_models

    list_models()  # registers vidclip/models/configs
    cfg = open_clip.get_model_config(name)
    return json.loads(json.dumps(cfg)) if cfg is not None else None


def _save_safetensors(state: dict, path: Path, metadata: dict) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
