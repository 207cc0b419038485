"""Frozen image CLIP: loading (open_clip or transformers), identity, batched encoding.

Everything downstream of decoding talks to one class, :class:`FrozenCLIP`, obtained from
:func:`load_clip`. It wraps either an open_clip ``CLIP`` / ``CustomTextCLIP`` or a transformers
``CLIPModel``; the wrapped module is frozen (``requires_grad=False``, ``eval()``).

Model specs accepted by :func:`load_clip` (``model`` argument, ``pretrained`` argument):

=====================================  ==============================================================
``"ViT-B-32", "openai"``               open_clip architecture + pretrained tag (downloaded by open_clip
                                       when a network exists, else read from its cache)
``"ViT-B-32", "/path/ckpt.pt"``        open_clip architecture + local checkpoint (.pt/.pth/.bin state
                                       dict, or .safetensors; OpenAI's TorchScript .pt files too)
``"ViT-B-32", None``                   open_clip architecture, *random* weights (seeded, reproducible)
``"hf-hub:org/repo"``                  open_clip model + weights from the Hugging Face hub
``"local-dir:/dir"`` or ``"/dir"``     open_clip folder with ``open_clip_config.json`` + weights
``"hf:openai/clip-vit-base-patch32"``  transformers ``CLIPModel`` from the hub (also without ``hf:``
                                       for any ``org/name`` that is not an open_clip architecture)
``"hf:/dir"`` or ``"/dir"``            transformers ``save_pretrained`` folder (has ``config.json``)
``"tiny-vit"``, ``"tiny-vit-224"``     tiny open_clip configs of vidclip/models/configs (tests)
``"hf-tiny"``                          tiny transformers CLIPConfig (tests); ``pretrained`` may name a
                                       ``save_pretrained`` folder or a state-dict file for it
=====================================  ==============================================================

Random initialisation is seeded (seed 0, in a forked RNG so the caller's RNG is untouched), so two
processes that load the same config without weights get bit-identical models; the
``weights_digest`` in :class:`ModelIdentity` tells checkpoints of one architecture apart, and
``random_weights`` is True whenever no trained weights were loaded. Random weights are for tests
and benchmarks only: their embeddings are meaningless.

Network: hub downloads are attempted only when the hub host answers a 2 s TCP probe and neither
``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` nor ``VIDCLIP_OFFLINE`` is set; otherwise only local
caches are read. Missing weights raise :class:`~vidclip.core.errors.WeightsNotFoundError` whose message
says how to pass a local checkpoint.

Tokenizer choice for transformers models: the tokenizer saved with the model (``vocab.json`` +
``merges.txt`` / ``tokenizer.json`` in the folder or hub repo) when present; otherwise (``hf-tiny``,
or a folder saved without its tokenizer) a ``CLIPTokenizer`` built in memory from open_clip's
bundled BPE file ``bpe_simple_vocab_16e6.txt.gz``, which is the vocabulary of OpenAI's CLIP
(49408 tokens; ids identical to open_clip's ``SimpleTokenizer``, tested). Either way the HF model
sees HF-tokenizer ids, as it would in transformers.

Layout: this module is the public face (FrozenCLIP, :func:`load_clip`). The model string and
its ``pretrained`` are read once, by :func:`vidclip.models.clip.spec.parse_model_spec`; identity and
the config registry are in :mod:`vidclip.models.clip.identity`; what both backends share in
:mod:`vidclip.models.clip.backend`; the backends in :mod:`vidclip.models.clip.open_clip_backend` and
:mod:`vidclip.models.clip.hf_backend`, imported by :func:`load_clip` only when a model needs them.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence

import torch

from vidclip.core.errors import ConfigError, WeightsNotFoundError
from vidclip.models.clip.backend import TextTokenizer

# list_models, register_config_dir, resolve_pretrained and state_dict_digest stay importable from
# here (in __all__), as before the package was split; vidclip.models.clip exports them all.
from vidclip.models.clip.identity import (
    ModelIdentity,
    list_models,
    register_config_dir,
    state_dict_digest,
)
from vidclip.models.clip.preprocess import FrameFormatError, preprocess_frames
from vidclip.models.clip.spec import identity_load_args, parse_model_spec, resolve_pretrained

__all__ = [
    "ModelIdentity",
    "FrozenCLIP",
    "load_clip",
    "load_clip_from_identity",
    "list_models",
    "register_config_dir",
    "resolve_pretrained",
    "state_dict_digest",
    "text_features_from_ids",
]

_PRECISIONS = ("auto", "fp32", "fp16", "bf16")


# ----------------------------------------------------------------------------------------------
# FrozenCLIP
# ----------------------------------------------------------------------------------------------
class FrozenCLIP:
    """A frozen CLIP image/text encoder with batched, device-aware encoding.

    Attributes:
        identity: :class:`ModelIdentity` of the loaded weights.
        embed_dim: ``D``, width of the joint embedding space.
        image_size: ``S``, side of the square pixel input.
        mean, std: per-channel normalisation (RGB, for [0, 1] values).
        interpolation: resize filter of the model's preprocessing ("bicubic" for CLIP).
        context_length: text tokens per caption (``L``).
        device: where the model lives and encoding runs.
        family: "open_clip" or "hf".
        model: the wrapped (frozen, eval) ``torch.nn.Module``.
        precision: "fp32", "fp16" or "bf16" (the latter two = CUDA autocast).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        family: str,
        identity: ModelIdentity,
        mean: Sequence[float],
        std: Sequence[float],
        context_length: int,
        tokenizer: TextTokenizer,
        device: torch.device,
        precision: str,
        interpolation: str = "bicubic",
    ):
        self.model = model
        self.family = family
        self.identity = identity
        self.embed_dim = identity.embed_dim
        self.image_size = identity.image_size
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.interpolation = interpolation
        self.context_length = int(context_length)
        self.device = device
        self.precision = precision
        self._tokenizer = tokenizer
        _freeze(model)

    def __repr__(self) -> str:
        i = self.identity
        return (f"FrozenCLIP({i.family}:{i.name}, pretrained={i.pretrained!r}, D={self.embed_dim}, "
                f"S={self.image_size}, device={self.device}, precision={self.precision}"
                f"{', RANDOM WEIGHTS' if i.random_weights else ''})")

    # -- preprocessing -----------------------------------------------------------------------
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` -> float32 ``[N, 3, S, S]`` normalised pixels, on ``frames.device``."""
        return preprocess_frames(frames, self.image_size, self.mean, self.std, self.interpolation)

    def _autocast(self):
        if self.device.type == "cuda" and self.precision in ("fp16", "bf16"):
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def _to_pixels(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """uint8 frames or float pixels (any device) -> float32 pixels on self.device."""
        if not isinstance(x, torch.Tensor):
            raise FrameFormatError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dtype == torch.uint8:
            # move the compact uint8 frames, then preprocess on the model's device
            return self.preprocess(x.to(self.device, non_blocking=True))
        S = self.image_size
        if not x.is_floating_point() or x.ndim != 4 or tuple(x.shape[1:]) != (3, S, S):
            raise FrameFormatError(
                f"{name}: expected uint8 [N,H,W,3] frames or float [N,3,{S},{S}] pixels, got "
                f"{str(x.dtype).replace('torch.', '')} {list(x.shape)}"
            )
        return x.to(self.device, dtype=torch.float32, non_blocking=True)

    def default_batch_size(self) -> int:
        """Images per forward pass, sized so one chunk's activations fit a memory budget.

        Budget: CPU 1 GiB; CUDA half of the currently free memory. Per-image cost is estimated
        from the ViT token count and width (about 16 activations of [tokens, width] alive at
        once in a block, plus one attention map per head).
        """
        tokens, width, heads = self._vit_dims()
        elt = 2 if (self.device.type == "cuda" and self.precision != "fp32") else 4
        per_image = elt * (16 * tokens * width + heads * tokens * tokens) + 4 * 3 * self.image_size ** 2
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            budget, cap = free // 2, 1024
        else:
            budget, cap = 1 << 30, 256
        return int(max(1, min(cap, budget // max(per_image, 1))))

    def _vit_dims(self) -> tuple[int, int, int]:
        try:
            blocks = self.visual_blocks()
        except ConfigError:
            return (self.image_size // 16) ** 2 + 1, 1024, 16  # conservative for non-ViT towers
        if self.family == "open_clip":
            v = self.model.visual
            grid = getattr(v, "grid_size", (self.image_size // 16,) * 2)
            width = blocks[0].ln_1.normalized_shape[0]
            heads = blocks[0].attn.num_heads if hasattr(blocks[0], "attn") else 16
            return grid[0] * grid[1] + 1, width, heads
        vc = self.model.config.vision_config
        return (vc.image_size // vc.patch_size) ** 2 + 1, vc.hidden_size, vc.num_attention_heads

    # -- image side --------------------------------------------------------------------------
    def image_tower_forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """One forward of the image tower: pixels float [N, 3, S, S] (preprocessed, on the model's
        device) -> embeddings [N, D], projected, not normalised, no batching (what an ONNX export traces)."""
        if self.family == "open_clip":
            return self.model.encode_image(pixels)
        out = self.model.get_image_features(pixel_values=pixels)
        # transformers 5.x returns BaseModelOutputWithPooling whose pooler_output is the
        # *projected* embedding; 4.x returned the tensor itself.
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def encode_frames(self, frames_or_pixels: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Embed images.

        Args:
            frames_or_pixels: uint8 ``[N, H, W, 3]`` frames (preprocessed here, on ``self.device``)
                or float ``[N, 3, S, S]`` pixels already preprocessed; any device.
            batch_size: images per forward pass; default :meth:`default_batch_size`.
        Returns:
            float32 ``[N, D]`` post-projection embeddings on ``self.device``, *not* normalised.
        """
        x = frames_or_pixels
        if isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[0] == 0:
            return torch.zeros((0, self.embed_dim), dtype=torch.float32, device=self.device)
        bs = batch_size or self.default_batch_size()
        if bs <= 0:
            raise ConfigError(f"batch_size: must be positive, got {batch_size}")
        if isinstance(x, torch.Tensor) and x.dtype != torch.uint8:
            self._to_pixels(x[:1], "frames_or_pixels")  # validate shape before chunking
        outs = []
        # no_grad rather than inference_mode: inference tensors cannot be saved for backward, and
        # callers (training) feed these embeddings into modules that are being trained.
        with torch.no_grad(), self._autocast():
            for i in range(0, x.shape[0], bs):
                pixels = self._to_pixels(x[i : i + bs], "frames_or_pixels")
                outs.append(self.image_tower_forward(pixels).float())
        return torch.cat(outs)

    def encode_frame_tokens(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Per-block ViT token features (for adapters that work inside the vision tower).

        Args:
            pixels: float ``[N, 3, S, S]`` (or uint8 frames, preprocessed here).
        Returns:
            list over the vision blocks of ``[N, 1 + P, width]`` (class token first), each the
            block's output. Runs in the caller's grad mode and without autocast.
        """
        x = self._to_pixels(pixels, "pixels")
        if self.family == "hf":
            out = self.model.vision_model(pixel_values=x, output_hidden_states=True)
            return list(out.hidden_states[1:])  # [0] is the (pre-LN'd) embedding input
        v = self.model.visual
        blocks = self.visual_blocks()
        from vidclip.models.clip.open_clip_backend import vit_embed

        h = vit_embed(v, x)  # [N, 1+P, width]
        batch_first = getattr(v.transformer, "batch_first", True)
        if not batch_first:
            h = h.transpose(0, 1)
        feats = []
        for blk in blocks:
            h = blk(h)
            feats.append(h if batch_first else h.transpose(0, 1))
        return feats

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Last-block tokens ``[N, 1+P, width]`` -> ``[N, D]`` embedding (final LN, pool, projection).

        ``pool_tokens(encode_frame_tokens(p)[-1])`` equals ``encode_frames(p)``.
        """
        if self.family == "hf":
            vm = self.model.vision_model
            pooled = vm.post_layernorm(tokens[:, 0, :])
            return self.model.visual_projection(pooled)
        v = self.model.visual
        pooled, _ = v._pool(tokens)
        if v.proj is not None:
            pooled = pooled @ v.proj
        return pooled

    def visual_blocks(self) -> list[torch.nn.Module]:
        """The ViT residual blocks, in order (open_clip ``visual.transformer.resblocks``; hf
        ``vision_model.encoder.layers``)."""
        if self.family == "hf":
            return list(self.model.vision_model.encoder.layers)
        v = self.model.visual
        tr = getattr(v, "transformer", None)
        if tr is None or not hasattr(tr, "resblocks"):
            raise ConfigError(
                f"model {self.identity.name}: vision tower {type(v).__name__} is not an open_clip "
                "VisionTransformer; per-block access needs a ViT")
        return list(tr.resblocks)

    # -- text side ---------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Texts -> LongTensor ``[Q, context_length]`` (CPU).

        Over-long texts are truncated (keeping the end-of-text token) with ONE warning that says
        how many were cut; never an exception.
        """
        if isinstance(texts, str):
            texts = [texts]
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ConfigError(f"texts: item {bad[0]} is {type(texts[bad[0]]).__name__}, expected str")
        ids, cut = self._tokenizer(list(texts))
        if cut:
            warnings.warn(
                f"{cut} of {len(texts)} text(s) longer than the model's context length "
                f"({self.context_length} tokens) were truncated",
                stacklevel=2,
            )
        return ids

    def encode_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Texts -> float32 ``[Q, D]`` post-projection embeddings on ``self.device``, *not* normalised."""
        if batch_size <= 0:
            raise ConfigError(f"batch_size: must be positive, got {batch_size}")
        ids = self.tokenize(texts)
        if ids.shape[0] == 0:
            return torch.zeros((0, self.embed_dim), dtype=torch.float32, device=self.device)
        outs = []
        with torch.no_grad(), self._autocast():
            for i in range(0, ids.shape[0], batch_size):
                chunk = ids[i : i + batch_size].to(self.device)
                outs.append(self.text_tower_forward(chunk).float())
        return torch.cat(outs)

    def text_tower_forward(self, ids: torch.Tensor) -> torch.Tensor:
        """One forward of the text tower: token ids int64 [N, L] -> embeddings [N, D], projected,
        not normalised, no batching (what an ONNX export traces)."""
        impl = self._tokenizer.impl if self.family == "hf" else None
        return text_features_from_ids(
            self.model, self.family, ids,
            pad_id=getattr(impl, "pad_token_id", None), eos_id=getattr(impl, "eos_token_id", None))


def text_features_from_ids(model: torch.nn.Module, family: str, ids: torch.Tensor, *,
                           pad_id: int | None = None, eos_id: int | None = None) -> torch.Tensor:
    """Text-tower forward of a CLIP module (frozen or a trainable copy) on token ids.

    Args:
        model: open_clip CLIP/CustomTextCLIP or transformers CLIPModel.
        family: "open_clip" or "hf".
        ids: LongTensor ``[Q, L]`` from :meth:`FrozenCLIP.tokenize`, on the model's device.
        pad_id, eos_id: the HF tokenizer's ids (hf only), used to build the attention mask.
    Returns:
        ``[Q, D]`` post-projection text embeddings (not normalised), in the grad mode of the caller.
    """
    if family == "open_clip":
        return model.encode_text(ids)
    if pad_id is not None and pad_id == eos_id:
        # pad == eos (OpenAI's HF tokenizer): attend up to and including the first eos
        first_eos = (ids == eos_id).int().argmax(dim=1, keepdim=True)
        mask = (torch.arange(ids.shape[1], device=ids.device)[None] <= first_eos).long()
    else:
        mask = (ids != (pad_id if pad_id is not None else 0)).long()
    out = model.get_text_features(input_ids=ids, attention_mask=mask)
    # transformers 5.x: BaseModelOutputWithPooling whose pooler_output is the projected embedding
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _freeze(model: torch.nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device: invalid value {device!r}: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} requested but CUDA is not available")
    return dev


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in _PRECISIONS:
        raise ConfigError(f"precision: expected one of {_PRECISIONS}, got {precision!r}")
    if device.type != "cuda":
        if precision in ("fp16", "bf16"):
            warnings.warn(f"precision {precision!r} is only used on CUDA; running fp32 on {device}",
                          stacklevel=3)
        return "fp32"
    if precision == "auto":
        return "fp16"
    return precision


def load_clip(
    model: str,
    pretrained: str | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> FrozenCLIP:
    """Load a frozen CLIP (see the module docstring for the accepted ``model``/``pretrained``).

    Args:
        model: architecture name, hub id (``hf:``/``hf-hub:`` prefixed or ``org/name``) or folder.
        pretrained: open_clip tag or local checkpoint file/folder; ``"none"`` (or ``"random"``)
            always means random weights; None means what the model name implies (see
            :mod:`vidclip.models.clip.spec`).
        device: "cpu", "cuda", "cuda:1", "auto", or a torch.device.
        precision: "auto" (fp16 autocast on CUDA, fp32 on CPU), "fp32", "fp16", "bf16".
        cache_dir: download cache for hub/URL weights (default: the libraries' own caches).
    Raises:
        WeightsNotFoundError: weights missing locally and not downloadable (offline / bad tag).
        ConfigError: unknown model name, bad device/precision.
    """
    spec = parse_model_spec(model, pretrained)
    dev = _resolve_device(device)
    prec = _resolve_precision(precision, dev)
    cache_dir = str(cache_dir) if cache_dir is not None else None
    # The backend's module (and library) is imported only now. Called from here (no helper in
    # between): the backends' warnings use stacklevel=3 to name load_clip's caller.
    if spec.backend == "open_clip":
        from vidclip.models.clip.open_clip_backend import load_open_clip as load_backend
    else:
        from vidclip.models.clip.hf_backend import load_hf as load_backend
    clip = load_backend(spec, cache_dir)
    net, family, identity, mean, std, ctx, tok, interp = clip
    net.to(dev)
    return FrozenCLIP(net, family=family, identity=identity, mean=mean, std=std, context_length=ctx,
                      tokenizer=tok, device=dev, precision=prec, interpolation=interp)


def load_clip_from_identity(identity: ModelIdentity | dict, *, device="cpu", precision="auto",
                            cache_dir=None, check_digest: bool = True) -> FrozenCLIP:
    """Reload the model an identity was recorded from (e.g. an index's), checking the weights.

    Raises WeightsNotFoundError when the weights found now differ from the recorded digest.
    """
    ident = identity if isinstance(identity, ModelIdentity) else ModelIdentity.from_dict(identity)
    name, pre = identity_load_args(ident)
    clip = load_clip(name, pre, device=device, precision=precision, cache_dir=cache_dir)
    if check_digest and clip.identity.weights_digest != ident.weights_digest:
        raise WeightsNotFoundError(
            f"model {ident.name!r} (pretrained={ident.pretrained!r}): weights digest is now "
            f"{clip.identity.weights_digest}, but {ident.weights_digest} was recorded; the checkpoint "
            "changed since the output was written")
    return clip
