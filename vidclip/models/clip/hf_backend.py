"""transformers backend of :func:`vidclip.models.clip.load.load_clip`.

A :class:`~vidclip.models.clip.spec.ModelSpec` of a hub id, a ``save_pretrained`` folder or a
registered tiny hf config (random init, or weights from a folder / state-dict file) -> a
:class:`LoadedCLIP` over a transformers ``CLIPModel``.
transformers is imported inside the functions, so importing this module costs nothing.

Tokenizer: the one saved with the model (``vocab.json`` + ``merges.txt`` / ``tokenizer.json``)
when present; otherwise a ``CLIPTokenizer`` built in memory from open_clip's bundled OpenAI BPE
file (49408 tokens, ids identical to open_clip's ``SimpleTokenizer``).
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import os
import warnings
from pathlib import Path

import torch

from vidclip.core.errors import ConfigError, WeightsNotFoundError
from vidclip.models.clip.backend import (
    OPENAI_MEAN,
    OPENAI_STD,
    LoadedCLIP,
    TextTokenizer,
    first_line,
    hub_offline_mode,
    is_offline,
    seeded_init,
)
from vidclip.models.clip.identity import HF_CONFIGS, ModelIdentity, state_dict_digest
from vidclip.models.clip.spec import HOW_TO_LOCAL, ModelSpec

log = logging.getLogger(__name__)

_HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def load_hf(spec: ModelSpec, cache_dir: str | None) -> LoadedCLIP:
    """transformers CLIPModel of a hub id or a save_pretrained folder (``spec.ref``), or of a
    registered tiny config (random init, or weights from a folder / state-dict file)."""
    if spec.source == "config":
        return _load_registered(spec.ref, spec.pretrained, cache_dir)
    ref = spec.ref
    offline = spec.source == "folder" or is_offline()
    src = ref
    if spec.pretrained is not None:
        p = Path(os.path.expanduser(spec.pretrained)).resolve()
        if p.is_dir():
            src, offline = str(p), True
        else:
            raise WeightsNotFoundError(
                f"{p}: for a transformers model, pretrained must be a save_pretrained folder. "
                f"{HOW_TO_LOCAL}")
    net, tok, pre = _hf_from_pretrained(src, cache_dir, offline)
    return _hf_finish(net, tok, ref, src, False, pre)


def _load_registered(name: str, pretrained: str | None, cache_dir: str | None) -> LoadedCLIP:
    from transformers import CLIPConfig, CLIPModel

    if pretrained is not None:
        p = Path(os.path.expanduser(pretrained)).resolve()
        if p.is_dir():
            net, tok, pre = _hf_from_pretrained(str(p), cache_dir, offline=True)
            _check_hf_matches(net, name, p)
            return _hf_finish(net, tok, name, str(p), False, pre)
        if not p.is_file():
            raise WeightsNotFoundError(f"{p}: checkpoint for {name} does not exist. {HOW_TO_LOCAL}")
    with seeded_init():
        net = CLIPModel(CLIPConfig(**HF_CONFIGS[name]))
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
    want = HF_CONFIGS[name]
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


def _hf_from_pretrained(src: str, cache_dir: str | None, offline: bool):
    from transformers import CLIPModel

    try:
        with hub_offline_mode(offline), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            net = CLIPModel.from_pretrained(src, cache_dir=cache_dir, local_files_only=offline,
                                            dtype=torch.float32)
    except (OSError, ValueError) as e:
        where = ("are not in the local cache and the hub cannot be reached (offline)" if offline
                 and not os.path.isdir(src) else "could not be loaded")
        raise WeightsNotFoundError(
            f"{src}: transformers CLIP weights {where}. {HOW_TO_LOCAL} "
            f"[transformers: {first_line(str(e))}]") from e
    pre = _hf_preprocessor_config(src, cache_dir, offline)
    tok = _hf_tokenizer(src, cache_dir, offline) or _bpe_clip_tokenizer()
    return net, tok, pre


def _hf_file(src: str, filename: str, cache_dir: str | None, offline: bool) -> str | None:
    if os.path.isdir(src):
        p = os.path.join(src, filename)
        return p if os.path.isfile(p) else None
    try:
        from huggingface_hub import hf_hub_download

        with hub_offline_mode(offline):
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
        with hub_offline_mode(offline):
            return AutoTokenizer.from_pretrained(src, cache_dir=cache_dir, local_files_only=offline)
    except (OSError, ValueError) as e:
        log.warning("tokenizer files of %s unreadable (%s); using the OpenAI CLIP BPE", src, e)
        return None


def _hf_finish(net, tok, name: str, pretrained: str | None, random_weights: bool, pre: dict) -> LoadedCLIP:
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
    return LoadedCLIP(net, "hf", identity, mean, std, ctx, TextTokenizer("hf", tok, ctx), interp)


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
