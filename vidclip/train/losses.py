"""Symmetric InfoNCE with a learnable temperature, exact across processes.

The loss of CLIP / CLIP4Clip on a batch of N (text, video) pairs with similarity matrix
``S [N, N]`` (text rows, video columns) and logit scale ``s``::

    L = 1/2 * ( mean_i CE(s * S[i, :], i)  +  mean_j CE(s * S[:, j], j) )

**Several processes.** Each of P processes holds n_p pairs (N = sum n_p). Every process gathers
the other processes' embeddings *with gradients* (:func:`all_gather_with_grad`) and computes
only its own rows and columns of the global matrix::

    L_p = 1/(2 n) * ( sum_{i local} CE(s * S[i, :], i)  +  sum_{j local} CE(s * S[:, j], j) )

(with equal n_p = n, sum_p L_p / P = L). The gather's backward sums the gradient that every
process sends to a slice, so the gradient reaching process p's own features is
d(sum_q L_q)/d f_p; DDP then *averages* parameter gradients over the P processes, giving
d(sum_q L_q / P)/d theta = dL/d theta: exactly the single-process gradient on the concatenated
batch (tests/test_losses.py checks this with two gloo processes). For unequal n_p the local
losses are weighted by n_p * P / N, which keeps the identity.

Text-conditioned modules (query_scoring, xpool) have no per-video embedding; their local rows
and columns are computed from gathered *inputs* (text embeddings, frame features and masks)
through ``module.similarity``, which is the same algebra.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "all_gather_with_grad",
    "gather_batch",
    "infonce_from_sim",
    "contrastive_loss",
    "conditioned_contrastive_loss",
]

# ----------------------------------------------------------------------------- gathering


def _dist_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_sizes(n: int, device) -> list[int]:
    size = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _gather_padded(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """all_gather along dim 0 for unequal first dimensions (pad to the max, then trim)."""
    # gloo cannot all_gather bool tensors; carry them as uint8.
    as_bool = x.dtype == torch.bool
    if as_bool:
        x = x.to(torch.uint8)
    longest = max(sizes)
    if x.shape[0] < longest:
        x = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x.contiguous())
    out = torch.cat([p[:n] for p, n in zip(parts, sizes)])
    return out.bool() if as_bool else out


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every process's tensor along dim 0; backward returns this process's slice of
    the gradient summed over all processes (each process's loss touches every slice)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: tuple[int, ...], rank: int):
        ctx.sizes, ctx.rank = sizes, rank
        return _gather_padded(x, list(sizes))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        # all_reduce over the whole [N, ...] gradient: simple and available on every backend
        # (gloo has no reduce_scatter for all dtypes); the extra traffic is N x D floats.
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None, None


def all_gather_with_grad(x: torch.Tensor, sizes: list[int] | None = None) -> tuple[torch.Tensor, int]:
    """Gather ``x`` [n, ...] from all processes -> ([N, ...], offset of this process's rows).

    Single process: returns (x, 0) unchanged. Gradients flow back to every process's ``x``
    (summed over processes); tensors that do not require grad are gathered without autograd.
    ``sizes`` (every process's n, in rank order) saves a round trip when already known.
    """
    if not _dist_active():
        return x, 0
    if sizes is None:
        sizes = _gather_sizes(x.shape[0], x.device)
    rank = dist.get_rank()
    offset = sum(sizes[:rank])
    if x.requires_grad:
        return _AllGatherWithGrad.apply(x, tuple(sizes), rank), offset
    return _gather_padded(x, sizes), offset


def gather_batch(*tensors: torch.Tensor) -> tuple[list[torch.Tensor], int, int, int]:
    """Gather tensors sharing the first dim n -> (gathered list, offset, n, N)."""
    n = tensors[0].shape[0]
    if not _dist_active():
        return list(tensors), 0, n, n
    sizes = _gather_sizes(n, tensors[0].device)
    out, offset = [], 0
    for t in tensors:
        g, offset = all_gather_with_grad(t, sizes)
        out.append(g)
    return out, offset, n, sum(sizes)


# ----------------------------------------------------------------------------- losses


def infonce_from_sim(
    rows: torch.Tensor,
    cols: torch.Tensor,
    logit_scale: torch.Tensor,
    offset: int = 0,
    total: int | None = None,
) -> torch.Tensor:
    """Local share of the symmetric InfoNCE loss.

    Args:
        rows: [n, N] similarities of this process's n texts to all N videos.
        cols: [N, n] similarities of all N texts to this process's n videos.
        logit_scale: scalar tensor s.
        offset: global index of this process's first pair (its positives are offset + i).
        total: N (defaults to rows.shape[1]).
    Returns:
        scalar: single process (n = N) -> the full loss; P processes -> L_p, whose mean over
        processes (as DDP averages gradients) equals the full loss.
    """
    n = rows.shape[0]
    total = rows.shape[1] if total is None else total
    if n == 0:
        # A process without pairs still has to join the collective graph: a zero that
        # depends on the inputs keeps gradients defined.
        return (rows.sum() + cols.sum()) * 0.0 + logit_scale * 0.0
    target = torch.arange(offset, offset + n, device=rows.device)
    t2v = F.cross_entropy(logit_scale * rows.float(), target, reduction="sum")
    v2t = F.cross_entropy(logit_scale * cols.float().t(), target, reduction="sum")
    world = dist.get_world_size() if _dist_active() else 1
    # sum_p L_p / P must equal (t2v + v2t summed over all N) / (2 N).
    return (t2v + v2t) * world / (2.0 * total)


def contrastive_loss(text: torch.Tensor, video: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE for pooled (text-independent) video embeddings.

    Args:
        text: [n, D] text embeddings (normalised here).
        video: [n, D] video embeddings of the same pairs (normalised here).
        logit_scale: scalar s (e.g. ``vidclip.models.checkpoint.LogitScale()()``).
    Across processes, negatives come from every process (see the module docstring).
    """
    text = F.normalize(text.float(), dim=-1)
    video = F.normalize(video.float(), dim=-1)
    (all_text, all_video), offset, n, total = gather_batch(text, video)
    if not _dist_active():  # one process: rows and columns are the same matrix
        sim = text @ video.t()
        return infonce_from_sim(sim, sim, logit_scale)
    rows = text @ all_video.t()  # [n, N]
    cols = all_text @ video.t()  # [N, n]
    return infonce_from_sim(rows, cols, logit_scale, offset, total)


def conditioned_contrastive_loss(
    similarity: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    text: torch.Tensor,
    frames: torch.Tensor,
    mask: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Symmetric InfoNCE for text-conditioned modules.

    Args:
        similarity: ``module.similarity(text [Q, D], frames [B, T, D], mask [B, T]) -> [Q, B]``.
        text: [n, D] text embeddings; frames: [n, T, D] frame features; mask: bool [n, T].
        logit_scale: scalar s.
    """
    (all_text, all_frames, all_mask), offset, n, total = gather_batch(text, frames, mask)
    if not _dist_active():
        sim = similarity(text, frames, mask)
        return infonce_from_sim(sim, sim, logit_scale)
    rows = similarity(text, all_frames, all_mask)  # [n, N]
    cols = similarity(all_text, frames, mask)  # [N, n]
    return infonce_from_sim(rows, cols, logit_scale, offset, total)
