"""Evaluation driver: similarity matrices against hand-written references, zero-shot, CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import make_feature_dataset

from vidclip.core.errors import VidclipError
from vidclip.eval.evaluate import FeatureSource, evaluate, similarity_matrix, zero_shot
from vidclip.eval.metrics import dual_softmax, retrieval_metrics
from vidclip.features.store import FeatureStore
from vidclip.models.temporal.registry import create_temporal

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="module")
def clip(tiny_clip):
    return tiny_clip


@pytest.fixture(scope="module")
def data(clip, tmp_path_factory):
    return make_feature_dataset(tmp_path_factory.mktemp("evalds"), clip.identity.to_dict(), clip.embed_dim)


@pytest.fixture(scope="module")
def store(data):
    return FeatureStore(data["features"])


def assert_metrics_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for direction in a:
        assert a[direction] == pytest.approx(b[direction]), direction


def _unit(x):
    return x / np.linalg.norm(x)


def reference_mean_sim(text: np.ndarray, store, keys, num_frames) -> np.ndarray:
    """meanP by hand: per video, frames subsampled like store.batch, each normalised, averaged."""
    out = np.zeros((len(text), len(keys)))
    for j, k in enumerate(keys):
        emb = np.asarray(store.get(k).emb, dtype=np.float64)
        if len(emb) > num_frames:
            emb = emb[np.floor((np.arange(num_frames) + 0.5) * len(emb) / num_frames).astype(int)]
        v = _unit(np.mean([_unit(f) for f in emb], axis=0))
        for i, t in enumerate(text):
            out[i, j] = _unit(t) @ v
    return out


def reference_query_scoring_sim(text: np.ndarray, store, keys, num_frames, tau) -> np.ndarray:
    """CLIP-Hitchhiker query scoring by hand: w = softmax_i(cos(t, f_i) / tau), v = sum w_i f_i."""
    out = np.zeros((len(text), len(keys)))
    for j, k in enumerate(keys):
        emb = np.asarray(store.get(k).emb, dtype=np.float64)[:num_frames]
        for i, t in enumerate(text):
            logits = np.array([_unit(t) @ _unit(f) for f in emb]) / tau
            w = np.exp(logits - logits.max())
            w /= w.sum()
            out[i, j] = _unit(t) @ _unit((w[:, None] * emb).sum(0))
    return out


def test_pooled_similarity_matches_hand_reference(store, data):
    keys = data["test_ids"] + data["train_ids"][:5]
    text = np.random.default_rng(0).standard_normal((7, store.embed_dim)).astype(np.float32)
    module = create_temporal("mean", store.embed_dim)
    src = FeatureSource(store, 6)
    sim = similarity_matrix(module, torch.from_numpy(text), src, keys, batch_videos=4)  # chunked
    np.testing.assert_allclose(sim, reference_mean_sim(text, store, keys, 6), atol=1e-5)
    assert sim.shape == (7, 13)


def test_conditioned_similarity_matches_hand_reference(store, data):
    keys = data["test_ids"]
    text = np.random.default_rng(1).standard_normal((5, store.embed_dim)).astype(np.float32)
    module = create_temporal("query_scoring", store.embed_dim, tau=0.1)
    src = FeatureSource(store, 8)  # >= every stored count: no subsampling, padding only
    sim = similarity_matrix(module, torch.from_numpy(text), src, keys, batch_videos=3)
    np.testing.assert_allclose(sim, reference_query_scoring_sim(text, store, keys, 8, 0.1), atol=1e-5)


def test_evaluate_scores_the_matrix_and_keeps_dsl_apart(store, data, clip):
    from vidclip.data.datasets import load_dataset

    ds = load_dataset("msrvtt", data["root"], "test")
    module = create_temporal("mean", store.embed_dim)
    src = FeatureSource(store, 6)
    res = evaluate(module, ds.captions, ds.caption_video, ds.video_ids, src, clip=clip, dsl=True, name="mean")
    text = clip.encode_text(ds.captions).numpy()
    ref = reference_mean_sim(text, store, ds.video_ids, 6)
    assert_metrics_equal(res.metrics, retrieval_metrics(ref, ds.caption_video))
    assert_metrics_equal(res.dsl, retrieval_metrics(dual_softmax(ref), ds.caption_video))
    assert res.num_captions == 8 and res.num_videos == 8
    d = res.to_dict()
    assert d["t2v"] == res.metrics["t2v"] and d["dsl"] == res.dsl


def test_missing_features_name_the_videos(store, clip):
    module = create_temporal("mean", store.embed_dim)
    with pytest.raises(VidclipError, match=r"2 of 3 videos have no features: nope1, nope2"):
        evaluate(module, ["a", "b"], np.array([0, 1]), ["video0", "nope1", "nope2"], FeatureSource(store, 4),
                 clip=clip)


def test_zero_shot_runs_parameter_free_modules_and_refuses_trained_ones(store, data, clip):
    from vidclip.data.datasets import load_dataset

    ds = load_dataset("msrvtt", data["root"], "test")
    src = FeatureSource(store, 6)
    res = zero_shot(clip, ds.captions, ds.caption_video, ds.video_ids, src)
    assert set(res) == {"mean", "query_scoring"}
    text = clip.encode_text(ds.captions).numpy()
    assert_metrics_equal(res["mean"].metrics,
                         retrieval_metrics(reference_mean_sim(text, store, ds.video_ids, 6), ds.caption_video))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(VidclipError, match="trainable parameters"):
            zero_shot(clip, ds.captions, ds.caption_video, ds.video_ids, src, modules=["seq_transformer"])


def test_cli_zero_shot_json_and_argument_errors(data, tmp_path, capsys):
    from vidclip.cli.main import main

    args = ["eval", "--zero-shot", "--data", str(data["root"]), "--features", str(data["features"]),
            "--model", "tiny-vit", "--pretrained", "none", "--device", "cpu", "--num-frames", "6", "--no-encode"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args + ["--json", "--dsl"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["mode"] == "zero-shot" and set(out["results"]) == {"mean", "query_scoring"}
        assert set(out["dsl"]) == {"mean", "query_scoring"} and "RANDOM" in out["warning"]
        assert out["num_videos"] == 8 and out["results"]["mean"]["t2v"]["queries"] == 8
        assert main(args) == 0  # the table
        text = capsys.readouterr().out
        assert "t2v" in text and "v2t" in text and "RANDOM" in text
        assert main(["eval", "--zero-shot"]) == 2
        assert "--zero-shot needs --data" in capsys.readouterr().err
        assert main(["eval"]) == 2


def test_pixel_source_decodes_padded_uint8_frames(tmp_path):
    from vidclip.eval.evaluate import PixelSource
    from vidclip.synthetic.datasets import SynthConfig, make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "s", SynthConfig(num_videos=2, seed=1, size=32, num_frames=5, test_fraction=0.0),
                           progress=False)
    paths = {p.stem: str(p) for p in (tmp_path / "s" / "videos").glob("*.mp4")}
    keys = sorted(paths)
    src = PixelSource(paths, num_frames=8, image_size=24)
    frames, mask = src.batch(keys)
    assert frames.dtype == torch.uint8 and frames.shape == (2, 8, 24, 24, 3)
    # 5-frame videos: 5 real frames, then zero padding with mask False
    assert mask.tolist() == [[True] * 5 + [False] * 3] * 2
    assert frames[:, 5:].eq(0).all() and frames[:, :5].float().std() > 0
    assert src.missing(keys + ["nope"]) == ["nope"]


@pytest.mark.shared
def test_zero_shot_encodes_real_msrvtt_videos(tmp_path, clip, capsys):
    """The 4 real MSR-VTT test videos: encode into a fresh store, then score (random weights:
    only the mechanics are checked, the numbers are meaningless)."""
    mini = SHARED / "msrvtt" / "mini"
    if not mini.is_dir():
        pytest.skip("../shared not present: no real MSR-VTT videos")
    pytest.importorskip("vidclip.video.sample")
    from vidclip.cli.main import main

    feats = tmp_path / "feats"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["eval", "--zero-shot", "--data", str(mini), "--features", str(feats), "--model", "tiny-vit",
                   "--pretrained", "none", "--device", "cpu", "--num-frames", "4", "--encode-frames", "4",
                   "--workers", "0", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_videos"] == 4 and out["num_captions"] == 4
    store = FeatureStore(feats)
    assert sorted(store.keys()) == sorted(v.stem for v in (mini / "videos").glob("*.mp4"))
    assert all(1 <= store.get(k).emb.shape[0] <= 4 for k in store.keys())


def _synth(root, seed):
    from vidclip.synthetic.datasets import SynthConfig, make_synthetic_dataset

    make_synthetic_dataset(root, SynthConfig(num_videos=6, seed=seed, size=32, num_frames=5, test_fraction=0.5),
                           progress=False, overwrite=True)


def _zero_shot(main, capsys, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["eval", "--zero-shot", "--model", "tiny-vit", "--pretrained", "none", "--device", "cpu",
                   "--workers", "0", "--modules", "mean", "--json", *args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out), captured.err


def test_zero_shot_without_features_caches_in_a_default_folder(tmp_path, monkeypatch, capsys):
    """README's `vidclip eval --zero-shot --data data/msrvtt --model ... --pretrained ...` (no --features)."""
    from vidclip.cli.main import main

    monkeypatch.chdir(tmp_path)
    _synth(tmp_path / "data" / "synth", seed=0)
    out, _ = _zero_shot(main, capsys, "--data", "data/synth")
    default = Path("cache") / "synth-tiny-vit-random" / "features"
    assert out["features"] == str(default) and out["dataset"] == "synth-test"
    from vidclip.data.datasets import load_dataset

    test_ids = load_dataset("msrvtt", "data/synth", "test").video_ids
    assert sorted(FeatureStore(default).keys()) == sorted(test_ids) and len(test_ids) == 4  # the test split
    assert out["results"]["mean"]["t2v"]["queries"] == 4
    out2, _ = _zero_shot(main, capsys, "--data", "data/synth", "--no-encode", "--out", "res/zs.json")
    assert out2["results"] == out["results"]  # the second run reuses them
    assert json.loads(Path("res/zs.json").read_text()) == out2  # --out: the same JSON, atomically
    assert not list(Path("res").glob(".*"))


