"""A fitted video classifier and its file: one ``.safetensors`` whose header holds the JSON.

Tensors: ``text_weights`` [C, D] plus the method's state (``keys``, ``values``, ``weight``, ...).
JSON (the safetensors metadata entry ``vidclip_classifier``): format, method, class names (raw and
as prompted), prompt templates, hyper-parameters, the search report, the CLIP model identity and
the temporal module. Loading checks the model: a classifier fitted on another CLIP's features is
refused, since its weights mean nothing in another embedding space.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ConfigError
from ..fileio import atomic_path
from .fewshot import method_logits

FORMAT = 1
META_KEY = "vidclip_classifier"


@dataclass
class VideoClassifier:
    """``logits(features [N, D]) -> [N, C]``; features pooled and L2-normalised as at fit time."""

    method: str  # zeroshot | tip | tip-f | gda | proker | ape | linear
    classes: list[str]  # raw class names (dataset labels)
    prompt_names: list[str]  # the names put into the templates
    templates: list[str]
    text_weights: torch.Tensor  # float32 [C, D], rows L2-normalised
    model: dict  # ModelIdentity.to_dict() of the CLIP
    temporal: dict = field(default_factory=lambda: {"name": "mean"})
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    shots: int | None = None

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """[N, C] float32, computed in float64: the same numbers whatever the memory layout of the
        tensors (a loaded file's are laid out differently, and float32 BLAS paths differ in the last bit)."""
        state = {k: v.double() if v.is_floating_point() else v for k, v in self.tensors.items()}
        return method_logits(self.method, features.double(), self.text_weights.double(), state, self.params).float()

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features).softmax(dim=-1)

    def meta(self) -> dict:
        return {"format": FORMAT, "method": self.method, "classes": self.classes, "prompt_names": self.prompt_names,
                "templates": self.templates, "model": self.model, "temporal": self.temporal,
                "params": self.params, "search": self.search, "shots": self.shots}

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to ``path`` (``.safetensors`` appended when missing)."""
        from safetensors.torch import save_file

        p = Path(path)
        if p.suffix != ".safetensors":
            p = p.with_name(p.name + ".safetensors")
        tensors = {"text_weights": self.text_weights.contiguous()}
        tensors.update({f"state.{k}": v.contiguous() for k, v in self.tensors.items()})
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(p) as tmp:
            save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(self.meta(), default=_json_default)})
        return p


def _json_default(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return str(obj)


def load_classifier(path: str | os.PathLike) -> VideoClassifier:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--classifier {p}: no such file")
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get(META_KEY, "null"))
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p}: not a vidclip classifier file ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{p}: not a vidclip classifier file (no '{META_KEY}' metadata of format {FORMAT})")
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    return VideoClassifier(method=meta["method"], classes=meta["classes"], prompt_names=meta["prompt_names"],
                           templates=meta["templates"], text_weights=tensors["text_weights"], model=meta["model"],
                           temporal=meta.get("temporal") or {"name": "mean"}, tensors=state,
                           params=meta.get("params") or {}, search=meta.get("search") or {}, shots=meta.get("shots"))


def check_model(classifier: VideoClassifier, identity, where: str) -> None:
    """Refuse a classifier fitted with another CLIP than ``identity`` (a ModelIdentity)."""
    from ..models.clip import ModelIdentity

    theirs = ModelIdentity.from_dict(classifier.model)
    if theirs.key() != identity.key():
        raise ConfigError(
            f"{where}: classifier was fitted on features of {theirs.name} ({theirs.key()}), not of "
            f"{identity.name} ({identity.key()}); pass the --model/--pretrained it was fitted with, or fit a new one")
