"""Tests of vidclip/models/temporal/base.py.

Every module is checked against a hand-written reference (plain Python loops over videos,
texts, heads and tokens in float64, computed only over each video's *real* frames), so the
same comparison also proves that padding does not change the output.
"""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_testutil import perturb_

from vidclip.core.errors import ConfigError
from vidclip.models.clip.load import load_clip, register_config_dir
from vidclip.models.temporal.base import TemporalModule, trainable_parameters
from vidclip.models.temporal.registry import (
    TEMPORAL_MODULES,
    create_temporal,
    list_temporal,
    register_temporal,
)
from vidclip.models.temporal.transformer import QuickGELU, ResidualAttentionBlock, _copy_text_block

D = 16


def batch(seed=0, B=3, T=5, D=D, lengths=(5, 3, 1)):
    """Random raw frame embeddings with norms far from 1 and garbage in the padded slots."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(B, T, D, generator=g) * torch.rand(B, T, 1, generator=g).mul(4).add(0.5)
    mask = torch.zeros(B, T, dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, :n] = True
    frames = torch.where(mask.unsqueeze(-1), frames, 100 * torch.randn(B, T, D, generator=g))
    return frames, mask


def texts(seed=1, Q=4, D=D):
    return torch.randn(Q, D, generator=torch.Generator().manual_seed(seed)) * 3


# ------------------------------------------------------------------------------------------
# hand-written references (float64, loops)
# ------------------------------------------------------------------------------------------
def dbl(t):
    return t.detach().double()


def unit(v):
    n = math.sqrt(float((v * v).sum()))
    return v / max(n, 1e-8)


def ref_layernorm(x, ln):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * dbl(ln.weight) + dbl(ln.bias)


def ref_act(act, x):
    if isinstance(act, QuickGELU):
        return x * torch.sigmoid(1.702 * x)
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    raise AssertionError(f"no reference for activation {act!r}")


def ref_block(x, blk):
    """Pre-LN CLIP block on real tokens x [L, W] (float64), attention head by head, token by token."""
    L, W = x.shape
    H = blk.attn.num_heads
    hd = W // H
    h = ref_layernorm(x, blk.ln_1)
    Wi, bi = dbl(blk.attn.in_proj_weight), dbl(blk.attn.in_proj_bias)
    q = h @ Wi[:W].T + bi[:W]
    k = h @ Wi[W:2 * W].T + bi[W:2 * W]
    v = h @ Wi[2 * W:].T + bi[2 * W:]
    att = torch.zeros(L, W, dtype=torch.float64)
    for head in range(H):
        sl = slice(head * hd, (head + 1) * hd)
        for i in range(L):
            s = torch.stack([(q[i, sl] * k[j, sl]).sum() / math.sqrt(hd) for j in range(L)])
            w = torch.exp(s - s.max())
            w = w / w.sum()
            att[i, sl] = sum(w[j] * v[j, sl] for j in range(L))
    x = x + att @ dbl(blk.attn.out_proj.weight).T + dbl(blk.attn.out_proj.bias)
    h2 = ref_layernorm(x, blk.ln_2)
    m = ref_act(blk.mlp.gelu, h2 @ dbl(blk.mlp.c_fc.weight).T + dbl(blk.mlp.c_fc.bias))
    return x + m @ dbl(blk.mlp.c_proj.weight).T + dbl(blk.mlp.c_proj.bias)


def mean_of_units(rows):
    return unit(sum(unit(r) for r in rows) / len(rows))


def ref_mean(frames, mask):
    out = []
    for b in range(frames.shape[0]):
        rows = [dbl(frames[b, t]) for t in range(frames.shape[1]) if mask[b, t]]
        out.append(mean_of_units(rows))
    return torch.stack(out)


def ref_query_scoring(frames, mask, text, tau):
    Q, B = text.shape[0], frames.shape[0]
    out = torch.zeros(Q, B, frames.shape[2], dtype=torch.float64)
    for q in range(Q):
        tq = unit(dbl(text[q]))
        for b in range(B):
            real = [dbl(frames[b, t]) for t in range(frames.shape[1]) if mask[b, t]]
            e = [math.exp(float((tq * unit(f)).sum()) / tau) for f in real]
            out[q, b] = unit(sum(w / sum(e) * f for w, f in zip(e, real)))  # raw frames
    return out


def ref_seq_transformer(m, frames, mask):
    out = []
    P = dbl(m.frame_position_embeddings.weight)
    for b in range(frames.shape[0]):
        n = int(mask[b].sum())
        f = dbl(frames[b, :n])
        x = f + P[:n]
        for blk in m.transformer:
            x = ref_block(x, blk)
        out.append(mean_of_units(list(x + f)))
    return torch.stack(out)


def ref_tdb(m, frames, mask):
    """CLIP2Video TDB written out token by token for each video's real frames."""
    P = dbl(m.frame_position_embeddings.weight)
    E = dbl(m.type_position_embeddings.weight)
    out = []
    for b in range(frames.shape[0]):
        n = int(mask[b].sum())
        f = dbl(frames[b, :n])
        diffs = []
        if n > 1:
            d = torch.stack([f[t + 1] - f[t] + P[t + 1] for t in range(n - 1)])
            for blk in m.frame2t_attention:
                d = ref_block(d, blk)
            diffs = 2 * torch.sigmoid(ref_layernorm(d, m.trans_layernorm)) - 1
        tokens = []
        for t in range(n):
            tokens.append(f[t] + P[t] + E[1])  # frame token: type 1
            if t < n - 1:
                tokens.append(diffs[t] + P[t] + E[0])  # difference token after frame t: type 0
        x = torch.stack(tokens)
        for blk in m.transformer:
            x = ref_block(x, blk)
        frame_out = [x[2 * t] + f[t] for t in range(n)]
        out.append(mean_of_units(frame_out))
    return torch.stack(out)


