"""A fitted video classifier and its file: one ``.safetensors`` whose header holds the JSON.

Tensors: ``text_weights`` [C, D] plus the method's state (``keys``, ``values``, ``weight``, ...).
JSON (the safetensors metadata entry ``vidclip_classifier``): format, method, class names (raw and
as prompted), prompt templates, hyper-parameters, the search report, the CLIP model identity and
the temporal module. Loading checks the model: a classifier fitted on another CLIP's features is
refused, since its weights mean nothing in another embedding space.

:func:`check_classifier_file` reads only the file's header (no tensor data, no torch: this module
imports torch in the functions that need it) and checks the metadata against the tensors' shapes,
so ``vidclip classify --classifier`` refuses a damaged or edited file before loading a model.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vidclip.core.errors import ConfigError, display_path
from vidclip.core.fileio import atomic_path

if TYPE_CHECKING:
    import torch

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
        from vidclip.recognition.fewshot import method_logits

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
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)  # tensors and numpy values


#: The state tensors of each method (``state.<name>`` in the file) by their dimensions: C the
#: classes, D the embedding dimension (``text_weights`` is [C, D]), S the cache entries, n the
#: channels APE keeps; and the hyper-parameters its logits need.
STATE_SHAPES: dict[str, dict[str, tuple[str, ...]]] = {
    "zeroshot": {},
    "tip": {"keys": ("S", "D"), "values": ("S", "C")},
    "tip-f": {"keys": ("S", "D"), "values": ("S", "C")},
    "gda": {"weight": ("C", "D"), "bias": ("C",)},
    "proker": {"support": ("S", "D"), "coef": ("S", "C")},
    "ape": {"keys": ("S", "D"), "values": ("S", "C"), "channels": ("n",)},
    "linear": {"weight": ("C", "D"), "bias": ("C",)},
}
PARAMS: dict[str, tuple[str, ...]] = {"zeroshot": (), "tip": ("alpha", "beta"), "tip-f": ("alpha", "beta"),
                                      "gda": ("alpha",), "proker": ("alpha", "beta"),
                                      "ape": ("alpha", "beta", "gamma"), "linear": ()}
_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_FLOATS = ("F64", "F32", "F16", "BF16")
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


def check_classifier_file(path: str | os.PathLike) -> dict:
    """The classifier metadata of ``path``, checked against its tensors' shapes; a ConfigError
    naming the file and what is wrong otherwise. Reads the header only; imports no torch."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--classifier {display_path(p)}: no such file")
    meta, shapes = _read_header(p)
    _check_meta(meta, shapes, display_path(p))
    return meta


