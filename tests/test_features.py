"""The frame-feature store: round trip, sharding, resume after a killed writer, batching; the pooler."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vidclip.core.errors import VidclipError
from vidclip.features.store import FeatureStore, FeatureWriter, uniform_positions

MODEL = {"family": "open_clip", "name": "tiny-vit", "pretrained": None, "embed_dim": 4, "weights_digest": "abc"}
SAMPLER = {"name": "uniform", "num_frames": 3}


def _video(rng, count, dim=4):
    return rng.standard_normal((count, dim)).astype(np.float32), np.arange(count) * 2, np.arange(count) * 0.5


def test_round_trip_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    videos = {f"v{i}": _video(rng, count) for i, count in enumerate([3, 1, 5, 2, 4])}
    with FeatureWriter(tmp_path, MODEL, SAMPLER, shard_size=2) as w:
        for key, (emb, idx, t) in videos.items():
            w.add(key, f"/lib/{key}.mp4", emb, idx, t, windows=[(0.0, 1.0, 0, 1)], duration=9.0, fps=25.0)
    shards = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert shards == ["shard-000000", "shard-000001", "shard-000002"]  # 2 + 2 + 1 videos
    store = FeatureStore(tmp_path)
    assert sorted(store.keys()) == sorted(videos)
    assert store.model == MODEL and store.sampler == SAMPLER
    for key, (emb, idx, t) in videos.items():
        got = store.get(key)
        assert got.emb.dtype == np.float16
        np.testing.assert_allclose(got.emb.astype(np.float32), emb, atol=2e-3)
        np.testing.assert_array_equal(got.frame_index, idx)
        np.testing.assert_array_equal(got.time, t)
        assert got.path == f"/lib/{key}.mp4" and got.duration == 9.0 and got.fps == 25.0
        assert got.windows == [(0.0, 1.0, 0, 1)]


def test_uncommitted_shard_is_discarded_and_writer_resumes(tmp_path):
    rng = np.random.default_rng(1)
    w = FeatureWriter(tmp_path, MODEL, SAMPLER, shard_size=2)
    for i in range(3):
        w.add(f"v{i}", "p", *_video(rng, 2))
    # Simulate a crash: v2 is pending, and a half-written shard directory is left behind.
    (tmp_path / "shards" / ".tmp-shard-000001-dead").mkdir()
    del w
    assert sorted(FeatureStore(tmp_path).keys()) == ["v0", "v1"]
    w2 = FeatureWriter(tmp_path, MODEL, SAMPLER, shard_size=2)
    assert not list((tmp_path / "shards").glob(".tmp-*"))
    w2.add("v2", "p", *_video(rng, 2))
    w2.close()
    assert sorted(FeatureStore(tmp_path).keys()) == ["v0", "v1", "v2"]


def test_refuses_mixing_models(tmp_path):
    FeatureWriter(tmp_path, MODEL, SAMPLER).close()
    other = dict(MODEL, weights_digest="different")
    with pytest.raises(VidclipError, match="refusing to add features"):
        FeatureWriter(tmp_path, other, SAMPLER)


def test_not_a_store_is_a_clear_error(tmp_path):
    with pytest.raises(VidclipError, match="not a feature store"):
        FeatureStore(tmp_path)
    (tmp_path / "store.json").write_text(json.dumps({"format": 99, "model": {}}))
    with pytest.raises(VidclipError, match="unsupported store format"):
        FeatureStore(tmp_path)


def test_batch_pads_and_subsamples(tmp_path):
    rng = np.random.default_rng(2)
    long_emb, short_emb = rng.standard_normal((10, 4)), rng.standard_normal((2, 4))
    with FeatureWriter(tmp_path, MODEL, SAMPLER) as w:
        w.add("long", "p", long_emb, np.arange(10), np.arange(10.0))
        w.add("short", "p", short_emb, np.arange(2), np.arange(2.0))
    frames, mask = FeatureStore(tmp_path).batch(["long", "short"], num_frames=4)
    assert frames.shape == (2, 4, 4) and frames.dtype == torch.float32
    # eval-mode uniform rule: floor((k + 0.5) * 10 / 4) = 1, 3, 6, 8
    np.testing.assert_array_equal(uniform_positions(10, 4), [1, 3, 6, 8])
    np.testing.assert_allclose(frames[0].numpy(), long_emb[[1, 3, 6, 8]].astype(np.float16), atol=0)
    assert mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert torch.all(frames[1, 2:] == 0)


def test_rejects_mismatched_shapes(tmp_path):
    with FeatureWriter(tmp_path, MODEL, SAMPLER) as w, pytest.raises(ValueError, match="disagree"):
        w.add("v", "p", np.zeros((3, 4)), np.arange(2), np.arange(3.0))


def test_records_file_identity_and_forget_drops_a_key(tmp_path):
    from vidclip.features.identity import file_identity, same_file

    video = tmp_path / "v.mp4"
    video.write_bytes(b"old bytes")
    rng = np.random.default_rng(0)
    with FeatureWriter(tmp_path / "s", MODEL, SAMPLER) as w:
        w.add("v", str(video), *_video(rng, 3))
        w.add("w", str(tmp_path / "missing.mp4"), *_video(rng, 2))
    store = FeatureStore(tmp_path / "s")
    assert store.get("v").source == file_identity(video) and store.get("v").source["size"] == 9
    assert store.get("w").source is None  # nothing to record
    assert same_file(store.get("v").source, video)
    os.utime(video, ns=(1, 1))  # touched, same bytes: still the same file (the hash decides)
    assert same_file(store.get("v").source, video)
    video.write_bytes(b"new bytes")  # same size, other bytes
    assert not same_file(store.get("v").source, video)
    assert not same_file(None, video) and not same_file(store.get("v").source, tmp_path / "nope")

    with FeatureWriter(tmp_path / "s", MODEL, SAMPLER) as w:
        assert w.forget([]) is None
        w.forget(["v"])  # a tombstone shard
    store = FeatureStore(tmp_path / "s")
    assert "v" not in store and store.keys() == ["w"] and len(store) == 1
    emb, fi, t = _video(rng, 4)
    with FeatureWriter(tmp_path / "s", MODEL, SAMPLER) as w:
        w.add("v", str(video), emb, fi, t)  # written again later: back, with the new features
    store = FeatureStore(tmp_path / "s")
    np.testing.assert_array_equal(store.get("v").emb, emb.astype(np.float16))
    assert store.get("v").source == file_identity(video)


def test_default_features_dir_is_named_after_dataset_and_model(tmp_path):
    from types import SimpleNamespace

    from vidclip.features.cache import default_features_dir

    def ident(name, pretrained, random_weights=False):
        return SimpleNamespace(name=name, pretrained=pretrained, random_weights=random_weights)

    # the store the configs/msrvtt_*.yaml runs use (data.cache_dir: cache/msrvtt-vit-b-32)
    assert default_features_dir("data/msrvtt", ident("ViT-B-32", "openai")) == Path("cache/msrvtt-vit-b-32/features")
    assert default_features_dir("data/msrvtt/", ident("ViT-B-32", "laion2b_s34b_b79k")) == Path(
        "cache/msrvtt-vit-b-32-laion2b_s34b_b79k/features")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    assert default_features_dir("data/synth", ident("vidclip-synth", str(weights)), 8) == Path(
        "cache/synth-vidclip-synth/features-8f")
    assert default_features_dir("x/MSVD", ident("hf:openai/clip-vit-base-patch32", None, True)) == Path(
        "cache/msvd-clip-vit-base-patch32-random/features")


def test_check_features_reports_changed_files_and_remembers_confirmed_copies(tmp_path, monkeypatch):
    from vidclip.features import cache as feature_cache
    from vidclip.features import identity
    from vidclip.features.cache import CONFIRMED_FILE, check_features
    from vidclip.models.clip.load import ModelIdentity

    ident = ModelIdentity("open_clip", "tiny-vit", None, 4, 32, True, "abc")
    videos = []
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.mp4").write_bytes(name.encode() * 10)
        videos.append((name, str(tmp_path / f"{name}.mp4")))
    store = tmp_path / "store"
    rng = np.random.default_rng(0)
    with FeatureWriter(store, ident.to_dict(), {"name": "uniform", "num_frames": 3}) as w:
        for key, path in videos[:2]:
            w.add(key, path, *_video(rng, 3))
    found = check_features(store, ident, videos, encode_frames=3)
    assert found.missing == [videos[2]] and found.changed == []  # c was never encoded

    os.utime(videos[0][1], ns=(5, 5))  # a: copied (new mtime, same bytes)
    (tmp_path / "b.mp4").write_bytes(b"B" * 10)  # b: replaced (same size, other bytes)
    found = check_features(store, ident, videos, encode_frames=3, for_encoding=False)
    assert found.changed == ["b"] and [k for k, _ in found.missing] == ["b", "c"]
    assert set(json.loads((store / CONFIRMED_FILE).read_text())) == {"a"}
    # the confirmed copy is not hashed again
    monkeypatch.setattr(identity, "fast_hash", lambda *a, **k: pytest.fail("hashed again"))
    monkeypatch.setattr(feature_cache, "same_file", lambda *a, **k: pytest.fail("hashed again"))
    assert check_features(store, ident, videos[:1], encode_frames=3).missing == []
    monkeypatch.undo()

    # about to encode: the changed video's old features are dropped, so the encode writes it afresh
    found = check_features(store, ident, videos, encode_frames=3, for_encoding=True)
    assert found.changed == ["b"] and "b" not in FeatureStore(store) and "a" in FeatureStore(store)
    # refusals name the folder and what differs
    other = ModelIdentity("open_clip", "other", None, 4, 32, True, "def")
    with pytest.raises(VidclipError, match="features were encoded with tiny-vit .*, not with other"):
        check_features(store, other, videos, encode_frames=3)
    with pytest.raises(VidclipError, match="sampled with uniform 3 frames, not uniform 8; use another"):
        check_features(store, ident, videos, encode_frames=8)


# ----------------------------------------------------------------------------- the pooler


class _Sum(torch.nn.Module):
    """A stand-in trained module: normalised sum of the real frames; records what it was given."""

    text_conditioned = False

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.seen = []

    def forward(self, x, mask):
        self.seen.append(tuple(x.shape))
        return torch.nn.functional.normalize((x * mask[..., None]).sum(1) * self.w, dim=-1)


def test_pooler_mean_is_the_mean_module_for_videos_windows_and_stores(tmp_path):
    from vidclip.features.pooling import MEAN_SPEC, Pooler
    from vidclip.models.temporal.registry import create_temporal

    rng = np.random.default_rng(1)
    frames = rng.standard_normal((7, 4)).astype(np.float32)
    pooler = Pooler()  # mean: the registry's parameter-free TemporalModule, no numpy copy of it
    assert pooler.spec == MEAN_SPEC and pooler.module is None and not pooler.conditioned
    video, wins = pooler.video_and_windows(frames, [(0.0, 2.0, 0, 3), (1.0, 3.0, 2, 5)])
    with torch.no_grad():
        mean = create_temporal("mean", 4)
        want = mean(torch.from_numpy(frames)[None])[0].numpy()
        want_w = [mean(torch.from_numpy(frames[a:a + n])[None])[0].numpy() for a, n in ((0, 3), (2, 5))]
    np.testing.assert_array_equal(video, want)  # the whole video alone: an example query gets the same vector
    np.testing.assert_allclose(wins, np.stack(want_w), rtol=1e-6, atol=1e-7)
    assert pooler.video_and_windows(frames, [])[1].shape == (0, 4)
    with FeatureWriter(tmp_path, MODEL, SAMPLER) as w:
        w.add("a", "a.mp4", frames, np.arange(7), np.arange(7.0))
    np.testing.assert_allclose(pooler.pool_store(FeatureStore(tmp_path), ["a"])[0], want, rtol=1e-3, atol=1e-3)  # fp16
    assert pooler.pool_store(FeatureStore(tmp_path), []).shape == (0, 4)


def test_pooler_checkpoint_module_gets_at_most_max_frames_and_specs_match_by_digest():
    from vidclip.features.pooling import Pooler

    spec = {"name": "checkpoint", "path": "/runs/a/best.safetensors", "module": "sum", "digest": "0123456789abcdef"}
    module = _Sum()
    pooler = Pooler(spec, module, max_frames=4)
    frames = np.random.default_rng(2).standard_normal((10, 4)).astype(np.float32)
    video, wins = pooler.video_and_windows(frames, [(0.0, 1.0, 0, 2), (1.0, 2.0, 2, 8)])
    assert module.seen == [(1, 4, 4), (2, 4, 4)]  # the video alone, then the windows; subsampled to 4
    sub = frames[uniform_positions(10, 4)].sum(0)
    np.testing.assert_allclose(video, sub / np.linalg.norm(sub), rtol=1e-5)
    assert pooler.matches(dict(spec, path="/moved/best.safetensors"))  # the same checkpoint, moved
    assert not pooler.matches(dict(spec, digest="fedcba9876543210")) and not pooler.matches({"name": "mean"})
    assert Pooler().matches(None) and Pooler().matches({"name": "mean"})  # older files saved no spec
    with pytest.raises(ValueError, match="disagree"):
        Pooler(spec)  # a checkpoint spec needs its module


def test_temporal_path_checks_before_any_model_loads(tmp_path):
    from vidclip.core.errors import ConfigError
    from vidclip.features.pooling import temporal_path

    assert temporal_path(None) is None and temporal_path("mean") is None and temporal_path("") is None
    (tmp_path / "best.safetensors").write_bytes(b"x")
    assert temporal_path(tmp_path / "best.safetensors") == (tmp_path / "best.safetensors").resolve()
    with pytest.raises(ConfigError, match="neither 'mean' nor an existing checkpoint"):
        temporal_path(tmp_path / "nope")
