"""The one parser of a model spec: a ``model`` string and its ``pretrained`` -> :class:`ModelSpec`.

Every reader of a model name goes through :func:`parse_model_spec`: :func:`vidclip.models.clip.load.load_clip`
picks the backend from it, the backends load what it names, and reloading a recorded identity
(:func:`identity_load_args`) inverts it. As open_clip's ``factory.py`` does, the spec string is
read once, into fields:

=====================================  =========  ===========  ==========================================
model                                  backend    source       ref (what the backend loads)
=====================================  =========  ===========  ==========================================
``ViT-B-32``, ``ViT-B/32``, tiny-vit   open_clip  arch         the architecture name ('/' -> '-')
``hf-hub:org/repo``                    open_clip  hf-hub       ``hf-hub:org/repo``
``local-dir:/dir``, a folder with      open_clip  local-dir    ``local-dir:/dir`` (a bare folder made
``open_clip_config.json``                                      absolute)
``hf:org/name``, a bare ``org/name``   hf         hub          ``org/name``
that is no open_clip architecture
``hf:/dir``, a folder with a CLIP      hf         folder       the absolute folder
``config.json`` (``save_pretrained``)
``hf-tiny`` (registered hf configs)    hf         config       the name
=====================================  =========  ===========  ==========================================

The ``pretrained`` rule (CLI ``--pretrained``, config ``model.pretrained``, Python) gives
:attr:`ModelSpec.weights`: ``"none"`` / ``"random"`` (any case) always mean random weights (refused
for a hub id or a folder, which bring their own). None or "" mean what the model implies: the
shipped file of a shipped model (:data:`~vidclip.models.clip.identity.SHIPPED_WEIGHTS`); the
source's own weights for a hub id or a folder; ``openai`` for an open_clip architecture that has
that tag, else its first tag; random weights for a config without any tag (tiny-vit, hf-tiny).
Anything else is an open_clip tag or a checkpoint file/folder.

Reading the model string needs open_clip's list of architectures (so this module imports open_clip
inside :func:`parse_model_spec`); nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from vidclip.core.errors import ConfigError, WeightsNotFoundError
from vidclip.models.clip.identity import (
    CONFIG_DIR,
    HF_CONFIGS,
    SHIPPED_WEIGHTS,
    ModelIdentity,
    list_models,
    register_config_dir,
)

__all__ = ["ModelSpec", "parse_model_spec", "resolve_pretrained", "identity_load_args", "looks_like_path",
           "is_hf_dir", "HUB_ID", "CKPT_SUFFIXES", "RANDOM_WEIGHTS_WORDS", "HOW_TO_LOCAL", "HOW_TO_LOCAL_FILES"]

#: ``pretrained`` values that always mean random weights (compared in lower case).
RANDOM_WEIGHTS_WORDS = ("none", "random")
CKPT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")

HOW_TO_LOCAL_FILES = (
    "Pass a local checkpoint instead: `--pretrained /path/to/checkpoint.pt|.bin|.safetensors` "
    "(load_clip(model, '/path/to/file')) for an open_clip architecture, or a local transformers "
    "folder made by CLIPModel.save_pretrained (`--model /path/to/dir`, load_clip('hf:/path/to/dir')), "
    "or `--pretrained none` for random weights."
)
HOW_TO_LOCAL = HOW_TO_LOCAL_FILES + (
    " To download instead, run once on a machine with network access (files are cached under "
    "~/.cache/huggingface or ~/.cache/clip)."
)

#: Sources that bring their own weights (``pretrained`` names none for them).
_OWN_WEIGHTS = ("hf-hub", "local-dir", "hub", "folder")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec (see the module docstring for the values).

    Attributes:
        model: the model string as given (stripped).
        backend: "open_clip" or "hf".
        source: "arch", "hf-hub", "local-dir" (open_clip); "hub", "folder", "config" (hf).
        ref: what the backend loads (name, ``hf-hub:``/``local-dir:`` id, hub id or absolute folder).
        weights: "random" (none loaded), "own" (the source's), "tag" (an open_clip pretrained tag)
            or "file" (a checkpoint file or folder, the shipped file included).
        pretrained: the tag or checkpoint for "tag"/"file"; for "own" a value the caller gave
            anyway (ignored by the backend); None for "random".
    """

    model: str
    backend: str
    source: str
    ref: str
    weights: str
    pretrained: str | None = None

    @property
    def random_weights(self) -> bool:
        return self.weights == "random"


