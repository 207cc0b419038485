"""`--temporal CKPT`: video features pooled by a `vidclip train` checkpoint's order-aware module.

A tiny seq_transformer run is trained on pre-written frame features (tests/train_helpers.py, no
decoding, seconds) with the random ``tiny-vit`` CLIP; recognition loads it through
vidclip.models.checkpoint and must pool exactly as the trained module does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from train_helpers import make_feature_dataset, run_train, tiny_config

checkpoint = pytest.importorskip("vidclip.models.checkpoint",
                                 reason="vidclip.models.checkpoint (load_checkpoint) not there yet")
from vidclip.core.errors import ConfigError  # noqa: E402
from vidclip.features.pooling import Pooler  # noqa: E402
from vidclip.recognition.run import check_pooling, classify_pooler, zero_shot_classifier  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tiny_clip, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rec-temporal")
    data = make_feature_dataset(tmp / "ds", tiny_clip.identity.to_dict(), tiny_clip.embed_dim)
    run_train(tiny_config(data, tmp, "model.temporal=seq_transformer", "model.text_tower=finetune"), tiny_clip)
    return tmp / "run"


def write_store(root, clip, videos: dict[str, np.ndarray]):
    from vidclip.features.store import FeatureStore, FeatureWriter

    with FeatureWriter(root, clip.identity.to_dict(), {"name": "uniform", "num_frames": 8}) as w:
        for key, emb in videos.items():
            w.add(key, f"{key}.mp4", emb, np.arange(len(emb)), np.arange(len(emb), dtype=np.float64))
    return FeatureStore(root)


def test_checkpoint_pools_with_its_trained_module_and_sees_frame_order(tiny_clip, run_dir, tmp_path):
    from vidclip.models.temporal.base import l2_normalize

    frames = np.random.default_rng(0).standard_normal((6, tiny_clip.embed_dim)).astype(np.float16)
    store = write_store(tmp_path / "store", tiny_clip, {"fwd": frames, "rev": frames[::-1].copy()})
    pooler = Pooler.create(str(run_dir), tiny_clip)
    assert pooler.spec["name"] == "checkpoint" and pooler.spec["module"] == "seq_transformer"
    assert len(pooler.spec["digest"]) == 16 and pooler.max_frames == 8
    got = torch.from_numpy(pooler.pool_store(store, ["fwd", "rev"]))

    # Reference: the checkpoint's module on the stored frames (padded to max_frames, masked).
    module = checkpoint.load_checkpoint(run_dir, clip=tiny_clip, device="cpu").model.temporal.eval()
    x = torch.zeros(2, 8, tiny_clip.embed_dim)
    x[0, :6] = torch.from_numpy(frames.astype(np.float32))
    x[1, :6] = torch.from_numpy(frames[::-1].astype(np.float32))
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :6] = True
    with torch.no_grad():
        want = l2_normalize(module(x, mask).float())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert torch.allclose(got.norm(dim=1), torch.ones(2))
    # Order-aware: reversing the frames moves the feature; the mean cannot tell them apart.
    assert (got[0] - got[1]).abs().max() > 1e-3
    mean = torch.from_numpy(Pooler.create("mean", tiny_clip).pool_store(store, ["fwd", "rev"]))
    torch.testing.assert_close(mean[0], mean[1])


def test_zero_shot_text_weights_come_from_the_checkpoints_text_tower(tiny_clip, run_dir):
    pooler = Pooler.create(str(run_dir), tiny_clip)
    assert pooler.text_tower is not None
    tower = checkpoint.load_checkpoint(run_dir, clip=tiny_clip, device="cpu").model.text_tower.eval()
    templates, names = ["a {}", "{} on video"], ["red ball moves left", "blue ball moves up"]
    with torch.no_grad():
        emb = tower(tiny_clip.tokenize([t.format(n) for n in names for t in templates])).float()
    emb = torch.nn.functional.normalize(emb, dim=-1).reshape(2, 2, -1).mean(1)
    want = torch.nn.functional.normalize(emb, dim=-1)
    got = zero_shot_classifier(tiny_clip, ["a", "b"], templates=templates, names=dict(zip("ab", names)),
                               text_tower=pooler.text_tower).text_weights
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    frozen = zero_shot_classifier(tiny_clip, ["a", "b"], templates=templates, names=dict(zip("ab", names))).text_weights
    assert (frozen - got).abs().max() > 1e-3  # the fine-tuned tower moved away from the frozen one


def test_classifier_pooled_otherwise_is_refused(tiny_clip, run_dir):
    pooler = Pooler.create(str(run_dir), tiny_clip)
    check_pooling(pooler, dict(pooler.spec, path="/moved/best.safetensors"), "clf.safetensors")  # same checkpoint
    with pytest.raises(ConfigError, match="clf.safetensors: classifier was fitted on video features pooled by"):
        check_pooling(pooler, {"name": "mean"}, "clf.safetensors")
    with pytest.raises(ConfigError, match="neither 'mean' nor an existing checkpoint"):
        classify_pooler(str(run_dir / "nope.safetensors"), tiny_clip)


@pytest.mark.slow
def test_classify_cli_with_a_checkpoint(tiny_clip, run_dir, tmp_path, capsys):
    from vidclip.cli.main import main
    from vidclip.synthetic.actions import make_synthetic_actions

    actions = tmp_path / "actions"
    make_synthetic_actions(actions, train_per_class=2, test_per_class=1, colors=("red",), directions=("left", "up"),
                           seed=3, num_frames=6)
    common = ["--model", "tiny-vit", "--pretrained", "none", "--device", "cpu", "--workers", "0", "--num-frames", "4",
              "--quiet", "--temporal", str(run_dir), "--features", str(tmp_path / "feats"), "--json"]
    code = main(["classify", "--data", str(actions / "test"), "--train", str(actions / "train"), "--method", "gda",
                 "--shots", "2", "--save", str(tmp_path / "gda.safetensors"), *common])
    out = capsys.readouterr()
    assert code == 0, out.err
    r = json.loads(out.out)
    assert r["temporal"]["name"] == "checkpoint" and r["temporal"]["module"] == "seq_transformer"
    assert r["test"]["videos"] == 2 and r["fit"]["train_videos"] == 4
    # The saved classifier is reused with the same checkpoint and refused with mean pooling.
    code = main(["classify", "--classifier", str(tmp_path / "gda.safetensors"), str(actions / "test"), *common])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert len(json.loads(out.out)["predictions"]) == 2
    mean_args = [a if a != str(run_dir) else "mean" for a in common]
    code = main(["classify", "--classifier", str(tmp_path / "gda.safetensors"), str(actions / "test"), *mean_args])
    assert code == 2 and "classifier was fitted on video features pooled by" in capsys.readouterr().err
