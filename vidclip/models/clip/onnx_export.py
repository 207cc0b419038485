"""Export the frozen CLIP's towers to ONNX, verified, for :mod:`vidclip.models.clip.onnx_runtime` (the torch side).

:func:`export_text_tower` writes ``<cache>/<identity>/text/`` (the text tower + a ``tokenizers``
tokenizer.json that reproduces :meth:`FrozenCLIP.tokenize` without torch), :func:`export_image_tower`
``<cache>/<identity>/image/``, :func:`quantize_dynamic_int8` ``image-int8/`` beside it. The layout is
described in :mod:`vidclip.models.clip.onnx_runtime`.

Each tower folder is built in a temporary sibling, verified there, and renamed into place whole;
a file lock on ``<cache>/<identity>/.lock`` makes concurrent exporters of one model wait for each
other (the second one finds the export done) and lets the one holding it delete what killed
exports left. Verification, on a fixed probe set: token ids equal to the torch tokenizer's, and
embeddings from ONNX Runtime vs torch with at most :data:`FP32_TOLERANCE` max abs difference on
unit vectors; an export over it is refused (:class:`OnnxExportError`) and nothing is written.

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), opset 18. The legacy
TorchScript exporter cannot export open_clip's vision tower in eval (``nn.MultiheadAttention``'s
fused fast path, ``aten::_native_multi_head_attention``, has no ONNX symbolic) and is deprecated
since torch 2.9; the dynamo exporter decomposes it and exports both backends' towers.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from vidclip.core.errors import ConfigError, VidclipError, display_path
from vidclip.core.fileio import atomic_write_text
from vidclip.models.clip import onnx_runtime as rt
from vidclip.models.clip.load import FrozenCLIP

__all__ = [
    "FP32_TOLERANCE",
    "OPSET",
    "TEXT_PROBES",
    "OnnxExportError",
    "export_text_tower",
    "export_image_tower",
    "quantize_dynamic_int8",
]

#: Max abs difference allowed between ONNX Runtime and torch embeddings (unit vectors, fp32).
FP32_TOLERANCE = 1e-5
OPSET = 18
#: Probe captions of the text verification: punctuation, digits, contractions, non-ASCII scripts,
#: emoji, HTML entities, curly quotes, ligatures, odd whitespace, the special-token names, and
#: one text longer than any context length (truncation).
TEXT_PROBES = (
    "a dog catches a frisbee",
    "A man is cooking pasta in the kitchen.",
    "",
    "   two   spaces\tand\ttabs\nnew line\u00a0nbsp\u3000ideographic  ",
    "UPPER case AND MiXeD cAsE",
    "numbers 0123456789, 3.14 and 1,000,000; the 42nd",
    "punctuation!!! ?? ... --- (brackets) [x] {y} <z> @#$%^&*_+=|\\/~` 'single' \"double\"",
    "it's can't we're they've i'm we'll he'd IT'S",
    "café naïve façade résumé Zürich Ørsted",
    "日本語のテキスト 中文字幕 한국어 العربية русский",
    "emoji 🐶🎉 and ❤️ 👩‍👩‍👧",
    "curly ‘quotes’ “here” – en — em",
    "html &amp; entities &lt;b&gt; &#39;x&#39; &amp;amp;",
    "Straße İstanbul ΣΊΣΥΦΟΣ ǅ",
    "ﬁne ligature and ｆｕｌｌｗｉｄｔｈ",
    "mojibake cafÃ©",
    "special <start_of_text> and <|endoftext|> names",
    "a very long caption " + " ".join(f"word{i}" for i in range(120)),
)
_IMAGE_PROBES = 6  # seeded random pixel batches for the image tower


class OnnxExportError(VidclipError):
    """An export cannot be made or failed its verification (nothing was written)."""


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------
def export_text_tower(clip: FrozenCLIP, out_dir: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Export what :meth:`FrozenCLIP.encode_text` computes, and a torch-free tokenizer, verified.

    Args:
        clip: the model (any device; exported and verified from a CPU fp32 copy).
        out_dir: the export cache (default :func:`vidclip.models.clip.onnx_runtime.default_cache_dir`).
        force: export again even when a complete export exists.
    Returns:
        the tower folder ``<out_dir>/<identity>/text`` (model.onnx: int64 ``input_ids [N, L]`` ->
        float32 ``embeds [N, D]``, post-projection, not normalised; tokenizer.json; export.json).
    Raises:
        OnnxExportError: tokenizer without a torch-free equivalent, or verification failed.
        OnnxRuntimeUnavailable: onnxruntime cannot be imported (checked first).
    """
    rt.import_onnxruntime()
    done = _existing(clip, out_dir, "text", force)
    if done is not None:
        return done
    tok_json, tok_spec = _tokenizer_json(clip)  # unsupported tokenizers refused before any export

    def build(tmp: Path) -> dict:
        src = _cpu_fp32(clip)
        example = src.tokenize(["a photo of a dog", "a cat"])
        _export(_TextTower(src), example, tmp / rt.MODEL_FILE, "input_ids")
        (tmp / rt.TOKENIZER_FILE).write_text(tok_json, encoding="utf-8")
        return _verify_text(src, tmp, tok_spec)

    return _build_tower(clip, out_dir, "text", "fp32", build, force)


