"""Tests of vidclip/models/clip/preprocess.py: geometry, values, batching, errors.

References are independent of the implementation: PIL + torchvision (what CLIP's own eval
transform uses) and hand-computed crops / normalisation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vidclip.core.errors import VidclipError
from vidclip.models.clip import preprocess as pp
from vidclip.models.clip.geometry import crop_offsets, resized_shape
from vidclip.models.clip.preprocess import (
    FrameFormatError,
    normalize_pixels,
    preprocess_frames,
    resize_center_crop,
)

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def smooth_frames(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Natural-ish uint8 frames: smooth gradients + blobs (resampling filters agree on these)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    out = []
    for _ in range(n):
        a = torch.rand(3, 4, generator=g)
        chans = [
            a[c, 0] * 255 * (0.5 + 0.5 * torch.sin(6 * a[c, 1] * xx + 4 * a[c, 2] * yy + a[c, 3] * 6))
            for c in range(3)
        ]
        out.append(torch.stack(chans, -1))
    return torch.stack(out).clamp(0, 255).round().to(torch.uint8)


def pil_reference(frame: torch.Tensor, s: int) -> np.ndarray:
    """torchvision's Resize(s, BICUBIC) + CenterCrop(s) on a PIL image, as open_clip/OpenAI CLIP do."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    img = Image.fromarray(frame.numpy())
    img = CenterCrop(s)(Resize(s, interpolation=InterpolationMode.BICUBIC)(img))
    return np.asarray(img)


@pytest.mark.parametrize("h,w", [(48, 64), (64, 48), (37, 91), (240, 320), (33, 32)])
def test_resize_center_crop_matches_pil(h, w):
    s = 32
    frames = smooth_frames(3, h, w)
    got = resize_center_crop(frames, s)
    assert got.dtype == torch.uint8 and got.shape == (3, s, s, 3)
    for i in range(3):
        ref = pil_reference(frames[i], s).astype(np.int32)
        diff = np.abs(got[i].numpy().astype(np.int32) - ref)
        # torch's uint8 AA resampler is a port of PIL's: at most off-by-one rounding, rarely.
        # (bilinear instead of bicubic gives mean ~0.05-0.12 here, a 1-px crop shift ~2-3)
        assert diff.max() <= 1, (h, w, diff.max())
        assert diff.mean() < 0.02, (h, w, diff.mean())


def test_resized_shape_matches_torchvision_rule():
    from torchvision.transforms import Resize

    for h, w in [(240, 320), (320, 240), (1080, 1920), (180, 320), (256, 340), (101, 103)]:
        img = Image.new("RGB", (w, h))
        out = Resize(224)(img)
        assert resized_shape(h, w, 224) == (out.size[1], out.size[0])


def test_crop_offsets_match_torchvision_centercrop():
    from torchvision.transforms import CenterCrop

    for h, w, s in [(224, 298, 224), (225, 224, 224), (17, 40, 16), (16, 27, 16), (300, 301, 224)]:
        img = Image.fromarray(np.arange(h * w, dtype=np.uint32).reshape(h, w).astype(np.int32), mode="I")
        top, left = crop_offsets(h, w, s)
        want = np.asarray(img)[top:top + s, left:left + s]
        np.testing.assert_array_equal(np.asarray(CenterCrop(s)(img)), want)


def test_crop_only_when_short_side_already_fits_is_exact():
    # short side == S: no resampling at all, only the crop, whose offset we compute by hand:
    # torchvision CenterCrop left = round((W - S) / 2).
    s, h, w = 16, 16, 27
    frames = torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    got = resize_center_crop(frames, s)
    left = int(round((w - s) / 2.0))  # = 6 (5.5 rounds half to even)
    assert left == 6
    assert torch.equal(got, frames[:, :, left:left + s, :])
    # exact square input: returned untouched
    sq = frames[:, :, :s, :].contiguous()
    assert torch.equal(resize_center_crop(sq, s), sq)