def ref_xpool(m, frames, mask, text):
    Q, B, Dm = text.shape[0], frames.shape[0], frames.shape[2]
    H = m.num_heads
    hd = Dm // H

    def lin(layer, x):
        return x @ dbl(layer.weight).T + dbl(layer.bias)

    out = torch.zeros(Q, B, Dm, dtype=torch.float64)
    for q in range(Q):
        tq = ref_layernorm(dbl(text[q]), m.layer_norm1)
        qv = lin(m.q_proj, tq)
        for b in range(B):
            real = [ref_layernorm(dbl(frames[b, t]), m.layer_norm1) for t in range(frames.shape[1]) if mask[b, t]]
            att = torch.zeros(Dm, dtype=torch.float64)
            for h in range(H):
                sl = slice(h * hd, (h + 1) * hd)
                s = [float((qv[sl] * lin(m.k_proj, f)[sl]).sum()) / math.sqrt(hd) for f in real]
                e = [math.exp(x - max(s)) for x in s]
                att[sl] = sum(w / sum(e) * lin(m.v_proj, f)[sl] for w, f in zip(e, real))
            a = ref_layernorm(lin(m.out_proj, att), m.layer_norm2)
            o = ref_layernorm(a + lin(m.linear_proj, a), m.layer_norm3)  # dropout off (eval)
            out[q, b] = unit(o)
    return out