def test_regenerated_dataset_is_encoded_again_not_reused(tmp_path, capsys):
    """Issue 7: a dataset regenerated with another seed at the same path, evaluated with the same
    feature folder, must not be scored on the old videos' features."""
    from vidclip.cli.main import main

    root, feats, fresh = tmp_path / "synth", tmp_path / "feats", tmp_path / "fresh"
    _synth(root, seed=0)
    _zero_shot(main, capsys, "--data", str(root), "--features", str(feats))
    before = {k: np.array(FeatureStore(feats).get(k).emb) for k in FeatureStore(feats).keys()}
    _synth(root, seed=1)  # other videos under the same names
    with pytest.raises(AssertionError):  # --no-encode refuses instead of reusing
        _zero_shot(main, capsys, "--data", str(root), "--features", str(feats), "--no-encode")
    out, err = _zero_shot(main, capsys, "--data", str(root), "--features", str(feats))
    assert "changed since their features were encoded" in err
    ref, _ = _zero_shot(main, capsys, "--data", str(root), "--features", str(fresh))
    store, fresh_store = FeatureStore(feats), FeatureStore(fresh)
    assert sorted(store.keys()) == sorted(fresh_store.keys()) == sorted(before)
    for k in before:
        np.testing.assert_array_equal(np.asarray(store.get(k).emb), np.asarray(fresh_store.get(k).emb))
        assert not np.array_equal(np.asarray(store.get(k).emb), before[k])
    assert out["results"] == ref["results"]


def test_synthetic_model_on_other_footage_says_scores_mean_nothing(data, tmp_path, capsys):
    from vidclip.cli.main import main

    weights = str(Path(__file__).resolve().parents[1] / "vidclip" / "assets" / "vidclip-synth.safetensors")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["eval", "--zero-shot", "--data", str(data["root"]), "--features", str(tmp_path / "f"),
                   "--model", "vidclip-synth", "--pretrained", weights, "--device", "cpu", "--no-encode", "--json"])
    err = capsys.readouterr().err
    assert rc == 2  # the placeholder videos are not encoded; the warning comes first
    lines = [line for line in err.splitlines() if "mean nothing" in line]
    assert len(lines) == 1 and "vidclip-synth" in lines[0]
    synth_root = tmp_path / "synth"
    _synth(synth_root, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["eval", "--zero-shot", "--data", str(synth_root), "--features", str(tmp_path / "g"),
                     "--model", "vidclip-synth", "--pretrained", weights, "--device", "cpu", "--workers", "0",
                     "--json"]) == 0
    assert "mean nothing" not in capsys.readouterr().err
