"""The light runtime wired into vidclip (issue 18): text search on the index's ONNX text tower
without torch, the same ranking as the torch path, and every fallback to torch."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from index_testutil import make_clip

HAVE_EXPORT = all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx", "onnxscript", "tokenizers"))
pytestmark = pytest.mark.skipif(not HAVE_EXPORT, reason="needs onnxruntime, onnx, onnxscript and tokenizers")
ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["a red circle moving to the left", "green square", "Two people dance; one falls!", "森の中の犬"]


@pytest.fixture(scope="module", autouse=True)
def onnx_cache(tmp_path_factory):
    """A user cache of this module's own (the exports are made once here, then copied)."""
    cache = tmp_path_factory.mktemp("onnx_user_cache")
    old = os.environ.get("VIDCLIP_ONNX_CACHE")
    os.environ["VIDCLIP_ONNX_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("VIDCLIP_ONNX_CACHE", None)
    else:
        os.environ["VIDCLIP_ONNX_CACHE"] = old


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    lib = tmp_path_factory.mktemp("light_lib")
    for i in range(12):
        make_clip(lib / f"clip{i:02d}.mp4", seed=i, seconds=2.0 + 0.5 * (i % 3))
    return lib


@pytest.fixture(scope="module")
def indexes(library, tmp_path_factory, windows_sampler):
    """model name -> index folder built with index_library (which exports the text tower)."""
    from vidclip.index import index_library
    from vidclip.models.clip.load import load_clip

    built: dict = {}

    def get(name: str) -> Path:
        if name not in built:
            idx = tmp_path_factory.mktemp(f"idx_{name}") / "idx"
            index_library(library, idx, load_clip(name), windows_sampler, workers=0, progress=False)
            built[name] = idx
        return built[name]

    return get


def _same_hits(a, b, tol=1e-5):
    assert [h.path for h in a] == [h.path for h in b]
    assert [(h.start, h.end) for h in a] == [(h.start, h.end) for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=tol, rtol=0)


def _searched_through_torch(idx, ref) -> None:
    """The index at ``idx`` uses no ONNX text encoder, and searches exactly as ``ref`` did."""
    from vidclip.index.search import VideoIndex

    index = VideoIndex.open(idx)
    try:
        assert index.text_encoder is None
        _same_hits(index.search("a red circle", 10), ref)
    finally:
        index.close()


@pytest.mark.parametrize("name", ["vidclip-synth", "tiny-vit", "hf-tiny"])
def test_onnx_text_search_equals_torch_top10(name, indexes):
    from vidclip.index.queries import ONNX_TEXT_META
    from vidclip.index.search import VideoIndex

    idx = indexes(name)
    light, heavy = VideoIndex.open(idx), VideoIndex.open(idx, runtime="torch")
    try:
        assert light.text_encoder is not None and light._clip is None  # no torch model loaded
        assert heavy.text_encoder is None
        rec = light.catalog.get_meta(ONNX_TEXT_META)
        assert rec["key"] == light.catalog.get_meta("model_key") and (idx / rec["dir"] / "model.onnx").is_file()
        assert rec["max_abs_diff"] <= 1e-5
        for q in QUERIES:
            _same_hits(light.search(q, 10), heavy.search(q, 10))
            _same_hits(light.search(q, 10, segments=True), heavy.search(q, 10, segments=True))
            r1, r2 = light.search(q, 5, rerank=8), heavy.search(q, 5, rerank=8)
            _same_hits(r1, r2)
            assert [h.frame_time for h in r1] == [h.frame_time for h in r2]
        assert light._clip is None  # text queries, reranked or not, never needed torch
    finally:
        light.close()
        heavy.close()


def test_image_query_falls_back_to_torch_lazily(indexes, library):
    from PIL import Image

    from vidclip.index.search import VideoIndex

    idx = indexes("tiny-vit")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    light, heavy = VideoIndex.open(idx), VideoIndex.open(idx, runtime="torch")
    try:
        assert light._clip is None
        _same_hits(light.search_image(img, 10), heavy.search_image(img, 10), tol=1e-6)
        assert light._clip is not None  # loaded on first need
        _same_hits(light.search("a red circle", 10), heavy.search("a red circle", 10))  # still the ONNX text path
        _same_hits(light.search_video(library / "clip03.mp4", 5), heavy.search_video(library / "clip03.mp4", 5),
                   tol=1e-6)
    finally:
        light.close()
        heavy.close()


def test_cli_text_search_imports_no_torch(indexes):
    """Through the CLI entry point: the hits of the torch path, and neither torch nor open_clip imported."""
    from vidclip.index.search import VideoIndex

    idx = indexes("vidclip-synth")
    code = ("import json, sys\nfrom vidclip.cli.main import main\n"
            "rc = main(['search', 'a red circle moving to the left', '--index', sys.argv[1], '--json'])\n"
            "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules, 'open_clip': 'open_clip' in sys.modules,"
            " 'onnxruntime': 'onnxruntime' in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", code, str(idx)], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    flags = json.loads(text.strip().splitlines()[-1])
    assert flags == {"rc": 0, "torch": False, "open_clip": False, "onnxruntime": True}
    hits = json.loads(text[:text.rstrip().rfind("\n")])["hits"]
    heavy = VideoIndex.open(idx, runtime="torch")
    try:
        ref = heavy.search("a red circle moving to the left", 10)
    finally:
        heavy.close()
    assert [h["path"] for h in hits] == [h.path for h in ref]
    np.testing.assert_allclose([h["score"] for h in hits], [h.score for h in ref], atol=1e-5, rtol=0)


def test_damaged_or_foreign_export_falls_back_to_torch(indexes, tmp_path):
    import shutil

    from vidclip.index.queries import ONNX_TEXT_META
    from vidclip.index.search import VideoIndex

    src = indexes("tiny-vit")
    idx = tmp_path / "idx"
    shutil.copytree(src, idx)
    heavy = VideoIndex.open(idx, runtime="torch")
    ref = heavy.search("a red circle", 10)
    heavy.close()
    rec = VideoIndex.open(idx)
    folder = idx / rec.catalog.get_meta(ONNX_TEXT_META)["dir"]
    rec.close()
    model = folder / "model.onnx"
    model.unlink()
    model.write_bytes(b"truncated")  # size no longer what export.json says
    _searched_through_torch(idx, ref)
    # another identity's export under this identity's folder name: not used either
    shutil.rmtree(folder.parent)
    shutil.copytree(indexes("hf-tiny") / "onnx", idx / "onnx", dirs_exist_ok=True)
    (idx / "onnx" / next(p.name for p in (indexes("hf-tiny") / "onnx").iterdir())).rename(folder.parent)
    _searched_through_torch(idx, ref)


def test_index_moves_with_its_export(indexes, tmp_path):
    import shutil

    from vidclip.index.search import VideoIndex

    idx = tmp_path / "moved"
    shutil.copytree(indexes("hf-tiny"), idx)
    index = VideoIndex.open(idx)
    try:
        assert index.text_encoder is not None and str(index.text_encoder.root).startswith(str(idx))
    finally:
        index.close()


def test_checkpoint_index_uses_torch_text_tower():
    """A temporal checkpoint's queries go through its own (fine-tuned) text tower: no ONNX."""
    from vidclip.index.queries import onnx_text_encoder

    class Meta:
        def __init__(self, temporal):
            self.meta = {"model": {"name": "x"}, "model_key": "k", "temporal": temporal}

        def get_meta(self, key, default=None):
            return self.meta.get(key, default)

    class Dir:
        path = Path("/nonexistent")

    assert onnx_text_encoder(Dir(), Meta({"name": "checkpoint", "path": "/x", "digest": "d"})) is None
    assert onnx_text_encoder(Dir(), Meta({"name": "mean"})) is None  # no export there


def test_without_onnxruntime_everything_works_as_before(library, windows_sampler, tmp_path, monkeypatch, indexes):
    """onnxruntime hidden: the index builds without an export (one warning), search loads torch,
    an index that has an export is searched through torch with the same hits."""
    from vidclip.index import index_library
    from vidclip.index.queries import ONNX_DIR, ONNX_TEXT_META
    from vidclip.index.search import VideoIndex
    from vidclip.models.clip.load import load_clip

    built = indexes("tiny-vit")
    with_export = VideoIndex.open(built)
    ref = with_export.search("a red circle", 10)
    with_export.close()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setenv("VIDCLIP_ONNX_CACHE", str(tmp_path / "empty_cache"))
    idx = tmp_path / "idx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index_library(library, idx, load_clip("tiny-vit"), windows_sampler, workers=0, progress=False)
    assert any("no ONNX text tower" in str(w.message) and "onnxruntime" in str(w.message) for w in caught)
    assert not (idx / ONNX_DIR).exists()
    index = VideoIndex.open(idx)
    try:
        assert index.text_encoder is None and index.catalog.get_meta(ONNX_TEXT_META) is None
        _same_hits(index.search("a red circle", 10), ref)
    finally:
        index.close()
    index = VideoIndex.open(built)
    try:
        assert index.text_encoder is None
        _same_hits(index.search("a red circle", 10), ref)
    finally:
        index.close()


def test_resync_gives_an_old_index_its_export(indexes, library, windows_sampler, tmp_path):
    """An index built before the light runtime (no export) gets one on its next `vidclip index`,
    from the user cache, without loading the model when nothing changed."""
    import shutil

    from vidclip.index import index_library
    from vidclip.index.directory import IndexDir
    from vidclip.index.queries import ONNX_DIR, ONNX_TEXT_META
    from vidclip.index.search import VideoIndex

    idx = tmp_path / "old"
    shutil.copytree(indexes("tiny-vit"), idx)
    shutil.rmtree(idx / ONNX_DIR)
    catalog = IndexDir(idx).open_catalog()
    with catalog.transaction() as cur:
        catalog.delete_meta(cur, ONNX_TEXT_META)
    catalog.close()

    def no_model():
        raise AssertionError("the model was loaded")

    rep = index_library(library, idx, no_model, windows_sampler, workers=0, progress=False)
    assert rep.indexed == 0
    index = VideoIndex.open(idx)
    try:
        assert index.text_encoder is not None and index.catalog.get_meta(ONNX_TEXT_META) is not None
    finally:
        index.close()


@pytest.mark.slow
def test_random_vit_b_32_text_search_equals_torch(library, tmp_path, windows_sampler):
    from vidclip.index import index_library
    from vidclip.index.search import VideoIndex
    from vidclip.models.clip.load import load_clip

    idx = tmp_path / "idx"
    index_library(library, idx, load_clip("ViT-B-32", "none"), windows_sampler, workers=0, progress=False)
    light, heavy = VideoIndex.open(idx), VideoIndex.open(idx, runtime="torch")
    try:
        assert light.text_encoder is not None
        for q in QUERIES:
            _same_hits(light.search(q, 10), heavy.search(q, 10))
    finally:
        light.close()
        heavy.close()


# ----------------------------------------------------------------------------------------------
# --runtime onnx [--precision int8]: the image tower on ONNX Runtime for encode/index/classify/rerank
# ----------------------------------------------------------------------------------------------
def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def synth_clip():
    from vidclip.models.clip.load import load_clip

    return load_clip("vidclip-synth")


def test_onnx_image_encoder_fp32_is_torch_int8_is_close_with_its_own_identity(synth_clip):
    import torch

    from vidclip.models.clip.onnx_encoder import INT8_TAG, onnx_image_clip
    from vidclip.models.clip.onnx_runtime import base_identity, identity_precision

    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (20, 64, 64, 3), dtype=np.uint8))
    ref = synth_clip.encode_frames(frames).numpy()
    fp32 = onnx_image_clip(synth_clip, "fp32")
    got = fp32.encode_frames(frames, batch_size=7).numpy()
    assert got.shape == ref.shape and np.abs(_unit(got) - _unit(ref)).max() < 1e-5
    assert fp32.identity.key() == synth_clip.identity.key()  # fp32 ORT counts as the torch model
    assert fp32.image_size == synth_clip.image_size and fp32.encode_text(["a"]).shape == (1, synth_clip.embed_dim)
    int8 = onnx_image_clip(synth_clip, "int8")
    q = int8.encode_frames(frames).numpy()
    cos = (_unit(q) * _unit(ref)).sum(1)
    assert 0.99 < cos.min() and np.abs(_unit(q) - _unit(ref)).max() > 1e-5  # quantised: close, not equal
    assert int8.identity.key() == synth_clip.identity.key() + INT8_TAG
    d = int8.identity.to_dict()
    assert identity_precision(d) == "int8" and identity_precision(synth_clip.identity) == "fp32"
    assert base_identity(d) == synth_clip.identity.to_dict()
    assert int8.encode_frames(frames[:0]).shape == (0, synth_clip.embed_dim)


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "vidclip", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_cli_runtime_options_checked_before_the_model_loads(library, tmp_path):
    for args, says in [(["--precision", "int8"], "--precision int8 needs --runtime onnx"),
                       (["--runtime", "onnx", "--precision", "fp16"], "--precision must be fp32 or int8"),
                       (["--runtime", "onnx", "--device", "cuda"], "--runtime onnx runs on the CPU")]:
        for verb in (["index", library, "--index", tmp_path / "i"], ["encode", library, "--out", tmp_path / "s"]):
            out = _cli(*verb, "--model", "vidclip-synth", *args)
            assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "i").exists() and not (tmp_path / "s").exists()