# ------------------------------------------------------------------------------------------
# CLIP models whose text width equals D (so the text-tower init applies)
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def w64_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("temporal_cfgs")
    (d / "vidclip-test-temporal-w64.json").write_text(json.dumps({
        "embed_dim": 64,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }))
    (d / "vidclip-test-temporal-hf-w64.json").write_text(json.dumps({
        "family": "hf",
        "clip_config": {
            "projection_dim": 64,
            "text_config": {"vocab_size": 49408, "hidden_size": 64, "intermediate_size": 128,
                            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 32,
                            "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407},
            "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                              "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        },
    }))
    register_config_dir(d)
    return load_clip("vidclip-test-temporal-w64"), load_clip("vidclip-test-temporal-hf-w64")


# ------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------
def test_registry_names_and_errors():
    assert set(list_temporal()) >= {"mean", "query_scoring", "seq_transformer", "tdb", "xpool", "ted"}
    assert list_temporal() == sorted(TEMPORAL_MODULES)
    with pytest.raises(ConfigError, match="'nope' is unknown.*mean"):
        create_temporal("nope", D)
    with pytest.raises(ConfigError, match="bad option"):
        create_temporal("mean", D, depth=3)
    with pytest.raises(ConfigError, match="tau"):
        create_temporal("query_scoring", D, tau=0)
    with pytest.raises(ConfigError, match="num_heads"):
        create_temporal("xpool", D, num_heads=3)
    with pytest.raises(ConfigError, match="embed_dim"):
        create_temporal("mean", 0)
    assert create_temporal("query_scoring", D).text_conditioned
    assert create_temporal("xpool", D).text_conditioned
    assert not create_temporal("tdb", D).text_conditioned
    with pytest.raises(ValueError, match="already registered"):
        register_temporal("mean")(type("Other", (TemporalModule,), {}))
    with pytest.raises(TypeError, match="not a TemporalModule"):
        register_temporal("plain")(type("Plain", (nn.Module,), {}))


def test_registry_is_a_leaf_and_imports_lazily():
    """The registry names its modules by "module:Class" and imports none of them until one is
    built; no module file imports the registry back (function-local imports included)."""
    import ast
    import pathlib
    import subprocess
    import sys

    folder = pathlib.Path(__file__).resolve().parents[1] / "vidclip" / "models" / "temporal"
    for f in sorted(folder.glob("*.py")):
        if f.name in ("registry.py", "__init__.py"):
            continue
        imported = {n.module for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in imported if m and m.endswith("temporal.registry")}, f.name
    code = ("import sys; from vidclip.models.temporal.registry import list_temporal, create_temporal\n"
            "names = list_temporal()\n"
            "print(sorted(m for m in sys.modules if m.startswith('vidclip.models.temporal.')), 'torch' in sys.modules)\n"
            "create_temporal('mean', 8)\n"
            "print(sorted(m for m in sys.modules if m.startswith('vidclip.models.temporal.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    before, after = out.stdout.strip().splitlines()
    assert before == "['vidclip.models.temporal.registry'] False"
    assert after == "['vidclip.models.temporal.base', 'vidclip.models.temporal.mean', 'vidclip.models.temporal.registry']"


def test_register_temporal_by_path_imports_when_built(monkeypatch):
    from vidclip.models.temporal import registry

    monkeypatch.setattr(registry, "TEMPORAL_MODULES", dict(registry.TEMPORAL_MODULES))
    register_temporal("max_test", "torch_testutil:MaxPoolForTest")
    assert "max_test" in list_temporal() and registry.TEMPORAL_MODULES["max_test"] == "torch_testutil:MaxPoolForTest"
    m = create_temporal("max_test", D)
    assert type(m).__name__ == "MaxPoolForTest" and m.name == "max_test"
    register_temporal("max_test", "torch_testutil:MaxPoolForTest")  # the same again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_temporal("max_test", "torch_testutil:Other")
    with pytest.raises(ValueError, match="module:Class"):
        register_temporal("bad", "no_colon")
    frames, mask = batch()
    want = torch.stack([F.normalize(frames[b, mask[b]].amax(0), dim=0) for b in range(len(frames))])
    torch.testing.assert_close(m(frames, mask), want)


def test_parameter_counts():
    counts = {n: trainable_parameters(create_temporal(n, D, max_frames=8))
              for n in ("mean", "query_scoring", "seq_transformer", "tdb", "xpool")}
    assert counts["mean"] == 0 and counts["query_scoring"] == 0
    # xpool: 5 DxD linears with bias + 3 LayerNorms
    assert counts["xpool"] == 5 * (D * D + D) + 3 * 2 * D
    # seq_transformer: positions + 4 blocks of (in_proj 3DxD+3D, out DxD+D, 2 LN, mlp 4D)
    block = 3 * D * D + 3 * D + D * D + D + 4 * D + (D * 4 * D + 4 * D) + (4 * D * D + D)
    assert counts["seq_transformer"] == 8 * D + 4 * block
    assert counts["tdb"] == 8 * D + 2 * D + 5 * block + 2 * D
    frozen = create_temporal("seq_transformer", D)
    for p in frozen.transformer[0].parameters():
        p.requires_grad_(False)
    assert trainable_parameters(frozen) == 32 * D + 3 * block


# ------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------
def test_mean_matches_reference_and_ignores_padding():
    frames, mask = batch()
    m = create_temporal("mean", D)
    out = m(frames, mask)
    assert out.shape == (3, D)
    torch.testing.assert_close(out.double(), ref_mean(frames, mask), atol=1e-6, rtol=0)
    # meanP normalises frames before averaging: differs from the mean of raw frames
    raw = F.normalize(frames[0].mean(0), dim=-1)
    assert (out[0] - raw).abs().max() > 1e-3


def test_query_scoring_matches_hitchhiker_reference():
    frames, mask = batch()
    t = texts()
    for tau in (0.1, 0.5):
        m = create_temporal("query_scoring", D, tau=tau)
        out = m(frames, mask, t)
        assert out.shape == (4, 3, D)
        torch.testing.assert_close(out.double(), ref_query_scoring(frames, mask, t, tau), atol=1e-6, rtol=0)
    # sums raw frames (Hitchhiker's vid_embeds), not normalised ones: with norms far apart
    # the two differ
    m = create_temporal("query_scoring", D, tau=0.5)
    w = torch.softmax(F.normalize(t[:1], dim=-1) @ F.normalize(frames[0], dim=-1).T / 0.5, dim=-1)
    on_unit = F.normalize(w @ F.normalize(frames[0], dim=-1), dim=-1)
    assert (m(frames, mask, t)[0, 0] - on_unit[0]).abs().max() > 1e-3
    # tiny temperature -> the best-matching real frame alone
    sharp = create_temporal("query_scoring", D, tau=1e-4)(frames, mask, t)
    cos = F.normalize(t[0], dim=-1) @ F.normalize(frames[1, :3], dim=-1).T
    torch.testing.assert_close(sharp[0, 1], F.normalize(frames[1, cos.argmax()], dim=-1))


@pytest.mark.parametrize("use_clip", [False, True])
def test_seq_transformer_matches_reference(use_clip, w64_models):
    if use_clip:  # copied text-tower layers: 2 heads, GELU, 2 of 4 blocks copied
        clip = w64_models[0]
        frames, mask = batch(D=64)
        with pytest.warns(UserWarning, match="2 of the 4 temporal layers are randomly initialised"):
            m = create_temporal("seq_transformer", 64, max_frames=8, clip=clip)
        assert m.initialised_from_text
    else:  # CLIP4Clip random init: QuickGELU, 1 head at D=16
        frames, mask = batch()
        m = perturb_(create_temporal("seq_transformer", D, max_frames=8), scale=0.05, seed=3)
    m.eval()
    out = m(frames, mask)
    torch.testing.assert_close(out.double(), ref_seq_transformer(m, frames, mask), atol=2e-5, rtol=0)


@pytest.mark.parametrize("use_clip", [False, True])
def test_tdb_matches_reference(use_clip, w64_models):
    if use_clip:
        frames, mask = batch(D=64)
        with pytest.warns(UserWarning):
            m = create_temporal("tdb", 64, max_frames=8, clip=w64_models[0])
    else:
        frames, mask = batch()
        m = perturb_(create_temporal("tdb", D, max_frames=8), scale=0.05, seed=3)
    m.eval()
    out = m(frames, mask)
    torch.testing.assert_close(out.double(), ref_tdb(m, frames, mask), atol=2e-5, rtol=0)


@pytest.mark.parametrize("heads,perturbed", [(1, False), (1, True), (2, True)])
def test_xpool_matches_reference(heads, perturbed):
    frames, mask = batch()
    t = texts()
    m = create_temporal("xpool", D, num_heads=heads)
    if perturbed:
        perturb_(m, scale=0.1, seed=3)
    else:  # identity init of every projection, zero bias
        for lin in (m.q_proj, m.k_proj, m.v_proj, m.out_proj, m.linear_proj):
            assert torch.equal(lin.weight, torch.eye(D)) and not lin.bias.any()
    m.eval()
    out = m(frames, mask, t)
    assert out.shape == (4, 3, D)
    torch.testing.assert_close(out.double(), ref_xpool(m, frames, mask, t), atol=2e-5, rtol=0)
    # dropout (0.3 by default) is active in training mode only
    m.train()
    assert not torch.allclose(m(frames, mask, t), out)


# ------------------------------------------------------------------------------------------
# masking / batching invariances for every frame-embedding module
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mean", "query_scoring", "seq_transformer", "tdb", "xpool"])
def test_padding_and_batch_composition_do_not_change_outputs(name):
    m = perturb_(create_temporal(name, D, max_frames=8), scale=0.05, seed=3).eval()
    frames, mask = batch(lengths=(5, 3, 1))
    t = texts()
    out = m(frames, mask, t)
    for b, n in enumerate((5, 3, 1)):
        alone = m(frames[b:b + 1, :n], None, t)  # same video, no padding, batch of one
        got = out[b] if not m.text_conditioned else out[:, b]
        want = alone[0] if not m.text_conditioned else alone[:, 0]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # different garbage in the padded slots: same output
    frames2 = torch.where(mask.unsqueeze(-1), frames, -frames * 7)
    torch.testing.assert_close(m(frames2, mask, t), out, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["mean", "query_scoring", "seq_transformer", "tdb", "xpool"])
def test_video_without_real_frames_is_finite(name):
    m = create_temporal(name, D, max_frames=8).eval()
    frames, mask = batch(lengths=(5, 0, 2))
    out = m(frames, mask, texts())
    assert torch.isfinite(out).all()
    if name != "xpool":  # zero vector (xpool's LayerNorms make it a constant vector instead)
        empty = out[1] if not m.text_conditioned else out[:, 1]
        assert not empty.any()


@pytest.mark.parametrize("name", ["mean", "query_scoring", "seq_transformer", "tdb", "xpool"])
def test_similarity_matches_forward_and_chunks(name):
    m = perturb_(create_temporal(name, D, max_frames=8), scale=0.05, seed=3).eval()
    frames, mask = batch()
    t = texts(Q=5)
    sim = m.similarity(t, frames, mask)
    assert sim.shape == (5, 3)
    out = m(frames, mask, t)
    tn = F.normalize(t, dim=-1)
    want = tn @ out.T if not m.text_conditioned else torch.einsum("qd,qbd->qb", tn, out)
    torch.testing.assert_close(sim, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(m.similarity(t, frames, mask, chunk_size=2), sim, atol=1e-6, rtol=0)
    assert sim.abs().max() <= 1 + 1e-5


def test_outputs_are_unit_norm_and_trainable():
    frames, mask = batch()
    t = texts()
    for name in ("seq_transformer", "tdb", "xpool"):
        m = create_temporal(name, D, max_frames=8)
        out = m(frames, mask, t)
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(out.shape[:-1]), atol=1e-5, rtol=0)
        out.sum().backward()
        grads = [p.grad for p in m.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name


def test_input_errors_name_the_argument():
    m = create_temporal("seq_transformer", D, max_frames=4)
    frames, mask = batch()
    with pytest.raises(ConfigError, match="5 frames per video exceed max_frames=4"):
        m(frames, mask)
    with pytest.raises(ConfigError, match="frames have D=8"):
        create_temporal("mean", D)(torch.zeros(2, 3, 8))
    with pytest.raises(ConfigError, match=r"mask must be \[B=3, T=5\]"):
        create_temporal("mean", D)(frames, mask[:, :4])
    with pytest.raises(ConfigError, match="frames must be a float tensor"):
        create_temporal("mean", D)(frames[0])
    with pytest.raises(ConfigError, match="needs text"):
        create_temporal("xpool", D)(frames, mask)
    with pytest.raises(ConfigError, match="text must be"):
        create_temporal("query_scoring", D)(frames, mask, torch.zeros(2, 8))
    with pytest.raises(ConfigError, match="mask must be bool"):
        create_temporal("mean", D)(frames, mask.float() * 2)
    # 0/1 integer masks are accepted
    torch.testing.assert_close(create_temporal("mean", D)(frames, mask.long()),
                               create_temporal("mean", D)(frames, mask))


# ------------------------------------------------------------------------------------------
# initialisation from the CLIP text tower
# ------------------------------------------------------------------------------------------
def test_text_tower_init_open_clip(w64_models):
    clip = w64_models[0]
    text_blocks = list(clip.model.transformer.resblocks)
    pos = clip.model.positional_embedding
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = create_temporal("seq_transformer", 64, max_frames=12, clip=clip)
        tdb = create_temporal("tdb", 64, max_frames=12, clip=clip)
    assert torch.equal(seq.frame_position_embeddings.weight, pos[:12])
    assert torch.equal(tdb.frame_position_embeddings.weight, pos[:12])
    assert torch.equal(tdb.type_position_embeddings.weight, pos[:2])
    x = torch.randn(3, 7, 64)
    with torch.no_grad():
        for mine, src in [(seq.transformer[0], text_blocks[0]), (seq.transformer[1], text_blocks[1]),
                          (tdb.frame2t_attention[0], text_blocks[0]), (tdb.transformer[1], text_blocks[1])]:
            # same weights; the temporal blocks' LayerNorm eps is the official 1e-12, the text tower's 1e-5
            assert mine.ln_1.eps == 1e-12
            same_eps = copy.deepcopy(mine)
            same_eps.ln_1.eps = same_eps.ln_2.eps = src.ln_1.eps
            torch.testing.assert_close(same_eps(x), src(x), atol=1e-5, rtol=0)
        # copies, not shared: training them leaves the frozen text tower alone
        assert seq.transformer[0].attn.in_proj_weight.data_ptr() != text_blocks[0].attn.in_proj_weight.data_ptr()


def test_text_tower_init_hf(w64_models):
    clip = w64_models[1]
    layers = clip.model.text_model.encoder.layers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = create_temporal("seq_transformer", 64, max_frames=8, clip=clip)
    assert seq.transformer[0].attn.num_heads == 4
    assert torch.equal(seq.frame_position_embeddings.weight,
                       clip.model.text_model.embeddings.position_embedding.weight[:8])
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for i in range(2):
            # two float32 implementations of one block: rounding differs by ~1e-5; a wrong copy is O(1)
            torch.testing.assert_close(seq.transformer[i](x), layers[i](x, attention_mask=None), atol=1e-4, rtol=0)


def test_layerscale_is_folded_into_copied_block():
    from open_clip.transformer import ResidualAttentionBlock as OCBlock

    src = OCBlock(32, 2, ls_init_value=0.5)
    with torch.no_grad():
        src.ls_1.gamma.uniform_(-1, 1)
        src.ls_2.gamma.uniform_(-1, 1)
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        torch.testing.assert_close(_copy_text_block(src, "open_clip", ln_eps=src.ln_1.eps)(x), src(x),
                                   atol=1e-5, rtol=0)


def test_width_mismatch_warns_and_random_inits():
    import dataclasses
    import types

    clip = load_clip("tiny-vit")  # D=32, text width 64, random weights
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a random text tower: the fallback is expected, no warning
        assert not create_temporal("seq_transformer", 32, clip=clip).initialised_from_text
    # the same tower holding trained weights: the fallback is worth a warning
    trained = types.SimpleNamespace(model=clip.model, family=clip.family, embed_dim=clip.embed_dim,
                                    identity=dataclasses.replace(clip.identity, random_weights=False))
    with pytest.warns(UserWarning, match="text width 64 != embed_dim 32"):
        m = create_temporal("seq_transformer", 32, clip=trained)
    assert not m.initialised_from_text
    assert isinstance(m.transformer[0].mlp.gelu, QuickGELU)  # CLIP4Clip's block
    with pytest.raises(ConfigError, match="differs from the CLIP model's embed_dim 32"):
        create_temporal("seq_transformer", 16, clip=clip)


def test_block_mask_excludes_padded_keys():
    blk = perturb_(ResidualAttentionBlock(D, 2), scale=0.1, seed=3)
    x = torch.randn(1, 6, D)
    mask = torch.tensor([[True, True, True, True, False, False]])
    y = blk(x, mask)
    torch.testing.assert_close(y[:, :4], blk(x[:, :4]), atol=1e-6, rtol=0)


def _ref_block_eps12(blk, x):
    """Hand-written pre-LN CLIP block in float64 with the official LayerNorm eps 1e-12."""
    def ln(v, m):
        mu = v.mean(-1, keepdim=True)
        var = ((v - mu) ** 2).mean(-1, keepdim=True)
        return (v - mu) / torch.sqrt(var + 1e-12) * m.weight.double() + m.bias.double()

    a = blk.attn
    W, H = x.shape[-1], a.num_heads
    h = ln(x, blk.ln_1)
    q, k, v = (h @ w.double().T + b.double() for w, b in zip(a.in_proj_weight.chunk(3), a.in_proj_bias.chunk(3)))
    split = lambda t: t.view(t.shape[0], t.shape[1], H, W // H).transpose(1, 2)  # noqa: E731
    att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(W // H), -1) @ split(v)
    att = att.transpose(1, 2).reshape(x.shape) @ a.out_proj.weight.double().T + a.out_proj.bias.double()
    x = x + att
    h = ln(x, blk.ln_2) @ blk.mlp.c_fc.weight.double().T + blk.mlp.c_fc.bias.double()
    h = blk.mlp.gelu(h)  # the block's activation (QuickGELU fresh, the text tower's when copied)
    return x + h @ blk.mlp.c_proj.weight.double().T + blk.mlp.c_proj.bias.double()


@pytest.mark.parametrize("name", ["seq_transformer", "tdb", "copied"])
def test_temporal_blocks_use_official_layernorm_eps(name):
    """CLIP4Clip / CLIP2Video temporal blocks: until_module.LayerNorm(hidden, eps=1e-12), fresh or copied
    from the text tower (whose own LayerNorms use 1e-5)."""
    from open_clip.transformer import ResidualAttentionBlock as OCBlock

    D = 32
    if name == "copied":
        blocks = [_copy_text_block(OCBlock(D, 2), "open_clip")]
    else:
        m = create_temporal(name, D, max_frames=8).eval()
        blocks = [b for b in m.modules() if isinstance(b, ResidualAttentionBlock)]
    assert blocks and all(b.ln_1.eps == 1e-12 and b.ln_2.eps == 1e-12 for b in blocks)
    # A near-static input (variance ~1e-10 per token) is where eps 1e-5 and 1e-12 part ways.
    g = torch.Generator().manual_seed(0)
    x = (0.3 + 1e-5 * torch.randn(2, 5, D, generator=g)).double()
    blk = blocks[0].double()
    with torch.no_grad():
        torch.testing.assert_close(blk(x), _ref_block_eps12(blk, x), atol=1e-6, rtol=1e-6)
