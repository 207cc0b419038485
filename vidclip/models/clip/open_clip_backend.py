"""open_clip backend of :func:`vidclip.models.clip.load.load_clip`.

A :class:`~vidclip.models.clip.spec.ModelSpec` of architecture names, pretrained tags, local
checkpoints (state dicts, safetensors, OpenAI's TorchScript archives), ``hf-hub:`` ids and
``local-dir:`` folders -> a :class:`LoadedCLIP`. Also the open_clip ViT input embedding that
FrozenCLIP's per-block access needs. Imports open_clip (never transformers itself) inside the
functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from vidclip.models.clip.identity import ModelIdentity, state_dict_digest
from vidclip.models.clip.spec import HOW_TO_LOCAL, ModelSpec


def load_open_clip(spec: ModelSpec, cache_dir: str | None) -> LoadedCLIP:
    """An open_clip model: ``spec.ref`` an architecture, ``hf-hub:org/repo`` or ``local-dir:/dir``;
    ``spec.weights`` a tag, a checkpoint file/folder, the source's own, or random (seeded)."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    name, pretrained = spec.ref, spec.pretrained
    kwargs: dict[str, Any] = {"cache_dir": cache_dir}
    ckpt: str | None = None
    ident_pre: str | None = pretrained
    offline = False
    random_weights = spec.random_weights
    if spec.source == "hf-hub":
        offline = is_offline()
        if pretrained:
            warnings.warn(f"pretrained={pretrained!r} ignored: {name} carries its own weights", stacklevel=3)
        ident_pre, pretrained = name, None
    elif spec.source == "local-dir":
        ident_pre, pretrained = name[len("local-dir:"):], None
    elif spec.weights == "tag":
        tag_cfg = get_pretrained_cfg(name, pretrained)
        offline = is_offline()
        if tag_cfg.get("quick_gelu", False):
            # OpenAI-trained weights use QuickGELU; open_clip only *warns* when the plain config is
            # used with them, and the embeddings are then subtly wrong.
            kwargs["force_quick_gelu"] = True
        if offline and not tag_cfg.get("hf_hub") and not _url_cached(tag_cfg.get("url", ""), cache_dir):
            raise WeightsNotFoundError(
                f"{name} pretrained={pretrained!r}: weights are not in the local cache and the "
                f"hub cannot be reached (offline). {HOW_TO_LOCAL}")
    elif spec.weights == "file":
        ckpt, is_ts = _open_clip_checkpoint(name, pretrained)
        ident_pre = ckpt
        if is_ts:
            kwargs["force_quick_gelu"] = True  # every OpenAI TorchScript release uses QuickGELU

    # open_clip logs on the root logger ("No pretrained weights loaded ... initialized randomly",
    # false when a checkpoint is loaded right after; "Failed to download weights", said again by our
    # own error): those records are taken off the log, and folded into the error when one is raised.
    try:
        with _captured_open_clip_log() as open_clip_log, hub_offline_mode(offline), seeded_init():
            if ckpt is not None:
                net = open_clip.create_model(name, pretrained=None, **kwargs)
                _load_open_clip_state(net, ckpt, name)
            else:
                # a tag (downloaded or read from the cache), a hub id / folder's own weights, or None
                net = open_clip.create_model(name, pretrained=pretrained, **kwargs)
    except WeightsNotFoundError:
        raise
    except (RuntimeError, OSError, FileNotFoundError, ValueError) as e:
        msg = "; ".join([m for m in open_clip_log if m not in str(e)][:1] + [str(e)])
        if ckpt is None and not random_weights:
            what = f"{name}" + (f" pretrained={pretrained!r}" if pretrained else "")
            where = ("are not in the local cache and the hub cannot be reached (offline)" if offline
                     else "could not be downloaded")
            raise WeightsNotFoundError(
                f"{what}: weights {where}. {HOW_TO_LOCAL} [open_clip: {first_line(msg)}]") from e
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
    with _captured_open_clip_log(), hub_offline_mode(offline):
        tok = open_clip.get_tokenizer(name, cache_dir=cache_dir)
    from open_clip.tokenizer import SimpleTokenizer

    kind = "simple" if isinstance(tok, SimpleTokenizer) else "open_clip"
    identity = ModelIdentity(
        family="open_clip", name=name, pretrained=ident_pre, embed_dim=embed_dim, image_size=int(size),
        random_weights=random_weights, weights_digest=state_dict_digest(net))
    return LoadedCLIP(net, "open_clip", identity, mean, std, int(ctx), TextTokenizer(kind, tok, int(ctx)),
                      interp)


def _open_clip_checkpoint(name: str, pretrained: str) -> tuple[str, bool]:
    """Local checkpoint path for ``pretrained`` (file or folder); (path, is_torchscript)."""
    p = Path(os.path.expanduser(pretrained)).resolve()
    if p.is_dir():
        from open_clip.factory import _find_checkpoint_in_dir

        found = _find_checkpoint_in_dir(p)
        if found is None:
            raise WeightsNotFoundError(
                f"{p}: folder given as pretrained weights for {name} holds no "
                f"*.safetensors/*.bin/*.pth checkpoint. {HOW_TO_LOCAL}")
        p = Path(found)
    if not p.is_file():
        raise WeightsNotFoundError(f"{p}: checkpoint file for {name} does not exist. {HOW_TO_LOCAL}")
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
    handlers_before = list(root.handlers)
    root.addFilter(take)
    try:
        yield taken
    finally:
        root.removeFilter(take)
        # open_clip logs through logging.info(), which installs a root handler (basicConfig) when there
        # is none: later warnings of the whole process would then read "WARNING:name:..." instead of
        # their plain text. Undo that; what open_clip said was collected above.
        for handler in [h for h in root.handlers if h not in handlers_before]:
            root.removeHandler(handler)


def vit_embed(v: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip VisionTransformer input embedding: patches + class token + positions, ln_pre."""
    if hasattr(v, "_embeds"):  # open_clip >= 2.30
        return v._embeds(x)
    x = v.conv1(x)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = v.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
    x = v.patch_dropout(x)
    return v.ln_pre(x)
