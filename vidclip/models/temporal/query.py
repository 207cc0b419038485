"""``query_scoring``: CLIP-Hitchhiker's text-conditioned, parameter-free frame weighting."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from vidclip.core.errors import ConfigError
from vidclip.models.temporal.base import TemporalModule, l2_normalize

if TYPE_CHECKING:  # pragma: no cover
    from vidclip.models.clip.load import FrozenCLIP

__all__ = ["QueryScoring"]


class QueryScoring(TemporalModule):
    """CLIP-Hitchhiker query scoring (Bain et al. 2022, ``similarity_queryscoring``, mean='feats').

    ``w[q,b,t] = softmax_t(cos(text_q, frame_bt) / tau)`` over the real frames of video ``b``;
    ``v[q,b] = normalise(sum_t w[q,b,t] * frame_bt)`` with the *raw* (unnormalised) frame
    embeddings, as the official code sums ``vid_embeds``, not ``vid_embeds_norm``.
    No parameters; ``tau`` defaults to the paper's 0.1.
    """

    name = "query_scoring"
    text_conditioned = True

    def __init__(self, embed_dim: int, *, max_frames: int = 32, clip: FrozenCLIP | None = None,
                 tau: float = 0.1):
        super().__init__(embed_dim, max_frames=max_frames, clip=clip)
        if not (isinstance(tau, (int, float)) and tau > 0 and math.isfinite(tau)):
            raise ConfigError(f"query_scoring: tau must be a positive number, got {tau!r}")
        self.tau = float(tau)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None,
                text: torch.Tensor | None = None) -> torch.Tensor:
        """frames ``[B, T, D]``, mask ``[B, T]``, text ``[Q, D]`` -> ``[Q, B, D]`` normalised."""
        frames, mask, text = self._check(frames, mask, text)
        cos = torch.einsum("qd,btd->qbt", l2_normalize(text), l2_normalize(frames))  # [Q, B, T]
        logits = (cos / self.tau).masked_fill(~mask.unsqueeze(0), torch.finfo(cos.dtype).min)
        # times mask: a video with no real frame gets all-zero weights (-> zero vector), not a
        # uniform average over its padding
        w = torch.softmax(logits, dim=-1) * mask.unsqueeze(0).to(cos.dtype)
        return l2_normalize(torch.einsum("qbt,btd->qbd", w, frames))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tau={self.tau}"
