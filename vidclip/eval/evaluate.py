"""Evaluation driver: captions x videos similarity matrix -> retrieval metrics.

Texts are embedded with the frozen CLIP text tower (or a trained text tower), videos with a
temporal module from cached frame features (a :class:`~vidclip.features.store.FeatureStore`);
modules that need pixels (``ted``) get decoded frames instead. The similarity matrix is built in
chunks of videos (and, for pooled embeddings, of captions), so memory stays bounded at
MSR-VTT-9k scale.

``zero_shot`` evaluates parameter-free modules (``mean`` pooling, ``query_scoring``) on any
loaded CLIP, with no training.

Dual softmax (``dsl=True``) numbers are computed from the same matrix and kept under their own
key, never mixed into the default numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vidclip.core.errors import VidclipError
from vidclip.eval.metrics import dual_softmax, format_metrics_table, retrieval_metrics

__all__ = [
    "VideoSource",
    "FeatureSource",
    "PixelSource",
    "EvalResult",
    "encode_captions",
    "similarity_matrix",
    "evaluate",
    "zero_shot",
    "format_results",
]

ZERO_SHOT_MODULES = ("mean", "query_scoring")
_TEXT_ROW_CHUNK = 8192  # captions per matmul when scoring pooled video embeddings


class VideoSource(Protocol):
    """Gives the temporal module its video input for a list of video keys."""

    def batch(self, keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (video input [B, T, ...], bool mask [B, T])."""
        ...


