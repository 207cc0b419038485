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
caches are read. Missing weights raise :class:`~vidclip.errors.WeightsNotFoundError` whose message
says how to pass a local checkpoint.

Tokenizer choice for transformers models: the tokenizer saved with the model (``vocab.json`` +
``merges.txt`` / ``tokenizer.json`` in the folder or hub repo) when present; otherwise (``hf-tiny``,
or a folder saved without its tokenizer) a ``CLIPTokenizer`` built in memory from open_clip's
bundled BPE file ``bpe_simple_vocab_16e6.txt.gz``, which is the vocabulary of OpenAI's CLIP
(49408 tokens; ids identical to open_clip's ``SimpleTokenizer``, tested). Either way the HF model
sees HF-tokenizer ids, as it would in transformers.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import logging
import os
import re
import socket
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from vidclip.errors import ConfigError, WeightsNotFoundError
from vidclip.video.preprocess import FrameFormatError, preprocess_frames

__all__ = [
    "ModelIdentity",
    "FrozenCLIP",
    "load_clip",
    "load_clip_from_identity",
    "list_models",
    "register_config_dir",
    "state_dict_digest",
    "text_features_from_ids",
]

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_RANDOM_INIT_SEED = 0
_CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: Models whose weights ship inside the package: ``load_clip(name)`` with no ``pretrained``
#: loads these files. ``vidclip-synth`` knows only the ``vidclip synth`` world.
SHIPPED_WEIGHTS = {"vidclip-synth": Path(__file__).resolve().parents[1] / "assets" / "vidclip-synth.safetensors"}
_PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_CKPT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")

_HOW_TO_LOCAL_FILES = (
    "Pass a local checkpoint instead: `--pretrained /path/to/checkpoint.pt|.bin|.safetensors` "
    "(load_clip(model, '/path/to/file')) for an open_clip architecture, or a local transformers "
    "folder made by CLIPModel.save_pretrained (`--model /path/to/dir`, load_clip('hf:/path/to/dir')), "
    "or `--pretrained none` for random weights."
)
_HOW_TO_LOCAL = _HOW_TO_LOCAL_FILES + (
    " To download instead, run once on a machine with network access (files are cached under "
    "~/.cache/huggingface or ~/.cache/clip)."
)


# ----------------------------------------------------------------------------------------------
# Identity
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelIdentity:
    """What produced an embedding; recorded in every output file (feature store, index).

    ``key()`` is what consumers compare: two identities with equal keys produce identical
    embeddings for identical inputs (same family, architecture, image size, dim and weights).
    """

    family: str  # "open_clip" | "hf"
    name: str  # architecture / hub id / folder, as load_clip was given it (folders made absolute)
    pretrained: str | None  # tag, local file/dir path, hub id, or None (random init)
    embed_dim: int
    image_size: int
    random_weights: bool  # True whenever no trained weights were loaded
    weights_digest: str  # short hash of the loaded state dict

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelIdentity:
        if not isinstance(d, dict):
            raise ConfigError(f"model identity: expected a dict, got {type(d).__name__}")
        missing = [f for f in cls.__dataclass_fields__ if f not in d]
        if missing:
            raise ConfigError(f"model identity: missing field(s) {missing} in {d!r}")
        return cls(
            family=str(d["family"]),
            name=str(d["name"]),
            pretrained=None if d["pretrained"] is None else str(d["pretrained"]),
            embed_dim=int(d["embed_dim"]),
            image_size=int(d["image_size"]),
            random_weights=bool(d["random_weights"]),
            weights_digest=str(d["weights_digest"]),
        )

    def key(self) -> str:
        # The digest pins the weights; name/pretrained are deliberately left out so a checkpoint
        # moved to another path still matches.
        return f"{self.family}:{self.image_size}:{self.embed_dim}:{self.weights_digest}"


def state_dict_digest(module: torch.nn.Module) -> str:
    """16-hex-digit blake2b of every tensor (name, dtype, shape, bytes) in ``module.state_dict()``.

    Hashes all bytes (~1 GB/s), so two fine-tuned checkpoints of one architecture never collide.
    """
    h = hashlib.blake2b(digest_size=8)
    sd = module.state_dict()
    for name in sorted(sd):
        t = sd[name].detach()
        h.update(f"{name}|{str(t.dtype)}|{tuple(t.shape)}".encode())
        if t.numel():
            # view as bytes: works for bf16 too, which numpy cannot represent
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Config registry
# ----------------------------------------------------------------------------------------------
_HF_CONFIGS: dict[str, dict] = {}  # name -> transformers CLIPConfig kwargs
_REGISTERED_DIRS: set[Path] = set()


def register_config_dir(path: str | os.PathLike) -> None:
    """Register the JSON model configs of a folder.

    Files with ``embed_dim``/``vision_cfg``/``text_cfg`` are open_clip configs (registered with
    ``open_clip.add_model_config``); files with ``"family": "hf"`` hold a transformers
    ``CLIPConfig`` under ``clip_config``. The name is the file stem.
    """
    import open_clip

    p = Path(path).resolve()
    if p in _REGISTERED_DIRS:
        return
    if not p.is_dir():
        raise ConfigError(f"{p}: model config folder does not exist")
    for f in sorted(p.glob("*.json")):
        try:
            cfg = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{f}: invalid JSON model config: {e}") from e
        if cfg.get("family") == "hf":
            if "clip_config" not in cfg:
                raise ConfigError(f"{f}: field 'clip_config' missing in hf model config")
            _HF_CONFIGS[f.stem] = cfg["clip_config"]
    open_clip.add_model_config(p)
    _REGISTERED_DIRS.add(p)


def list_models() -> list[str]:
    """Registered tiny/local configs (open_clip and hf) followed by open_clip's architectures."""
    import open_clip

    register_config_dir(_CONFIG_DIR)
    local = sorted({f.stem for d in _REGISTERED_DIRS for f in d.glob("*.json")})
    return local + [m for m in open_clip.list_models() if m not in local]


# ----------------------------------------------------------------------------------------------
# Network / offline handling
# ----------------------------------------------------------------------------------------------
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=4)
def _host_reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline() -> bool:
    """True when hub downloads must not be attempted (env says so, or the hub does not answer)."""
    if any(_env_true(v) for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VIDCLIP_OFFLINE")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    return not _host_reachable(url.hostname or "huggingface.co", port)


@contextlib.contextmanager
def _hub_offline_mode(offline: bool) -> Iterator[None]:
    """Make huggingface_hub read only its cache while inside (it reads this flag per request)."""
    if not offline:
        yield
        return
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub is a transformers dependency
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


@contextlib.contextmanager
def _seeded_init() -> Iterator[None]:
    """Seeded RNG for random init without disturbing the caller's RNG (CPU only: no CUDA init)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_INIT_SEED)
        yield


# ----------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _openai_bpe_vocab() -> tuple[dict[str, int], list[str]]:
    """OpenAI CLIP's vocabulary and merges, rebuilt from open_clip's bundled BPE file.

    Same construction as ``open_clip.tokenizer.SimpleTokenizer`` (and OpenAI's original): 256 byte
    symbols, the same with ``</w>``, 48894 merges, then the two special tokens (49406, 49407).
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]
    byte_syms = list(bytes_to_unicode().values())
    vocab = byte_syms + [v + "</w>" for v in byte_syms]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {v: i for i, v in enumerate(vocab)}, merges


def _bpe_clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = _openai_bpe_vocab()
    return CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m.split()) for m in merges])