def test_int8_index_and_store_refuse_other_precisions(library, tmp_path, indexes):
    """An int8 index: built, searched (text through its ONNX text tower, video examples through its
    int8 encoder), re-synced as int8 without flags; torch/fp32 features refused in one line. A
    feature store likewise."""
    from vidclip.index.search import VideoIndex

    idx = tmp_path / "idx8"
    out = _cli("index", library, "--index", idx, "--model", "vidclip-synth", "--workers", "0", "--runtime", "onnx",
               "--precision", "int8", "--sampler", "windows", "--fps", "4", "--window", "1", "--stride", "0.5")
    assert out.returncode == 0, out.stderr
    out = _cli("index", library, "--index", idx, "--runtime", "torch")
    assert out.returncode == 2 and "encoded at int8" in out.stderr and "use another --index" in out.stderr
    light, fp32 = VideoIndex.open(idx), VideoIndex.open(indexes("vidclip-synth"), runtime="torch")
    try:
        assert light.catalog.get_meta("model_key").endswith("+onnx-int8") and light.text_encoder is not None
        hits, ref = light.search("a red circle", 12), fp32.search("a red circle", 12)
        assert sorted(h.path for h in hits) == sorted(h.path for h in ref)  # the same library, close scores
        assert max(abs(a.score - b.score) for a, b in zip(sorted(hits, key=lambda h: h.path),
                                                         sorted(ref, key=lambda h: h.path))) < 0.02
        top = light.search_video(library / "clip05.mp4", 1)[0]
        assert top.path == "clip05.mp4" and top.score > 0.9999  # its own int8 encoder found it
    finally:
        light.close()
        fp32.close()
    (library / "new").mkdir(exist_ok=True)
    try:
        make_clip(library / "new" / "added.mp4", seed=99)
        out = _cli("index", library, "--index", idx, "--workers", "0", "--json")  # no flags: the index's own int8
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["indexed"] == 1
    finally:
        import shutil

        shutil.rmtree(library / "new")
    store = tmp_path / "store"
    out = _cli("encode", library / "clip00.mp4", "--out", store, "--model", "vidclip-synth", "--workers", "0",
               "--runtime", "onnx", "--precision", "int8")
    assert out.returncode == 0, out.stderr
    out = _cli("encode", library / "clip01.mp4", "--out", store, "--model", "vidclip-synth", "--workers", "0")
    assert out.returncode != 0 and "+onnx-int8" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_classify_runs_on_the_onnx_runtime(tmp_path):
    """classify --runtime onnx (fp32) predicts what the torch path predicts, with the same scores."""
    out = _cli("synth", tmp_path / "syn", "--videos", "6", "--seed", "0")
    assert out.returncode == 0, out.stderr
    classes = tmp_path / "classes.txt"
    classes.write_text("red circle\nblue square\ngreen triangle\nyellow star\n")
    results = {}
    for runtime in ("torch", "onnx"):
        out = _cli("classify", tmp_path / "syn" / "videos", "--classes", classes, "--model", "vidclip-synth",
                   "--workers", "0", "--runtime", runtime, "--json", "-k", "2", "--features", tmp_path / f"feat-{runtime}",
                   cwd=tmp_path)  # a store each: the fp32 features share the identity, so one would reuse the other's
        assert out.returncode == 0, out.stderr
        results[runtime] = json.loads(out.stdout)
    flat = [json.dumps(results[r], sort_keys=True) for r in ("torch", "onnx")]
    import re

    labels = [re.findall(r'"label": "([^"]+)"', f) for f in flat]
    scores = [np.array([float(x) for x in re.findall(r'"score": (-?[0-9.e-]+)', f)]) for f in flat]
    assert labels[0] and labels[0] == labels[1]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-4)


