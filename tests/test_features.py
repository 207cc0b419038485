"""The frame-feature store: round trip, sharding, resume after a killed writer, batching."""

import json

import numpy as np
import pytest
import torch

from vidclip.data.features import FeatureStore, FeatureWriter, uniform_positions
from vidclip.errors import VidclipError

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