def _read_header(p: Path) -> tuple[object, dict[str, tuple[str, list[int]]]]:
    """(the parsed vidclip metadata, {tensor name: (dtype, shape)}) of a safetensors file."""
    where = display_path(p)

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"{where}: not a vidclip classifier file ({reason})")

    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            first = fh.read(8)
            n = int.from_bytes(first, "little") if len(first) == 8 else -1
            if n < 2 or n > min(size - 8, _MAX_HEADER):
                raise bad("no safetensors header")
            header = json.loads(fh.read(n).decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"{where}: cannot read: {e.strerror or e}") from e
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad(f"its safetensors header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise bad("its safetensors header is not a JSON object")
    data_bytes = size - 8 - n
    shapes: dict[str, tuple[str, list[int]]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, offsets = (entry.get(k) for k in ("dtype", "shape", "data_offsets")) if isinstance(
            entry, dict) else (None, None, None)
        if not (isinstance(dtype, str) and _int_list(shape) and _int_list(offsets) and len(offsets) == 2
                and 0 <= offsets[0] <= offsets[1] <= data_bytes):
            raise bad(f"tensor {name!r}: bad entry {entry!r} (the data is {data_bytes} bytes)")
        if dtype in _ITEM_BYTES and offsets[1] - offsets[0] != math.prod(shape) * _ITEM_BYTES[dtype]:
            raise bad(f"tensor {name!r}: {dtype} {shape} does not fill its {offsets[1] - offsets[0]} bytes")
        shapes[name] = (dtype, shape)
    raw = header.get("__metadata__") or {}
    if not isinstance(raw, dict) or META_KEY not in raw:
        raise bad(f"no '{META_KEY}' metadata")
    try:
        meta = json.loads(raw[META_KEY])
    except (TypeError, ValueError, RecursionError) as e:
        raise bad(f"its '{META_KEY}' metadata is not JSON: {e}") from None
    return meta, shapes


def _int_list(x) -> bool:
    return isinstance(x, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in x)


def _check_meta(meta, shapes: dict[str, tuple[str, list[int]]], where: str) -> None:
    """Metadata against tensor shapes: the class list against ``text_weights``' rows, each state
    tensor against the method's :data:`STATE_SHAPES`, the hyper-parameters its logits need."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{where}: not a vidclip classifier file (no '{META_KEY}' metadata of format {FORMAT})")

    def damaged(what: str) -> ConfigError:
        return ConfigError(f"{where}: damaged classifier file: {what}")

    method = meta.get("method")
    if method not in STATE_SHAPES:
        raise damaged(f"unknown method {method!r} (one of {', '.join(STATE_SHAPES)})")
    for key in ("classes", "prompt_names", "templates"):
        v = meta.get(key)
        if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
            raise damaged(f"'{key}' in its metadata is not a list of strings")
    classes = meta["classes"]
    if not classes:
        raise damaged("its metadata lists no classes")
    if len(meta["prompt_names"]) != len(classes):
        raise damaged(f"its metadata lists {len(classes)} classes but {len(meta['prompt_names'])} prompt names")
    for key in ("model", "temporal", "params", "search"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise damaged(f"'{key}' in its metadata is not a JSON object")
    if not isinstance(meta.get("model"), dict):
        raise damaged("its metadata has no model identity")
    if "text_weights" not in shapes:
        raise damaged("no text_weights tensor")
    dtype, shape = shapes["text_weights"]
    if len(shape) != 2 or dtype not in _FLOATS:
        raise damaged(f"text_weights is {dtype} {shape}, expected a float [classes, dim] matrix")
    if shape[0] != len(classes):
        raise damaged(f"its metadata lists {len(classes)} classes but its text_weights tensor has {shape[0]} rows")
    dims = {"C": (len(classes), "the classes in its metadata"), "D": (shape[1], "text_weights' width")}
    for name, want in STATE_SHAPES[method].items():
        key = f"state.{name}"
        if key not in shapes:
            raise damaged(f"no {key} tensor, which a {method} classifier needs")
        dtype, shape = shapes[key]
        integral = name == "channels"
        if (dtype in _FLOATS) == integral or dtype not in _ITEM_BYTES or len(shape) != len(want):
            kind = "an integer" if integral else "a float"
            raise damaged(f"{key} is {dtype} {shape}, expected {kind} tensor of shape [{', '.join(want)}]")
        for size, dim in zip(shape, want):
            if dim not in dims:
                dims[dim] = (size, f"{key}'s {dim}")
            elif size != dims[dim][0]:
                expected = [dims.get(d, (size, ""))[0] for d in want]
                raise damaged(f"{key} has shape {shape}, expected {expected} ({dims[dim][0]} = {dims[dim][1]})")
    if "n" in dims and not 1 <= dims["n"][0] <= dims["D"][0]:
        raise damaged(f"state.channels keeps {dims['n'][0]} channels of {dims['D'][0]}")
    params = meta.get("params") or {}
    for name in PARAMS[method]:
        v = params.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise damaged(f"hyper-parameter {name!r} is {v!r}, not a finite number")


def load_classifier(path: str | os.PathLike) -> VideoClassifier:
    """The classifier saved at ``path``, checked as :func:`check_classifier_file`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    meta = check_classifier_file(p)
    try:
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{display_path(p)}: not a vidclip classifier file ({e})") from e
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    dim = tensors["text_weights"].shape[1]
    if "channels" in state and len(state["channels"]) and not 0 <= int(state["channels"].min()) <= int(
            state["channels"].max()) < dim:
        raise ConfigError(f"{display_path(p)}: damaged classifier file: state.channels indexes outside [0, {dim})")
    return VideoClassifier(method=meta["method"], classes=meta["classes"], prompt_names=meta["prompt_names"],
                           templates=meta["templates"], text_weights=tensors["text_weights"], model=meta["model"],
                           temporal=meta.get("temporal") or {"name": "mean"}, tensors=state,
                           params=meta.get("params") or {}, search=meta.get("search") or {}, shots=meta.get("shots"))


def check_model(classifier: VideoClassifier, identity, where: str) -> None:
    """Refuse a classifier fitted with another CLIP than ``identity`` (a ModelIdentity)."""
    from vidclip.models.clip.load import ModelIdentity

    try:
        theirs = ModelIdentity.from_dict(classifier.model)
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: damaged classifier file: {e}") from None
    if theirs.key() != identity.key():
        raise ConfigError(
            f"{where}: classifier was fitted on features of {theirs.name} ({theirs.key()}), not of "
            f"{identity.name} ({identity.key()}); pass the --model/--pretrained it was fitted with, or fit a new one")
