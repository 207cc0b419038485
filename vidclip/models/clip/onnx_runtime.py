"""The frozen CLIP on ONNX Runtime, without torch: tokenize, encode text, preprocess and encode images.

Reads the export folders that :mod:`vidclip.models.clip.onnx_export` writes (torch is needed only there),
one folder per model identity and one sub-folder per tower::

    <cache>/<family>-<S>-<D>-<weights digest>/      (identity_key() with ':' -> '-')
        text/        model.onnx, tokenizer.json, export.json
        image/       model.onnx, export.json               (fp32)
        image-int8/  model.onnx, export.json               (dynamic int8 quantisation of image/)

Each tower folder is built in a temporary sibling and renamed into place whole, so a folder under
its own name is complete; ``export.json`` is checked again on load (format, tower, listed files
and their sizes) and a folder that fails the check is treated as absent (:func:`find_export`
returns None) or refused (:class:`OnnxCLIP`).

This module must not import torch, open_clip, transformers or torchvision, directly or through
another vidclip module: a text search that uses it starts in well under a second. It imports
numpy, onnxruntime, tokenizers, PIL and (when present) ftfy, the text cleaner of OpenAI's CLIP.
When onnxruntime (or tokenizers) cannot be imported, :func:`onnx_available` is False and loading
raises :class:`OnnxRuntimeUnavailable`, so callers fall back to the torch path.
"""

from __future__ import annotations

import html
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidclip.core.errors import BackendUnavailableError, ConfigError, display_path
from vidclip.models.clip.geometry import crop_offsets, resized_shape
from vidclip.models.clip.identity import ModelIdentity, identity_key

__all__ = [
    "EXPORT_FORMAT",
    "OnnxRuntimeUnavailable",
    "OnnxCLIP",
    "OnnxTokenizer",
    "onnx_available",
    "default_cache_dir",
    "export_root",
    "tower_dir",
    "read_manifest",
    "find_export",
    "make_session",
    "preprocess_images",
]

#: Version of the export folder layout / export.json schema; folders of another format are ignored.
EXPORT_FORMAT = 1
#: Tower folder names, by (tower, precision).
TOWER_DIRS = {("text", "fp32"): "text", ("image", "fp32"): "image", ("image", "int8"): "image-int8"}
MANIFEST = "export.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


class OnnxRuntimeUnavailable(BackendUnavailableError):
    """onnxruntime (or tokenizers) cannot be imported here; use the torch path instead."""


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:  # also when sys.modules["onnxruntime"] is None (hidden on purpose)
        raise OnnxRuntimeUnavailable(
            f"onnxruntime cannot be imported ({e}); install it with `pip install onnxruntime`, "
            "or use the torch path (the default)") from e
    return onnxruntime