def looks_like_path(s: str) -> bool:
    """Whether a model/pretrained string names a file or folder (rather than a name or tag)."""
    return os.sep in s or s.startswith((".", "~")) or s.lower().endswith(CKPT_SUFFIXES)


def is_hf_dir(p: Path) -> bool:
    """Whether folder ``p`` is a transformers CLIP ``save_pretrained`` folder (its config.json says so)."""
    cfg = p / "config.json"
    if not cfg.is_file():
        return False
    try:
        d = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return "vision_config" in d or d.get("model_type") in ("clip",)


def _read_model(model: str) -> tuple[str, str, str]:
    """``model`` -> (backend, source, ref); errors for names and folders that name no model."""
    import open_clip

    if model.startswith("hf:"):
        ref = model[3:]
        local = Path(os.path.expanduser(ref))
        if local.is_dir():
            if not is_hf_dir(local):
                raise WeightsNotFoundError(f"{local.resolve()}: no CLIP config.json in this folder. {HOW_TO_LOCAL}")
            return "hf", "folder", str(local.resolve())
        if not HUB_ID.fullmatch(ref):
            raise WeightsNotFoundError(
                f"{ref}: neither an existing model folder nor a hub id 'org/name'. {HOW_TO_LOCAL}")
        return "hf", "hub", ref
    if model in HF_CONFIGS:
        return "hf", "config", model
    if model.startswith("hf-hub:"):
        return "open_clip", "hf-hub", model
    if model.startswith("local-dir:"):
        return "open_clip", "local-dir", model
    if os.path.isdir(os.path.expanduser(model)):
        p = Path(os.path.expanduser(model)).resolve()
        if (p / "open_clip_config.json").is_file():
            return "open_clip", "local-dir", f"local-dir:{p}"
        if is_hf_dir(p):
            return "hf", "folder", str(p)
        raise WeightsNotFoundError(
            f"{p}: folder has neither open_clip_config.json (open_clip) nor a CLIP config.json "
            f"(transformers save_pretrained). {HOW_TO_LOCAL}")
    if model.replace("/", "-") in open_clip.list_models():
        return "open_clip", "arch", model.replace("/", "-")
    if HUB_ID.fullmatch(model):  # bare "org/name" that is not an open_clip architecture
        return "hf", "hub", model
    if looks_like_path(model):
        raise WeightsNotFoundError(f"{model}: model folder does not exist. {HOW_TO_LOCAL}")
    raise ConfigError(
        f"model: unknown model {model!r}; known names include {list_models()[:12]}... "
        "(see vidclip.models.clip.list_models()), a hub id 'hf:org/name' / 'hf-hub:org/name', "
        "or a local folder")