def export_image_tower(clip: FrozenCLIP, out_dir: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Export what :meth:`FrozenCLIP.encode_frames` computes on preprocessed pixels, verified.

    Returns the tower folder ``<out_dir>/<identity>/image`` (model.onnx: float32 ``pixels
    [N, 3, S, S]`` -> float32 ``embeds [N, D]``, not normalised; export.json with mean, std,
    interpolation for :func:`vidclip.models.clip.onnx_runtime.preprocess_images`). Raises as
    :func:`export_text_tower`.
    """
    rt.import_onnxruntime()

    def build(tmp: Path) -> dict:
        src = _cpu_fp32(clip)
        S = src.image_size
        example = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(0))
        _export(_ImageTower(src), example, tmp / rt.MODEL_FILE, "pixels")
        return _verify_image(src, tmp)

    return _build_tower(clip, out_dir, "image", "fp32", build, force)


def quantize_dynamic_int8(onnx_path: str | os.PathLike, *, force: bool = False,
                          probe_pixels: np.ndarray | None = None) -> Path:
    """Dynamic int8 quantisation of an exported image tower (weights int8, activations quantised
    per batch at run time) into the ``image-int8`` folder beside it.

    Args:
        onnx_path: the fp32 image tower's folder (``<root>/image``) or its model.onnx.
        force: quantise again even when a complete int8 export exists.
        probe_pixels: float32 ``[N, 3, S, S]`` preprocessed frames to measure the cosine to fp32
            on (real frames say more than the default seeded random pixels).
    Returns:
        the folder ``<root>/image-int8``; its export.json records ``min_cosine_to_fp32`` and
        ``mean_cosine_to_fp32`` (per probe image, ORT int8 vs ORT fp32).
    """
    rt.import_onnxruntime()
    src = Path(onnx_path)
    src_dir = src.parent if src.name == rt.MODEL_FILE else src
    try:
        fp32 = rt.read_manifest(src_dir)
    except ConfigError as e:
        raise OnnxExportError(f"{e}") from None
    if fp32.get("tower") != "image" or fp32.get("precision") != "fp32":
        raise OnnxExportError(f"{display_path(src_dir)}: not an fp32 image-tower export "
                              f"(tower={fp32.get('tower')!r}, precision={fp32.get('precision')!r})")
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:  # onnxruntime.quantization needs the onnx package
        raise OnnxExportError(f"int8 quantisation needs the onnx package ({e}); `pip install onnx`") from e
    S = int(fp32["identity"]["image_size"])
    probe_kind = "random" if probe_pixels is None else "given"
    if probe_pixels is None:
        probe_pixels = _random_pixels(S)
    probe_pixels = np.ascontiguousarray(probe_pixels, dtype=np.float32)
    if probe_pixels.ndim != 4 or probe_pixels.shape[1:] != (3, S, S) or not len(probe_pixels):
        raise ConfigError(f"probe_pixels: expected float32 [N,3,{S},{S}] with N >= 1, got {list(probe_pixels.shape)}")

    def build(tmp: Path) -> dict:
        with _quiet_root_log():
            quantize_dynamic(str(src_dir / rt.MODEL_FILE), str(tmp / rt.MODEL_FILE),
                             weight_type=QuantType.QInt8, op_types_to_quantize=_INT8_OPS)
        ref = _run(rt.make_session(src_dir / rt.MODEL_FILE), probe_pixels)
        got = _run(rt.make_session(tmp / rt.MODEL_FILE), probe_pixels)
        cos = np.sum(_unit(ref) * _unit(got), axis=1)
        keep = {k: fp32[k] for k in ("identity", "key", "embed_dim", "mean", "std", "interpolation", "input")}
        return {**keep, "opset": fp32.get("opset"), "exporter": fp32.get("exporter"),
                "quantization": {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                                 "op_types": list(_INT8_OPS)},
                "verification": {"probe": probe_kind, "probes": len(cos),
                                 "min_cosine_to_fp32": float(cos.min()), "mean_cosine_to_fp32": float(cos.mean())}}

    return _build_tower_at(src_dir.parent, fp32["key"], "image", "int8", build, force)


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------
#: Ops quantised to int8: the matrix products (almost all of a ViT's FLOPs). The patch-embedding
#: convolution stays fp32 (ONNX Runtime's ConvInteger is slower than its fp32 Conv on CPU).
_INT8_OPS = ("MatMul", "Gemm")


class _TextTower(torch.nn.Module):
    """int64 ids ``[N, L]`` -> ``[N, D]``: exactly FrozenCLIP's text forward (pooling, projection,
    the HF attention mask built from the ids)."""

    def __init__(self, clip: FrozenCLIP):
        super().__init__()
        self.clip = clip
        self.model = clip.model  # registered, so the exporter sees the parameters

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.clip.text_tower_forward(input_ids).float()


class _ImageTower(torch.nn.Module):
    """float32 pixels ``[N, 3, S, S]`` -> ``[N, D]``: exactly FrozenCLIP's image forward."""

    def __init__(self, clip: FrozenCLIP):
        super().__init__()
        self.clip = clip
        self.model = clip.model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.clip.image_tower_forward(pixels).float()


