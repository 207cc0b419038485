"""``mean``: CLIP4Clip's parameter-free mean pooling ("meanP"), a TemporalModule like the others."""

from __future__ import annotations

import torch

from vidclip.models.temporal.base import TemporalModule, l2_normalize, masked_mean

__all__ = ["MeanPooling"]


class MeanPooling(TemporalModule):
    """CLIP4Clip meanP: ``normalise(masked_mean(normalise(frames)))``. No parameters."""

    name = "mean"

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None,
                text: torch.Tensor | None = None) -> torch.Tensor:
        """frames ``[B, T, D]``, mask ``[B, T]`` -> ``[B, D]`` normalised."""
        frames, mask, _ = self._check(frames, mask)
        return l2_normalize(masked_mean(l2_normalize(frames), mask))
