"""Library index with a trained temporal module (``--temporal CKPT``): pooled and text-conditioned.

Checkpoints are written here with vidclip.train.model.save_weights around randomly initialised
modules (weights are seeded; the numbers are arbitrary but the computation is the real one).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from index_testutil import make_clip

from vidclip.core.errors import IndexMismatchError

MAX_FRAMES = 6


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    lib = tmp_path_factory.mktemp("tlib")
    for i in range(4):
        make_clip(lib / f"t{i}.mp4", seed=40 + i, seconds=1.0 + 0.5 * i)  # 4..10 frames at 4 fps
    return lib


def _checkpoint(tmp_path, clip, temporal: str, text_tower: str = "frozen", full: bool = False):
    from vidclip.models.checkpoint import (
        LogitScale,
        RetrievalModel,
        TextTower,
        build_temporal,
        load_checkpoint,
    )
    from vidclip.train.config import config_from_dict
    from vidclip.train.model import save_weights

    cfg = config_from_dict({"model": {"clip": "tiny-vit", "pretrained": None, "temporal": temporal,
                                      "max_frames": MAX_FRAMES, "text_tower": text_tower}})
    torch.manual_seed(3)
    tower = TextTower(clip) if text_tower == "finetune" else None
    model = RetrievalModel(build_temporal(cfg.model, clip), LogitScale(), tower)
    with torch.no_grad():  # move away from the init so that the trained parts matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / f"{temporal}-{text_tower}.safetensors"
    save_weights(path, model, cfg, clip.identity.to_dict())
    loaded = load_checkpoint(path, clip=clip).model
    return path, (loaded if full else loaded.temporal)


def _stored_frames(vi, row):
    return vi._frames(row)


def _subsample(frames: np.ndarray, n: int) -> np.ndarray:
    t = frames.shape[0]
    if t <= n:
        return frames
    return frames[np.floor((np.arange(n) + 0.5) * t / n).astype(int)]  # eval-mode uniform rule


def test_pooling_checkpoint_vectors_match_module(tmp_path, tiny_clip, windows_sampler, library):
    from vidclip.index import VideoIndex, index_library

    ckpt, module = _checkpoint(tmp_path, tiny_clip, "seq_transformer")
    idx = tmp_path / "idx"
    r = index_library(library, idx, tiny_clip, windows_sampler, temporal=ckpt, workers=0, progress=False)
    assert r.indexed == 4 and not r.failed
    vi = VideoIndex.open(idx, clip=tiny_clip)
    try:
        assert vi.pooler.spec["module"] == "seq_transformer" and not vi.pooler.conditioned
        q = tiny_clip.encode_text(["a bar"])[0].numpy()
        q = q / np.linalg.norm(q)
        hits = vi.search("a bar", k=4)
        ref = {}
        for h in hits:
            row = vi.get_video(h.video_id)
            frames = _subsample(_stored_frames(vi, row), MAX_FRAMES)
            with torch.no_grad():
                v = module(torch.from_numpy(frames)[None], torch.ones(1, frames.shape[0], dtype=torch.bool))[0].numpy()
            ref[h.video_id] = float(v @ q / np.linalg.norm(v))
        assert [h.video_id for h in hits] == sorted(ref, key=lambda i: -ref[i])
        for h in hits:
            assert h.score == pytest.approx(ref[h.video_id], abs=1e-4)
        # the module (not a mean) made the vectors: a mean-pooled index scores differently
        mean_vec = _stored_frames(vi, vi.get_video(hits[0].video_id))
        mean_vec = (mean_vec / np.linalg.norm(mean_vec, axis=1, keepdims=True)).mean(0)
        assert abs(float(mean_vec @ q / np.linalg.norm(mean_vec)) - hits[0].score) > 1e-3
    finally:
        vi.close()
    with pytest.raises(IndexMismatchError, match="temporal module"):
        index_library(library, idx, tiny_clip, windows_sampler, temporal="mean", workers=0, progress=False)


def test_text_conditioned_checkpoint_reranks_with_module(tmp_path, tiny_clip, windows_sampler, library):
    from vidclip.index import VideoIndex, index_library

    ckpt, module = _checkpoint(tmp_path, tiny_clip, "xpool")
    idx = tmp_path / "idx"
    index_library(library, idx, tiny_clip, windows_sampler, temporal=ckpt, workers=0, progress=False)
    vi = VideoIndex.open(idx, clip=tiny_clip)
    try:
        assert vi.pooler.conditioned
        text = tiny_clip.encode_text(["a moving bar"])  # raw, as the module was trained on
        hits = vi.search("a moving bar", k=4)
        ref = {}
        for h in hits:
            frames = _subsample(_stored_frames(vi, vi.get_video(h.video_id)), MAX_FRAMES)
            with torch.no_grad():  # one video at a time: no padding involved
                s = module.similarity(text, torch.from_numpy(frames)[None],
                                      torch.ones(1, frames.shape[0], dtype=torch.bool))
            ref[h.video_id] = float(s[0, 0])
        assert [h.video_id for h in hits] == sorted(ref, key=lambda i: -ref[i])
        for h in hits:
            assert h.score == pytest.approx(ref[h.video_id], abs=1e-4)
        top2 = vi.search("a moving bar", k=2)
        assert [h.video_id for h in top2] == [h.video_id for h in hits[:2]]  # reranked before the cut
    finally:
        vi.close()


def test_finetuned_text_tower_encodes_the_queries(tmp_path, tiny_clip, windows_sampler, library):
    from vidclip.index import VideoIndex, index_library

    ckpt, model = _checkpoint(tmp_path, tiny_clip, "mean", text_tower="finetune", full=True)
    idx = tmp_path / "idx"
    index_library(library, idx, tiny_clip, windows_sampler, temporal=ckpt, workers=0, progress=False)
    vi = VideoIndex.open(idx, clip=tiny_clip)
    try:
        with torch.no_grad():
            q = model.encode_text(tiny_clip.tokenize(["a bar"]))[0].numpy()
            frozen = tiny_clip.encode_text(["a bar"])[0].numpy()
        q, frozen = q / np.linalg.norm(q), frozen / np.linalg.norm(frozen)
        assert abs(float(q @ frozen)) < 0.999  # the tuned tower really differs from the frozen one
        for h in vi.search("a bar", k=4):
            frames = _subsample(_stored_frames(vi, vi.get_video(h.video_id)), MAX_FRAMES)  # as in training
            unit = frames / np.linalg.norm(frames, axis=1, keepdims=True)
            v = unit.mean(0) / np.linalg.norm(unit.mean(0))
            assert h.score == pytest.approx(float(v @ q), abs=1e-4)
    finally:
        vi.close()