def _cpu_fp32(clip: FrozenCLIP) -> FrozenCLIP:
    """``clip`` itself when it runs fp32 on CPU, else a FrozenCLIP over a CPU copy of its module
    (ONNX Runtime runs on CPU, and the reference must be fp32 without autocast or TF32)."""
    if clip.device.type == "cpu" and clip.precision == "fp32":
        return clip
    return FrozenCLIP(copy.deepcopy(clip.model).cpu().float(), family=clip.family, identity=clip.identity,
                      mean=clip.mean, std=clip.std, context_length=clip.context_length,
                      tokenizer=clip._tokenizer, device=torch.device("cpu"), precision="fp32",
                      interpolation=clip.interpolation)


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str) -> None:
    """torch.export-based ONNX export with a dynamic batch axis (the example has batch 2, so the
    exporter cannot specialise a batch of 1)."""
    try:
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise OnnxExportError(f"ONNX export needs onnxscript ({e}); `pip install onnxscript`") from e
    module.eval()
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(None):
        warnings.simplefilter("ignore")  # exporter chatter; the result is verified below
        try:
            torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=OPSET,
                              input_names=[input_name], output_names=["embeds"],
                              dynamic_shapes=({0: batch},), external_data=_too_big(module),
                              optimize=True, verbose=False, report=False)
        except Exception as e:  # noqa: BLE001 - torch.export/onnxscript raise many kinds
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise OnnxExportError(f"torch.onnx.export failed for {type(module).__name__[1:]}: {first}") from e


def _too_big(module: torch.nn.Module) -> bool:
    # protobuf caps one file at 2 GB; bigger towers keep their weights in model.onnx.data
    return sum(p.numel() * p.element_size() for p in module.parameters()) > (1 << 31) - (1 << 26)


