"""Temporal modules: per-frame CLIP embeddings -> one video embedding (or one per query).

Every module turns raw frame embeddings ``frames`` float ``[B, T, D]`` (post-projection CLIP
outputs, *not* normalised) plus ``mask`` bool ``[B, T]`` (True = real frame, False = padding)
into L2-normalised video embeddings:

- not text-conditioned: ``[B, D]``
- text-conditioned (``text_conditioned = True``): ``[Q, B, D]``, video ``b`` pooled for text
  ``q`` (``text`` float ``[Q, D]``, raw CLIP text embeddings)

and :meth:`TemporalModule.similarity` gives the ``[Q, B]`` cosine-similarity matrix (chunked
over ``Q`` for conditioned modules so memory stays bounded).

Registered modules (``create_temporal(name, D, ...)``):

===================  ======================================================================
``mean``             CLIP4Clip "meanP": normalise frames, masked mean, normalise. 0 params.
``query_scoring``    CLIP-Hitchhiker's query scoring: softmax(cos(text, frame) / tau) over
                     the frames weights the *raw* frame embeddings. 0 params.
``seq_transformer``  CLIP4Clip "seqTransf": frame positions + 4-layer transformer (from the
                     CLIP text tower), residual, then meanP.
``tdb``              CLIP2Video Temporal Difference Block + the seqTransf transformer.
``xpool``            X-Pool: text-conditioned single-head attention pooling.
``ted``              M2-CLIP TED adapters inside the frozen ViT (vidclip/models/ted.py); takes
                     *pixels*, not frame embeddings (``needs_pixels = True``).
===================  ======================================================================

Padding convention: padded frames may sit anywhere for ``mean``/``query_scoring``/``xpool``;
``seq_transformer``/``tdb`` number frames 0..T-1 as the originals do, so their output is
invariant to padding that sits at the *end* of the sequence (what every collate in vidclip
produces). A video with no real frame at all never yields NaN: a zero vector for mean,
query_scoring, seq_transformer and tdb, a constant (LayerNorm bias) direction for xpool.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vidclip.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from vidclip.models.clip import FrozenCLIP

__all__ = [
    "TemporalModule",
    "TEMPORAL_MODULES",
    "register_temporal",
    "create_temporal",
    "list_temporal",
    "trainable_parameters",
    "MeanPooling",
    "QueryScoring",
    "SeqTransformer",
    "TemporalDifferenceBlock",
    "XPool",
    "ResidualAttentionBlock",
    "QuickGELU",
    "l2_normalize",
    "masked_mean",
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


def _key_padding(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool ``[B, L]`` (True = real) -> additive float ``[B, L]`` (0 real, -1e4 padded)."""
    return (~mask).to(dtype) * _MASK_NEG


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
        kpm = None if mask is None else _key_padding(mask, h.dtype)
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


