"""Helpers for the tests of torch modules (tests/test_temporal.py, tests/test_ted.py); not a test
module itself."""

from __future__ import annotations

import torch

from vidclip.models.temporal.base import TemporalModule, l2_normalize


def perturb_(module: torch.nn.Module, scale: float, seed: int) -> torch.nn.Module:
    """Add ``scale * N(0, 1)`` (a generator seeded with ``seed``) to every parameter of ``module``,
    in place, moving it away from its (possibly identity / zero) init as training would. Returns it."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module



class MaxPoolForTest(TemporalModule):
    """The README's example plugin (registered by "torch_testutil:MaxPoolForTest" in
    tests/test_temporal.py): element-wise max over the real frames, [B, T, D] -> [B, D]."""

    def forward(self, frames, mask=None, text=None):
        frames, mask, _ = self._check(frames, mask)
        return l2_normalize(frames.masked_fill(~mask[..., None], float("-inf")).amax(dim=1))
