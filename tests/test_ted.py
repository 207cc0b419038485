"""Tests of vidclip/models/temporal/ted.py (M2-CLIP TED adapters) on the tiny random-init open_clip ViT.

References: hand-written loops for the adapter math (temporal depthwise conv, frame
differences, spatial depthwise 3x3 conv), and the unmodified frozen model for the
identity-at-initialisation property.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch_testutil import perturb_

from vidclip.core.errors import ConfigError
from vidclip.models.clip.load import load_clip
from vidclip.models.temporal.base import trainable_parameters
from vidclip.models.temporal.registry import create_temporal
from vidclip.models.temporal.ted import TEDAdapter, TEDVideoEncoder, TemporalAdapter


@pytest.fixture(scope="module")
def clip():
    return load_clip("tiny-vit")  # ViT: 32 px, patch 8 (4x4 grid), width 64, 2 blocks, D=32


def pixels(clip, B=2, T=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, 3, clip.image_size, clip.image_size, generator=g)


def dbl(t):
    return t.detach().double()


# ------------------------------------------------------------------------------------------
# hand-written references
# ------------------------------------------------------------------------------------------
def ref_temporal_conv(conv, h, b, t, n, T):
    """Depthwise temporal conv at (b, t, token n): bias + sum_j w[:, j] * h[b, t + j - k//2, n]."""
    w, k = dbl(conv.weight)[:, 0, :], conv.weight.shape[-1]
    out = dbl(conv.bias).clone()
    for j in range(k):
        s = t + j - k // 2
        if 0 <= s < T:
            out += w[:, j] * h[b][s][n]
    return out


def ref_ted_adapter(ad, x, B, T, mask):
    """TED written out per frame, token and patch: x [B*T, 1+gh*gw, C] -> same (float64)."""
    x = dbl(x).view(B, T, x.shape[1], x.shape[2])
    L = x.shape[2]
    gh, gw = ad.grid
    out = x.clone()

    def lin(layer, v):
        return dbl(layer.weight) @ v + dbl(layer.bias)

    # temporal enhancement on every token; padded frames contribute zeros
    h = [[[lin(ad.te_fc1, x[b, t, n]) * float(mask[b, t]) for n in range(L)] for t in range(T)] for b in range(B)]
    for b in range(B):
        for t in range(T):
            for n in range(L):
                out[b, t, n] += lin(ad.te_fc2, ref_temporal_conv(ad.te_conv, h, b, t, n, T))
    # temporal difference on patches: fc1(x_t - x_{t-1}) (zero for t=0 / padded t-1), 3x3 dwconv
    wsp, bsp = dbl(ad.td_conv.weight)[:, 0], dbl(ad.td_conv.bias)
    for b in range(B):
        for t in range(T):
            e = []
            for p in range(gh * gw):
                delta = x[b, t, 1 + p] - x[b, t - 1, 1 + p] if t > 0 and mask[b, t - 1] else torch.zeros_like(x[b, t, 1 + p])
                e.append(lin(ad.td_fc1, delta))
            for i in range(gh):
                for j in range(gw):
                    s = bsp.clone()
                    for di in (-1, 0, 1):
                        for dj in (-1, 0, 1):
                            if 0 <= i + di < gh and 0 <= j + dj < gw:
                                s += wsp[:, di + 1, dj + 1] * e[(i + di) * gw + (j + dj)]
                    out[b, t, 1 + i * gw + j] += lin(ad.td_fc2, s)
    return out.view(B * T, L, -1)


def ref_temporal_adapter(ta, x, mask):
    B, T, _ = x.shape
    h = [[[(dbl(ta.fc1.weight) @ dbl(x[b, t]) + dbl(ta.fc1.bias)) * float(mask[b, t])] for t in range(T)]
         for b in range(B)]
    out = dbl(x).clone()
    for b in range(B):
        for t in range(T):
            out[b, t] += dbl(ta.fc2.weight) @ ref_temporal_conv(ta.conv, h, b, t, 0, T) + dbl(ta.fc2.bias)
    return out


# ------------------------------------------------------------------------------------------
# adapter math
# ------------------------------------------------------------------------------------------
def test_ted_adapter_matches_reference():
    ad = perturb_(TEDAdapter(width=6, bottleneck=4, grid=(2, 3), kernel_size=3), scale=0.2, seed=5)
    B, T = 2, 4
    x = torch.randn(B * T, 1 + 6, 6)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    torch.testing.assert_close(ad(x, B, T, mask).double(), ref_ted_adapter(ad, x, B, T, mask), atol=1e-5, rtol=0)
    # kernel 5 reaches two frames each way
    ad5 = perturb_(TEDAdapter(width=6, bottleneck=4, grid=(2, 3), kernel_size=5), scale=0.2, seed=7)
    torch.testing.assert_close(ad5(x, B, T, mask).double(), ref_ted_adapter(ad5, x, B, T, mask), atol=1e-5, rtol=0)


def test_temporal_adapter_matches_reference():
    ta = perturb_(TemporalAdapter(8), scale=0.2, seed=5)
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    torch.testing.assert_close(ta(x, mask).double(), ref_temporal_adapter(ta, x, mask), atol=1e-5, rtol=0)


def test_adapters_are_identity_at_init():
    ad = TEDAdapter(width=6, bottleneck=4, grid=(2, 3))
    x = torch.randn(8, 7, 6)
    assert torch.equal(ad(x, 2, 4, torch.ones(2, 4, dtype=torch.bool)), x)
    ta = TemporalAdapter(8)
    y = torch.randn(2, 5, 8)
    assert torch.equal(ta(y, torch.ones(2, 5, dtype=torch.bool)), y)
    assert not ad.te_fc2.weight.any() and not ad.td_fc2.weight.any() and not ta.fc2.weight.any()


# ------------------------------------------------------------------------------------------
# the encoder
# ------------------------------------------------------------------------------------------
def test_reproduces_frozen_clip_at_init(clip):
    ted = create_temporal("ted", clip.embed_dim, max_frames=8, clip=clip)
    assert isinstance(ted, TEDVideoEncoder) and ted.needs_pixels
    px = pixels(clip)
    frozen = clip.encode_frames(px.flatten(0, 1)).view(2, 4, -1)
    torch.testing.assert_close(ted.frame_embeddings(px), frozen, atol=1e-6, rtol=0)
    video = F.normalize(frozen.mean(1), dim=-1)
    torch.testing.assert_close(ted(px, torch.ones(2, 4, dtype=torch.bool)), video, atol=1e-6, rtol=0)


def test_adapted_forward_matches_reference(clip):
    """Adapters inserted between attention and MLP of every block, then pool, then TA."""
    ted = perturb_(TEDVideoEncoder(clip, num_frames=8), scale=0.05, seed=5)
    B, T = 2, 3
    px = pixels(clip, B, T, seed=3)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    v = clip.model.visual
    with torch.no_grad():
        h = v._embeds(px.flatten(0, 1))
        for i, blk in enumerate(v.transformer.resblocks):
            h = h + blk.attention(blk.ln_1(h))
            h = ref_ted_adapter(ted.adapters[str(i)], h, B, T, mask).float()
            h = h + blk.mlp(blk.ln_2(h))
        emb = (v.ln_post(h[:, 0]) @ v.proj).view(B, T, -1)
        want = ref_temporal_adapter(ted.temporal_adapter, emb, mask)
        got = ted.frame_embeddings(px, mask)
    torch.testing.assert_close(got[mask].double(), want[mask], atol=1e-4, rtol=0)
    assert (got - clip.encode_frames(px.flatten(0, 1)).view(B, T, -1))[mask].abs().max() > 1e-3


def test_padding_does_not_change_output(clip):
    ted = perturb_(TEDVideoEncoder(clip, num_frames=8), scale=0.05, seed=5).eval()
    a, b = pixels(clip, 1, 3, seed=1), pixels(clip, 1, 5, seed=2)
    garbage = 50 * pixels(clip, 1, 2, seed=9)
    batched = torch.cat([torch.cat([a, garbage], dim=1), b])  # [2, 5, ...]; video a padded 3 -> 5
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    with torch.no_grad():
        out = ted(batched, mask)
        torch.testing.assert_close(out[0], ted(a)[0], atol=2e-6, rtol=0)
        torch.testing.assert_close(out[1], ted(b)[0], atol=2e-6, rtol=0)
        fe = ted.frame_embeddings(batched, mask)
        torch.testing.assert_close(fe[0, :3], ted.frame_embeddings(a)[0], atol=2e-6, rtol=0)


def test_adapters_mix_information_across_frames(clip):
    ted = perturb_(TEDVideoEncoder(clip, num_frames=8), scale=0.05, seed=5).eval()
    px = pixels(clip, 1, 4, seed=4)
    px2 = px.clone()
    px2[0, 2] = pixels(clip, 1, 1, seed=8)[0, 0]  # change frame 2 only
    with torch.no_grad():
        e1, e2 = ted.frame_embeddings(px), ted.frame_embeddings(px2)
        f1 = clip.encode_frames(px[0])
        f2 = clip.encode_frames(px2[0])
    torch.testing.assert_close(f1[1], f2[1])  # frozen CLIP: frame 1 unaffected
    assert (e1[0, 1] - e2[0, 1]).abs().max() > 1e-4  # TED: neighbour frame 1 sees the change
    # receptive field: one adapted block (kernel 3) and no TA reach exactly one frame each way
    one = perturb_(TEDVideoEncoder(clip, num_frames=8, adapter_layers=1, temporal_adapter=False), scale=0.05, seed=5)
    with torch.no_grad():
        o1, o2 = one.frame_embeddings(px), one.frame_embeddings(px2)
    assert (o1[0, 1] - o2[0, 1]).abs().max() > 1e-4 and (o1[0, 3] - o2[0, 3]).abs().max() > 1e-4
    torch.testing.assert_close(o1[0, 0], o2[0, 0], atol=1e-6, rtol=0)


def test_only_adapters_train(clip):
    ted = TEDVideoEncoder(clip, num_frames=8)
    backbone = {k: v.clone() for k, v in clip.model.state_dict().items()}
    adapters0 = {k: v.clone() for k, v in ted.state_dict().items()}
    # the module's parameters are the adapters only, all trainable; the backbone is frozen
    assert all(p.requires_grad for p in ted.parameters())
    assert not any(p.requires_grad for p in clip.model.parameters())
    assert not {id(p) for p in ted.parameters()} & {id(p) for p in clip.model.parameters()}
    assert all(k.startswith(("adapters.", "temporal_adapter.")) for k in ted.state_dict())
    assert trainable_parameters(ted) == sum(p.numel() for p in ted.parameters()) > 0

    ted.train()
    assert not clip.model.training  # the backbone stays in eval mode
    opt = torch.optim.SGD(ted.parameters(), lr=0.5)
    px = pixels(clip, 2, 3)
    target = F.normalize(torch.randn(2, clip.embed_dim), dim=-1)
    loss = -(ted(px) * target).sum()
    loss.backward()
    opt.step()
    changed = [k for k, v in ted.state_dict().items() if not torch.equal(v, adapters0[k])]
    # zero-init last projections receive the first gradient (of every block and of the TA)...
    assert {"adapters.0.te_fc2.weight", "adapters.0.td_fc2.weight", "adapters.1.te_fc2.weight",
            "temporal_adapter.fc2.weight"} <= set(changed)
    # ...except TD of the last block: it only touches patch tokens after the last attention, and
    # the class-token pooling never reads them (as in M2-CLIP's adapter_pre_mlp placement)
    assert "adapters.1.td_fc2.weight" not in changed
    for k, v in clip.model.state_dict().items():
        assert torch.equal(v, backbone[k]), k
    with torch.no_grad():
        assert -(ted(px) * target).sum() < loss  # the step helped


def test_grad_checkpointing_gives_same_gradients(clip):
    a = perturb_(TEDVideoEncoder(clip, num_frames=4), scale=0.05, seed=5)
    b = copy.deepcopy(a)
    assert b.clip is a.clip  # the frozen backbone is shared, not duplicated
    b.grad_checkpointing = True
    px = pixels(clip, 1, 3)
    for m in (a, b):
        m.train()
        m(px).sum().backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-6, rtol=0, msg=n)


