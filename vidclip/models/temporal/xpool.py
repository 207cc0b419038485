"""``xpool``: X-Pool's text-conditioned attention pooling (Gorti et al. 2022)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from vidclip.core.errors import ConfigError
from vidclip.models.temporal.base import TemporalModule, l2_normalize

if TYPE_CHECKING:  # pragma: no cover
    from vidclip.models.clip.load import FrozenCLIP

__all__ = ["XPool"]


class XPool(TemporalModule):
    """X-Pool cross-modal attention pooling (Gorti et al. 2022, ``modules/transformer.py``):

    ``t = LN1(text)``, ``f = LN1(frames)`` (one shared LayerNorm, as the official code);
    ``a = out_proj(softmax_t(q(t) k(f)^T / sqrt(d_head)) v(f))`` over the real frames;
    ``a = LN2(a)``; ``o = LN3(a + dropout(linear_proj(a)))``; output ``normalise(o)`` ``[Q, B, D]``.

    q/k/v/out/linear projections start as identity with zero bias; one head and dropout 0.3 by
    default, as the paper. (The official code has no frame mask: all its videos have 12 frames.)
    """

    name = "xpool"
    text_conditioned = True

    def __init__(self, embed_dim: int, *, max_frames: int = 32, clip: FrozenCLIP | None = None,
                 num_heads: int = 1, dropout: float = 0.3):
        super().__init__(embed_dim, max_frames=max_frames, clip=clip)
        if not isinstance(num_heads, int) or num_heads < 1 or embed_dim % num_heads:
            raise ConfigError(f"xpool: num_heads must be a positive divisor of embed_dim={embed_dim}, got {num_heads!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ConfigError(f"xpool: dropout must be in [0, 1), got {dropout!r}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        D = embed_dim
        self.q_proj, self.k_proj = nn.Linear(D, D), nn.Linear(D, D)
        self.v_proj, self.out_proj = nn.Linear(D, D), nn.Linear(D, D)
        self.linear_proj = nn.Linear(D, D)
        self.layer_norm1, self.layer_norm2, self.layer_norm3 = nn.LayerNorm(D), nn.LayerNorm(D), nn.LayerNorm(D)
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():
            for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.linear_proj):
                nn.init.eye_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None,
                text: torch.Tensor | None = None) -> torch.Tensor:
        """frames ``[B, T, D]``, mask ``[B, T]``, text ``[Q, D]`` -> ``[Q, B, D]`` normalised."""
        frames, mask, text = self._check(frames, mask, text)
        B, T, D = frames.shape
        H, hd = self.num_heads, self.head_dim
        t = self.layer_norm1(text)
        f = self.layer_norm1(frames)
        q = self.q_proj(t).view(-1, H, hd)  # [Q, H, hd]
        k = self.k_proj(f).view(B, T, H, hd)
        v = self.v_proj(f).view(B, T, H, hd)
        logits = torch.einsum("qhe,bthe->bhqt", q, k) / math.sqrt(hd)  # [B, H, Q, T]
        logits = logits.masked_fill(~mask[:, None, None, :], torch.finfo(logits.dtype).min)
        w = torch.softmax(logits, dim=-1) * mask[:, None, None, :].to(logits.dtype)
        att = torch.einsum("bhqt,bthe->bqhe", w, v).reshape(B, -1, D)  # [B, Q, D]
        a = self.layer_norm2(self.out_proj(att))
        o = self.layer_norm3(a + self.dropout(self.linear_proj(a)))
        return l2_normalize(o.transpose(0, 1))  # [Q, B, D]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_heads={self.num_heads}, dropout={self.dropout.p}"