def _tokenizer_json(clip: FrozenCLIP) -> tuple[str, dict]:
    """(tokenizer.json text, export.json 'tokenizer' spec) reproducing ``clip.tokenize``."""
    tt = clip._tokenizer
    impl = tt.impl
    L = clip.context_length
    if tt.kind == "hf":
        backend = getattr(impl, "backend_tokenizer", None)
        if backend is None:
            raise OnnxExportError(f"model {clip.identity.name}: its transformers tokenizer "
                                  f"{type(impl).__name__} is not a fast (tokenizers) one; text stays on torch")
        pad = impl.pad_token_id if impl.pad_token_id is not None else 0
        return backend.to_str(), {"kind": "hf", "context_length": L, "eot_id": int(impl.eos_token_id),
                                  "pad_id": int(pad), "clean": "none"}
    if tt.kind == "simple" and getattr(impl, "reduction_fn", None) is None \
            and getattr(getattr(impl, "clean_fn", None), "__name__", "") == "_clean_lower":
        return _openai_bpe_json(impl), {"kind": "openai-bpe", "context_length": L, "eot_id": int(impl.eot_token_id),
                                        "pad_id": 0, "clean": "ftfy+html+whitespace+lower"}
    raise OnnxExportError(f"model {clip.identity.name}: tokenizer {type(impl).__name__} (kind {tt.kind!r}) has "
                          "no torch-free equivalent here; text stays on torch")


def _openai_bpe_json(impl) -> str:
    """open_clip's SimpleTokenizer (OpenAI's BPE) as a ``tokenizers`` tokenizer.json.

    Byte-level BPE over the same vocabulary and merges, ``</w>`` marking a word's last symbol,
    open_clip's word pattern, start/end tokens added around every text. The normaliser (NFC,
    whitespace runs -> one space, lower case) makes the file usable on its own;
    :class:`vidclip.models.clip.onnx_runtime.OnnxTokenizer` replaces it by open_clip's exact cleaning in
    Python (ftfy, HTML unescape), which ``tokenizers`` cannot express.
    """
    import re

    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    merges = [pair for pair, _ in sorted(impl.bpe_ranks.items(), key=lambda kv: kv[1])]
    tok = Tokenizer(models.BPE(vocab=dict(impl.encoder), merges=merges, continuing_subword_prefix="",
                               end_of_word_suffix="</w>", fuse_unk=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Strip(), normalizers.Lowercase()])
    specials = [impl.decoder[i] for i in impl.all_special_ids]
    pattern = "|".join(re.escape(s) for s in specials) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        # keep the pattern's matches, drop the rest (whitespace), as re.findall does
        pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True),
        # bytes -> the same printable symbols (bytes_to_unicode); no second, GPT-2 split
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace("</w>", " ")])
    # open_clip finds its special-token names in the (lower-cased) text too
    tok.add_special_tokens([AddedToken(s, special=True, normalized=True) for s in specials])
    sot, eot = specials[0], specials[1]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{sot} $A {eot}", special_tokens=[(sot, impl.sot_token_id), (eot, impl.eot_token_id)])
    return tok.to_str()


# ----------------------------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of float32 ``[N, D]`` to unit length (torch.nn.functional.normalize; eps 1e-12)."""
    return torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(x, np.float32)), dim=1).numpy()