def _read_pretrained(model: str, source: str, ref: str, pretrained: str | None) -> tuple[str, str | None]:
    """The ``pretrained`` rule (module docstring) -> (weights, pretrained for the backend)."""
    if isinstance(pretrained, str) and pretrained.strip().lower() in RANDOM_WEIGHTS_WORDS:
        if source in _OWN_WEIGHTS:
            raise ConfigError(f"{model}: pretrained='none' (random weights) works for architecture names "
                              "(ViT-B-32, tiny-vit, hf-tiny, ...); a hub id or a folder always brings its own weights")
        return "random", None
    if pretrained:
        if source in ("hf-hub", "local-dir"):
            return "own", pretrained
        if source != "arch":
            return "file", pretrained  # a save_pretrained folder or state-dict file; the backend checks
        from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

        if get_pretrained_cfg(ref, pretrained):
            return "tag", pretrained
        if looks_like_path(pretrained) or os.path.exists(os.path.expanduser(pretrained)):
            return "file", pretrained
        tags = list_pretrained_tags_by_model(ref)
        shown = ", ".join(tags[:8]) + (f", ... ({len(tags)} in all)" if len(tags) > 8 else "")
        # a config without tags (vidclip-synth, tiny-vit) has nothing to download: no network hint
        raise WeightsNotFoundError(
            f"{ref}: pretrained={pretrained!r} is neither a known tag ({shown or 'none registered'}) "
            f"nor an existing file. {HOW_TO_LOCAL if tags else HOW_TO_LOCAL_FILES}")
    if model in SHIPPED_WEIGHTS:
        if not SHIPPED_WEIGHTS[model].is_file():
            raise WeightsNotFoundError(
                f"{model}: the shipped weights {SHIPPED_WEIGHTS[model]} are missing from this installation; "
                "re-install vidclip, or rebuild them with `python -m vidclip.train.pretrain "
                "configs/pretrain_synth_clip.yaml --out vidclip/assets`")
        return "file", str(SHIPPED_WEIGHTS[model])
    if source in _OWN_WEIGHTS:
        return "own", None
    if source == "config":
        return "random", None
    from open_clip.pretrained import list_pretrained_tags_by_model

    tags = list_pretrained_tags_by_model(ref)
    if not tags:
        return "random", None
    return "tag", ("openai" if "openai" in tags else tags[0])


def parse_model_spec(model: str, pretrained: str | os.PathLike | None = None) -> ModelSpec:
    """Read a model string and its ``pretrained`` (see the module docstring).

    Raises:
        ConfigError: not a string, an unknown name, or random weights asked of a hub id / folder.
        WeightsNotFoundError: a folder that holds no model, an unknown tag, missing shipped weights.
    """
    register_config_dir(CONFIG_DIR)
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"model: expected a model name, hub id or folder, got {model!r}")
    model = model.strip()
    if pretrained is not None and not isinstance(pretrained, str):
        pretrained = os.fspath(pretrained)
    backend, source, ref = _read_model(model)
    weights, pre = _read_pretrained(model, source, ref, pretrained)
    return ModelSpec(model=model, backend=backend, source=source, ref=ref, weights=weights, pretrained=pre)


def resolve_pretrained(model: str, pretrained: str | os.PathLike | None) -> tuple[str | None, bool]:
    """``(pretrained for the backend, random_weights)`` of :func:`parse_model_spec`; the backend reads
    None as "no weights to load besides what the model brings"."""
    spec = parse_model_spec(model, pretrained)
    return spec.pretrained, spec.random_weights


def identity_load_args(identity: ModelIdentity | dict) -> tuple[str, str | None]:
    """The ``(model, pretrained)`` that load the model an identity was recorded from (an index's,
    a feature store's): the inverse of :func:`parse_model_spec` on what the backends record."""
    register_config_dir(CONFIG_DIR)  # HF_CONFIGS tells a registered hf config from a hub id
    ident = identity if isinstance(identity, ModelIdentity) else ModelIdentity.from_dict(identity)
    name, pre = ident.name, ident.pretrained
    if ident.family == "hf" and name not in HF_CONFIGS and not name.startswith("hf:"):
        name = "hf:" + name  # a hub id or a folder, recorded without the prefix
        if pre == ident.name:  # ... that carried its own weights
            pre = None
    if ident.family == "open_clip" and name.startswith("hf-hub:"):
        pre = None
    if pre is None and ident.random_weights:
        pre = RANDOM_WEIGHTS_WORDS[0]
    return name, pre
