"""Pooling stored frame embeddings into the index's vectors (:class:`Pooler`): the mean, or a
trained temporal module; and encoding / scoring queries the way that module was trained."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from vidclip.core.errors import ConfigError, IndexMismatchError
from vidclip.features.store import uniform_positions
from vidclip.index.exact import l2_normalize


class Pooler:
    """Frame embeddings -> L2-normalised video / window vectors; query-conditioned scoring.

    ``mean`` (the default): the normalised mean of the L2-normalised frame embeddings (CLIP4Clip
    "meanP"). A training checkpoint (``--temporal CKPT``): its temporal module, fed the stored
    frames as in training (raw embeddings, at most ``max_frames`` of them, uniformly subsampled);
    a text-conditioned module scores (query, video) pairs itself and the mean vectors serve as
    faiss candidates. Queries use the checkpoint's fine-tuned text tower when it has one.
    """

    def __init__(self, spec: dict, clip=None, loaded=None):
        self.spec = spec
        self.clip = clip
        self._loaded = loaded
        self.temporal = loaded.model.temporal if loaded is not None else None
        self.conditioned = bool(getattr(self.temporal, "text_conditioned", False))
        self.max_frames = int(loaded.model_config.max_frames or 0) if loaded is not None else 0

    @classmethod
    def create(cls, temporal: str | os.PathLike | None, clip) -> "Pooler":
        """``temporal``: "mean" / None, or a training checkpoint (.safetensors or run dir)."""
        if temporal is None or str(temporal) == "mean":
            return cls({"name": "mean"}, clip)
        path = Path(temporal).expanduser().resolve()
        if not path.exists():
            raise ConfigError(f"--temporal {temporal}: neither 'mean' nor an existing checkpoint file / run dir")
        from vidclip.models.checkpoint import load_checkpoint

        loaded = load_checkpoint(path, clip=clip, device=str(getattr(clip, "device", "cpu")))
        if getattr(loaded.model.temporal, "needs_pixels", False):
            raise ConfigError(f"--temporal {temporal}: module {loaded.model_config.temporal!r} works on pixels inside "
                              "the image encoder, but an index stores frame embeddings; use 'mean' or a checkpoint "
                              "of a frame-embedding module (seq_transformer, tdb, xpool, query_scoring)")
        digest = hashlib.blake2b(loaded.path.read_bytes(), digest_size=8).hexdigest()
        spec = {"name": "checkpoint", "path": str(loaded.path), "module": loaded.model_config.temporal,
                "digest": digest}
        return cls(spec, clip, loaded)

    @classmethod
    def from_spec(cls, spec: dict, clip) -> "Pooler":
        if spec.get("name", "mean") == "mean":
            return cls({"name": "mean"}, clip)
        pooler = cls.create(spec["path"], clip)
        if pooler.spec.get("digest") != spec.get("digest"):
            raise IndexMismatchError(f"{spec['path']}: temporal checkpoint changed since the index was built "
                                     f"(digest {pooler.spec.get('digest')}, index has {spec.get('digest')}); re-index")
        return pooler

    # -- pooling

    @staticmethod
    def mean_windows(frames: np.ndarray, windows: Sequence[tuple[float, float, int, int]]) -> np.ndarray:
        """Normalised mean of normalised frames per window: [W, D] (prefix sums, no per-window loop)."""
        unit = l2_normalize(frames)
        csum = np.concatenate([np.zeros((1, unit.shape[1]), np.float64), np.cumsum(unit, axis=0, dtype=np.float64)])
        first = np.array([w[2] for w in windows], dtype=np.int64)
        count = np.array([w[3] for w in windows], dtype=np.int64)
        return l2_normalize((csum[first + count] - csum[first]).astype(np.float32))

    def _module_batch(self, frames_list: list[np.ndarray]):
        import torch

        limit = self.max_frames or max(f.shape[0] for f in frames_list)
        dim = frames_list[0].shape[1]
        x = np.zeros((len(frames_list), limit, dim), np.float32)
        mask = np.zeros((len(frames_list), limit), bool)
        for b, f in enumerate(frames_list):
            if f.shape[0] > limit:
                f = f[uniform_positions(f.shape[0], limit)]
            x[b, :f.shape[0]] = f
            mask[b, :f.shape[0]] = True
        device = getattr(self.clip, "device", "cpu")
        return torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device)

    def video_and_windows(self, frames: np.ndarray, windows: Sequence[tuple[float, float, int, int]]
                          ) -> tuple[np.ndarray, np.ndarray]:
        """frames float [T, D] -> (video vector [D], window vectors [W, D]), all L2-normalised."""
        whole = [(0.0, 0.0, 0, frames.shape[0])]
        if self.temporal is None or self.conditioned:
            vecs = self.mean_windows(frames, whole + list(windows))
            return vecs[0], vecs[1:]
        import torch

        chunks = [frames] + [frames[w[2]:w[2] + w[3]] for w in windows]
        with torch.no_grad():
            x, mask = self._module_batch(chunks)
            out = self.temporal(x, mask).float().cpu().numpy()
        out = l2_normalize(out)
        return out[0], out[1:]

    # -- queries

    def encode_query(self, text: str):
        """Raw text embedding float32 tensor [D] (the checkpoint's fine-tuned text tower when it has one).

        Raw, as the temporal modules were trained on; normalise it for cosine search.
        """
        import torch

        with torch.no_grad():
            if self._loaded is not None and self._loaded.model.text_tower is not None:
                ids = self.clip.tokenize([text]).to(self.clip.device)
                q = self._loaded.model.encode_text(ids)
            else:
                q = self.clip.encode_text([text])
        return q.float()[0]

    def conditioned_scores(self, text, frames_list: list[np.ndarray]) -> np.ndarray:
        """Cosine of the raw query embedding ``text`` [D] with each video as the text-conditioned
        module pools it for that query: float32 [B]."""
        import torch

        with torch.no_grad():
            x, mask = self._module_batch(frames_list)
            scores = self.temporal.similarity(text[None, :].to(x.device), x, mask)  # [1, B]
        return scores[0].float().cpu().numpy()