class _Tokenizer:
    """Uniform ``texts -> (LongTensor [Q, L], n_truncated)`` over the tokenizers we support."""

    def __init__(self, kind: str, impl: Any, context_length: int):
        self.kind = kind  # "simple" (open_clip BPE), "open_clip" (other open_clip), "hf"
        self.impl = impl
        self.context_length = context_length

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, int]:
        L = self.context_length
        if self.kind == "simple" and getattr(self.impl, "reduction_fn", None) is None:
            # open_clip SimpleTokenizer.__call__, inlined so over-long texts are counted in one pass.
            sot, eot = self.impl.sot_token_id, self.impl.eot_token_id
            seqs = [[sot] + self.impl.encode(t) + [eot] for t in texts]
            pad_id = 0
        elif self.kind == "hf":
            seqs = self.impl(list(texts), add_special_tokens=True)["input_ids"]
            eot = self.impl.eos_token_id
            pad_id = self.impl.pad_token_id if self.impl.pad_token_id is not None else 0
        else:
            # Other open_clip tokenizers (HFTokenizer, SigLIP...): they truncate themselves; count
            # over-long texts with the underlying HF tokenizer when there is one.
            ids = self.impl(list(texts), context_length=L)
            inner = getattr(self.impl, "tokenizer", None)
            cut = 0
            if inner is not None:
                lens = [len(x) for x in inner(list(texts))["input_ids"]]
                cut = sum(n > L for n in lens)
            return ids.long(), cut
        out = torch.full((len(seqs), L), pad_id, dtype=torch.long)
        cut = 0
        for i, s in enumerate(seqs):
            if len(s) > L:
                # Keep the end-of-text token: both CLIP text towers pool at the EOT position.
                s = list(s[:L])
                s[-1] = eot
                cut += 1
            out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        return out, cut


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
        tokenizer: _Tokenizer,
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
    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
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
                outs.append(self._image_features(pixels).float())
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
        h = _open_clip_vit_embed(v, x)  # [N, 1+P, width]
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
                outs.append(self._text_features(chunk).float())
        return torch.cat(outs)

    def _text_features(self, ids: torch.Tensor) -> torch.Tensor:
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


