"""Transformer temporal modules: CLIP4Clip ``seq_transformer`` and CLIP2Video ``tdb``.

Both run a stack of CLIP-style pre-LN transformer blocks (:class:`ResidualAttentionBlock`) over
the frame embeddings ``[B, T, D]`` and are initialised from the CLIP text tower when its width
equals D (the CLIP4Clip / CLIP2Video "initialisation trick"). Their blocks use the official
TF-style LayerNorm eps :data:`TEMPORAL_LN_EPS` (1e-12, CLIP4Clip / CLIP2Video
``modules/until_module.py``), also when the weights are copied from the text tower (whose own
LayerNorms use 1e-5): that is what the official temporal transformer computes.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vidclip.core.errors import ConfigError
from vidclip.models.temporal.base import TemporalModule, key_padding, l2_normalize, masked_mean

if TYPE_CHECKING:  # pragma: no cover
    from vidclip.models.clip.load import FrozenCLIP

__all__ = ["TEMPORAL_LN_EPS", "QuickGELU", "ResidualAttentionBlock", "SeqTransformer", "TemporalDifferenceBlock"]

#: LayerNorm eps of the official CLIP4Clip / CLIP2Video temporal blocks (until_module.LayerNorm).
TEMPORAL_LN_EPS = 1e-12


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the activation of OpenAI's CLIP (and of CLIP4Clip's blocks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block of CLIP (same parameter names as open_clip's / OpenAI's):

    ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`` on batch-first ``[B, L, W]`` tokens, with
    padded keys masked out. Weights can be copied from an open_clip text block or a
    transformers ``CLIPEncoderLayer`` (see :func:`_copy_text_block`).
    """

    def __init__(self, width: int, heads: int, mlp_width: int | None = None,
                 act: nn.Module | None = None, ln_eps: float = 1e-5):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=ln_eps)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width, eps=ln_eps)
        mlp_width = mlp_width or 4 * width
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, mlp_width)),
            ("gelu", act if act is not None else QuickGELU()),
            ("c_proj", nn.Linear(mlp_width, width)),
        ]))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x float ``[B, L, W]``, mask bool ``[B, L]`` (True = real token) -> ``[B, L, W]``."""
        h = self.ln_1(x)
        kpm = None if mask is None else key_padding(mask, h.dtype)
        x = x + self.attn(h, h, h, need_weights=False, key_padding_mask=kpm)[0]
        return x + self.mlp(self.ln_2(x))


# ----------------------------------------------------------------------------------------------
# Initialisation from the CLIP text tower (CLIP4Clip / CLIP2Video "initialisation trick")
# ----------------------------------------------------------------------------------------------
def _text_tower(clip: Any) -> tuple[list[nn.Module], torch.Tensor, str] | None:
    """(text blocks, text positional embedding [ctx, W], family) of a FrozenCLIP, or None."""
    family = getattr(clip, "family", None)
    net = getattr(clip, "model", None)
    if net is None:
        return None
    if family == "hf":
        tm = getattr(net, "text_model", None)
        if tm is None:
            return None
        return list(tm.encoder.layers), tm.embeddings.position_embedding.weight, "hf"
    if family == "open_clip":
        tower = net.text if hasattr(net, "text") else net  # CustomTextCLIP keeps its tower in .text
        tr = getattr(tower, "transformer", None)
        pos = getattr(tower, "positional_embedding", None)
        if tr is None or pos is None or not hasattr(tr, "resblocks"):
            return None
        return list(tr.resblocks), pos, "open_clip"
    return None


def _copy_text_block(src: nn.Module, family: str, ln_eps: float = TEMPORAL_LN_EPS) -> ResidualAttentionBlock:
    """A :class:`ResidualAttentionBlock` with the weights of text block ``src`` and LayerNorm ``ln_eps``
    (the official temporal blocks' 1e-12 by default; ``src``'s own eps makes it compute exactly what
    ``src`` computes).

    open_clip: ``ResidualAttentionBlock`` (same names; LayerScale, if any, is folded into the
    output projections: ``g * (W x + b) = (diag(g) W) x + g b``). transformers:
    ``CLIPEncoderLayer`` (q/k/v projections concatenated into ``in_proj``).
    Raises ConfigError for block types it does not know.
    """
    with torch.no_grad():
        if family == "open_clip":
            if not (hasattr(src, "ln_1") and isinstance(getattr(src, "attn", None), nn.MultiheadAttention)
                    and hasattr(src, "mlp") and hasattr(src.mlp, "c_fc")):
                raise ConfigError(f"text block {type(src).__name__}: not an open_clip ResidualAttentionBlock")
            width = src.ln_1.normalized_shape[0]
            blk = ResidualAttentionBlock(width, src.attn.num_heads, src.mlp.c_fc.out_features,
                                         act=copy.deepcopy(src.mlp.gelu), ln_eps=ln_eps)
            sd = {k: v.detach().clone() for k, v in src.state_dict().items()
                  if not k.startswith(("ls_1.", "ls_2.", "ln_1_kv."))}
            for ls, proj_w, proj_b in (("ls_1", "attn.out_proj.weight", "attn.out_proj.bias"),
                                       ("ls_2", "mlp.c_proj.weight", "mlp.c_proj.bias")):
                g = getattr(getattr(src, ls, None), "gamma", None)
                if g is not None:
                    sd[proj_w] = sd[proj_w] * g.detach().unsqueeze(1)
                    sd[proj_b] = sd[proj_b] * g.detach()
            blk.load_state_dict(sd, strict=True)
            return blk
        if family == "hf":
            a = src.self_attn
            width = src.layer_norm1.normalized_shape[0]
            blk = ResidualAttentionBlock(width, a.num_heads, src.mlp.fc1.out_features,
                                         act=copy.deepcopy(src.mlp.activation_fn), ln_eps=ln_eps)
            blk.ln_1.load_state_dict(src.layer_norm1.state_dict())
            blk.ln_2.load_state_dict(src.layer_norm2.state_dict())
            blk.attn.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
            blk.attn.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
            blk.attn.out_proj.load_state_dict(a.out_proj.state_dict())
            blk.mlp.c_fc.load_state_dict(src.mlp.fc1.state_dict())
            blk.mlp.c_proj.load_state_dict(src.mlp.fc2.state_dict())
            return blk
    raise ConfigError(f"CLIP family {family!r}: cannot copy text blocks")


def _init_clip4clip_(module: nn.Module) -> None:
    """CLIP4Clip's ``init_weights``: Linear/Embedding ~ N(0, 0.02), zero biases, LayerNorm (1, 0).

    (``nn.MultiheadAttention.in_proj_weight`` is a bare Parameter and keeps torch's xavier init,
    as it does in CLIP4Clip.)
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def _default_heads(width: int) -> int:
    """CLIP's rule ``width // 64`` heads (at least 1, and dividing ``width``)."""
    h = max(1, width // 64)
    return h if width % h == 0 else 1


class _TextTowerInit:
    """Copies blocks / positions from the CLIP text tower when its width equals D.

    Used by seq_transformer and tdb; warns once per module when it has to fall back to random
    init (no clip given is silent: that is an explicit choice).
    """

    def __init__(self, owner: str, embed_dim: int, clip: Any):
        self.owner = owner
        self.tower = None
        if clip is None:
            return
        tower = _text_tower(clip)
        if tower is None:
            warnings.warn(f"{owner}: no usable text tower in {type(getattr(clip, 'model', clip)).__name__}; "
                          "temporal layers are randomly initialised", stacklevel=4)
            return
        blocks, pos, family = tower
        width = pos.shape[-1]
        if width != embed_dim:
            # Worth a warning only when the text tower holds trained weights: copying a randomly
            # initialised tower (tiny test configs) would gain nothing, so falling back is expected.
            if not getattr(getattr(clip, "identity", None), "random_weights", False):
                warnings.warn(f"{owner}: CLIP text width {width} != embed_dim {embed_dim}; temporal "
                              "transformer and frame positions are randomly initialised, not copied "
                              "from the text tower", stacklevel=4)
            return
        self.tower = tower

    @property
    def available(self) -> bool:
        return self.tower is not None

    def blocks(self, n: int, start: int = 0) -> list[ResidualAttentionBlock] | None:
        """Copies of text blocks ``start .. start+n-1`` (fewer if the tower is shallower)."""
        if self.tower is None:
            return None
        blocks, _, family = self.tower
        got = [_copy_text_block(b, family) for b in blocks[start:start + n]]
        if len(got) < n:
            warnings.warn(f"{self.owner}: text tower has {len(blocks)} blocks; {n - len(got)} of the "
                          f"{n} temporal layers are randomly initialised", stacklevel=4)
        return got

    def positions(self, n: int) -> torch.Tensor | None:
        """First ``n`` rows of the text positional embedding (fewer if the context is shorter)."""
        if self.tower is None:
            return None
        pos = self.tower[1].detach()
        if pos.shape[0] < n:
            warnings.warn(f"{self.owner}: text context {pos.shape[0]} < {n} positions needed; the "
                          "rest are randomly initialised", stacklevel=4)
        return pos[:n].clone().float()


def _make_stack(init: _TextTowerInit, n: int, width: int, start: int = 0) -> nn.ModuleList:
    copied = init.blocks(n, start) or []
    heads = copied[0].attn.num_heads if copied else _default_heads(width)
    act = copy.deepcopy(copied[0].mlp.gelu) if copied else None
    fresh = [ResidualAttentionBlock(width, heads, act=copy.deepcopy(act), ln_eps=TEMPORAL_LN_EPS)
             for _ in range(n - len(copied))]
    for b in fresh:
        _init_clip4clip_(b)
    return nn.ModuleList(copied + fresh)


def _text_tower_init(owner: str, embed_dim: int, clip: Any, num_layers: int) -> _TextTowerInit:
    """Check ``num_layers`` of module ``owner``, then find the text tower to copy from."""
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ConfigError(f"{owner}: num_layers must be a positive int, got {num_layers!r}")
    return _TextTowerInit(owner, embed_dim, clip)


def _position_tables(init: _TextTowerInit, embed_dim: int, *rows: int) -> list[nn.Embedding]:
    """One ``[n, embed_dim]`` embedding table per ``n`` in ``rows``: CLIP4Clip's N(0, 0.02) init,
    then the first ``n`` rows of the text positional embedding copied in (where there is one).
    All tables are made, then all initialised, then all copied: the order of the random draws
    (and so the weights a seed gives) is that of the original code."""
    tables = [nn.Embedding(n, embed_dim) for n in rows]
    for table in tables:
        _init_clip4clip_(table)
    for table, n in zip(tables, rows):
        copied = init.positions(n)
        if copied is not None:
            with torch.no_grad():
                table.weight[: copied.shape[0]].copy_(copied)
    return tables


# ----------------------------------------------------------------------------------------------
# CLIP4Clip seqTransf
# ----------------------------------------------------------------------------------------------
class SeqTransformer(TemporalModule):
    """CLIP4Clip "seqTransf" (Luo et al. 2021, ``_loose_similarity``):

    ``x = frames + P[0..T-1]``; ``x = Transformer_4(x)`` with padded frames masked as keys;
    ``x = x + frames``; ``v = normalise(masked_mean(normalise(x)))``.

    ``P`` (``max_frames`` x D) and the layers are copied from the CLIP text tower (its
    positional embedding and first ``num_layers`` blocks) when the text width equals D, as
    CLIP4Clip does; otherwise CLIP4Clip's random init (N(0, 0.02)) with a warning.
    """

    name = "seq_transformer"

    def __init__(self, embed_dim: int, *, max_frames: int = 32, clip: FrozenCLIP | None = None,
                 num_layers: int = 4):
        super().__init__(embed_dim, max_frames=max_frames, clip=clip)
        init = _text_tower_init("seq_transformer", embed_dim, clip, num_layers)
        (self.frame_position_embeddings,) = _position_tables(init, embed_dim, max_frames)
        self.transformer = _make_stack(init, num_layers, embed_dim)
        self.initialised_from_text = init.available

    def encode_frames(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Contextualised frames ``[B, T, D]`` (transformer output + residual), before pooling."""
        T = frames.shape[1]
        x = frames + self.frame_position_embeddings.weight[:T].unsqueeze(0)
        for blk in self.transformer:
            x = blk(x, mask)
        return x + frames

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None,
                text: torch.Tensor | None = None) -> torch.Tensor:
        """frames ``[B, T, D]``, mask ``[B, T]`` -> ``[B, D]`` normalised."""
        frames, mask, _ = self._check(frames, mask, positions=True)
        x = self.encode_frames(frames, mask)
        return l2_normalize(masked_mean(l2_normalize(x), mask))


# ----------------------------------------------------------------------------------------------
# CLIP2Video Temporal Difference Block
# ----------------------------------------------------------------------------------------------
class TemporalDifferenceBlock(TemporalModule):
    """CLIP2Video TDB + temporal transformer (Fang et al. 2021, ``_similarity_TDB`` with
    ``temporal_proj='sigmoid_selfA'``, the released configuration):

    1. ``d_t = x_{t+1} - x_t`` (t = 0..T-2) on the raw frame embeddings; ``d_t += P[t+1]``.
    2. ``d = 2 * sigmoid(LN(Attn_1(d))) - 1`` (1-layer difference attention, squashing to [-1, 1]).
    3. Tokens ``[x_0, d_0, x_1, d_1, ..., x_{T-1}]`` (2T-1): frame ``x_t`` gets ``P[t] + E_type[1]``,
       difference ``d_t`` gets ``P[t] + E_type[0]``.
    4. The 4-layer temporal transformer; keep the frame tokens (even positions), add the input
       frames (residual), then normalise, masked mean, normalise.

    Init as CLIP2Video: ``P`` <- text positional embedding, ``E_type`` <- its first 2 rows,
    difference attention <- text block 0, transformer <- text blocks 0..3.

    Departure from the official code: a difference token is real only when *both* its frames
    are (``mask[t] & mask[t+1]``). The official code uses ``mask[t+1]`` in step 2 but ``mask[t]``
    in step 4, so the difference between the last real frame and the first padding frame
    takes part in the transformer and padding changes the output; here it does not.
    """

    name = "tdb"

    def __init__(self, embed_dim: int, *, max_frames: int = 32, clip: FrozenCLIP | None = None,
                 num_layers: int = 4):
        super().__init__(embed_dim, max_frames=max_frames, clip=clip)
        init = _text_tower_init("tdb", embed_dim, clip, num_layers)
        # type rows: 0 = difference, 1 = frame
        self.frame_position_embeddings, self.type_position_embeddings = _position_tables(init, embed_dim, max_frames, 2)
        self.frame2t_attention = _make_stack(init, 1, embed_dim)
        self.trans_layernorm = nn.LayerNorm(embed_dim)
        self.transformer = _make_stack(init, num_layers, embed_dim)
        self.initialised_from_text = init.available

    def difference_tokens(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-2: frames ``[B, T, D]`` -> difference tokens ``[B, T-1, D]`` in [-1, 1] and
        their mask ``[B, T-1]``."""
        T = frames.shape[1]
        pos = self.frame_position_embeddings.weight[:T]
        d = frames[:, 1:] - frames[:, :-1] + pos[1:].unsqueeze(0)
        dmask = mask[:, 1:] & mask[:, :-1]
        for blk in self.frame2t_attention:
            d = blk(d, dmask)
        return 2 * torch.sigmoid(self.trans_layernorm(d)) - 1, dmask

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None,
                text: torch.Tensor | None = None) -> torch.Tensor:
        """frames ``[B, T, D]``, mask ``[B, T]`` -> ``[B, D]`` normalised."""
        frames, mask, _ = self._check(frames, mask, positions=True)
        B, T, D = frames.shape
        pos = self.frame_position_embeddings.weight[:T].unsqueeze(0)  # [1, T, D]
        typ = self.type_position_embeddings.weight  # [2, D]
        ftok = frames + pos + typ[1]
        if T > 1:
            d, dmask = self.difference_tokens(frames, mask)
            dtok = d + pos[:, :-1] + typ[0]  # difference t sits after frame t and shares its position
            # interleave without a Python loop: [B, T-1, 2, D] -> [B, 2T-2, D], then the last frame
            seq = torch.cat([torch.stack([ftok[:, :-1], dtok], dim=2).reshape(B, 2 * (T - 1), D),
                             ftok[:, -1:]], dim=1)
            smask = torch.cat([torch.stack([mask[:, :-1], dmask], dim=2).reshape(B, 2 * (T - 1)),
                               mask[:, -1:]], dim=1)
        else:
            seq, smask = ftok, mask
        for blk in self.transformer:
            seq = blk(seq, smask)
        x = seq[:, 0::2] + frames  # frame tokens + residual
        return l2_normalize(masked_mean(l2_normalize(x), mask))
