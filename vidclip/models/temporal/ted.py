"""TED adapters (M2-CLIP, Wang et al. 2024) for a frozen open_clip ViT.

M2-CLIP keeps the image CLIP frozen and trains small adapters:

* **TED** inside every ViT block, between the attention and the MLP (M2-CLIP's
  ``adapter_pre_mlp``; ``Adapter2`` + ``OffsetAdapter`` of ``models_adapter.py``)::

      x = x + attn(ln_1(x))
      x = x + TE(x) + [0; TD(x_patches)]          # the adapter
      x = x + mlp(ln_2(x))

  - TE, temporal enhancement, on every token (class token included): ``fc1`` (W -> Wa),
    depthwise temporal ``Conv1d`` (kernel 3) over the frames of each token position, ``fc2``
    (Wa -> W).
  - TD, temporal difference, on the patch tokens: ``delta_t = x_t - x_{t-1}`` (zero for the first
    frame), ``fc1``, depthwise *spatial* 3x3 conv over the patch grid (M2-CLIP's ``Conv3d``
    with kernel (1, 3, 3)), ``fc2``.

* **TA**, the temporal adapter after the projection (``t_adapter = Adapter1``): ``fc1``
  (D -> D/2), depthwise temporal ``Conv1d`` (kernel 3), ``fc2``, residual; then the video
  embedding is the (masked) mean of the frame embeddings, L2-normalised.

Initialisation: every ``fc2`` (the last projection of each branch) is zero (weight and bias),
so at initialisation each adapter adds exactly 0 and the encoder reproduces the frozen CLIP
bit for bit. (M2-CLIP zeroes the depthwise conv instead; either gives the identity at init,
zeroing the last projection is the usual adapter/LoRA choice and lets the first update reach
the adapter output directly.) The bottleneck ``Wa`` defaults to ``W // 2`` (384 for ViT-B,
as M2-CLIP's ``adapter12x384``).

Padding: padded frames go through the backbone (their pixels are irrelevant) but never
influence real frames: the temporal-conv inputs of padded frames are zeroed (the same zeros a
shorter sequence would see as conv padding) and a difference against a padded previous frame
is zero. The backbone is not part of this module's parameters/state dict (it is the FrozenCLIP's
and stays frozen and in eval mode); only the adapters are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidclip.core.errors import ConfigError
from vidclip.models.temporal.base import TemporalModule, l2_normalize, masked_mean

if TYPE_CHECKING:  # pragma: no cover
    from vidclip.models.clip.load import FrozenCLIP

__all__ = ["TEDAdapter", "TemporalAdapter", "TEDVideoEncoder"]


class _SharedRef:
    """Holds the FrozenCLIP by reference: ``copy.deepcopy`` of the encoder (EMA copies, tests)
    shares the frozen backbone instead of duplicating it."""

    def __init__(self, obj: Any):
        self.obj = obj

    def __deepcopy__(self, memo: dict) -> _SharedRef:
        return self


def _temporal_dwconv(conv: nn.Conv1d, h: torch.Tensor) -> torch.Tensor:
    """Depthwise conv over frames: h ``[B, T, N, C]`` -> ``[B, T, N, C]`` (N token positions)."""
    B, T, N, C = h.shape
    y = conv(h.permute(0, 2, 3, 1).reshape(B * N, C, T))  # [B*N, C, T]
    return y.view(B, N, C, T).permute(0, 3, 1, 2)


class TEDAdapter(nn.Module):
    """One ViT block's TED adapter (temporal enhancement + temporal difference).

    Args:
        width: ViT token width ``W``.
        bottleneck: adapter width ``Wa``.
        grid: patch grid ``(H, W)``; tokens are ``[cls, H*W patches]``.
        kernel_size: temporal kernel of TE (odd).
    """

    def __init__(self, width: int, bottleneck: int, grid: tuple[int, int], kernel_size: int = 3):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"ted: kernel_size must be a positive odd int, got {kernel_size!r}")
        self.grid = (int(grid[0]), int(grid[1]))
        # temporal enhancement (all tokens)
        self.te_fc1 = nn.Linear(width, bottleneck)
        self.te_conv = nn.Conv1d(bottleneck, bottleneck, kernel_size, padding=kernel_size // 2, groups=bottleneck)
        self.te_fc2 = nn.Linear(bottleneck, width)
        # temporal difference (patch tokens)
        self.td_fc1 = nn.Linear(width, bottleneck)
        self.td_conv = nn.Conv2d(bottleneck, bottleneck, 3, padding=1, groups=bottleneck)
        self.td_fc2 = nn.Linear(bottleneck, width)
        for lin in (self.te_fc1, self.td_fc1):
            nn.init.zeros_(lin.bias)  # as M2-CLIP
        for lin in (self.te_fc2, self.td_fc2):  # last projections zero: identity at init
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, B: int, T: int, mask: torch.Tensor) -> torch.Tensor:
        """x ``[B*T, 1+H*W, W]`` (frame-major: row ``b*T + t``), mask bool ``[B, T]`` -> same shape."""
        BT, L, C = x.shape
        gh, gw = self.grid
        if L - 1 != gh * gw:
            raise ConfigError(f"ted: block tokens {L} != 1 + {gh}x{gw} patches (registers / patch "
                              "dropout are not supported)")
        m = mask.to(x.dtype).view(B, T, 1, 1)
        # TE: zero the padded frames' inputs so the conv sees them as its zero padding
        h = self.te_fc1(x).view(B, T, L, -1) * m
        te = self.te_fc2(_temporal_dwconv(self.te_conv, h)).reshape(BT, L, C)
        # TD: delta_t = p_t - p_{t-1}; zero for t = 0 and where frame t-1 is padding
        p = x[:, 1:].view(B, T, L - 1, C)
        delta = torch.zeros_like(p)
        if T > 1:
            delta[:, 1:] = (p[:, 1:] - p[:, :-1]) * m[:, :-1]
        d = self.td_fc1(delta).reshape(BT, gh, gw, -1).permute(0, 3, 1, 2)  # [BT, Ca, gh, gw]
        d = self.td_conv(d).permute(0, 2, 3, 1).reshape(BT, L - 1, -1)
        td = self.td_fc2(d)
        return x + te + F.pad(td, (0, 0, 1, 0))  # TD adds nothing to the class token


class TemporalAdapter(nn.Module):
    """M2-CLIP's post-projection temporal adapter (TA): ``x + fc2(dwconv_t(fc1(x)))``.

    x ``[B, T, D]``, mask ``[B, T]`` -> ``[B, T, D]``; bottleneck ``D // 2``; ``fc2`` zero-init.
    """

    def __init__(self, dim: int, kernel_size: int = 3, bottleneck: int | None = None):
        super().__init__()
        b = bottleneck or max(1, dim // 2)
        self.fc1 = nn.Linear(dim, b)
        self.conv = nn.Conv1d(b, b, kernel_size, padding=kernel_size // 2, groups=b)
        self.fc2 = nn.Linear(b, dim)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x) * mask.to(x.dtype).unsqueeze(-1)  # [B, T, b]
        h = self.conv(h.transpose(1, 2)).transpose(1, 2)
        return x + self.fc2(h)


class TEDVideoEncoder(TemporalModule):
    """Frozen open_clip ViT + trainable TED adapters + TA: pixels -> video embedding.

    Args:
        clip: the FrozenCLIP (open_clip ViT with ``ResidualAttentionBlock`` blocks).
        num_frames: most frames per video (``T`` may be anything up to it).
        bottleneck: adapter width (default ``width // 2``).
        kernel_size: temporal kernel of TE and TA.
        adapter_layers: adapt the last ``adapter_layers`` blocks (default all, as M2-CLIP).
        temporal_adapter: add the post-projection TA (default True).
        grad_checkpointing: recompute block activations in backward (saves memory in training).
    """

    name = "ted"
    needs_pixels = True

    def __init__(self, clip: FrozenCLIP, num_frames: int, bottleneck: int | None = None, kernel_size: int = 3,
                 *, adapter_layers: int | None = None, temporal_adapter: bool = True,
                 grad_checkpointing: bool = False):
        if clip is None:
            raise ConfigError("ted: needs the FrozenCLIP (create_temporal('ted', D, clip=clip))")
        super().__init__(clip.embed_dim, max_frames=num_frames, clip=clip)
        if clip.family != "open_clip":
            raise ConfigError(f"ted: CLIP family {clip.family!r} is not supported (TED is implemented "
                              "for open_clip ViTs only; load the model through open_clip)")
        blocks = clip.visual_blocks()
        from open_clip.transformer import ResidualAttentionBlock as OCBlock

        bad = [type(b).__name__ for b in blocks if not isinstance(b, OCBlock)]
        if bad:
            raise ConfigError(f"ted: vision blocks of type {bad[0]} are not supported (needs open_clip "
                              "ResidualAttentionBlock)")
        visual = clip.model.visual
        if not hasattr(visual, "_embeds"):
            raise ConfigError("ted: open_clip VisionTransformer without _embeds (open_clip < 2.30)")
        width = blocks[0].ln_1.normalized_shape[0]
        n = len(blocks)
        adapter_layers = n if adapter_layers is None else adapter_layers
        if not isinstance(adapter_layers, int) or not 0 <= adapter_layers <= n:
            raise ConfigError(f"ted: adapter_layers must be in 0..{n}, got {adapter_layers!r}")
        bottleneck = max(1, width // 2) if bottleneck is None else bottleneck
        if not isinstance(bottleneck, int) or bottleneck < 1:
            raise ConfigError(f"ted: bottleneck must be a positive int, got {bottleneck!r}")
        grid = tuple(getattr(visual, "grid_size", (0, 0)))
        # The backbone is deliberately kept out of the module tree (a plain attribute): it is not
        # trained, not saved with the adapters, and .train() never takes it out of eval mode.
        self.__dict__["_clip"] = _SharedRef(clip)
        self.width, self.bottleneck, self.kernel_size = width, bottleneck, kernel_size
        self.grad_checkpointing = grad_checkpointing
        self.adapters = nn.ModuleDict({
            str(i): TEDAdapter(width, bottleneck, grid, kernel_size) for i in range(n - adapter_layers, n)})
        self.temporal_adapter = TemporalAdapter(clip.embed_dim, kernel_size) if temporal_adapter else None
        self.to(clip.device)

    @classmethod
    def create(cls, embed_dim: int, *, max_frames: int = 32, clip: FrozenCLIP | None = None,
               **kw: Any) -> TEDVideoEncoder:
        if clip is None:
            raise ConfigError("ted: needs the FrozenCLIP (create_temporal('ted', D, clip=clip))")
        if embed_dim != clip.embed_dim:
            raise ConfigError(f"ted: embed_dim {embed_dim} differs from the CLIP model's {clip.embed_dim}")
        return cls(clip, num_frames=max_frames, **kw)

    @property
    def clip(self) -> FrozenCLIP:
        return self.__dict__["_clip"].obj

    # -- inputs --------------------------------------------------------------------------------
    def _pixels(self, pixels: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        S = self.clip.image_size
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 5:
            got = list(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            raise ConfigError(f"ted: pixels must be float [B, T, 3, {S}, {S}] (or uint8 [B, T, H, W, 3]), got {got}")
        B, T = pixels.shape[:2]
        if pixels.dtype == torch.uint8:
            pixels = self.clip.preprocess(pixels.reshape(B * T, *pixels.shape[2:])).view(B, T, 3, S, S)
        elif not pixels.is_floating_point() or tuple(pixels.shape[2:]) != (3, S, S):
            raise ConfigError(f"ted: pixels must be float [B, T, 3, {S}, {S}], got "
                              f"{str(pixels.dtype).replace('torch.', '')} {list(pixels.shape)}")
        if T > self.max_frames:
            raise ConfigError(f"ted: {T} frames per video exceed num_frames={self.max_frames}")
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool)
        elif not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (B, T):
            got = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ConfigError(f"ted: mask must be [B={B}, T={T}] like pixels, got {got}")
        dev = self.clip.device
        return pixels.to(dev, torch.float32), mask.to(dev).bool()

    # -- forward -------------------------------------------------------------------------------
    @staticmethod
    def _block(blk: nn.Module, ad: TEDAdapter | None, h: torch.Tensor, B: int, T: int, mask: torch.Tensor,
               batch_first: bool) -> torch.Tensor:
        # open_clip ResidualAttentionBlock.forward with the adapter inserted before the MLP.
        h = h + blk.ls_1(blk.attention(q_x=blk.ln_1(h), attn_mask=None))
        if ad is not None:
            h = ad(h, B, T, mask) if batch_first else ad(h.transpose(0, 1), B, T, mask).transpose(0, 1)
        return h + blk.ls_2(blk.mlp(blk.ln_2(h)))

    def frame_embeddings(self, pixels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """pixels float ``[B, T, 3, S, S]`` (mask ``[B, T]``) -> ``[B, T, D]`` per-frame embeddings
        after the adapted backbone and the TA (not normalised). Equal to ``clip.encode_frames``
        at initialisation."""
        pixels, mask = self._pixels(pixels, mask)
        B, T = mask.shape
        visual = self.clip.model.visual
        blocks = self.clip.visual_blocks()
        batch_first = getattr(visual.transformer, "batch_first", True)
        h = visual._embeds(pixels.flatten(0, 1))  # [B*T, 1+P, W]
        if not batch_first:
            h = h.transpose(0, 1)
        ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for i, blk in enumerate(blocks):
            ad = self.adapters[str(i)] if str(i) in self.adapters else None
            if ckpt:
                h = checkpoint(self._block, blk, ad, h, B, T, mask, batch_first, use_reentrant=False)
            else:
                h = self._block(blk, ad, h, B, T, mask, batch_first)
        if not batch_first:
            h = h.transpose(0, 1)
        emb = self.clip.pool_tokens(h).float().view(B, T, -1)  # [B, T, D]
        if self.temporal_adapter is not None:
            emb = self.temporal_adapter(emb, mask)
        return emb

    def forward(self, pixels: torch.Tensor, mask: torch.Tensor | None = None,
                text: torch.Tensor | None = None) -> torch.Tensor:
        """pixels float ``[B, T, 3, S, S]``, mask bool ``[B, T]`` -> ``[B, D]`` L2-normalised
        (masked mean of the frame embeddings, as M2-CLIP's mean over frames)."""
        if mask is not None and isinstance(mask, torch.Tensor):
            mask = mask.bool()
        emb = self.frame_embeddings(pixels, mask)
        m = torch.ones(emb.shape[:2], dtype=torch.bool, device=emb.device) if mask is None else mask.to(emb.device)
        return l2_normalize(masked_mean(emb, m))

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_frames={self.max_frames}, width={self.width}, "
                f"bottleneck={self.bottleneck}, kernel_size={self.kernel_size}, "
                f"adapted_blocks={len(self.adapters)}")