def test_rerank_videos_on_the_onnx_runtime(tmp_path):
    """rerank --videos --runtime onnx: the torch path's run file (fp32); an int8 frame cache is
    refused to the default encoder in one line."""
    out = subprocess.run([sys.executable, "-m", "vidclip.synthetic.rerank_example", str(tmp_path / "rx")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    rx = tmp_path / "rx"
    common = ["rerank", "--run", rx / "run.txt", "--topics", rx / "topics.txt", "--videos", rx / "shots.csv",
              "--fps", "2", "--quiet"]
    runs = {}
    for name, extra in (("torch", []), ("onnx", ["--runtime", "onnx"]), ("int8", ["--runtime", "onnx", "--precision", "int8"])):
        out = _cli(*common, "--cache", rx / f"cache-{name}", "--out", rx / f"{name}.txt", *extra)
        assert out.returncode == 0, out.stderr
        runs[name] = [line.split() for line in (rx / f"{name}.txt").read_text().splitlines()]
    assert [r[:3] for r in runs["torch"]] == [r[:3] for r in runs["onnx"]]  # topic, Q0, docid in the same order
    np.testing.assert_allclose([float(r[4]) for r in runs["torch"]], [float(r[4]) for r in runs["onnx"]], atol=1e-4)
    assert len(runs["int8"]) == len(runs["torch"])
    out = _cli(*common, "--cache", rx / "cache-int8", "--out", rx / "again.txt")
    assert out.returncode == 2 and "+onnx-int8" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_runtime_onnx_without_onnxruntime_is_one_clear_error(synth_clip, monkeypatch, tmp_path):
    from vidclip.core.errors import VidclipError
    from vidclip.models.clip.onnx_encoder import onnx_image_clip

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(VidclipError, match="onnxruntime cannot be imported"):
        onnx_image_clip(synth_clip, "int8", tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("model.onnx"))