def _run(session, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _random_pixels(S: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((_IMAGE_PROBES, 3, S, S)).astype(np.float32)


def _check_close(what: str, ref: np.ndarray, got: np.ndarray) -> float:
    if got.shape != ref.shape or not np.isfinite(got).all():
        raise OnnxExportError(f"{what}: ONNX Runtime gave {got.dtype} {list(got.shape)} (finite: "
                              f"{bool(np.isfinite(got).all())}), torch {list(ref.shape)}; export refused")
    diff = float(np.abs(_unit(ref) - _unit(got)).max())
    if not diff <= FP32_TOLERANCE:
        raise OnnxExportError(f"{what}: max abs difference to torch on unit vectors {diff:.3g} > "
                              f"{FP32_TOLERANCE:g}; export refused")
    return diff


def _verify_text(clip: FrozenCLIP, tmp: Path, spec: dict) -> dict:
    what = f"text tower of {clip.identity.name}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long probe's truncation warning
        want = clip.tokenize(list(TEXT_PROBES)).numpy()
        got, _ = rt.OnnxTokenizer(tmp / rt.TOKENIZER_FILE, spec)(list(TEXT_PROBES))
    bad = [i for i in range(len(TEXT_PROBES)) if not np.array_equal(want[i], got[i])]
    if bad:
        raise OnnxExportError(f"{what}: tokenizer.json gives other ids than the torch tokenizer for probe "
                              f"{TEXT_PROBES[bad[0]][:60]!r} ({len(bad)} of {len(TEXT_PROBES)} differ); export refused")
    with torch.no_grad():
        ref = clip.text_tower_forward(torch.from_numpy(want)).float().numpy()
    out = _run(rt.make_session(tmp / rt.MODEL_FILE), got)
    diff = _check_close(what, ref, out)
    return {"embed_dim": clip.embed_dim, "tokenizer": spec,
            "input": {"name": "input_ids", "dtype": "int64", "shape": ["batch", clip.context_length]},
            "verification": {"probes": len(TEXT_PROBES), "token_ids_equal": True, "max_abs_diff": diff,
                             "tolerance": FP32_TOLERANCE}}


def _verify_image(clip: FrozenCLIP, tmp: Path) -> dict:
    S = clip.image_size
    x = _random_pixels(S)
    with torch.no_grad():
        ref = clip.image_tower_forward(torch.from_numpy(x)).float().numpy()
    out = _run(rt.make_session(tmp / rt.MODEL_FILE), x)
    diff = _check_close(f"image tower of {clip.identity.name}", ref, out)
    return {"embed_dim": clip.embed_dim, "mean": list(clip.mean), "std": list(clip.std),
            "interpolation": clip.interpolation,
            "input": {"name": "pixels", "dtype": "float32", "shape": ["batch", 3, S, S]},
            "verification": {"probes": len(x), "probe": "random", "max_abs_diff": diff,
                             "tolerance": FP32_TOLERANCE}}


# ----------------------------------------------------------------------------------------------
# Atomic tower folders
# ----------------------------------------------------------------------------------------------
def _existing(clip: FrozenCLIP, out_dir, tower: str, force: bool) -> Path | None:
    """The complete export already there (checked again under the lock by _build_tower_at)."""
    return None if force else rt.find_export(clip.identity, tower, cache_dir=out_dir)


def _build_tower(clip: FrozenCLIP, out_dir, tower: str, precision: str, build, force: bool) -> Path:
    ident = clip.identity
    key = ident.key()
    root = rt.export_root(out_dir, ident)
    return _build_tower_at(root, key, tower, precision, build, force, identity=ident.to_dict())


def _build_tower_at(root: Path, key: str, tower: str, precision: str, build, force: bool,
                    identity: dict | None = None) -> Path:
    """Build ``root/<tower folder>`` with ``build(tmp) -> manifest fields`` in a temporary sibling,
    then rename it into place; an existing complete export is returned as is unless ``force``."""
    target = rt.tower_dir(root, tower, precision)
    root.mkdir(parents=True, exist_ok=True)
    with _export_lock(root):
        if not force and _complete(target, key):
            return target
        _remove_stale(root, target.name)
        tmp = root / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
        tmp.mkdir()
        try:
            fields = build(tmp)
            manifest = {"format": rt.EXPORT_FORMAT, "tower": tower, "precision": precision, "key": key,
                        **({"identity": identity} if identity is not None else {}), "opset": OPSET,
                        "exporter": "torch.onnx.export(dynamo=True)", **fields,
                        "versions": _versions(),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "files": {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}}
            atomic_write_text(tmp / rt.MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
            old = None
            if target.exists():  # forced, or damaged: moved aside, deleted once the new one is in
                old = root / f".{target.name}.{uuid.uuid4().hex[:12]}.old"
                os.rename(target, old)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _complete(folder: Path, key: str) -> bool:
    if not folder.is_dir():
        return False
    try:
        return rt.read_manifest(folder).get("key") == key
    except ConfigError:
        return False


def _remove_stale(root: Path, name: str) -> None:
    """Delete what killed exports of ``name`` left (we hold the lock: no exporter is live)."""
    for p in root.glob(f".{name}.*"):
        if p.suffix in (".tmp", ".old") and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def _export_lock(root: Path) -> Iterator[None]:
    """Exclusive flock on ``root/.lock`` (released by the kernel when the holder dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, exports of one model must not overlap
        yield
        return
    with open(root / ".lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_root_log() -> Iterator[None]:
    """Drop onnxruntime.quantization's root-logger advice ("Please consider to run pre-processing
    before quantization") and the root handler that logging.warning() installs when none exists."""
    def drop(record: logging.LogRecord) -> bool:
        return not (record.name == "root" and "onnxruntime" in str(record.pathname))

    root = logging.getLogger()
    before = list(root.handlers)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnxruntime", "onnx", "onnxscript", "torch", "open_clip_torch", "transformers", "tokenizers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