@contextlib.contextmanager
def _captured_open_clip_log() -> Iterator[list[str]]:
    """Take open_clip's root-logger records (``Failed to download weights ...``, ``No pretrained
    weights loaded ...``) off the log for the duration of the block and collect their text.

    vidclip says the same in its own words (WeightsNotFoundError, ``RANDOM WEIGHTS`` in the
    identity); the caller folds what was collected into its error, or drops it.
    """
    taken: list[str] = []

    def take(record: logging.LogRecord) -> bool:
        if record.name == "root" and "open_clip" in str(record.pathname).replace("\\", "/"):
            taken.append(record.getMessage())
            return False
        return True

    root = logging.getLogger()
    root.addFilter(take)
    try:
        yield taken
    finally:
        root.removeFilter(take)


def _freeze(model: torch.nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def _open_clip_vit_embed(v: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip VisionTransformer input embedding: patches + class token + positions, ln_pre."""
    if hasattr(v, "_embeds"):  # open_clip >= 2.30
        return v._embeds(x)
    x = v.conv1(x)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = v.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
    x = v.patch_dropout(x)
    return v.ln_pre(x)


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


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def _looks_like_path(s: str) -> bool:
    return os.sep in s or s.startswith((".", "~")) or s.lower().endswith(_CKPT_SUFFIXES)


def _is_hf_dir(p: Path) -> bool:
    cfg = p / "config.json"
    if not cfg.is_file():
        return False
    try:
        d = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return "vision_config" in d or d.get("model_type") in ("clip",)


#: ``pretrained`` values that always mean random weights.
RANDOM_WEIGHTS_WORDS = ("none", "random")


def _carries_own_weights(model: str) -> bool:
    """Hub ids and folders bring their own weights (``pretrained`` names none for them)."""
    if model.startswith(("hf:", "hf-hub:", "local-dir:")) or os.path.isdir(os.path.expanduser(model)):
        return True
    import open_clip

    return model not in _HF_CONFIGS and model.replace("/", "-") not in open_clip.list_models() \
        and bool(_HUB_ID.fullmatch(model))


def resolve_pretrained(model: str, pretrained: str | os.PathLike | None) -> tuple[str | None, bool]:
    """The one rule for ``pretrained`` (CLI ``--pretrained``, config ``model.pretrained``, Python).

    ``"none"`` / ``"random"``: random weights, always. None (or ""): what the model name implies:
    the shipped file for a shipped model (``vidclip-synth``); nothing extra for a hub id or a
    folder (they carry their weights); ``openai`` for an open_clip architecture that has that tag,
    else its first listed tag; random weights for a config without any tag (``tiny-vit``,
    ``hf-tiny``). Anything else is passed on (a tag or a checkpoint file/folder).

    Returns ``(pretrained for the backend, random_weights)``; the backend reads None as "no
    weights to load besides what the model brings".
    """
    if pretrained is not None and not isinstance(pretrained, str):
        pretrained = os.fspath(pretrained)
    if isinstance(pretrained, str) and pretrained.strip().lower() in RANDOM_WEIGHTS_WORDS:
        return None, True
    if pretrained:
        return pretrained, False
    if model in SHIPPED_WEIGHTS:
        if not SHIPPED_WEIGHTS[model].is_file():
            raise WeightsNotFoundError(
                f"{model}: the shipped weights {SHIPPED_WEIGHTS[model]} are missing from this installation; "
                "re-install vidclip, or rebuild them with `python -m vidclip.train.pretrain "
                "configs/pretrain_synth_clip.yaml --out vidclip/assets`")
        return str(SHIPPED_WEIGHTS[model]), False
    if _carries_own_weights(model) or model in _HF_CONFIGS:
        return None, model in _HF_CONFIGS
    import open_clip
    from open_clip.pretrained import list_pretrained_tags_by_model

    name = model.replace("/", "-")
    if name not in open_clip.list_models():
        return None, False  # unknown names get load_clip's own error
    tags = list_pretrained_tags_by_model(name)
    if not tags:
        return None, True
    return ("openai" if "openai" in tags else tags[0]), False


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
            :func:`resolve_pretrained`).
        device: "cpu", "cuda", "cuda:1", "auto", or a torch.device.
        precision: "auto" (fp16 autocast on CUDA, fp32 on CPU), "fp32", "fp16", "bf16".
        cache_dir: download cache for hub/URL weights (default: the libraries' own caches).
    Raises:
        WeightsNotFoundError: weights missing locally and not downloadable (offline / bad tag).
        ConfigError: unknown model name, bad device/precision.
    """
    register_config_dir(_CONFIG_DIR)
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"model: expected a model name, hub id or folder, got {model!r}")
    model = model.strip()
    pretrained, random_weights = resolve_pretrained(model, pretrained)
    dev = _resolve_device(device)
    prec = _resolve_precision(precision, dev)
    cache_dir = str(cache_dir) if cache_dir is not None else None

    import open_clip

    if random_weights and _carries_own_weights(model):
        raise ConfigError(f"{model}: pretrained='none' (random weights) works for architecture names "
                          "(ViT-B-32, tiny-vit, hf-tiny, ...); a hub id or a folder always brings its own weights")

    if model.startswith("hf:"):
        clip = _load_hf(model[3:], pretrained, cache_dir)
    elif model in _HF_CONFIGS:
        clip = _load_hf_registered(model, pretrained, cache_dir)
    elif model.startswith(("hf-hub:", "local-dir:")):
        clip = _load_open_clip(model, pretrained, cache_dir)
    elif os.path.isdir(os.path.expanduser(model)):
        p = Path(os.path.expanduser(model)).resolve()
        if (p / "open_clip_config.json").is_file():
            clip = _load_open_clip(f"local-dir:{p}", pretrained, cache_dir)
        elif _is_hf_dir(p):
            clip = _load_hf(str(p), pretrained, cache_dir)
        else:
            raise WeightsNotFoundError(
                f"{p}: folder has neither open_clip_config.json (open_clip) nor a CLIP config.json "
                f"(transformers save_pretrained). {_HOW_TO_LOCAL}")
    elif model.replace("/", "-") in open_clip.list_models():
        clip = _load_open_clip(model.replace("/", "-"), pretrained, cache_dir)
    elif _HUB_ID.fullmatch(model):  # bare "org/name" that is not an open_clip architecture
        clip = _load_hf(model, pretrained, cache_dir)
    elif _looks_like_path(model):
        raise WeightsNotFoundError(f"{model}: model folder does not exist. {_HOW_TO_LOCAL}")
    else:
        raise ConfigError(
            f"model: unknown model {model!r}; known names include {list_models()[:12]}... "
            "(see vidclip.models.clip.list_models()), a hub id 'hf:org/name' / 'hf-hub:org/name', "
            "or a local folder")
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
    name, pre = ident.name, ident.pretrained
    if ident.family == "hf" and name not in _HF_CONFIGS and not name.startswith("hf:"):
        name = "hf:" + name
        if pre == ident.name:  # hub id / folder carried its own weights
            pre = None
    if ident.family == "open_clip" and name.startswith("hf-hub:"):
        pre = None
    if pre is None and ident.random_weights:
        pre = "none"
    clip = load_clip(name, pre, device=device, precision=precision, cache_dir=cache_dir)
    if check_digest and clip.identity.weights_digest != ident.weights_digest:
        raise WeightsNotFoundError(
            f"model {ident.name!r} (pretrained={ident.pretrained!r}): weights digest is now "
            f"{clip.identity.weights_digest}, but {ident.weights_digest} was recorded; the checkpoint "
            "changed since the output was written")
    return clip


# -- open_clip -------------------------------------------------------------------------------
def _open_clip_checkpoint(name: str, pretrained: str) -> tuple[str, bool]:
    """Local checkpoint path for ``pretrained`` (file or folder); (path, is_torchscript)."""
    p = Path(os.path.expanduser(pretrained)).resolve()
    if p.is_dir():
        from open_clip.factory import _find_checkpoint_in_dir

        found = _find_checkpoint_in_dir(p)
        if found is None:
            raise WeightsNotFoundError(
                f"{p}: folder given as pretrained weights for {name} holds no "
                f"*.safetensors/*.bin/*.pth checkpoint. {_HOW_TO_LOCAL}")
        p = Path(found)
    if not p.is_file():
        raise WeightsNotFoundError(f"{p}: checkpoint file for {name} does not exist. {_HOW_TO_LOCAL}")
    if p.stat().st_size == 0:
        raise WeightsNotFoundError(f"{p}: checkpoint file for {name} is empty")
    return str(p), _is_torchscript(p)


def _is_torchscript(p: Path) -> bool:
    """OpenAI's released ViT-*.pt files are TorchScript archives (zip with constants.pkl)."""
    import zipfile

    if p.suffix == ".safetensors" or not zipfile.is_zipfile(p):
        return False
    with zipfile.ZipFile(p) as z:
        names = z.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _load_open_clip(name: str, pretrained: str | None, cache_dir: str | None):
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    kwargs: dict[str, Any] = {"cache_dir": cache_dir}
    ckpt: str | None = None
    ident_pre: str | None = pretrained
    offline = False
    random_weights = pretrained is None
    if name.startswith("hf-hub:"):
        offline = _offline()
        if pretrained:
            warnings.warn(f"pretrained={pretrained!r} ignored: {name} carries its own weights", stacklevel=3)
        ident_pre, random_weights = name, False
    elif name.startswith("local-dir:"):
        ident_pre, random_weights = name[len("local-dir:"):], False
    elif pretrained is not None:
        tag_cfg = get_pretrained_cfg(name, pretrained)
        if tag_cfg:
            offline = _offline()
            if tag_cfg.get("quick_gelu", False):
                # OpenAI-trained weights use QuickGELU; open_clip only *warns* when the plain config is
                # used with them, and the embeddings are then subtly wrong.
                kwargs["force_quick_gelu"] = True
            if offline and not tag_cfg.get("hf_hub") and not _url_cached(tag_cfg.get("url", ""), cache_dir):
                raise WeightsNotFoundError(
                    f"{name} pretrained={pretrained!r}: weights are not in the local cache and the "
                    f"hub cannot be reached (offline). {_HOW_TO_LOCAL}")
        elif _looks_like_path(pretrained) or os.path.exists(os.path.expanduser(pretrained)):
            ckpt, is_ts = _open_clip_checkpoint(name, pretrained)
            ident_pre = ckpt
            if is_ts:
                kwargs["force_quick_gelu"] = True  # every OpenAI TorchScript release uses QuickGELU
        else:
            tags = list_pretrained_tags_by_model(name)
            shown = ", ".join(tags[:8]) + (f", ... ({len(tags)} in all)" if len(tags) > 8 else "")
            # a config without tags (vidclip-synth, tiny-vit) has nothing to download: no network hint
            raise WeightsNotFoundError(
                f"{name}: pretrained={pretrained!r} is neither a known tag ({shown or 'none registered'}) "
                f"nor an existing file. {_HOW_TO_LOCAL if tags else _HOW_TO_LOCAL_FILES}")

    # open_clip logs on the root logger ("No pretrained weights loaded ... initialized randomly",
    # false when a checkpoint is loaded right after; "Failed to download weights", said again by our
    # own error): those records are taken off the log, and folded into the error when one is raised.
    try:
        with _captured_open_clip_log() as open_clip_log, _hub_offline_mode(offline), _seeded_init():
            if ckpt is not None:
                net = open_clip.create_model(name, pretrained=None, **kwargs)
                _load_open_clip_state(net, ckpt, name)
            else:
                net = open_clip.create_model(name, pretrained=pretrained if not random_weights else None,
                                             **kwargs)
    except WeightsNotFoundError:
        raise
    except (RuntimeError, OSError, FileNotFoundError, ValueError) as e:
        msg = "; ".join([m for m in open_clip_log if m not in str(e)][:1] + [str(e)])
        if ckpt is None and not random_weights:
            what = f"{name}" + (f" pretrained={pretrained!r}" if pretrained else "")
            where = ("are not in the local cache and the hub cannot be reached (offline)" if offline
                     else "could not be downloaded")
            raise WeightsNotFoundError(
                f"{what}: weights {where}. {_HOW_TO_LOCAL} [open_clip: {_short(msg)}]") from e
        raise
    pp = dict(getattr(net.visual, "preprocess_cfg", {}) or {})
    size = pp.get("size", getattr(net.visual, "image_size", 224))
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise ConfigError(f"model {name}: non-square input {tuple(size)} is not supported")
        size = size[0]
    if pp.get("resize_mode", "shortest") != "shortest":
        warnings.warn(f"model {name}: resize_mode {pp.get('resize_mode')!r} is approximated by "
                      "shortest-side resize + centre crop", stacklevel=3)
    mean, std = tuple(pp.get("mean", OPENAI_MEAN)), tuple(pp.get("std", OPENAI_STD))
    interp = pp.get("interpolation", "bicubic")
    if interp not in ("bicubic", "bilinear", "nearest"):
        interp = "bicubic"
    ctx = getattr(net, "context_length", None) or getattr(getattr(net, "text", None), "context_length", 77)
    embed_dim = _open_clip_embed_dim(net, int(size))
    with _captured_open_clip_log(), _hub_offline_mode(offline):
        tok = open_clip.get_tokenizer(name, cache_dir=cache_dir)
    from open_clip.tokenizer import SimpleTokenizer

    kind = "simple" if isinstance(tok, SimpleTokenizer) else "open_clip"
    identity = ModelIdentity(
        family="open_clip", name=name, pretrained=ident_pre, embed_dim=embed_dim, image_size=int(size),
        random_weights=random_weights, weights_digest=state_dict_digest(net))
    return net, "open_clip", identity, mean, std, int(ctx), _Tokenizer(kind, tok, int(ctx)), interp


def _short(msg: str, n: int = 200) -> str:
    """First line of a library's error message, clipped (the full chain stays in __cause__)."""
    first = (msg.strip().splitlines() or [""])[0]
    return first if len(first) <= n else first[: n - 3] + "..."


def _url_cached(url: str, cache_dir: str | None) -> bool:
    if not url:
        return False
    d = cache_dir or os.path.expanduser("~/.cache/clip")
    return os.path.isfile(os.path.join(d, os.path.basename(url)))


def _load_open_clip_state(net: torch.nn.Module, ckpt: str, name: str) -> None:
    """Load a local checkpoint the way open_clip does (format conversions, pos-embed resize)."""
    from open_clip.factory import load_checkpoint

    try:
        if _is_torchscript(Path(ckpt)):
            # OpenAI's TorchScript release: take its state dict (open_clip's state-dict loader
            # expects plain pickles).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated"
                sd = dict(torch.jit.load(ckpt, map_location="cpu").state_dict())
            # OpenAI's archives carry these scalars; traced open_clip models carry their
            # non-persistent buffers (attn_mask). Neither belongs in a state dict.
            non_persistent = {n for n, _ in net.named_buffers()} - set(net.state_dict())
            for k in ("input_resolution", "context_length", "vocab_size", *non_persistent):
                sd.pop(k, None)
            import tempfile

            with tempfile.TemporaryDirectory() as td:
                tmp = os.path.join(td, "sd.pt")
                torch.save(sd, tmp)
                load_checkpoint(net, tmp, strict=True)
        else:
            load_checkpoint(net, ckpt, strict=True)
    except Exception as e:  # noqa: BLE001 - unpickling/parse/shape errors all mean "bad checkpoint"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise WeightsNotFoundError(f"{ckpt}: not a valid checkpoint for {name} ({first})") from e


def _open_clip_embed_dim(net: torch.nn.Module, size: int) -> int:
    d = getattr(net.visual, "output_dim", None)
    if isinstance(d, int) and d > 0:
        return d
    with torch.no_grad():  # fall back to one dummy forward (rare: non-standard towers)
        p = next(net.parameters())
        return int(net.encode_image(torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype)).shape[-1])


