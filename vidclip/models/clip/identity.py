"""CLIP identity and the model-config registry.

:class:`ModelIdentity` is what every output file records about the CLIP that produced it;
:func:`state_dict_digest` pins its weights. The registry maps names to JSON model configs:
open_clip configs go to ``open_clip.add_model_config``, transformers ones (``"family": "hf"``)
to :data:`HF_CONFIGS`. vidclip's own tiny configs live in :data:`CONFIG_DIR`; the models whose
weights ship with the package are :data:`SHIPPED_WEIGHTS`.

Imports no torch (only :func:`state_dict_digest` does, when called), so the torch-free ONNX
Runtime path (:mod:`vidclip.models.clip.onnx_runtime`) reads identities through it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vidclip.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["ModelIdentity", "identity_key", "state_dict_digest", "register_config_dir", "list_models", "CONFIG_DIR",
           "HF_CONFIGS", "SHIPPED_WEIGHTS"]

#: vidclip's bundled model configs (tiny-vit, hf-tiny, vidclip-synth, ...).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
#: Models whose weights ship inside the package: ``load_clip(name)`` with no ``pretrained``
#: loads these files. ``vidclip-synth`` knows only the ``vidclip synth`` world.
SHIPPED_WEIGHTS = {"vidclip-synth": Path(__file__).resolve().parents[2] / "assets" / "vidclip-synth.safetensors"}


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


def identity_key(identity: ModelIdentity | dict) -> str:
    """:meth:`ModelIdentity.key` of an identity given as a ModelIdentity or its dict (an index's).

    Raises ConfigError when the dict is not a whole identity.
    """
    return (identity if isinstance(identity, ModelIdentity) else ModelIdentity.from_dict(identity)).key()


def state_dict_digest(module: torch.nn.Module) -> str:
    """16-hex-digit blake2b of every tensor (name, dtype, shape, bytes) in ``module.state_dict()``.

    Hashes all bytes (~1 GB/s), so two fine-tuned checkpoints of one architecture never collide.
    """
    import torch

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
HF_CONFIGS: dict[str, dict] = {}  # name -> transformers CLIPConfig kwargs
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
            HF_CONFIGS[f.stem] = cfg["clip_config"]
    open_clip.add_model_config(p)
    _REGISTERED_DIRS.add(p)


def list_models() -> list[str]:
    """Registered tiny/local configs (open_clip and hf) followed by open_clip's architectures."""
    import open_clip

    register_config_dir(CONFIG_DIR)
    local = sorted({f.stem for d in _REGISTERED_DIRS for f in d.glob("*.json")})
    return local + [m for m in open_clip.list_models() if m not in local]