def test_options_and_errors(clip):
    ted = TEDVideoEncoder(clip, num_frames=4, bottleneck=8, adapter_layers=1, temporal_adapter=False)
    assert list(ted.adapters) == ["1"] and ted.temporal_adapter is None
    assert ted.adapters["1"].te_fc1.out_features == 8
    with pytest.raises(ConfigError, match="exceed num_frames=4"):
        ted(pixels(clip, 1, 5))
    with pytest.raises(ConfigError, match=r"pixels must be float \[B, T, 3, 32, 32\]"):
        ted(torch.zeros(1, 2, 3, 16, 16))
    with pytest.raises(ConfigError, match=r"mask must be \[B=1, T=2\]"):
        ted(pixels(clip, 1, 2), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ConfigError, match="adapter_layers"):
        TEDVideoEncoder(clip, num_frames=4, adapter_layers=5)
    with pytest.raises(ConfigError, match="kernel_size"):
        TEDVideoEncoder(clip, num_frames=4, kernel_size=2)
    with pytest.raises(ConfigError, match="needs the FrozenCLIP"):
        create_temporal("ted", 32)
    with pytest.raises(ConfigError, match="embed_dim 16 differs"):
        create_temporal("ted", 16, clip=clip)
    # uint8 frames are preprocessed with the model's own preprocessing
    u8 = torch.randint(0, 256, (1, 2, 40, 48, 3), dtype=torch.uint8)
    want = clip.encode_frames(u8[0])
    torch.testing.assert_close(TEDVideoEncoder(clip, num_frames=4).frame_embeddings(u8)[0], want, atol=1e-6, rtol=0)


def test_hf_models_are_rejected_clearly():
    hf = load_clip("hf-tiny")
    with pytest.raises(ConfigError, match="open_clip ViTs only"):
        create_temporal("ted", hf.embed_dim, clip=hf)


def test_similarity_takes_pixels(clip):
    ted = perturb_(TEDVideoEncoder(clip, num_frames=4), scale=0.05, seed=5).eval()
    px = pixels(clip, 2, 3)
    t = torch.randn(3, clip.embed_dim)
    with torch.no_grad():
        sim = ted.similarity(t, px)
        torch.testing.assert_close(sim, F.normalize(t, dim=-1) @ ted(px).T)