# -- transformers ----------------------------------------------------------------------------
def _load_hf_registered(name: str, pretrained: str | None, cache_dir: str | None):
    """A registered tiny hf config: random init, or weights from a folder / state-dict file."""
    from transformers import CLIPConfig, CLIPModel

    if pretrained is not None:
        p = Path(os.path.expanduser(pretrained)).resolve()
        if p.is_dir():
            net, tok, pre = _hf_from_pretrained(str(p), cache_dir, offline=True)
            _check_hf_matches(net, name, p)
            return _hf_finish(net, tok, name, str(p), False, pre)
        if not p.is_file():
            raise WeightsNotFoundError(f"{p}: checkpoint for {name} does not exist. {_HOW_TO_LOCAL}")
    with _seeded_init():
        net = CLIPModel(CLIPConfig(**_HF_CONFIGS[name]))
    if pretrained is not None:
        sd = _read_state_dict(p)
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise WeightsNotFoundError(f"{p}: not a valid checkpoint for {name} "
                                       f"({str(e).splitlines()[0][:300]})") from e
        return _hf_finish(net, _bpe_clip_tokenizer(), name, str(p), False, {})
    return _hf_finish(net, _bpe_clip_tokenizer(), name, None, True, {})


def _check_hf_matches(net, name: str, where: Path) -> None:
    """A folder given as weights for a registered config must hold that architecture."""
    want = _HF_CONFIGS[name]
    got = net.config
    pairs = [("projection_dim", want.get("projection_dim"), got.projection_dim)]
    for tower in ("vision_config", "text_config"):
        for k, v in want.get(tower, {}).items():
            if k in ("hidden_size", "num_hidden_layers", "image_size", "patch_size"):
                pairs.append((f"{tower}.{k}", v, getattr(getattr(got, tower), k)))
    bad = [f"{k}={g} (expected {w})" for k, w, g in pairs if w is not None and w != g]
    if bad:
        raise ConfigError(f"{where}: folder holds a different architecture than {name}: {', '.join(bad)}")