def _copy_text_block(src: nn.Module, family: str) -> ResidualAttentionBlock:
    """A :class:`ResidualAttentionBlock` computing exactly what text block ``src`` computes.

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
                                         act=copy.deepcopy(src.mlp.gelu), ln_eps=src.ln_1.eps)
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
                                         act=copy.deepcopy(src.mlp.activation_fn), ln_eps=src.layer_norm1.eps)
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
    fresh = [ResidualAttentionBlock(width, heads, act=copy.deepcopy(act)) for _ in range(n - len(copied))]
    for b in fresh:
        _init_clip4clip_(b)
    return nn.ModuleList(copied + fresh)


def _copy_rows_(emb: nn.Embedding, rows: torch.Tensor | None) -> None:
    if rows is not None:
        with torch.no_grad():
            emb.weight[: rows.shape[0]].copy_(rows)


# ----------------------------------------------------------------------------------------------
# Base class and registry
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


TEMPORAL_MODULES: dict[str, type[TemporalModule]] = {}


def register_temporal(name: str):
    """Class decorator: register a :class:`TemporalModule` subclass under ``name``."""

    def deco(cls: type[TemporalModule]) -> type[TemporalModule]:
        if not (isinstance(cls, type) and issubclass(cls, TemporalModule)):
            raise TypeError(f"register_temporal({name!r}): {cls!r} is not a TemporalModule subclass")
        if name in TEMPORAL_MODULES and TEMPORAL_MODULES[name] is not cls:
            raise ValueError(f"temporal module {name!r} is already registered ({TEMPORAL_MODULES[name].__name__})")
        cls.name = name
        TEMPORAL_MODULES[name] = cls
        return cls

    return deco


def list_temporal() -> list[str]:
    """Registered temporal module names, sorted."""
    return sorted(TEMPORAL_MODULES)


def create_temporal(name: str, embed_dim: int, *, max_frames: int = 32, clip: FrozenCLIP | None = None,
                    **kw: Any) -> TemporalModule:
    """Build temporal module ``name`` for embedding width ``embed_dim``.

    Args:
        name: one of :func:`list_temporal`.
        embed_dim: ``D``.
        max_frames: most frames per video (size of the frame-position tables).
        clip: the FrozenCLIP; seq_transformer/tdb copy text-tower layers and positions from it
            when its text width equals ``D``; ted needs it.
        **kw: module options (e.g. ``num_layers``, ``tau``, ``dropout``, ``bottleneck``).
    Raises:
        ConfigError: unknown name or option, or invalid value.
    """
    if name not in TEMPORAL_MODULES:
        raise ConfigError(f"temporal module {name!r} is unknown; choose one of {list_temporal()}")
    cls = TEMPORAL_MODULES[name]
    try:
        return cls.create(embed_dim, max_frames=max_frames, clip=clip, **kw)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise ConfigError(f"temporal module {name!r}: bad option(s) {sorted(kw)}: {e}") from e
        raise


def trainable_parameters(module: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------
# Parameter-free modules
# ----------------------------------------------------------------------------------------------
@register_temporal("mean")
class MeanPooling(TemporalModule):
    """CLIP4Clip meanP: ``normalise(masked_mean(normalise(frames)))``. No parameters."""

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None,
                text: torch.Tensor | None = None) -> torch.Tensor:
        """frames ``[B, T, D]``, mask ``[B, T]`` -> ``[B, D]`` normalised."""
        frames, mask, _ = self._check(frames, mask)
        return l2_normalize(masked_mean(l2_normalize(frames), mask))


@register_temporal("query_scoring")
class QueryScoring(TemporalModule):
    """CLIP-Hitchhiker query scoring (Bain et al. 2022, ``similarity_queryscoring``, mean='feats').

    ``w[q,b,t] = softmax_t(cos(text_q, frame_bt) / tau)`` over the real frames of video ``b``;
    ``v[q,b] = normalise(sum_t w[q,b,t] * frame_bt)`` with the *raw* (unnormalised) frame
    embeddings, as the official code sums ``vid_embeds``, not ``vid_embeds_norm``.
    No parameters; ``tau`` defaults to the paper's 0.1.
    """

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


# ----------------------------------------------------------------------------------------------
# CLIP4Clip seqTransf
# ----------------------------------------------------------------------------------------------
@register_temporal("seq_transformer")
class SeqTransformer(TemporalModule):
    """CLIP4Clip "seqTransf" (Luo et al. 2021, ``_loose_similarity``):

    ``x = frames + P[0..T-1]``; ``x = Transformer_4(x)`` with padded frames masked as keys;
    ``x = x + frames``; ``v = normalise(masked_mean(normalise(x)))``.

    ``P`` (``max_frames`` x D) and the layers are copied from the CLIP text tower (its
    positional embedding and first ``num_layers`` blocks) when the text width equals D, as
    CLIP4Clip does; otherwise CLIP4Clip's random init (N(0, 0.02)) with a warning.
    """

    def __init__(self, embed_dim: int, *, max_frames: int = 32, clip: FrozenCLIP | None = None,
                 num_layers: int = 4):
        super().__init__(embed_dim, max_frames=max_frames, clip=clip)
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ConfigError(f"seq_transformer: num_layers must be a positive int, got {num_layers!r}")
        init = _TextTowerInit("seq_transformer", embed_dim, clip)
        self.frame_position_embeddings = nn.Embedding(max_frames, embed_dim)
        _init_clip4clip_(self.frame_position_embeddings)
        _copy_rows_(self.frame_position_embeddings, init.positions(max_frames))
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
@register_temporal("tdb")
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

    def __init__(self, embed_dim: int, *, max_frames: int = 32, clip: FrozenCLIP | None = None,
                 num_layers: int = 4):
        super().__init__(embed_dim, max_frames=max_frames, clip=clip)
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ConfigError(f"tdb: num_layers must be a positive int, got {num_layers!r}")
        init = _TextTowerInit("tdb", embed_dim, clip)
        self.frame_position_embeddings = nn.Embedding(max_frames, embed_dim)
        self.type_position_embeddings = nn.Embedding(2, embed_dim)  # 0 = difference, 1 = frame
        _init_clip4clip_(self.frame_position_embeddings)
        _init_clip4clip_(self.type_position_embeddings)
        _copy_rows_(self.frame_position_embeddings, init.positions(max_frames))
        _copy_rows_(self.type_position_embeddings, init.positions(2))
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


# ----------------------------------------------------------------------------------------------
# X-Pool
# ----------------------------------------------------------------------------------------------
@register_temporal("xpool")
class XPool(TemporalModule):
    """X-Pool cross-modal attention pooling (Gorti et al. 2022, ``modules/transformer.py``):

    ``t = LN1(text)``, ``f = LN1(frames)`` (one shared LayerNorm, as the official code);
    ``a = out_proj(softmax_t(q(t) k(f)^T / sqrt(d_head)) v(f))`` over the real frames;
    ``a = LN2(a)``; ``o = LN3(a + dropout(linear_proj(a)))``; output ``normalise(o)`` ``[Q, B, D]``.

    q/k/v/out/linear projections start as identity with zero bias; one head and dropout 0.3 by
    default, as the paper. (The official code has no frame mask: all its videos have 12 frames.)
    """

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


# TED lives in its own file (it wraps the ViT, not the frame embeddings); importing it here
# registers "ted" whenever the registry is imported. ted.py only needs the names defined above.
from vidclip.models import ted as _ted  # noqa: E402,F401
