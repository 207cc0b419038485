"""The frozen CLIP on ONNX Runtime: export (vidclip.models.clip.onnx_export) and the torch-free runtime
(vidclip.models.clip.onnx_runtime). Exports are made once per model and module (each takes seconds)."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vidclip.core.errors import BackendUnavailableError, ConfigError, VidclipError

HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
HAVE_EXPORT = HAVE_ORT and all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript"))
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime is not installed (pip install onnxruntime)")
needs_export = pytest.mark.skipif(not HAVE_EXPORT, reason="ONNX export needs onnxruntime, onnx and onnxscript")
ROOT = Path(__file__).resolve().parents[1]

# Captions besides the exporter's own probe set: a search must agree on what it was not tuned on.
CAPTIONS = ["a red circle moving to the left", "Two people dance; one falls!", "número 7 — ¿qué?",
            "the cat's toy, 3 times", "森の中の犬", ""]


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _max_unit_diff(a, b) -> float:
    return float(np.abs(_unit(a) - _unit(b)).max())


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def clips():
    """name -> FrozenCLIP, loaded on first use."""
    from vidclip.models.clip.load import load_clip

    loaded: dict = {}

    def get(name: str):
        if name not in loaded:
            loaded[name] = load_clip(name)
        return loaded[name]

    return get


@pytest.fixture(scope="module")
def exported(clips, cache):
    """(name, tower) -> export folder, made on first use."""
    from vidclip.models.clip import onnx_export as ox

    done: dict = {}

    def get(name: str, tower: str) -> Path:
        if (name, tower) not in done:
            fn = ox.export_text_tower if tower == "text" else ox.export_image_tower
            done[(name, tower)] = fn(clips(name), cache)
        return done[(name, tower)]

    return get


# ----------------------------------------------------------------------------------------------
# Export + reload: same ids, same embeddings
# ----------------------------------------------------------------------------------------------
@needs_export
@pytest.mark.parametrize("name", ["tiny-vit", "hf-tiny", "vidclip-synth"])
def test_text_export_reloads_with_torch_ids_and_embeddings(name, clips, exported, cache):
    from vidclip.models.clip import onnx_runtime as rt

    clip = clips(name)
    folder = exported(name, "text")
    assert folder == rt.export_root(cache, clip.identity) / "text"
    m = json.loads((folder / "export.json").read_text())
    assert m["key"] == clip.identity.key() and m["identity"] == clip.identity.to_dict()
    assert m["opset"] >= 17 and m["versions"]["onnxruntime"]
    assert m["verification"]["token_ids_equal"] and 0 <= m["verification"]["max_abs_diff"] <= 1e-5
    assert rt.find_export(clip.identity.to_dict(), "text", cache_dir=cache) == folder

    onnx = rt.OnnxCLIP.for_identity(clip.identity.to_dict(), cache)
    assert (onnx.embed_dim, onnx.context_length) == (clip.embed_dim, clip.context_length)
    np.testing.assert_array_equal(onnx.tokenize(CAPTIONS), clip.tokenize(CAPTIONS).numpy())
    got = onnx.encode_text(CAPTIONS)
    assert got.dtype == np.float32 and got.shape == (len(CAPTIONS), clip.embed_dim)
    assert _max_unit_diff(got, clip.encode_text(CAPTIONS).numpy()) <= 1e-5
    # batching does not change the result (dynamic batch axis), nor does a batch of one
    np.testing.assert_allclose(onnx.encode_text(CAPTIONS, batch_size=4), got, atol=1e-5)
    np.testing.assert_allclose(onnx.encode_text(CAPTIONS[:1]), got[:1], atol=1e-5)
    assert onnx.encode_text([]).shape == (0, clip.embed_dim)


@needs_export
@pytest.mark.parametrize("name", ["tiny-vit", "hf-tiny"])
def test_image_export_reloads_with_torch_embeddings(name, clips, exported, cache):
    from vidclip.models.clip import onnx_runtime as rt

    clip = clips(name)
    exported(name, "image")
    onnx = rt.OnnxCLIP.for_identity(clip.identity, cache)
    assert (onnx.mean, onnx.std, onnx.interpolation) == (clip.mean, clip.std, clip.interpolation)
    S = clip.image_size
    x = np.random.default_rng(1).standard_normal((5, 3, S, S)).astype(np.float32)
    got = onnx.encode_image(x, batch_size=2)  # batches of 2, 2, 1
    assert got.shape == (5, clip.embed_dim)
    assert _max_unit_diff(got, clip.encode_frames(torch.from_numpy(x)).numpy()) <= 1e-5
    with pytest.raises(ConfigError, match=r"pixels: expected float \[N,3,"):
        onnx.encode_image(x[:, :, :-1])


@needs_export
def test_tokenizer_ids_equal_torch_on_random_text(clips, exported, cache):
    """Seeded random strings over letters, digits, punctuation, many scripts, emoji, combining
    marks, odd whitespace, HTML entities and the special-token names (as separate words): the
    torch-free tokenizer gives the torch tokenizer's ids, for open_clip's BPE and an HF tokenizer."""
    from vidclip.models.clip import onnx_runtime as rt

    pool = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" * 2 + " " * 15
            + "\t\n\u00a0\u3000\u200b\x1c\u2028.,;:!?'\"()[]{}<>-_/\\@#$%^&*+=~`|éüößçñøİıΣσςДж"
            + "日本語中文한국어ไทยעברית🐶🎉❤️👩‍👧\u0301ﬁＡ１&amp;&#39;‘’“”–—…")
    words = ["it's", "&amp;", "<start_of_text>", "<end_of_text>", "<|endoftext|>", "cafÃ©", "DON'T", "x2"]
    rng = random.Random(0)
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 50))) for _ in range(400)]
    texts += [" ".join(rng.choice(words + ["dog"]) for _ in range(rng.randint(1, 6))) for _ in range(100)]
    for name in ("tiny-vit", "hf-tiny"):
        clip = clips(name)
        exported(name, "text")
        onnx = rt.OnnxCLIP.for_identity(clip.identity, cache)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the over-long ones' truncation warning
            want, got = clip.tokenize(texts).numpy(), onnx.tokenize(texts)
        np.testing.assert_array_equal(got, want, err_msg=name)


@needs_export
def test_long_text_truncated_like_torch_with_one_warning(clips, exported, cache):
    from vidclip.models.clip import onnx_runtime as rt

    clip = clips("tiny-vit")
    exported("tiny-vit", "text")
    onnx = rt.OnnxCLIP.for_identity(clip.identity, cache)
    texts = ["short", "long " * 200, "longer " * 300]
    with pytest.warns(UserWarning, match=r"2 of 3 text\(s\) longer than the model's context length") as rec:
        ids = onnx.tokenize(texts)
    assert len(rec) == 1
    assert ids[1, -1] == ids[2, -1] == 49407  # the end-of-text token is kept
    with pytest.warns(UserWarning):
        np.testing.assert_array_equal(ids, clip.tokenize(texts).numpy())


@needs_export
def test_text_search_path_imports_no_torch(clips, exported, cache):
    """Encoding text through vidclip.models.clip.onnx_runtime in a fresh process loads no torch, open_clip,
    transformers or torchvision, and gives the torch embedding."""
    clip = clips("tiny-vit")
    exported("tiny-vit", "text")
    code = textwrap.dedent("""
        import json, sys
        from vidclip.models.clip.onnx_runtime import OnnxCLIP
        onnx = OnnxCLIP.for_identity(json.loads(sys.argv[1]), sys.argv[2])
        emb = onnx.encode_text(["a red circle moving to the left"])
        heavy = sorted(m for m in ("torch", "open_clip", "transformers", "torchvision") if m in sys.modules)
        print(json.dumps({"heavy": heavy, "emb": emb.tolist()}))
    """)
    out = subprocess.run([sys.executable, "-c", code, json.dumps(clip.identity.to_dict()), str(cache)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["heavy"] == []
    assert _max_unit_diff(res["emb"], clip.encode_text(["a red circle moving to the left"]).numpy()) <= 1e-5
    assert out.stderr.strip() == ""  # quiet by default


@needs_export
def test_int8_quantisation_is_close_to_fp32(clips, exported, cache):
    from vidclip.models.clip import onnx_export as ox
    from vidclip.models.clip import onnx_runtime as rt

    clip = clips("tiny-vit")
    fp32_dir = exported("tiny-vit", "image")
    S = clip.image_size
    real_like = np.random.default_rng(2).standard_normal((8, 3, S, S)).astype(np.float32)
    int8_dir = ox.quantize_dynamic_int8(fp32_dir / "model.onnx", probe_pixels=real_like)
    assert int8_dir == rt.export_root(cache, clip.identity) / "image-int8"
    m = json.loads((int8_dir / "export.json").read_text())
    assert m["precision"] == "int8" and m["verification"]["probes"] == 8
    assert 0.99 <= m["verification"]["min_cosine_to_fp32"] <= m["verification"]["mean_cosine_to_fp32"] <= 1.0
    # the matrix products really are int8: smaller file, and not the fp32 numbers
    assert (int8_dir / "model.onnx").stat().st_size < 0.6 * (fp32_dir / "model.onnx").stat().st_size
    f = rt.OnnxCLIP.for_identity(clip.identity, cache).encode_image(real_like)
    q = rt.OnnxCLIP.for_identity(clip.identity, cache, precision="int8").encode_image(real_like)
    cos = np.sum(_unit(f) * _unit(q), axis=1)
    assert cos.min() >= 0.99 and not np.allclose(f, q, atol=1e-6)
    assert ox.quantize_dynamic_int8(fp32_dir) == int8_dir  # already there: returned as is
    with pytest.raises(ox.OnnxExportError, match="not an fp32 image-tower export"):
        ox.quantize_dynamic_int8(int8_dir)


# ----------------------------------------------------------------------------------------------
# Atomic, damaged, refused
# ----------------------------------------------------------------------------------------------
@needs_export
def test_killed_export_leaves_no_usable_folder(clips, tmp_path):
    """SIGKILL in the middle of an export (model.onnx written, not verified): no tower folder, so
    nothing finds or loads it; the next export cleans the debris and succeeds."""
    from vidclip.models.clip import onnx_export as ox
    from vidclip.models.clip import onnx_runtime as rt

    code = textwrap.dedent("""
        import os, signal, sys
        from vidclip.models.clip import onnx_export as ox
        from vidclip.models.clip.load import load_clip
        def killed(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        ox._verify_image = killed
        ox.export_image_tower(load_clip("tiny-vit"), sys.argv[1])
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert out.returncode == -signal.SIGKILL, out.stderr
    clip = clips("tiny-vit")
    root = rt.export_root(tmp_path, clip.identity)
    debris = list(root.glob(".image.*.tmp"))
    assert len(debris) == 1 and (debris[0] / "model.onnx").is_file()  # killed after writing the model
    assert not (root / "image").exists()
    assert rt.find_export(clip.identity, "image", cache_dir=tmp_path) is None
    with pytest.raises(ConfigError, match="no usable ONNX export"):
        rt.OnnxCLIP(root)
    assert ox.export_image_tower(clip, tmp_path) == root / "image"
    assert not list(root.glob(".image.*"))
    assert rt.find_export(clip.identity, "image", cache_dir=tmp_path) == root / "image"


@needs_export
def test_damaged_or_foreign_export_is_not_used(clips, exported, cache, tmp_path):
    from vidclip.models.clip import onnx_runtime as rt

    clip = clips("tiny-vit")
    src = exported("tiny-vit", "text")
    root = rt.export_root(tmp_path, clip.identity)
    shutil.copytree(src, root / "text")
    assert rt.find_export(clip.identity, "text", cache_dir=tmp_path) == root / "text"
    with open(root / "text" / "model.onnx", "r+b") as f:
        f.truncate(1000)
    assert rt.find_export(clip.identity, "text", cache_dir=tmp_path) is None
    with pytest.raises(ConfigError, match=r"model\.onnx: 1000 bytes, export\.json says"):
        rt.read_manifest(root / "text")
    # a complete export filed under another identity's folder is not taken for it
    other = {**clip.identity.to_dict(), "weights_digest": "0" * 16}
    shutil.copytree(src, rt.export_root(tmp_path, other) / "text")
    assert rt.find_export(other, "text", cache_dir=tmp_path) is None
    with pytest.raises(ConfigError, match=f"exported for {clip.identity.key()}, not "):
        rt.OnnxCLIP.for_identity(other, tmp_path)


@needs_export
def test_missing_tower_says_so(clips, exported, cache):
    from vidclip.models.clip import onnx_runtime as rt

    clip = clips("hf-tiny")
    exported("hf-tiny", "text")
    onnx = rt.OnnxCLIP.for_identity(clip.identity, cache, precision="int8")  # no int8 export of hf-tiny
    assert onnx.has("text") and not onnx.has("image")
    S = clip.image_size
    with pytest.raises(ConfigError, match=r"image-int8: the image tower is not exported; use the torch path"):
        onnx.encode_image(np.zeros((1, 3, S, S), np.float32))
    with pytest.raises(ConfigError, match="precision: expected 'fp32' or 'int8'"):
        rt.OnnxCLIP.for_identity(clip.identity, cache, precision="fp16")


@needs_export
def test_export_over_tolerance_is_refused_and_writes_nothing(clips, tmp_path, monkeypatch):
    from vidclip.models.clip import onnx_export as ox
    from vidclip.models.clip import onnx_runtime as rt

    clip = clips("tiny-vit")
    monkeypatch.setattr(ox, "FP32_TOLERANCE", -1.0)  # any difference, even 0, is over it
    with pytest.raises(ox.OnnxExportError, match=r"image tower of tiny-vit: max abs difference to torch .* export refused"):
        ox.export_image_tower(clip, tmp_path)
    root = rt.export_root(tmp_path, clip.identity)
    assert sorted(p.name for p in root.iterdir()) == [".lock"]


def test_unsupported_tokenizer_is_refused_before_export(clips, monkeypatch, tmp_path):
    import copy

    from vidclip.models.clip import onnx_export as ox
    from vidclip.models.clip.backend import TextTokenizer

    if not HAVE_ORT:
        pytest.skip("onnxruntime is not installed")
    clip = copy.copy(clips("tiny-vit"))
    clip._tokenizer = TextTokenizer("open_clip", clip._tokenizer.impl, clip.context_length)
    monkeypatch.setattr(ox, "_export", lambda *a, **k: pytest.fail("exported before checking the tokenizer"))
    with pytest.raises(ox.OnnxExportError, match=r"tiny-vit: tokenizer SimpleTokenizer .* no torch-free equivalent"):
        ox.export_text_tower(clip, tmp_path)


# ----------------------------------------------------------------------------------------------
# onnxruntime missing
# ----------------------------------------------------------------------------------------------
def test_hidden_onnxruntime_is_reported_and_nothing_is_exported(clips, cache, monkeypatch, tmp_path):
    from vidclip.models.clip import onnx_export as ox
    from vidclip.models.clip import onnx_runtime as rt

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert rt.onnx_available() is False
    assert issubclass(rt.OnnxRuntimeUnavailable, BackendUnavailableError)
    assert issubclass(rt.OnnxRuntimeUnavailable, VidclipError)
    with pytest.raises(rt.OnnxRuntimeUnavailable, match="onnxruntime cannot be imported.*pip install onnxruntime"):
        rt.OnnxCLIP(rt.export_root(cache, clips("tiny-vit").identity))
    monkeypatch.setattr(ox, "_export", lambda *a, **k: pytest.fail("exported without onnxruntime"))
    for fn in (ox.export_text_tower, ox.export_image_tower):
        with pytest.raises(rt.OnnxRuntimeUnavailable):
            fn(clips("tiny-vit"), tmp_path)
    assert not list(tmp_path.iterdir())


def test_runtime_module_imports_without_onnxruntime():
    """vidclip.models.clip.onnx_runtime itself imports (and says False) where onnxruntime is absent, so
    callers can ask it before falling back."""
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "import vidclip.models.clip.onnx_runtime as rt\n"
            "print(rt.onnx_available(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------------------------
# Identity key, preprocessing
# ----------------------------------------------------------------------------------------------
def test_identity_key_and_folder_match_model_identity(clips, tmp_path):
    from vidclip.models.clip import onnx_runtime as rt
    from vidclip.models.clip.identity import identity_key

    for name in ("tiny-vit", "hf-tiny"):
        ident = clips(name).identity
        assert identity_key(ident.to_dict()) == identity_key(ident) == ident.key()
        assert rt.export_root(tmp_path, ident).name == ident.key().replace(":", "-")
        assert rt.export_root(tmp_path, ident.to_dict()) == rt.export_root(tmp_path, ident)
    partial = {"family": "hf", "name": "x", "pretrained": None, "image_size": 32, "embed_dim": 8,
               "random_weights": True}
    with pytest.raises(ConfigError, match=r"model identity: missing field\(s\) \['weights_digest'\]"):
        rt.export_root(tmp_path, partial)


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    from vidclip.models.clip import onnx_runtime as rt

    monkeypatch.setenv("VIDCLIP_ONNX_CACHE", str(tmp_path / "c"))
    assert rt.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("VIDCLIP_ONNX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert rt.default_cache_dir() == tmp_path / "x" / "vidclip" / "onnx"


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_preprocess_images_matches_torch_preprocessing(interpolation):
    """PIL/numpy preprocessing vs the torch path, on smooth random frames of several shapes
    (down- and up-scaling, portrait, square): at most 2 uint8 levels apart, on average < 0.5 (the
    two resamplers round their fixed-point weights differently: up to a quarter of the pixels
    differ by one level at some scales). A wrong filter, size or crop offset is far over that."""
    from vidclip.models.clip import onnx_runtime as rt
    from vidclip.models.clip.preprocess import preprocess_frames

    mean, std, S = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), 32
    rng = np.random.default_rng(3)
    for h, w in ((48, 80), (90, 40), (32, 32), (20, 27), (241, 319)):
        coarse = rng.integers(0, 256, (1, 3, max(2, h // 8), max(2, w // 8))).astype(np.float32)
        smooth = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(h, w), mode="bilinear")
        frames = smooth[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        noisy = np.clip(frames.astype(int) + rng.integers(-20, 21, frames.shape), 0, 255).astype(np.uint8)
        for f in (frames, noisy):
            want = preprocess_frames(torch.from_numpy(f)[None], S, mean, std, interpolation).numpy()
            got = rt.preprocess_images([f], S, mean, std, interpolation)
            assert got.shape == want.shape == (1, 3, S, S) and got.dtype == np.float32
            levels = np.abs(got - want) * np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1) * 255
            # rounding of the two resamplers may differ by a level here and there (2 seen on real frames)
            assert levels.max() <= 2.0 + 1e-3 and levels.mean() < 0.5, (h, w, interpolation, levels.mean())
    with pytest.raises(ConfigError, match=r"frames\[0\]: expected uint8 \[H,W,3\] RGB, got float32"):
        rt.preprocess_images([np.zeros((4, 4, 3), np.float32)], S, mean, std)


@needs_export
@pytest.mark.shared
def test_numpy_image_path_matches_torch_on_real_frames(clips, exported, cache, shared_dir):
    """Real clips' frames: PIL preprocessing + ONNX Runtime vs torch preprocessing + torch,
    embedding cosine >= 0.999 for every frame."""
    from vidclip.models.clip import onnx_runtime as rt
    from vidclip.video.decode import open_video

    videos = sorted(p for p in (shared_dir / "videos").iterdir() if p.suffix in (".mp4", ".avi", ".mkv"))[:3]
    if not videos:
        pytest.skip("no videos in ../shared/videos")
    clip = clips("vidclip-synth")
    exported("vidclip-synth", "image")
    onnx = rt.OnnxCLIP.for_identity(clip.identity, cache)
    for path in videos:
        with open_video(path) as reader:
            n = len(reader)
            frames = reader.get_frames([0, n // 2, max(0, n - 2)])
        want = clip.encode_frames(frames).numpy()
        got = onnx.encode_image(onnx.preprocess_images(list(frames.numpy())))
        assert np.sum(_unit(want) * _unit(got), axis=1).min() >= 0.999, path.name


@needs_export
@pytest.mark.slow
def test_random_vit_b_32_exports_within_tolerance(tmp_path):
    """The real architecture (random weights): both towers export and verify at 1e-5."""
    from vidclip.models.clip import onnx_export as ox
    from vidclip.models.clip import onnx_runtime as rt
    from vidclip.models.clip.load import load_clip

    clip = load_clip("ViT-B-32", "none")
    for fn in (ox.export_text_tower, ox.export_image_tower):
        m = json.loads((fn(clip, tmp_path) / "export.json").read_text())
        assert m["verification"]["max_abs_diff"] <= 1e-5
    onnx = rt.OnnxCLIP.for_identity(clip.identity, tmp_path)
    assert _max_unit_diff(onnx.encode_text(CAPTIONS), clip.encode_text(CAPTIONS).numpy()) <= 1e-5