def _read_state_dict(p: Path) -> dict[str, torch.Tensor]:
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure means "not a checkpoint"
        raise WeightsNotFoundError(f"{p}: cannot read checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise WeightsNotFoundError(f"{p}: checkpoint holds a {type(sd).__name__}, not a state dict")
    return sd


def _load_hf(ref: str, pretrained: str | None, cache_dir: str | None):
    """transformers CLIPModel from a hub id or a save_pretrained folder."""
    local = Path(os.path.expanduser(ref))
    if local.is_dir():
        ref = str(local.resolve())
        if not _is_hf_dir(local):
            raise WeightsNotFoundError(f"{ref}: no CLIP config.json in this folder. {_HOW_TO_LOCAL}")
        offline = True
    elif not _HUB_ID.fullmatch(ref):
        raise WeightsNotFoundError(
            f"{ref}: neither an existing model folder nor a hub id 'org/name'. {_HOW_TO_LOCAL}")
    else:
        offline = _offline()
    src = ref
    if pretrained is not None:
        p = Path(os.path.expanduser(pretrained)).resolve()
        if p.is_dir():
            src, offline = str(p), True
        else:
            raise WeightsNotFoundError(
                f"{p}: for a transformers model, pretrained must be a save_pretrained folder. "
                f"{_HOW_TO_LOCAL}")
    net, tok, pre = _hf_from_pretrained(src, cache_dir, offline)
    return _hf_finish(net, tok, ref, src, False, pre)


def _hf_from_pretrained(src: str, cache_dir: str | None, offline: bool):
    from transformers import CLIPModel

    try:
        with _hub_offline_mode(offline), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            net = CLIPModel.from_pretrained(src, cache_dir=cache_dir, local_files_only=offline,
                                            dtype=torch.float32)
    except (OSError, ValueError) as e:
        where = ("are not in the local cache and the hub cannot be reached (offline)" if offline
                 and not os.path.isdir(src) else "could not be loaded")
        raise WeightsNotFoundError(
            f"{src}: transformers CLIP weights {where}. {_HOW_TO_LOCAL} "
            f"[transformers: {_short(str(e))}]") from e
    pre = _hf_preprocessor_config(src, cache_dir, offline)
    tok = _hf_tokenizer(src, cache_dir, offline) or _bpe_clip_tokenizer()
    return net, tok, pre


def _hf_file(src: str, filename: str, cache_dir: str | None, offline: bool) -> str | None:
    if os.path.isdir(src):
        p = os.path.join(src, filename)
        return p if os.path.isfile(p) else None
    try:
        from huggingface_hub import hf_hub_download

        with _hub_offline_mode(offline):
            return hf_hub_download(src, filename, cache_dir=cache_dir, local_files_only=offline)
    except Exception:  # noqa: BLE001 - absent optional file
        return None


def _hf_preprocessor_config(src: str, cache_dir: str | None, offline: bool) -> dict:
    f = _hf_file(src, "preprocessor_config.json", cache_dir, offline)
    if not f:
        return {}
    try:
        return json.loads(Path(f).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{f}: invalid preprocessor config: {e}") from e


def _hf_tokenizer(src: str, cache_dir: str | None, offline: bool):
    if not any(_hf_file(src, f, cache_dir, offline) for f in _HF_TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        with _hub_offline_mode(offline):
            return AutoTokenizer.from_pretrained(src, cache_dir=cache_dir, local_files_only=offline)
    except (OSError, ValueError) as e:
        log.warning("tokenizer files of %s unreadable (%s); using the OpenAI CLIP BPE", src, e)
        return None


def _hf_finish(net, tok, name: str, pretrained: str | None, random_weights: bool, pre: dict):
    vc = net.config.vision_config
    size = vc.image_size
    crop = pre.get("crop_size")
    if isinstance(crop, dict):
        crop = crop.get("height", size)
    if crop and int(crop) != size:
        raise ConfigError(f"model {name}: preprocessor crop_size {crop} differs from the vision "
                          f"config image_size {size}")
    mean = tuple(pre.get("image_mean", OPENAI_MEAN))
    std = tuple(pre.get("image_std", OPENAI_STD))
    # PIL resample codes used by CLIPImageProcessor: 2 = bilinear, 3 = bicubic
    interp = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(pre.get("resample", 3), "bicubic")
    ctx = int(net.config.text_config.max_position_embeddings)
    identity = ModelIdentity(
        family="hf", name=name, pretrained=pretrained, embed_dim=int(net.config.projection_dim),
        image_size=int(size), random_weights=random_weights, weights_digest=state_dict_digest(net))
    return net, "hf", identity, mean, std, ctx, _Tokenizer("hf", tok, ctx), interp
