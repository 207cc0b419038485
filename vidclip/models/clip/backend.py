"""What the two CLIP backends share.

:mod:`vidclip.models.clip.open_clip_backend` and :mod:`vidclip.models.clip.hf_backend` each turn a
:class:`~vidclip.models.clip.spec.ModelSpec` into a :class:`LoadedCLIP`, from which
:func:`vidclip.models.clip.load.load_clip` builds the FrozenCLIP. They share: the uniform
:class:`TextTokenizer`, the offline rule (:func:`is_offline`, :func:`hub_offline_mode`) and seeded
random init. Neither library is imported here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import urlparse

import torch

from vidclip.models.clip.identity import ModelIdentity

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_RANDOM_INIT_SEED = 0


# ----------------------------------------------------------------------------------------------
# Tokenizer and load result
# ----------------------------------------------------------------------------------------------
class TextTokenizer:
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


class LoadedCLIP(NamedTuple):
    """A backend's result: the CLIP module and what FrozenCLIP needs to preprocess and tokenize."""

    model: torch.nn.Module  # open_clip CLIP / CustomTextCLIP, or transformers CLIPModel (CPU, fp32)
    family: str  # "open_clip" | "hf"
    identity: ModelIdentity
    mean: tuple[float, ...]  # per-channel pixel normalisation (RGB, [0, 1] values)
    std: tuple[float, ...]
    context_length: int  # text tokens per caption (L)
    tokenizer: TextTokenizer
    interpolation: str  # "bicubic" | "bilinear" | "nearest"


# ----------------------------------------------------------------------------------------------
# Error text
# ----------------------------------------------------------------------------------------------
def first_line(msg: str, n: int = 200) -> str:
    """First line of a library's error message, clipped (the full chain stays in __cause__)."""
    first = (msg.strip().splitlines() or [""])[0]
    return first if len(first) <= n else first[: n - 3] + "..."


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


def is_offline() -> bool:
    """True when hub downloads must not be attempted (env says so, or the hub does not answer)."""
    if any(_env_true(v) for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VIDCLIP_OFFLINE")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    return not _host_reachable(url.hostname or "huggingface.co", port)


@contextlib.contextmanager
def hub_offline_mode(offline: bool) -> Iterator[None]:
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
def seeded_init() -> Iterator[None]:
    """Seeded RNG for random init without disturbing the caller's RNG (CPU only: no CUDA init)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_INIT_SEED)
        yield
