"""Stored frame embeddings -> video vectors, by one temporal module: the one pooler of vidclip.

:class:`Pooler` serves the library index (video and window vectors, queries) and classification
(video features) alike. Pooling is a :class:`~vidclip.models.temporal.base.TemporalModule` like
any other: ``mean`` (CLIP4Clip "meanP", parameter-free, the default) or the module of a ``vidclip
train`` checkpoint (``--temporal CKPT``), fed the stored frames as in training: raw embeddings,
at most the checkpoint's ``max_frames`` of them, uniformly subsampled. A text-conditioned module
(xpool, query_scoring) has no vector per video: its vectors are the mean's, and it scores
(query, video) pairs itself (:meth:`Pooler.conditioned_scores`). Queries use the checkpoint's
fine-tuned text tower when it has one.

What pooled is saved beside its results (an index's catalog, a fitted classifier) as the pooler's
spec, and checked with :meth:`Pooler.matches` when they are used again::

    {"name": "mean"}
    {"name": "checkpoint", "path": ".../best.safetensors", "module": "seq_transformer", "digest": "<16 hex>"}

``digest``: blake2b-64 of the checkpoint file; a file that has no spec (older indexes) was pooled
by the mean. torch is imported only by the methods that pool.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from vidclip.core.errors import ConfigError, IndexMismatchError
from vidclip.features.store import uniform_positions

__all__ = ["MEAN_SPEC", "Pooler", "temporal_path"]

MEAN_SPEC = {"name": "mean"}


def temporal_path(temporal: str | os.PathLike | None) -> Path | None:
    """``--temporal``: None for ``mean`` (or nothing given), else the checkpoint file / run dir,
    which must exist (ConfigError otherwise). Reads no file: usable before a model loads."""
    if temporal is None or str(temporal) in ("", "mean"):
        return None
    path = Path(temporal).expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"--temporal {temporal}: neither 'mean' nor an existing checkpoint file / run dir")
    return path


class Pooler:
    """Frame embeddings -> L2-normalised video vectors through one temporal module; query encoding.

    Attributes:
        spec: what pools (see the module docstring).
        module: the checkpoint's TemporalModule; None for ``mean``, whose parameter-free module is
            built for the frames' width when first used.
        conditioned: the module is text-conditioned (vectors are then the mean's).
        max_frames: most frames the checkpoint's module is given (0: all).
        text_tower: the checkpoint's fine-tuned text tower, or None (the frozen CLIP's).
    """

    def __init__(self, spec: dict | None = None, module=None, *, clip=None, max_frames: int = 0, text_tower=None):
        self.spec = dict(spec or MEAN_SPEC)
        if (module is None) != (self.spec.get("name", "mean") == "mean"):
            raise ValueError(f"Pooler: spec {self.spec} and module {type(module).__name__} disagree")
        self.module = module
        self.clip = clip
        self.max_frames = int(max_frames)
        self.text_tower = text_tower
        self.conditioned = bool(getattr(module, "text_conditioned", False))
        self._mean = None  # the mean module, built for the frames' width on first use

    @classmethod
    def create(cls, temporal: str | os.PathLike | None, clip) -> "Pooler":
        """``temporal``: "mean" / None, or a training checkpoint (.safetensors file or run dir)."""
        path = temporal_path(temporal)
        if path is None:
            return cls(MEAN_SPEC, clip=clip)
        from vidclip.models.checkpoint import load_checkpoint

        loaded = load_checkpoint(path, clip=clip, device=str(getattr(clip, "device", "cpu")))
        module, name = loaded.model.temporal, loaded.model_config.temporal
        if getattr(module, "needs_pixels", False):
            raise ConfigError(f"--temporal {temporal}: module {name!r} works on pixels inside the image encoder, but "
                              "pooling reads stored frame embeddings; use 'mean' or a checkpoint of a frame-embedding "
                              "module (seq_transformer, tdb, xpool, query_scoring)")
        digest = hashlib.blake2b(Path(loaded.path).read_bytes(), digest_size=8).hexdigest()
        spec = {"name": "checkpoint", "path": str(loaded.path), "module": name, "digest": digest}
        return cls(spec, module.eval(), clip=clip, max_frames=int(loaded.model_config.max_frames or 0),
                   text_tower=loaded.model.text_tower)

    @classmethod
    def from_spec(cls, spec: dict | None, clip) -> "Pooler":
        """The pooler a saved ``spec`` names; IndexMismatchError when its checkpoint changed since."""
        spec = spec or MEAN_SPEC
        if spec.get("name", "mean") == "mean":
            return cls(MEAN_SPEC, clip=clip)
        pooler = cls.create(spec["path"], clip)
        if not pooler.matches(spec):
            raise IndexMismatchError(f"{spec['path']}: temporal checkpoint changed since the index was built "
                                     f"(digest {pooler.spec.get('digest')}, index has {spec.get('digest')}); re-index")
        return pooler

    def matches(self, spec: dict | None) -> bool:
        """Whether a saved ``spec`` pools as this pooler does: the same module and checkpoint digest
        (the same checkpoint moved elsewhere matches; no spec at all is the mean's)."""
        spec = spec or MEAN_SPEC
        return (self.spec.get("name", "mean"), self.spec.get("digest")) == (spec.get("name", "mean"), spec.get("digest"))

    # -- pooling

    def _vector_module(self, dim: int):
        """(module making the vectors, most frames it is given; 0 = all): the checkpoint's, or
        the mean for ``mean`` and for a text-conditioned module."""
        if self.module is not None and not self.conditioned:
            return self.module, self.max_frames
        if self._mean is None or self._mean.embed_dim != dim:
            from vidclip.models.temporal.registry import create_temporal

            self._mean = create_temporal("mean", dim)
        return self._mean, 0

    @staticmethod
    def _batch(frames_list: Sequence[np.ndarray], limit: int, device):
        """Videos float [T_b, D] -> (float32 [B, L, D], bool mask [B, L]) on ``device``, zero-padded
        to the longest (L), or uniformly subsampled to ``limit`` frames when > 0 (the evaluation rule)."""
        import torch

        length = limit or max(f.shape[0] for f in frames_list)
        x = np.zeros((len(frames_list), length, frames_list[0].shape[1]), np.float32)
        mask = np.zeros((len(frames_list), length), bool)
        for b, f in enumerate(frames_list):
            if f.shape[0] > length:
                f = f[uniform_positions(f.shape[0], length)]
            x[b, :f.shape[0]] = f
            mask[b, :f.shape[0]] = True
        return torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device)

    @staticmethod
    def _device(module):
        p = next(module.parameters(), None)
        return p.device if p is not None else "cpu"

    def pool(self, frames_list: Sequence[np.ndarray]) -> np.ndarray:
        """One L2-normalised vector per video: frames float [T_b, D] each (raw, as stored) -> float32 [B, D]."""
        import torch

        module, limit = self._vector_module(int(frames_list[0].shape[1]))
        with torch.no_grad():
            x, mask = self._batch(frames_list, limit, self._device(module))
            return module(x, mask).float().cpu().numpy()

    def video_and_windows(self, frames: np.ndarray, windows: Sequence[tuple[float, float, int, int]]
                          ) -> tuple[np.ndarray, np.ndarray]:
        """frames float [T, D], windows (start, end, first, count) -> (video vector float32 [D],
        window vectors float32 [W, D]), all L2-normalised.

        The whole video is pooled on its own, so an example video pooled at search time gets exactly
        the vector its indexed copy has; the windows are pooled together.
        """
        video = self.pool([frames])[0]
        chunks = [frames[w[2]:w[2] + w[3]] for w in windows]
        return video, self.pool(chunks) if chunks else np.zeros((0, frames.shape[1]), np.float32)

    def pool_store(self, store, keys: Sequence[str], batch: int = 256) -> np.ndarray:
        """The vectors of ``keys`` in a :class:`~vidclip.features.store.FeatureStore`: float32 [N, D],
        pooled ``batch`` videos at a time."""
        out = [self.pool([store.get(k).emb for k in keys[i:i + batch]]) for i in range(0, len(keys), batch)]
        return np.concatenate(out) if out else np.zeros((0, store.embed_dim), np.float32)

    # -- queries

    def encode_query(self, text: str):
        """Raw text embedding float32 tensor [D] (the checkpoint's fine-tuned text tower when it has one).

        Raw, as the temporal modules were trained on; normalise it for cosine search.
        """
        import torch

        with torch.no_grad():
            if self.text_tower is not None:
                q = self.text_tower(self.clip.tokenize([text]).to(self.clip.device))
            else:
                q = self.clip.encode_text([text])
        return q.float()[0]

    def conditioned_scores(self, text, frames_list: list[np.ndarray]) -> np.ndarray:
        """Cosine of the raw query embedding ``text`` [D] with each video as the text-conditioned
        module pools it for that query: float32 [B]."""
        import torch

        with torch.no_grad():
            x, mask = self._batch(frames_list, self.max_frames, self._device(self.module))
            scores = self.module.similarity(text[None, :].to(x.device), x, mask)  # [1, B]
        return scores[0].float().cpu().numpy()