def onnx_available() -> bool:
    """Whether onnxruntime and tokenizers import here (callers fall back to torch when not)."""
    try:
        import_onnxruntime()
        import tokenizers  # noqa: F401
    except (OnnxRuntimeUnavailable, ImportError):
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Where exports live
# ----------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$VIDCLIP_ONNX_CACHE``, else ``$XDG_CACHE_HOME/vidclip/onnx`` (``~/.cache/vidclip/onnx``)."""
    env = os.environ.get("VIDCLIP_ONNX_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vidclip" / "onnx"


def export_root(cache_dir: str | os.PathLike | None, identity: ModelIdentity | dict) -> Path:
    """The folder of one model identity's exports (``None``: :func:`default_cache_dir`)."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / identity_key(identity).replace(":", "-")


def tower_dir(root: str | os.PathLike, tower: str, precision: str = "fp32") -> Path:
    """``root/text``, ``root/image`` or ``root/image-int8``."""
    try:
        return Path(root) / TOWER_DIRS[(tower, precision)]
    except KeyError:
        raise ConfigError(f"tower/precision: expected one of {sorted(TOWER_DIRS)}, got "
                          f"{(tower, precision)!r}") from None


def read_manifest(folder: str | os.PathLike) -> dict:
    """A tower folder's ``export.json``, checked: format, listed files present with their sizes.

    Raises ConfigError naming the folder and what is wrong.
    """
    folder = Path(folder)
    where = display_path(folder / MANIFEST)
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: missing (not an ONNX export folder, or an unfinished one)") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: unreadable ({e})") from e
    if not isinstance(m, dict) or m.get("format") != EXPORT_FORMAT:
        got = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise ConfigError(f"{where}: format {got!r}, this vidclip reads format {EXPORT_FORMAT}; re-export")
    files = m.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise ConfigError(f"{where}: field 'files' must list {MODEL_FILE} with its size")
    for name, size in files.items():
        p = folder / name
        if not p.is_file() or p.stat().st_size != size:
            have = p.stat().st_size if p.is_file() else "missing"
            raise ConfigError(f"{display_path(p)}: {have} bytes, export.json says {size}; the export is damaged, "
                              "delete the folder to export again")
    return m


def find_export(identity: ModelIdentity | dict, tower: str = "text", precision: str = "fp32",
                cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The complete export folder of ``identity``'s tower, or None (absent, unfinished, damaged,
    another format, another identity)."""
    folder = tower_dir(export_root(cache_dir, identity), tower, precision)
    if not folder.is_dir():
        return None
    try:
        m = read_manifest(folder)
    except ConfigError:
        return None
    if m.get("key") != identity_key(identity):
        return None
    return folder


# ----------------------------------------------------------------------------------------------
# Sessions
# ----------------------------------------------------------------------------------------------
def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def make_session(model_path: str | os.PathLike, threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` on CPU: intra-op threads = the cores available, all
    graph optimisations on, one inter-op thread (the graphs are sequential)."""
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or available_cores())
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: quiet by default
    return ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------
def _openai_clean(text: str) -> str:
    """open_clip's ``_clean_lower`` (OpenAI CLIP's cleaning), rebuilt without importing open_clip
    (which imports torch): ftfy, HTML unescaped twice, whitespace runs -> one space, lower case."""
    try:
        import ftfy
    except ImportError:  # ftfy comes with open_clip; without it mojibake/quotes are left as they are
        ftfy = None
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()


class OnnxTokenizer:
    """Texts -> int64 ``[N, L]`` ids equal to :meth:`FrozenCLIP.tokenize`'s, with ``tokenizers``.

    ``spec`` is export.json's ``tokenizer`` entry: ``kind`` ("openai-bpe": open_clip's
    SimpleTokenizer, cleaned in Python first as open_clip does; "hf": the model's own fast
    tokenizer), ``context_length``, ``eot_id``, ``pad_id``. Over-long texts keep their first
    ``L - 1`` tokens and the end-of-text token, as on the torch path.
    """

    def __init__(self, path: str | os.PathLike, spec: dict):
        try:
            from tokenizers import Tokenizer, normalizers
        except ImportError as e:
            raise OnnxRuntimeUnavailable(f"tokenizers cannot be imported ({e}); use the torch path") from e
        try:
            self.kind = str(spec["kind"])
            self.context_length = int(spec["context_length"])
            self.eot_id = int(spec["eot_id"])
            self.pad_id = int(spec["pad_id"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{display_path(path)}: export.json field 'tokenizer' is incomplete ({e!r})") from e
        if self.kind not in ("openai-bpe", "hf"):
            raise ConfigError(f"{display_path(path)}: tokenizer kind {self.kind!r} unknown; re-export")
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.no_truncation()
        if self.kind == "openai-bpe":
            # The file's own normaliser (whitespace, lower case) is what _openai_clean already did,
            # in Python's exact rules; left on, it would be a no-op at best.
            self._tok.normalizer = normalizers.Sequence([])

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """``(ids int64 [N, L], number of texts truncated)``."""
        L = self.context_length
        out = np.full((len(texts), L), self.pad_id, dtype=np.int64)
        cut = 0
        for i, t in enumerate(texts):
            if self.kind == "openai-bpe":
                t = _openai_clean(t)
            # one text at a time: encode_batch would start a thread pool (see "never fork a process
            # that holds threads"), and queries are short.
            ids = self._tok.encode(t).ids  # start and end tokens come from the post-processor
            if len(ids) > L:
                ids = ids[:L]
                ids[-1] = self.eot_id  # both text towers pool at the end-of-text position
                cut += 1
            out[i, : len(ids)] = ids
        return out, cut


# ----------------------------------------------------------------------------------------------
# Image preprocessing (numpy / PIL)
# ----------------------------------------------------------------------------------------------
def preprocess_images(frames: Sequence[np.ndarray] | np.ndarray, image_size: int, mean: Sequence[float],
                      std: Sequence[float], interpolation: str = "bicubic") -> np.ndarray:
    """CLIP eval preprocessing with PIL + numpy, as :func:`vidclip.models.clip.preprocess.preprocess_frames`.

    Resize the shorter side to ``S`` (PIL's antialiased filter, which torch's CPU uint8 resize
    ports), centre-crop ``S x S``, scale to [0, 1], normalise per channel.

    Args:
        frames: uint8 ``[H, W, 3]`` RGB arrays (sizes may differ), or one uint8 ``[N, H, W, 3]``.
        image_size: ``S``; mean, std: 3 values each; interpolation: "bicubic", "bilinear", "nearest".
    Returns:
        float32 ``[N, 3, S, S]``.
    """
    from PIL import Image

    if interpolation not in _INTERPOLATIONS:
        raise ConfigError(f"interpolation: expected one of {_INTERPOLATIONS}, got {interpolation!r}")
    if len(mean) != 3 or len(std) != 3 or any(v <= 0 for v in std):
        raise ConfigError(f"mean/std: expected 3 values each, std > 0; got mean={tuple(mean)} std={tuple(std)}")
    s = int(image_size)
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[interpolation]
    out = np.empty((len(frames), 3, s, s), dtype=np.float32)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    sd = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3 or 0 in f.shape:
            raise ConfigError(f"frames[{i}]: expected uint8 [H,W,3] RGB, got {f.dtype} {list(f.shape)}")
        h, w = f.shape[:2]
        rh, rw = resized_shape(h, w, s)
        img = Image.fromarray(np.ascontiguousarray(f))
        if (rh, rw) != (h, w):
            img = img.resize((rw, rh), resample=resample)
        top, left = crop_offsets(rh, rw, s)
        crop = np.asarray(img)[top:top + s, left:left + s]
        # (x / 255 - mean) / std in the torch path's order of float32 operations
        out[i] = (crop.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0) - m) / sd
    return out


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------
class OnnxCLIP:
    """A frozen CLIP's exported towers on ONNX Runtime (CPU). Sessions open on first use.

    Attributes (from the export): identity (dict), embed_dim ``D``, image_size ``S``, mean, std,
    interpolation, context_length ``L`` (when the text tower is exported), precision of the image
    tower ("fp32" or "int8").
    """

    def __init__(self, root: str | os.PathLike, *, precision: str = "fp32", threads: int | None = None,
                 key: str | None = None):
        """``root``: an identity's export folder (:func:`export_root`); ``key``: when given, towers
        exported for another :func:`~vidclip.models.clip.identity.identity_key` are not used.
        Raises OnnxRuntimeUnavailable when onnxruntime cannot be imported, ConfigError when
        neither tower is usable there."""
        import_onnxruntime()
        if precision not in ("fp32", "int8"):
            raise ConfigError(f"precision: expected 'fp32' or 'int8' for the ONNX runtime, got {precision!r}")
        self.root = Path(root)
        self.precision = precision
        self.threads = threads
        self._manifests: dict[str, dict] = {}
        self._sessions: dict[str, Any] = {}
        self._tokenizer: OnnxTokenizer | None = None
        errors = []
        for tower, prec in (("text", "fp32"), ("image", precision)):
            folder = tower_dir(self.root, tower, prec)
            try:
                m = read_manifest(folder)
            except ConfigError as e:
                errors.append(str(e))
                continue
            if key is not None and m.get("key") != key:
                errors.append(f"{display_path(folder)}: exported for {m.get('key')}, not {key}")
                continue
            self._manifests[tower] = m
        if not self._manifests:
            raise ConfigError(f"{display_path(self.root)}: no usable ONNX export ({'; '.join(errors)})")
        first = next(iter(self._manifests.values()))
        self.identity = first["identity"]
        self.embed_dim = int(first["embed_dim"])
        img = self._manifests.get("image", {})
        self.image_size = int(self.identity["image_size"])
        self.mean = tuple(img.get("mean", ()))
        self.std = tuple(img.get("std", ()))
        self.interpolation = img.get("interpolation", "bicubic")
        txt = self._manifests.get("text")
        self.context_length = int(txt["tokenizer"]["context_length"]) if txt else None

    @classmethod
    def for_identity(cls, identity: ModelIdentity | dict, cache_dir: str | os.PathLike | None = None, **kwargs) -> OnnxCLIP:
        """The export of ``identity`` under ``cache_dir`` (default :func:`default_cache_dir`)."""
        return cls(export_root(cache_dir, identity), key=identity_key(identity), **kwargs)

    def has(self, tower: str) -> bool:
        """Whether ``tower`` ("text" or "image") is exported (at this precision)."""
        return tower in self._manifests

    def _folder(self, tower: str) -> Path:
        """The tower's folder; ConfigError (use the torch path) when it is not exported."""
        folder = tower_dir(self.root, tower, "fp32" if tower == "text" else self.precision)
        if tower not in self._manifests:
            raise ConfigError(f"{display_path(folder)}: the {tower} tower is not exported; use the torch path")
        return folder

    def _session(self, tower: str):
        if tower not in self._sessions:
            self._sessions[tower] = make_session(self._folder(tower) / MODEL_FILE, self.threads)
        return self._sessions[tower]

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> int64 ``[N, L]``; over-long ones truncated with ONE warning (as FrozenCLIP)."""
        if isinstance(texts, str):
            texts = [texts]
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ConfigError(f"texts: item {bad[0]} is {type(texts[bad[0]]).__name__}, expected str")
        folder = self._folder("text")  # before any work: is the tower there
        if self._tokenizer is None:
            self._tokenizer = OnnxTokenizer(folder / TOKENIZER_FILE, self._manifests["text"]["tokenizer"])
        ids, cut = self._tokenizer(list(texts))
        if cut:
            warnings.warn(f"{cut} of {len(texts)} text(s) longer than the model's context length "
                          f"({self.context_length} tokens) were truncated", stacklevel=2)
        return ids

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Texts -> float32 ``[N, D]`` post-projection embeddings, *not* normalised (as FrozenCLIP)."""
        if batch_size <= 0:
            raise ConfigError(f"batch_size: must be positive, got {batch_size}")
        ids = self.tokenize(texts)
        if ids.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        sess = self._session("text")
        name = sess.get_inputs()[0].name
        outs = [sess.run(None, {name: ids[i:i + batch_size]})[0] for i in range(0, len(ids), batch_size)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def preprocess_images(self, frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """uint8 ``[H, W, 3]`` frames -> float32 ``[N, 3, S, S]`` (see :func:`preprocess_images`)."""
        self._folder("image")  # raises when the tower is not exported
        return preprocess_images(frames, self.image_size, self.mean, self.std, self.interpolation)

    def encode_image(self, pixels: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """float32 ``[N, 3, S, S]`` preprocessed pixels -> float32 ``[N, D]``, *not* normalised."""
        x = np.asarray(pixels)
        S = self.image_size
        if x.ndim != 4 or x.shape[1:] != (3, S, S) or not np.issubdtype(x.dtype, np.floating):
            raise ConfigError(f"pixels: expected float [N,3,{S},{S}], got {x.dtype} {list(x.shape)}")
        if batch_size <= 0:
            raise ConfigError(f"batch_size: must be positive, got {batch_size}")
        sess = self._session("image")
        if x.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        name = sess.get_inputs()[0].name
        outs = [sess.run(None, {name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(outs).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------
# The identity of int8 features (torch-free: read by the index's query path)
# ----------------------------------------------------------------------------------------------
#: Appended to ``weights_digest`` in the identity of features encoded by the int8 image tower
#: (see :mod:`vidclip.models.clip.onnx_encoder`): their key differs from the fp32 model's, so a
#: store or index never mixes them silently.
INT8_TAG = "+onnx-int8"


def identity_precision(identity: ModelIdentity | dict) -> str:
    """"int8" for the identity of int8 ONNX features, else "fp32" (torch, or ONNX fp32)."""
    digest = identity.weights_digest if isinstance(identity, ModelIdentity) else str(identity.get("weights_digest", ""))
    return "int8" if digest.endswith(INT8_TAG) else "fp32"


def base_identity(identity: dict) -> dict:
    """The identity dict of the model itself (:data:`INT8_TAG` removed from the digest): its
    text tower, and its fp32 image tower, are that model's."""
    digest = str(identity.get("weights_digest", ""))
    return {**identity, "weights_digest": digest[: -len(INT8_TAG)]} if digest.endswith(INT8_TAG) else identity