def test_normalize_hand_computed():
    frames = torch.tensor([[[[0, 128, 255], [10, 20, 30]]]], dtype=torch.uint8)  # [1,1,2,3]
    got = normalize_pixels(frames, MEAN, STD)
    assert got.shape == (1, 3, 1, 2) and got.dtype == torch.float32
    for y in range(1):
        for x in range(2):
            for c in range(3):
                want = (frames[0, y, x, c].item() / 255.0 - MEAN[c]) / STD[c]
                assert abs(got[0, c, y, x].item() - want) < 1e-6


def test_preprocess_is_crop_then_normalise_and_matches_pil_pipeline():
    s = 32
    frames = smooth_frames(4, 60, 80, seed=3)
    got = preprocess_frames(frames, s, MEAN, STD)
    assert got.shape == (4, 3, s, s) and got.dtype == torch.float32
    assert torch.equal(got, normalize_pixels(resize_center_crop(frames, s), MEAN, STD))
    # the full PIL / torchvision pipeline (ToTensor + Normalize)
    for i in range(4):
        ref = torch.from_numpy(pil_reference(frames[i], s).copy()).float().div(255).permute(2, 0, 1)
        ref = (ref - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
        assert (got[i] - ref).abs().max() < 2.5 / 255 / min(STD)


def test_batch_equals_per_frame_and_chunking(monkeypatch):
    frames = smooth_frames(5, 50, 70, seed=4)
    whole = resize_center_crop(frames, 24)
    single = torch.cat([resize_center_crop(frames[i:i + 1], 24) for i in range(5)])
    assert torch.equal(whole, single)
    # force the memory-bounded chunking path (1-2 frames per chunk)
    monkeypatch.setattr(pp, "_CHUNK_BYTES", 4 * 3 * (50 * 70 + 24 * 33) * 2)
    assert torch.equal(resize_center_crop(frames, 24), whole)


def test_float_path_agrees_with_uint8_kernel(monkeypatch):
    # CUDA has no uint8 bicubic kernel, so there we resize in float32 and round; check that path
    # (run on CPU) against the uint8 one.
    frames = smooth_frames(3, 45, 77, seed=5)
    ref = resize_center_crop(frames, 32)
    monkeypatch.setattr(pp, "_uint8_kernel_ok", lambda device, interpolation: False)
    got = resize_center_crop(frames, 32)
    assert (got.int() - ref.int()).abs().max() <= 1
    assert (got.float() - ref.float()).abs().mean() < 0.25


def test_empty_batch():
    out = preprocess_frames(torch.zeros((0, 20, 30, 3), dtype=torch.uint8), 16, MEAN, STD)
    assert out.shape == (0, 3, 16, 16)


@pytest.mark.parametrize(
    "bad,needle",
    [
        (torch.zeros((2, 8, 8, 3), dtype=torch.float32), "uint8"),
        (torch.zeros((8, 8, 3), dtype=torch.uint8), "[8, 8, 3]"),
        (torch.zeros((1, 8, 8, 4), dtype=torch.uint8), "[N,H,W,3]"),
        (np.zeros((1, 8, 8, 3), dtype=np.uint8), "ndarray"),
        (torch.zeros((1, 0, 8, 3), dtype=torch.uint8), "zero height"),
    ],
)
def test_bad_input_raises_typed_error(bad, needle):
    with pytest.raises(FrameFormatError) as ei:
        preprocess_frames(bad, 16, MEAN, STD)
    assert isinstance(ei.value, VidclipError) and isinstance(ei.value, ValueError)
    assert "frames" in str(ei.value) and needle in str(ei.value)


def test_bad_parameters():
    f = torch.zeros((1, 8, 8, 3), dtype=torch.uint8)
    with pytest.raises(FrameFormatError, match="image_size"):
        resize_center_crop(f, 0)
    with pytest.raises(FrameFormatError, match="interpolation"):
        resize_center_crop(f, 4, interpolation="lanczos")
    with pytest.raises(FrameFormatError, match="std"):
        normalize_pixels(f, MEAN, (1.0, 0.0, 1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    frames = smooth_frames(4, 120, 200, seed=6)
    cpu = preprocess_frames(frames, 64, MEAN, STD)
    gpu = preprocess_frames(frames.cuda(), 64, MEAN, STD)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max() <= 2.5 / 255 / min(STD)