class FeatureSource:
    """Cached frame features: ``store.batch(keys, num_frames)`` -> float32 [B, T, D], mask [B, T]."""

    def __init__(self, store, num_frames: int):
        self.store = store
        self.num_frames = int(num_frames)

    def missing(self, keys: Sequence[str]) -> list[str]:
        return [k for k in keys if k not in self.store]

    def batch(self, keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.store.batch(list(keys), self.num_frames)


class PixelSource:
    """Decoded frames for modules that run the backbone themselves (``needs_pixels``).

    ``batch(keys)`` -> (uint8 [B, num_frames, S, S, 3] frames resized/cropped to the model's
    input size, bool mask [B, num_frames]); short videos are zero-padded. Decoding uses the
    evaluation-mode uniform sampler (the middle frame of each of ``num_frames`` segments).
    """

    def __init__(self, paths: dict[str, str], num_frames: int, image_size: int, backend: str = "auto"):
        self.paths = dict(paths)
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.backend = backend

    def missing(self, keys: Sequence[str]) -> list[str]:
        return [k for k in keys if k not in self.paths]

    def batch(self, keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from vidclip.encode.worker import Failure, decode_job
        from vidclip.video.sample import SamplerConfig

        sampler = SamplerConfig("uniform", num_frames=self.num_frames).to_dict()
        S, N = self.image_size, self.num_frames
        out = torch.zeros((len(keys), N, S, S, 3), dtype=torch.uint8)
        mask = torch.zeros((len(keys), N), dtype=torch.bool)
        for b, key in enumerate(keys):
            res = decode_job(key, self.paths[key], sampler, self.backend, S)
            if isinstance(res, Failure):
                raise VidclipError(f"{res.path}: cannot decode video {key!r}: {res.reason}")
            frames = torch.as_tensor(res[2])[:N]
            out[b, : frames.shape[0]] = frames
            mask[b, : frames.shape[0]] = True
        return out, mask


@dataclass
class EvalResult:
    """Metrics of one module on one caption set."""

    name: str
    metrics: dict  # {"t2v": {...}, "v2t": {...}}
    dsl: dict | None = None  # same keys after dual softmax; reported separately
    num_captions: int = 0
    num_videos: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"name": self.name, "num_captions": self.num_captions, "num_videos": self.num_videos,
               "seconds": round(self.seconds, 3), **self.metrics}
        if self.dsl is not None:
            out["dsl"] = self.dsl
        out.update(self.extra)
        return out


@torch.no_grad()
def encode_captions(captions: Sequence[str], clip, text_tower=None, batch_size: int = 256) -> torch.Tensor:
    """float32 [C, D] caption embeddings (not normalised) on CPU, frozen tower or a trained one."""
    if text_tower is None:
        return clip.encode_text(list(captions), batch_size=batch_size).float().cpu()
    was_training = text_tower.training
    text_tower.eval()
    device = next(text_tower.parameters()).device
    try:
        outs = []
        for i in range(0, len(captions), batch_size):
            ids = clip.tokenize(list(captions[i:i + batch_size])).to(device)
            outs.append(text_tower(ids).float().cpu())
    finally:
        text_tower.train(was_training)
    return torch.cat(outs) if outs else torch.zeros((0, clip.embed_dim))


@torch.no_grad()
def similarity_matrix(
    module: torch.nn.Module,
    text: torch.Tensor,
    source: VideoSource,
    keys: Sequence[str],
    *,
    device: str | torch.device = "cpu",
    batch_videos: int = 256,
) -> np.ndarray:
    """Cosine similarity float32 [C, V] of C caption embeddings to V videos under ``module``.

    Args:
        module: a TemporalModule (pooled: ``module(frames, mask) -> [B, D]`` normalised;
            text-conditioned: ``module.similarity(text, frames, mask) -> [Q, B]``).
        text: float [C, D] caption embeddings (normalised here).
        source: where each batch of videos' inputs comes from.
        keys: the V video keys, in column order.
        batch_videos: videos per module call (bounds memory together with the module's own
            chunking over captions).
    """
    was_training = module.training
    module.eval()
    device = torch.device(device)
    text = text.to(device).float()
    try:
        if getattr(module, "text_conditioned", False):
            cols = []
            for lo in range(0, len(keys), batch_videos):
                x, mask = source.batch(keys[lo:lo + batch_videos])
                cols.append(module.similarity(text, x.to(device), mask.to(device)).float().cpu())
            return torch.cat(cols, dim=1).numpy()
        videos = []
        for lo in range(0, len(keys), batch_videos):
            x, mask = source.batch(keys[lo:lo + batch_videos])
            videos.append(F.normalize(module(x.to(device), mask.to(device)).float(), dim=-1))
        video = torch.cat(videos)  # [V, D]
        text = F.normalize(text, dim=-1)
        sim = np.empty((text.shape[0], video.shape[0]), dtype=np.float32)
        for lo in range(0, text.shape[0], _TEXT_ROW_CHUNK):
            sim[lo:lo + _TEXT_ROW_CHUNK] = (text[lo:lo + _TEXT_ROW_CHUNK] @ video.t()).cpu().numpy()
        return sim
    finally:
        module.train(was_training)


def _check_keys(source: VideoSource, keys: Sequence[str], what: str) -> None:
    missing = source.missing(keys) if hasattr(source, "missing") else []
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise VidclipError(
            f"{what}: {len(missing)} of {len(keys)} videos have no features: {shown} "
            "(encode them with `vidclip encode` into the feature store, or let `vidclip eval` do it)")


def evaluate(
    module: torch.nn.Module,
    captions: Sequence[str],
    caption_video: np.ndarray,
    keys: Sequence[str],
    source: VideoSource,
    *,
    clip=None,
    text_emb: torch.Tensor | None = None,
    text_tower=None,
    dsl: bool = False,
    dsl_temperature: float = 0.01,
    device: str | torch.device = "cpu",
    batch_videos: int = 256,
    name: str = "",
) -> EvalResult:
    """Embed captions and videos, build the [C, V] similarity matrix and score it.

    Args:
        module: a temporal module (trained or parameter-free).
        captions: C caption strings; caption_video: int [C] column (index into ``keys``) of each.
        keys: V video keys of ``source``.
        clip: the FrozenCLIP (needed unless ``text_emb`` is given).
        text_emb: precomputed float [C, D] caption embeddings (e.g. a frozen-tower cache).
        text_tower: a trained TextTower to embed captions with instead of the frozen one.
        dsl: also report dual-softmax numbers (under ``EvalResult.dsl``).
    """
    start = time.perf_counter()
    _check_keys(source, keys, name or "evaluate")
    if text_emb is None:
        if clip is None:
            raise VidclipError("evaluate: pass clip (to embed captions) or text_emb")
        text_emb = encode_captions(captions, clip, text_tower)
    if text_emb.shape[0] != len(captions):
        raise VidclipError(f"evaluate: {text_emb.shape[0]} text embeddings for {len(captions)} captions")
    sim = similarity_matrix(module, text_emb, source, keys, device=device, batch_videos=batch_videos)
    metrics = retrieval_metrics(sim, np.asarray(caption_video))
    dsl_metrics = retrieval_metrics(dual_softmax(sim, dsl_temperature), np.asarray(caption_video)) if dsl else None
    return EvalResult(name=name, metrics=metrics, dsl=dsl_metrics, num_captions=len(captions),
                      num_videos=len(keys), seconds=time.perf_counter() - start)


def zero_shot(
    clip,
    captions: Sequence[str],
    caption_video: np.ndarray,
    keys: Sequence[str],
    source: VideoSource,
    *,
    modules: Sequence[str] = ZERO_SHOT_MODULES,
    max_frames: int = 32,
    dsl: bool = False,
    batch_videos: int = 256,
) -> dict[str, EvalResult]:
    """Evaluate parameter-free temporal modules on ``clip`` without training.

    Captions are embedded once and shared by all modules. A module with trainable parameters
    would be evaluated at its random initialisation, which means nothing, so it is refused.
    """
    from vidclip.models.temporal.registry import create_temporal

    text_emb = encode_captions(captions, clip)
    results = {}
    for name in modules:
        module = create_temporal(name, clip.embed_dim, max_frames=max_frames, clip=clip).to(clip.device)
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        if trainable and name not in ZERO_SHOT_MODULES:
            raise VidclipError(
                f"zero-shot: module {name!r} has {trainable} trainable parameters; its untrained output "
                f"is meaningless. Zero-shot modules: {list(ZERO_SHOT_MODULES)}; train others with `vidclip train`")
        results[name] = evaluate(module, captions, caption_video, keys, source, text_emb=text_emb, dsl=dsl,
                                 device=clip.device, batch_videos=batch_videos, name=name)
    return results


def format_results(results: dict[str, EvalResult], title: str | None = None) -> str:
    """Readable table of several EvalResults (DSL rows, when present, under their own title)."""
    text = format_metrics_table({n: r.metrics for n, r in results.items()}, title=title)
    dsl = {f"{n} +DSL": r.dsl for n, r in results.items() if r.dsl is not None}
    if dsl:
        text += "\n\n" + format_metrics_table(dsl, title="dual softmax (DSL) inference: uses test-set statistics, "
                                                        "not comparable with the numbers above")
    return text
