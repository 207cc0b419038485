"""The temporal-module interface: per-frame CLIP embeddings -> one video embedding (or one per query).

Every module turns raw frame embeddings ``frames`` float ``[B, T, D]`` (post-projection CLIP
outputs, *not* normalised) plus ``mask`` bool ``[B, T]`` (True = real frame, False = padding)
into L2-normalised video embeddings:

- not text-conditioned: ``[B, D]``
- text-conditioned (``text_conditioned = True``): ``[Q, B, D]``, video ``b`` pooled for text
  ``q`` (``text`` float ``[Q, D]``, raw CLIP text embeddings)

and :meth:`TemporalModule.similarity` gives the ``[Q, B]`` cosine-similarity matrix (chunked
over ``Q`` for conditioned modules so memory stays bounded). This file holds the base class and
the tensor helpers the modules share; the modules themselves are listed in
:mod:`vidclip.models.temporal` and built by name with
:func:`vidclip.models.temporal.registry.create_temporal`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vidclip.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from vidclip.models.clip.load import FrozenCLIP

__all__ = [
    "TemporalModule",
    "trainable_parameters",
    "l2_normalize",
    "masked_mean",
    "key_padding",
]

# Additive attention-mask value for padded keys. exp(-1e4) underflows to exactly 0 in fp32/fp16,
# so padded keys get exactly zero weight, and -1e4 stays finite in fp16 (unlike the -1e6 of
# CLIP4Clip, which is -inf there and turns fully padded rows into NaN).
_MASK_NEG = -1.0e4
_NORM_EPS = 1e-8  # as CLIP-Hitchhiker: x / max(|x|, eps); a zero vector stays zero


# ----------------------------------------------------------------------------------------------
# Small tensor helpers
# ----------------------------------------------------------------------------------------------
def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``x / max(||x||, 1e-8)`` along ``dim`` (zero vectors stay zero instead of NaN).

    In fp16 the floor is fp16's smallest normal number instead, since 1e-8 rounds to 0 there.
    """
    return F.normalize(x, dim=dim, eps=max(_NORM_EPS, torch.finfo(x.dtype).tiny))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` ``[B, T, D]`` over the frames where ``mask`` ``[B, T]`` is True -> ``[B, D]``.

    As CLIP4Clip's ``_mean_pooling_for_similarity_visual``: a row without any real frame divides
    by 1 (gives zeros) rather than by 0.
    """
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def key_padding(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool ``[B, L]`` (True = real) -> additive float ``[B, L]`` (0 real, -1e4 padded)."""
    return (~mask).to(dtype) * _MASK_NEG


# ----------------------------------------------------------------------------------------------
# Base class
# ----------------------------------------------------------------------------------------------
class TemporalModule(nn.Module):
    """Base class: frames float ``[B, T, D]`` + mask bool ``[B, T]`` -> normalised video embeddings.

    Class attributes:
        name: registry name.
        text_conditioned: forward needs ``text`` and returns ``[Q, B, D]``.
        needs_pixels: forward takes pixels ``[B, T, 3, S, S]`` instead of frame embeddings (TED).
    """

    name: ClassVar[str] = ""
    text_conditioned: ClassVar[bool] = False
    needs_pixels: ClassVar[bool] = False
    #: memory budget (bytes) of one ``[q, B, D]`` chunk in :meth:`similarity`
    similarity_budget_bytes: ClassVar[int] = 256 << 20

    def __init__(self, embed_dim: int, *, max_frames: int = 32, clip: FrozenCLIP | None = None):
        super().__init__()
        if not isinstance(embed_dim, int) or embed_dim <= 0:
            raise ConfigError(f"{self.name or type(self).__name__}: embed_dim must be a positive int, got {embed_dim!r}")
        if not isinstance(max_frames, int) or max_frames <= 0:
            raise ConfigError(f"{self.name or type(self).__name__}: max_frames must be a positive int, got {max_frames!r}")
        if clip is not None and getattr(clip, "embed_dim", embed_dim) != embed_dim:
            raise ConfigError(f"{self.name}: embed_dim {embed_dim} differs from the CLIP model's "
                              f"embed_dim {clip.embed_dim}")
        self.embed_dim = embed_dim
        self.max_frames = max_frames

    @classmethod
    def create(cls, embed_dim: int, *, max_frames: int = 32, clip: FrozenCLIP | None = None,
               **kw: Any) -> TemporalModule:
        """Factory used by :func:`create_temporal` (TED overrides it)."""
        return cls(embed_dim, max_frames=max_frames, clip=clip, **kw)

    # -- input checking ----------------------------------------------------------------------
    def _compute_dtype(self, frames: torch.Tensor) -> torch.dtype:
        p = next(self.parameters(), None)
        if p is not None:
            return p.dtype
        return torch.float64 if frames.dtype == torch.float64 else torch.float32

    def _check(self, frames: torch.Tensor, mask: torch.Tensor | None, text: torch.Tensor | None = None,
               *, positions: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Validate shapes; return (frames, bool mask, text) in the compute dtype."""
        who = self.name or type(self).__name__
        if not isinstance(frames, torch.Tensor) or frames.ndim != 3 or not frames.is_floating_point():
            desc = (f"{str(frames.dtype).replace('torch.', '')} {list(frames.shape)}"
                    if isinstance(frames, torch.Tensor) else type(frames).__name__)
            raise ConfigError(f"{who}: frames must be a float tensor [B, T, D={self.embed_dim}], got {desc}")
        B, T, D = frames.shape
        if D != self.embed_dim:
            raise ConfigError(f"{who}: frames have D={D}, module was built for embed_dim={self.embed_dim}")
        if positions and T > self.max_frames:
            raise ConfigError(f"{who}: {T} frames per video exceed max_frames={self.max_frames} "
                              "(frame position embeddings); sample fewer frames or rebuild with a larger max_frames")
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=frames.device)
        else:
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (B, T):
                got = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise ConfigError(f"{who}: mask must be [B={B}, T={T}] like frames, got {got}")
            if mask.dtype != torch.bool:
                if ((mask != 0) & (mask != 1)).any():
                    raise ConfigError(f"{who}: mask must be bool (True = real frame) or 0/1, got other values")
                mask = mask != 0
            mask = mask.to(frames.device)
        dt = self._compute_dtype(frames)
        if self.text_conditioned:
            if text is None:
                raise ConfigError(f"{who}: text-conditioned module needs text float [Q, D={self.embed_dim}]")
            if not isinstance(text, torch.Tensor) or text.ndim != 2 or text.shape[1] != self.embed_dim:
                got = list(text.shape) if isinstance(text, torch.Tensor) else type(text).__name__
                raise ConfigError(f"{who}: text must be float [Q, D={self.embed_dim}], got {got}")
            text = text.to(device=frames.device, dtype=dt)
        return frames.to(dt), mask, text

    # -- API -----------------------------------------------------------------------------------
    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None,
                text: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def similarity(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor | None = None,
                   chunk_size: int | None = None) -> torch.Tensor:
        """Cosine similarity ``[Q, B]`` of texts ``[Q, D]`` (raw; normalised here) and videos.

        Conditioned modules run in chunks of ``chunk_size`` texts (default: as many as keep one
        ``[q, B, D]`` float32 tensor under ``similarity_budget_bytes``), so ``Q x B`` pooled
        embeddings never exist at once.
        """
        if not isinstance(text, torch.Tensor) or text.ndim != 2:
            got = list(text.shape) if isinstance(text, torch.Tensor) else type(text).__name__
            raise ConfigError(f"{self.name}: text must be float [Q, D], got {got}")
        if not self.text_conditioned:
            v = self(frames, mask)  # [B, D], normalised
            return l2_normalize(text.to(v)) @ v.t()
        B = frames.shape[0]
        if chunk_size is None:
            chunk_size = max(1, self.similarity_budget_bytes // max(1, 4 * B * self.embed_dim))
        if chunk_size <= 0:
            raise ConfigError(f"{self.name}: chunk_size must be positive, got {chunk_size}")
        outs = []
        for i in range(0, text.shape[0], chunk_size):
            t = text[i:i + chunk_size]
            v = self(frames, mask, t)  # [q, B, D], normalised
            outs.append(torch.einsum("qd,qbd->qb", l2_normalize(t.to(v)), v))
        if not outs:
            return torch.zeros(0, B, device=frames.device)
        return torch.cat(outs)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, max_frames={self.max_frames}"


def trainable_parameters(module: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
