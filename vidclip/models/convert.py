"""Temporal-module checkpoints of the official CLIP4Clip, CLIP2Video and X-Pool code -> vidclip.

What maps (official state-dict names on the left, vidclip's ``temporal.*`` on the right):

==============  ====================================================  ==========================
source          official keys                                         vidclip module
==============  ====================================================  ==========================
clip4clip       (only ``clip.*``: sim_header meanP)                   ``mean``
clip4clip       ``frame_position_embeddings.weight``,                  ``seq_transformer``
                ``transformerClip.resblocks.{i}.*`` (seqTransf)       (``transformer.{i}.*``)
clip2video      the same + ``type_position_embeddings.weight``,        ``tdb``
                ``frame2t_attention.resblocks.0.*``,
                ``trans_layernorm.*`` (TDB, sigmoid_selfA)
xpool           ``pool_frames.cross_attn.{q,k,v,out}_proj.*``,         ``xpool``
                ``pool_frames.linear_proj.*``, ``pool_frames.layer_norm{1,2,3}.*``
==============  ====================================================  ==========================

Not mapped, refused with the key named: CLIP4Clip seqLSTM (``lstm_visual.*``) and tightTransf
(``cross.*``, ``similarity_dense.*``), CLIP4Clip's 3D patch embedding (``clip.visual.conv2.*``),
CLIP2Video's sigmoid_mlp TDB (``frame2t_projection``) and its TAB branch (``weight_center``,
``emb_center``, ``actionClip.*``; ``drop_tab=True`` converts the TDB branch alone, which is then
*not* the released model: TAB contributes ``1 - center_weight`` (0.5) of its similarity).

Numerics that are not in the state dict and are fixed here to the official ones: the blocks of
CLIP4Clip / CLIP2Video use ``width // 64`` heads, QuickGELU and TF-style LayerNorm with eps 1e-12
(``modules/until_module.py``); X-Pool uses ``num_mha_heads`` heads (default 1, not recorded in the
file: pass ``xpool_heads``) and nn.LayerNorm (eps 1e-5).

The CLIP: the official checkpoints hold the whole CLIP (``clip.*``), fine-tuned with the temporal
module. vidclip keeps its CLIP frozen, so a converted run uses the *fine-tuned* CLIP as its frozen
backbone: ``vidclip.train.convert_run.convert_checkpoint`` (which writes the run dir; it lives in
train/ because a run is a training checkpoint) writes it as ``clip_finetuned.safetensors`` in OpenAI's layout
(open_clip loads it with the ``*-quickgelu`` architecture found from the key shapes), so frame and
text embeddings are the official model's. A run converted with another CLIP (``clip_model=``)
is *not* the official model (its temporal module was trained on other features), and says so.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidclip.core.errors import ConfigError
from vidclip.models.temporal.registry import create_temporal

if TYPE_CHECKING:  # torch is imported where it is used: checking a file's format needs none
    import torch
    from torch import nn

__all__ = ["SOURCES", "ConvertedState", "read_official_state", "sniff_source", "convert_state",
           "build_converted_temporal", "conform_converted", "clip_architecture", "clip_matches",
           "is_official_checkpoint", "checkpoint_file_problem", "not_a_checkpoint", "CLIP_FILE"]

SOURCES = ("clip4clip", "clip2video", "xpool")
CLIP_FILE = "clip_finetuned.safetensors"
#: eps of the TF-style LayerNorm of CLIP4Clip / CLIP2Video's temporal blocks (until_module.LayerNorm)
OFFICIAL_BLOCK_LN_EPS = 1e-12

# parameters of one CLIP ResidualAttentionBlock (the same names in the official code and here)
_BLOCK_PARAMS = {f"{m}.{p}" for m in ("ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj", "attn.out_proj")
                 for p in ("weight", "bias")} | {"attn.in_proj_weight", "attn.in_proj_bias"}
_TORCH_SUFFIXES = (".bin", ".pth", ".pt", ".tar")
_OFFICIAL_MARKERS = ("clip.", "transformerClip.", "frame_position_embeddings.", "pool_frames.",
                     "type_position_embeddings.", "frame2t_attention.")


@dataclass
class ConvertedState:
    """An official state dict mapped onto vidclip names.

    Attributes:
        source: clip4clip | clip2video | xpool.
        temporal: vidclip module name; ``temporal_args`` its create_temporal options.
        embed_dim / max_frames: ``D`` and the rows of the frame-position table.
        temporal_state: ``{vidclip name (without "temporal."): tensor}``.
        origin: ``{vidclip name: official name}`` (for error messages).
        log_logit_scale: ``clip.logit_scale`` (log of the scale) or None.
        clip_state: the CLIP weights without the ``clip.`` prefix; ``clip_layout`` "openai" or "hf".
        block_heads / block_ln_eps: numerics of the temporal blocks (None: module has none).
        notes: what is not equivalent, in words (written into the run).
    """

    source: str
    temporal: str
    temporal_args: dict
    embed_dim: int
    max_frames: int
    temporal_state: dict[str, torch.Tensor]
    origin: dict[str, str]
    log_logit_scale: float | None
    clip_state: dict[str, torch.Tensor]
    clip_layout: str | None
    block_heads: int | None = None
    block_ln_eps: float | None = None
    notes: list[str] = field(default_factory=list)

    def spec(self) -> dict:
        """What :func:`conform_converted` needs, stored in a converted run's metadata."""
        return {"source": self.source, "block_heads": self.block_heads, "block_ln_eps": self.block_ln_eps}


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
_NOT_A_CHECKPOINT = "is not a PyTorch checkpoint (expected a state dict saved by torch.save / a .pth/.bin/.pt file)"


def not_a_checkpoint(path: str | os.PathLike, reason: str) -> ConfigError:
    """The error for a file that is not an official checkpoint: what it is not, then why."""
    return ConfigError(f"{path} {_NOT_A_CHECKPOINT}: {reason}")


def checkpoint_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a file written by ``torch.save`` (None: it may be one).

    Reads 16 bytes, imports nothing: torch.save writes a zip archive (``PK\\x03\\x04``; since
    torch 1.6) or, in the legacy format, a pickle (protocol byte ``\\x80``). A verb checks its
    input with it before torch loads.
    """
    p = Path(path)
    if not p.exists():
        return "file not found"
    if p.is_dir():
        return "a directory, not a file"
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return f"cannot read it ({e.strerror or e})"
    if not head:
        return "empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04") or head[0] == 0x80:
        return None
    if len(head) > 8 and head[8:9] == b"{":
        return "it is a safetensors file (vidclip's own format: pass a run dir or .safetensors checkpoint where one is asked for)"
    if head.lstrip().startswith((b"{", b"[")):
        return "it is a JSON or text file"
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        return "it is an HTML page (a download that saved an error page?)"
    return f"neither a zip archive nor a pickle (it starts with {head[:8]!r})"


def read_official_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """State dict of an official checkpoint file (``pytorch_model.bin.N``, ``model_best.pth``).

    Accepts a bare state dict or a dict holding one under ``state_dict`` / ``model`` (X-Pool's
    trainer); strips DDP's ``module.`` prefix. Loads with ``weights_only=True`` (no code runs).
    """
    p = Path(path)
    if not p.is_file() and not p.is_dir():
        raise ConfigError(f"{p}: checkpoint file not found")
    problem = checkpoint_file_problem(p)
    if problem is not None:
        raise not_a_checkpoint(p, problem)
    import torch

    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a state dict file"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise not_a_checkpoint(p, f"torch.load cannot read it ({type(e).__name__}: {first})") from e
    for k in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(k), dict):
            obj = obj[k]
            break
    if not isinstance(obj, dict) or not obj:
        raise not_a_checkpoint(p, f"it holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise not_a_checkpoint(p, f"entry {bad[0]!r} is not a named tensor")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def sniff_source(state: dict[str, torch.Tensor]) -> str | None:
    """Which official layout ``state`` has (None: none of them).

    A CLIP-only state dict (meanP) reads as clip4clip; CLIP2Video's meanP is the same model.
    """
    keys = list(state)
    if any(k.startswith("pool_frames.") for k in keys):
        return "xpool"
    if any(k.startswith(("type_position_embeddings.", "frame2t_attention.", "frame2t_projection",
                         "weight_center", "emb_center", "actionClip.")) for k in keys):
        return "clip2video"
    if any(k.startswith(("transformerClip.", "frame_position_embeddings.", "clip.")) for k in keys):
        return "clip4clip"
    return None


def is_official_checkpoint(path: str | os.PathLike) -> bool:
    """Cheap test for ``load_checkpoint``: a torch pickle file (not vidclip's safetensors)."""
    p = Path(path)
    return p.is_file() and p.suffix != ".safetensors" and (
        p.suffix in _TORCH_SUFFIXES or re.search(r"\.bin\.\d+$", p.name) is not None)


# ----------------------------------------------------------------------------------------------
# Mapping
# ----------------------------------------------------------------------------------------------
def _split_clip(state: dict) -> tuple[dict, dict, str | None, float | None]:
    """(non-CLIP entries, CLIP entries without prefix, layout, log logit scale)."""
    rest, clip = {}, {}
    for k, v in state.items():
        (clip if k.startswith("clip.") else rest)[k[5:] if k.startswith("clip.") else k] = v
    for k in ("input_resolution", "context_length", "vocab_size"):  # OpenAI's jit scalars
        clip.pop(k, None)
    clip = {k: v for k, v in clip.items() if not k.endswith("position_ids")}  # HF buffers
    layout = None
    if clip:
        if "visual.conv2.weight" in clip:
            raise ConfigError("clip.visual.conv2.weight: CLIP4Clip's 3D patch embedding (linear_patch 3d) "
                              "is not supported: vidclip encodes frames one by one with a 2D CLIP")
        if "visual.proj" in clip:
            layout = "openai"
        elif "vision_model.embeddings.patch_embedding.weight" in clip:
            layout = "hf"
        else:
            raise ConfigError(f"clip.{next(iter(clip))}: CLIP weights in an unknown layout (neither OpenAI's "
                              "'clip.visual.proj' nor transformers' 'clip.vision_model.*'; ResNet CLIPs are "
                              "not supported)")
    scale = clip.get("logit_scale")
    return rest, clip, layout, (float(scale.float().reshape(-1)[0]) if scale is not None else None)


def _map_blocks(rest: dict, official_prefix: str, vid_prefix: str, out: dict, origin: dict) -> int:
    """Move ``{official_prefix}.resblocks.{i}.{param}`` entries into ``out`` as
    ``{vid_prefix}.{i}.{param}``; return the number of blocks. Unknown params are errors."""
    pat = re.compile(rf"^{re.escape(official_prefix)}\.resblocks\.(\d+)\.(.+)$")
    n = -1
    for k in [k for k in rest if k.startswith(official_prefix + ".")]:
        m = pat.match(k)
        if m is None or m.group(2) not in _BLOCK_PARAMS:
            raise ConfigError(f"{k}: unknown key in the {official_prefix} transformer (expected "
                              f"{official_prefix}.resblocks.<i>.<{'|'.join(sorted(_BLOCK_PARAMS))}>)")
        new = f"{vid_prefix}.{m.group(1)}.{m.group(2)}"
        out[new], origin[new] = rest.pop(k), k
        n = max(n, int(m.group(1)))
    return n + 1


def _take(rest: dict, official: str, new: str, out: dict, origin: dict) -> bool:
    if official in rest:
        out[new], origin[new] = rest.pop(official), official
        return True
    return False


def convert_state(state: dict[str, torch.Tensor], source: str | None = None, *, xpool_heads: int = 1,
                  drop_tab: bool = False, where: str = "checkpoint") -> ConvertedState:
    """Map an official state dict onto vidclip's names (see the module docstring).

    Args:
        state: the official state dict (``read_official_state``).
        source: clip4clip | clip2video | xpool, or None to sniff it from the keys.
        xpool_heads: X-Pool's ``num_mha_heads`` (not recorded in the weights; the paper's is 1).
        drop_tab: CLIP2Video: convert the TDB branch and drop the TAB one (not the released model).
        where: file name for messages.
    Raises:
        ConfigError naming the key: unknown / unsupported key, missing part, bad source.
    """
    sniffed = sniff_source(state)
    if source is None:
        if sniffed is None:
            raise ConfigError(f"{where}: no CLIP4Clip, CLIP2Video or X-Pool key found (first key "
                              f"{next(iter(state), None)!r}); pass the source explicitly")
        source = sniffed
    if source not in SOURCES:
        raise ConfigError(f"{where}: source {source!r} is unknown; choose one of {list(SOURCES)}")
    if sniffed is not None and sniffed != source and not (sniffed == "clip4clip" and source == "clip2video"):
        raise ConfigError(f"{where}: keys look like a {sniffed} checkpoint, not {source}")
    rest, clip_state, layout, log_scale = _split_clip(state)
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    notes: list[str] = []
    heads = eps = None
    args: dict[str, Any] = {}

    if source == "xpool":
        for a, b in [(f"pool_frames.cross_attn.{p}_proj", f"{p}_proj") for p in ("q", "k", "v", "out")] + \
                    [("pool_frames.linear_proj", "linear_proj")] + \
                    [(f"pool_frames.layer_norm{i}", f"layer_norm{i}") for i in (1, 2, 3)]:
            for p in ("weight", "bias"):
                if not _take(rest, f"{a}.{p}", f"{b}.{p}", out, origin):
                    raise ConfigError(f"{where}: {a}.{p} is missing (X-Pool's 'transformer' pooling); other "
                                      "X-Pool poolings (avg, topk, attention) are not supported")
        name, args = "xpool", {"num_heads": int(xpool_heads)}
        D = out["q_proj.weight"].shape[0]
        frames = 32  # unused by xpool (no positions); vidclip's default
        notes.append("X-Pool's num_mha_heads is not stored in the checkpoint; converted with "
                     f"num_heads={xpool_heads} (the paper's and the code's default is 1)")
    else:
        has_pos = _take(rest, "frame_position_embeddings.weight", "frame_position_embeddings.weight", out, origin)
        n_layers = _map_blocks(rest, "transformerClip", "transformer", out, origin)
        tdb = False
        if source == "clip2video":
            if "frame2t_projection" in rest:
                raise ConfigError("frame2t_projection: CLIP2Video's sigmoid_mlp TDB is not supported "
                                  "(vidclip's tdb is the released sigmoid_selfA one)")
            tab = [k for k in rest if k in ("weight_center", "emb_center") or k.startswith("actionClip.")]
            if tab and not drop_tab:
                raise ConfigError(f"{tab[0]}: CLIP2Video's TAB branch has no vidclip counterpart (it scores text "
                                  "tokens against frame clusters); convert with drop_tab / --drop-tab to keep the "
                                  "TDB branch alone, which is then not the released model")
            if tab:
                for k in tab:
                    rest.pop(k)
                notes.append("CLIP2Video TAB branch dropped: the released model scores "
                             "center_weight*TDB + (1-center_weight)*TAB (0.5/0.5); this run scores with TDB alone")
            has_type = _take(rest, "type_position_embeddings.weight", "type_position_embeddings.weight", out, origin)
            n_diff = _map_blocks(rest, "frame2t_attention", "frame2t_attention", out, origin)
            ln = [_take(rest, f"trans_layernorm.{p}", f"trans_layernorm.{p}", out, origin) for p in ("weight", "bias")]
            tdb = has_type or n_diff > 0
            if tdb and not (has_type and n_diff == 1 and all(ln) and has_pos and n_layers):
                raise ConfigError(f"{where}: incomplete CLIP2Video TDB: needs type_position_embeddings.weight, "
                                  "frame2t_attention.resblocks.0.*, trans_layernorm.*, frame_position_embeddings."
                                  "weight and transformerClip.resblocks.*")
            if not tdb:  # trans_layernorm exists in every CLIP2Video model but only TDB uses it
                out.pop("trans_layernorm.weight", None)
                out.pop("trans_layernorm.bias", None)
        if tdb:
            name = "tdb"
        elif has_pos or n_layers:
            if not (has_pos and n_layers):
                missing = "transformerClip.resblocks.*" if has_pos else "frame_position_embeddings.weight"
                raise ConfigError(f"{where}: seqTransf checkpoint without {missing}")
            name = "seq_transformer"
        else:
            name = "mean"
        for k in rest:
            if k.startswith("lstm_visual."):
                raise ConfigError(f"{k}: CLIP4Clip's seqLSTM has no vidclip counterpart")
            if k.startswith(("cross.", "similarity_dense.")):
                raise ConfigError(f"{k}: CLIP4Clip's tightTransf (cross encoder) has no vidclip counterpart")
        if name == "mean":
            if not clip_state:
                raise ConfigError(f"{where}: neither temporal keys nor clip.* weights found")
            D = int(clip_state["visual.proj"].shape[1] if layout == "openai"
                    else clip_state["visual_projection.weight"].shape[0])
            frames = 32
        else:
            pos = out["frame_position_embeddings.weight"]
            if pos.ndim != 2:
                raise ConfigError(f"frame_position_embeddings.weight: expected [positions, D], got {list(pos.shape)}")
            frames, D = int(pos.shape[0]), int(pos.shape[1])
            heads, eps = max(1, D // 64), OFFICIAL_BLOCK_LN_EPS
            args = {"num_layers": n_layers}
            notes.append("official multi-head masking: CLIP2Video (and CLIP4Clip before its PR #24, July 2021) "
                         "repeat the key mask head-major (attn_mask.repeat), so with >1 head a padded video "
                         "was masked with other videos' masks; vidclip masks each video with its own mask "
                         "(what CLIP4Clip's fix computes). Equal when all videos of a batch have the same mask.")
            if name == "tdb":
                notes.append("tdb: a difference token counts as real only when both its frames are (the "
                             "official code uses mask[t] for it); equal for videos without padding")
    if rest:
        k = next(iter(rest))
        raise ConfigError(f"{k}: unknown key for a {source} checkpoint (shape {list(rest[k].shape)})")
    if clip_state and layout == "openai":
        width = clip_state.get("ln_final.weight")
        if width is not None and name in ("seq_transformer", "tdb") and width.shape[0] != D:
            raise ConfigError(f"clip.ln_final.weight: text width {width.shape[0]} != temporal width {D}; "
                              "the official temporal blocks have the text width")
    import torch

    if any(v.dtype == torch.float16 for v in clip_state.values()):
        notes.append("the checkpoint's CLIP is stored in fp16 and ran in fp16 in the official code (convert_weights); "
                     "vidclip runs it in fp32 on CPU (fp16 autocast on CUDA): embeddings differ at fp16 rounding level")
    return ConvertedState(source, name, args, int(D), int(frames), out, origin, log_scale, clip_state, layout,
                          heads, eps, notes)


# ----------------------------------------------------------------------------------------------
# Building the vidclip module
# ----------------------------------------------------------------------------------------------
def conform_converted(temporal: nn.Module, spec: dict) -> None:
    """Give a converted module's transformer blocks the official numerics (not in the state dict):
    QuickGELU, LayerNorm eps; and check their head count. ``spec`` from ConvertedState.spec()."""
    from vidclip.models.temporal.transformer import QuickGELU

    heads, eps = spec.get("block_heads"), spec.get("block_ln_eps")
    if heads is None:
        return
    for stack_name in ("transformer", "frame2t_attention"):
        for i, blk in enumerate(getattr(temporal, stack_name, None) or []):
            if blk.attn.num_heads != heads:
                raise ConfigError(f"{stack_name}.{i}: built with {blk.attn.num_heads} attention heads, the "
                                  f"converted {spec.get('source')} weights need {heads} (width // 64); the CLIP "
                                  "given has a text tower with another head count")
            blk.mlp.gelu = QuickGELU()
            blk.ln_1.eps = blk.ln_2.eps = float(eps)


def build_converted_temporal(conv: ConvertedState, clip: Any = None, *, where: str = "checkpoint") -> nn.Module:
    """The vidclip temporal module holding ``conv``'s weights (eval mode).

    Shapes are checked key by key against the module before loading: a mismatch names the
    official key, its shape and the expected one.
    """
    with warnings.catch_warnings():
        # the text-tower initialisation is overwritten right below; its warnings would be noise
        warnings.simplefilter("ignore")
        module = create_temporal(conv.temporal, conv.embed_dim, max_frames=conv.max_frames, clip=clip,
                                 **conv.temporal_args)
    conform_converted(module, conv.spec())
    want = module.state_dict()
    for k, v in conv.temporal_state.items():
        if k not in want:
            raise ConfigError(f"{conv.origin.get(k, k)}: no place for this key in vidclip's {conv.temporal}")
        if tuple(v.shape) != tuple(want[k].shape):
            raise ConfigError(f"{conv.origin.get(k, k)}: shape {list(v.shape)} does not fit vidclip's "
                              f"{conv.temporal}.{k} {list(want[k].shape)} (D={conv.embed_dim})")
    missing = [k for k in want if k not in conv.temporal_state]
    if missing:
        raise ConfigError(f"{where}: no weights for vidclip's {conv.temporal}.{missing[0]} "
                          f"({len(missing)} missing); the checkpoint is incomplete")
    module.load_state_dict({k: v.float() for k, v in conv.temporal_state.items()}, strict=True)
    return module.eval()


# ----------------------------------------------------------------------------------------------
# The CLIP
# ----------------------------------------------------------------------------------------------
def _openai_dims(sd: dict[str, torch.Tensor]) -> dict[str, int]:
    """Architecture of an OpenAI-layout ViT CLIP state dict (as OpenAI's build_model reads it)."""
    try:
        vw = sd["visual.conv1.weight"]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        return {
            "embed_dim": int(sd["text_projection"].shape[1]),
            "image_size": int(vw.shape[-1] * grid), "patch_size": int(vw.shape[-1]),
            "vision_width": int(vw.shape[0]),
            "vision_layers": len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")}),
            "context_length": int(sd["positional_embedding"].shape[0]),
            "vocab_size": int(sd["token_embedding.weight"].shape[0]),
            "text_width": int(sd["ln_final.weight"].shape[0]),
            "text_layers": len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
        }
    except KeyError as e:
        raise ConfigError(f"clip.{e.args[0]}: missing from the checkpoint's CLIP weights") from None


def clip_architecture(sd: dict[str, torch.Tensor]) -> str:
    """The open_clip architecture (QuickGELU, OpenAI head widths) matching an OpenAI-layout state dict.

    ``ViT-B/32`` -> ``ViT-B-32-quickgelu``, ``ViT-B/16`` -> ``ViT-B-16-quickgelu``, any registered
    config with ``quick_gelu: true`` and the same shapes. Raises ConfigError with the dims otherwise.
    """
    import open_clip

    from vidclip.models.clip.identity import CONFIG_DIR, register_config_dir

    register_config_dir(CONFIG_DIR)
    dims = _openai_dims(sd)
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name) or {}
        v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        if not cfg.get("quick_gelu") or isinstance(v.get("layers"), (list, tuple)) or "hf_model_name" in t:
            continue
        got = {"embed_dim": cfg.get("embed_dim"), "image_size": v.get("image_size"), "patch_size": v.get("patch_size"),
               "vision_width": v.get("width"), "vision_layers": v.get("layers"),
               "context_length": t.get("context_length", 77), "vocab_size": t.get("vocab_size", 49408),
               "text_width": t.get("width", 512), "text_layers": t.get("layers", 12)}
        heads_ok = (v.get("head_width", 64) == 64 and t.get("heads", 8) == dims["text_width"] // 64)
        if got == dims and heads_ok:
            return name
    raise ConfigError(f"clip.*: no open_clip QuickGELU architecture has these shapes {dims}; pass the frozen CLIP "
                      "to use explicitly (--model/--pretrained), knowing it is not the checkpoint's CLIP")


def clip_matches(clip: Any, conv: ConvertedState) -> bool | None:
    """Whether a loaded FrozenCLIP holds the checkpoint's CLIP (compares the image projection)."""
    import torch

    if conv.clip_layout != "openai":
        return None
    net = getattr(clip, "model", None)
    try:
        sd = net.state_dict()
    except AttributeError:
        return None
    mine = sd.get("visual.proj")
    if mine is None:
        return False
    return tuple(mine.shape) == tuple(conv.clip_state["visual.proj"].shape) and torch.equal(
        mine.detach().cpu().float(), conv.clip_state["visual.proj"].float())
