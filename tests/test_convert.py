"""Official CLIP4Clip / CLIP2Video / X-Pool checkpoints -> vidclip (vidclip/models/convert.py).

State dicts are written here in each official key layout (tiny dims), converted, loaded, and
compared with small reference implementations of the official forwards (LND layout, float
additive -1e6 masks repeated per head, TF-style LayerNorm eps 1e-12, QuickGELU), as in
CLIP4Clip/CLIP2Video ``modules/modeling.py`` + ``module_cross.py`` and X-Pool ``modules/transformer.py``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidclip.core.errors import ConfigError
from vidclip.models.checkpoint import load_checkpoint
from vidclip.models.convert import convert_state, sniff_source
from vidclip.train.convert_run import convert_checkpoint

BLOCK = ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
         "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
         "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias"]


def _block_params(g: torch.Generator, D: int) -> dict[str, torch.Tensor]:
    shapes = {"attn.in_proj_weight": (3 * D, D), "attn.in_proj_bias": (3 * D,), "attn.out_proj.weight": (D, D),
              "attn.out_proj.bias": (D,), "mlp.c_fc.weight": (4 * D, D), "mlp.c_fc.bias": (4 * D,),
              "mlp.c_proj.weight": (D, 4 * D), "mlp.c_proj.bias": (D,)}
    p = {k: torch.randn(*s, generator=g) * (0.5 / math.sqrt(s[-1])) for k, s in shapes.items()}
    for ln in ("ln_1", "ln_2"):
        p[f"{ln}.weight"] = 1 + 0.1 * torch.randn(D, generator=g)
        p[f"{ln}.bias"] = 0.1 * torch.randn(D, generator=g)
    return p


def _stack(prefix: str, n: int, g, D: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.resblocks.{i}.{k}": v for i in range(n) for k, v in _block_params(g, D).items()}


# -- reference: the official forward ---------------------------------------------------------
def _tf_ln(x, w, b, eps=1e-12):
    u = x.mean(-1, keepdim=True)
    s = (x - u).pow(2).mean(-1, keepdim=True)
    return w * ((x - u) / torch.sqrt(s + eps)) + b


def _ref_transformer(sd: dict, prefix: str, x: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """module_cross.Transformer on NLD input x [B, L, D] with 0/1 mask [B, L]."""
    D = x.shape[-1]
    add = ((1.0 - mask.float()).unsqueeze(1) * -1000000.0).expand(-1, mask.shape[1], -1)  # [B, L, L]
    h = x.permute(1, 0, 2)  # LND
    n = len({k.split(".")[2] for k in sd if k.startswith(prefix + ".resblocks.")})
    for i in range(n):
        p = {k: sd[f"{prefix}.resblocks.{i}.{k}"] for k in BLOCK}
        mha = nn.MultiheadAttention(D, heads)
        mha.load_state_dict({"in_proj_weight": p["attn.in_proj_weight"], "in_proj_bias": p["attn.in_proj_bias"],
                             "out_proj.weight": p["attn.out_proj.weight"], "out_proj.bias": p["attn.out_proj.bias"]})
        y = _tf_ln(h, p["ln_1.weight"], p["ln_1.bias"])
        # the fixed CLIP4Clip masking (PR #24): one mask per (video, head)
        h = h + mha(y, y, y, need_weights=False, attn_mask=add.repeat_interleave(heads, dim=0))[0]
        y = _tf_ln(h, p["ln_2.weight"], p["ln_2.bias"])
        y = F.linear(y, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"])
        y = y * torch.sigmoid(1.702 * y)
        h = h + F.linear(y, p["mlp.c_proj.weight"], p["mlp.c_proj.bias"])
    return h.permute(1, 0, 2)


def _ref_mean_pool(x, mask):
    x = x / x.norm(dim=-1, keepdim=True)
    m = mask.float().unsqueeze(-1)
    s = m.sum(1)
    s[s == 0] = 1.0
    v = (x * m).sum(1) / s
    return v / v.norm(dim=-1, keepdim=True)


def _ref_seq_transf(sd, frames, mask, heads):
    T = frames.shape[1]
    x = frames + sd["frame_position_embeddings.weight"][:T].unsqueeze(0)
    x = _ref_transformer(sd, "transformerClip", x, mask, heads) + frames
    return _ref_mean_pool(x, mask)


def _ref_tdb(sd, frames, mask, heads):
    """CLIP2Video _similarity_TDB (temporal_proj sigmoid_selfA), video side."""
    B, T, D = frames.shape
    pos = sd["frame_position_embeddings.weight"][:T].unsqueeze(0).expand(B, -1, -1)
    typ = sd["type_position_embeddings.weight"]
    dif = frames[:, 1:] - frames[:, :-1] + pos[:, 1:]
    dif = _ref_transformer(sd, "frame2t_attention", dif, mask[:, 1:], heads)
    dif = 2 * torch.sigmoid(F.layer_norm(dif, (D,), sd["trans_layernorm.weight"], sd["trans_layernorm.bias"])) - 1
    middle = torch.cat([frames, dif], 1)
    pos_m = torch.cat([pos, pos], 1)
    mask_m = torch.cat([mask, mask], 1)
    type_m = torch.cat([typ[1].expand(B, T, D), typ[0].expand(B, T, D)], 1)
    idx = []
    for i in range(T - 1):
        idx += [i, T + i]
    idx = torch.tensor(idx + [T - 1])
    x = middle[:, idx] + pos_m[:, idx] + type_m[:, idx]
    x = _ref_transformer(sd, "transformerClip", x, mask_m[:, idx], heads)
    x = x[:, 0::2] + frames
    return _ref_mean_pool(x, mask)


def _ref_xpool(sd, text, frames, heads):
    """X-Pool Transformer.forward (no frame mask) -> [Nv, Nt, D], then normalised as its sim."""
    pre = "pool_frames."
    D = text.shape[-1]
    hd = D // heads
    ln = lambda x, i: F.layer_norm(x, (D,), sd[f"{pre}layer_norm{i}.weight"], sd[f"{pre}layer_norm{i}.bias"])  # noqa: E731
    lin = lambda x, n: F.linear(x, sd[f"{pre}{n}.weight"], sd[f"{pre}{n}.bias"])  # noqa: E731
    t, v = ln(text, 1), ln(frames, 1)
    Nt, (Nv, T, _) = t.shape[0], v.shape
    q = lin(t, "cross_attn.q_proj").reshape(Nt, heads, hd).permute(1, 2, 0)
    k = lin(v, "cross_attn.k_proj").reshape(Nv, T, heads, hd).permute(0, 2, 1, 3)
    vv = lin(v, "cross_attn.v_proj").reshape(Nv, T, heads, hd).permute(0, 2, 3, 1)
    w = F.softmax((k @ q) / math.sqrt(hd), dim=2)
    att = (vv @ w).permute(0, 3, 1, 2).reshape(Nv, Nt, D)
    a = ln(lin(att, "cross_attn.out_proj"), 2)
    o = ln(a + lin(a, "linear_proj"), 3)
    return o / o.norm(dim=-1, keepdim=True)


# -- official-layout state dicts ---------------------------------------------------------------
def clip4clip_state(D=128, layers=2, ctx=16, seed=0, clip=None):
    g = torch.Generator().manual_seed(seed)
    sd = {"frame_position_embeddings.weight": torch.randn(ctx, D, generator=g) * 0.1}
    sd.update(_stack("transformerClip", layers, g, D))
    sd.update({f"clip.{k}": v for k, v in (clip or {}).items()})
    return sd


def clip2video_state(D=128, ctx=16, seed=1, tab=False):
    g = torch.Generator().manual_seed(seed)
    sd = clip4clip_state(D, 2, ctx, seed)
    sd["type_position_embeddings.weight"] = torch.randn(2, D, generator=g) * 0.1
    sd.update(_stack("frame2t_attention", 1, g, D))
    sd["trans_layernorm.weight"] = 1 + 0.1 * torch.randn(D, generator=g)
    sd["trans_layernorm.bias"] = 0.1 * torch.randn(D, generator=g)
    if tab:
        sd["weight_center"] = torch.randn(5, D, generator=g)
        sd["emb_center"] = torch.randn(5, D, generator=g)
        sd.update(_stack("actionClip", 1, g, D))
    return sd


def xpool_state(D=64, seed=2):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for n in ("cross_attn.q_proj", "cross_attn.k_proj", "cross_attn.v_proj", "cross_attn.out_proj", "linear_proj"):
        sd[f"pool_frames.{n}.weight"] = torch.eye(D) + 0.3 * torch.randn(D, D, generator=g) / math.sqrt(D)
        sd[f"pool_frames.{n}.bias"] = 0.1 * torch.randn(D, generator=g)
    for i in (1, 2, 3):
        sd[f"pool_frames.layer_norm{i}.weight"] = 1 + 0.1 * torch.randn(D, generator=g)
        sd[f"pool_frames.layer_norm{i}.bias"] = 0.1 * torch.randn(D, generator=g)
    return sd


def _frames(B=3, T=6, D=128, seed=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g) * 2
    mask = torch.ones(B, T, dtype=torch.bool)
    return x, mask


def _build(sd, source, **kw):
    from vidclip.models.convert import build_converted_temporal

    return build_converted_temporal(convert_state(sd, source, **kw))


# -- math --------------------------------------------------------------------------------------
def test_seq_transformer_matches_clip4clip_seqtransf_with_padding():
    sd = clip4clip_state(D=128)  # 128 // 64 = 2 heads: per-video masks matter
    mod = _build(sd, "clip4clip")
    assert mod.name == "seq_transformer" and mod.transformer[0].attn.num_heads == 2
    x, mask = _frames()
    mask[1, 4:] = False
    mask[2, 2:] = False
    with torch.no_grad():
        got, want = mod(x, mask), _ref_seq_transf(sd, x, mask, heads=2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_layernorm_eps_is_the_official_one():
    """CLIP4Clip's blocks use eps 1e-12: with near-constant inputs eps 1e-5 gives another output."""
    sd = clip4clip_state(D=64, layers=1)
    mod = _build(sd, "clip4clip")
    assert mod.transformer[0].ln_1.eps == 1e-12
    x = 1.0 + 1e-3 * torch.randn(2, 4, 64)
    with torch.no_grad():
        torch.testing.assert_close(mod(x), _ref_seq_transf(sd, x, torch.ones(2, 4), heads=1), atol=1e-5, rtol=1e-4)


def test_tdb_matches_clip2video_without_padding():
    sd = clip2video_state(D=128)
    mod = _build(sd, "clip2video")
    assert mod.name == "tdb"
    x, mask = _frames(T=5)
    with torch.no_grad():
        got, want = mod(x, mask), _ref_tdb(sd, x, mask, heads=2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("heads", [1, 2])
def test_xpool_matches_official(heads):
    sd = xpool_state(D=64)
    mod = _build(sd, "xpool", xpool_heads=heads)
    mod.eval()
    x, mask = _frames(B=3, T=4, D=64)
    text = torch.randn(5, 64)
    with torch.no_grad():
        got = mod(x, mask, text)  # [Q, B, D]
    want = _ref_xpool(sd, text, x, heads).transpose(0, 1)  # [Nt, Nv, D]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_meanp_is_mean():
    clip = {"visual.proj": torch.randn(32, 16), "visual.conv1.weight": torch.randn(32, 3, 8, 8)}
    conv = convert_state({f"clip.{k}": v for k, v in clip.items()}, "clip4clip")
    assert conv.temporal == "mean" and conv.embed_dim == 16


# -- errors ------------------------------------------------------------------------------------
def test_unknown_key_is_named():
    sd = clip4clip_state(D=64, layers=1)
    sd["transformerClip.resblocks.0.attn.bogus"] = torch.zeros(3)
    with pytest.raises(ConfigError, match=r"transformerClip\.resblocks\.0\.attn\.bogus"):
        convert_state(sd, "clip4clip")
    sd = clip4clip_state(D=64, layers=1)
    sd["something_else.weight"] = torch.zeros(3)
    with pytest.raises(ConfigError, match=r"something_else\.weight: unknown key"):
        convert_state(sd, "clip4clip")


def test_shape_mismatch_is_named():
    sd = clip4clip_state(D=64, layers=1)
    sd["transformerClip.resblocks.0.mlp.c_fc.weight"] = torch.zeros(100, 64)
    with pytest.raises(ConfigError, match=r"transformerClip\.resblocks\.0\.mlp\.c_fc\.weight: shape \[100, 64\]"):
        _build(sd, "clip4clip")


def test_unsupported_parts_are_refused():
    with pytest.raises(ConfigError, match=r"weight_center: CLIP2Video's TAB"):
        convert_state(clip2video_state(D=64, tab=True), "clip2video")
    conv = convert_state(clip2video_state(D=64, tab=True), "clip2video", drop_tab=True)
    assert conv.temporal == "tdb" and any("TAB branch dropped" in n for n in conv.notes)
    sd = clip4clip_state(D=64, layers=1)
    sd["lstm_visual.weight_ih_l0"] = torch.zeros(4, 4)
    with pytest.raises(ConfigError, match="lstm_visual.weight_ih_l0: CLIP4Clip's seqLSTM"):
        convert_state(sd, "clip4clip")
    with pytest.raises(ConfigError, match="look like a xpool checkpoint"):
        convert_state(xpool_state(), "clip4clip")
    sd = xpool_state()
    del sd["pool_frames.linear_proj.bias"]
    with pytest.raises(ConfigError, match=r"pool_frames\.linear_proj\.bias is missing"):
        convert_state(sd, "xpool")


def test_sniff():
    assert sniff_source(clip4clip_state(D=64, layers=1)) == "clip4clip"
    assert sniff_source(clip2video_state(D=64)) == "clip2video"
    assert sniff_source(xpool_state()) == "xpool"
    assert sniff_source({"foo": torch.zeros(1)}) is None


# -- run dirs ----------------------------------------------------------------------------------
TINY = {"embed_dim": 64, "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip_state(tmp_path_factory):
    """An OpenAI-layout CLIP state dict of a registered tiny QuickGELU config ("convert-tiny-qg")."""
    import open_clip

    from vidclip.models.clip.load import register_config_dir

    d = tmp_path_factory.mktemp("cfg")
    (d / "convert-tiny-qg.json").write_text(json.dumps(TINY))
    register_config_dir(d)
    torch.manual_seed(0)
    net = open_clip.create_model("convert-tiny-qg")
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    sd["logit_scale"] = torch.tensor(math.log(50.0))
    return sd


def test_convert_run_dir_loads_with_finetuned_clip(tmp_path, tiny_clip_state):
    sd = clip4clip_state(D=64, layers=2, clip=tiny_clip_state)
    f = tmp_path / "pytorch_model.bin.3"
    torch.save(sd, f)
    summary = convert_checkpoint(f, tmp_path / "run", "clip4clip")
    assert summary["clip"]["model"] == "convert-tiny-qg" and summary["clip"]["finetuned_from_checkpoint"]
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded.model_config.temporal == "seq_transformer"
    # the run's frozen CLIP is the checkpoint's CLIP (same weights)
    clip_sd = loaded.clip.model.state_dict()
    assert torch.equal(clip_sd["visual.proj"], tiny_clip_state["visual.proj"])
    assert math.isclose(float(loaded.model.logit_scale().detach()), 50.0, rel_tol=1e-5)
    x, mask = _frames(B=2, T=5, D=64)
    mask[1, 3:] = False
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.temporal(x, mask), _ref_seq_transf(sd, x, mask, heads=1),
                                   atol=1e-5, rtol=1e-4)
    # an index built with the stock architecture but other weights is refused
    from vidclip.models.clip.load import load_clip

    with pytest.raises(Exception, match="trained on CLIP weights"):
        load_checkpoint(tmp_path / "run", clip=load_clip("convert-tiny-qg", None))
    # `vidclip index --temporal RUN_DIR` takes it as a temporal module
    try:
        from vidclip.features.pooling import Pooler
    except ImportError:  # before the index package split
        from vidclip.features.pooling import Pooler
    pooler = Pooler.create(tmp_path / "run", loaded.clip)
    assert pooler.spec["module"] == "seq_transformer" and pooler.module is not None
    # direct load of the official file, with the run's CLIP
    direct = load_checkpoint(f, clip=loaded.clip)
    with torch.no_grad():
        torch.testing.assert_close(direct.model.temporal(x, mask), loaded.model.temporal(x, mask))


def test_cli_convert(tmp_path, tiny_clip_state, capsys):
    from vidclip.cli.main import main

    f = tmp_path / "model_best.pth"
    torch.save({"epoch": 3, "state_dict": {**xpool_state(D=64), **{f"clip.{k}": v for k, v in tiny_clip_state.items()}}}, f)
    assert main(["convert-checkpoint", "--from", "xpool", str(f), "--out", str(tmp_path / "run"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["temporal"] == "xpool" and out["temporal_args"] == {"num_heads": 1}
    assert (tmp_path / "run" / "best.safetensors").is_file() and (tmp_path / "run" / "clip_finetuned.safetensors").is_file()
    loaded = load_checkpoint(tmp_path / "run")
    x, mask = _frames(B=2, T=4, D=64)
    text = torch.randn(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.temporal(x, mask, text),
                                   _ref_xpool(xpool_state(D=64), text, x, 1).transpose(0, 1), atol=1e-5, rtol=1e-4)
    # existing run is not overwritten; wrong source is one clear line
    assert main(["convert-checkpoint", "--from", "xpool", str(f), "--out", str(tmp_path / "run")]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["convert-checkpoint", "--from", "clip4clip", str(f), "--out", str(tmp_path / "r2")]) == 2
    assert "look like a xpool checkpoint" in capsys.readouterr().err


def test_converted_run_names_its_clip_relative_to_itself_and_can_be_moved(tmp_path, tiny_clip_state, monkeypatch):
    import shutil

    from vidclip.features.pooling import Pooler
    from vidclip.models.checkpoint import load_weights
    from vidclip.models.convert import CLIP_FILE
    from vidclip.train.run_state import load_run_config

    sd = clip4clip_state(D=64, layers=2, clip=tiny_clip_state)
    f = tmp_path / "pytorch_model.bin.3"
    torch.save(sd, f)
    convert_checkpoint(f, tmp_path / "run", "clip4clip")
    _, meta = load_weights(tmp_path / "run" / "best.safetensors")
    assert meta["config"]["model"]["pretrained"] == CLIP_FILE  # not /tmp/.../run/clip_finetuned.safetensors
    assert f"pretrained: {CLIP_FILE}" in (tmp_path / "run" / "config.yaml").read_text()
    moved = tmp_path / "elsewhere" / "run2"
    moved.parent.mkdir()
    shutil.move(str(tmp_path / "run"), str(moved))
    x, mask = _frames(B=2, T=5, D=64)
    mask[1, 3:] = False
    # from another working directory, the run named by a relative path: what `vidclip eval run2` loads
    monkeypatch.chdir(moved.parent)
    loaded = load_checkpoint("run2")
    assert loaded.clip.identity.pretrained == str(moved / CLIP_FILE)
    assert torch.equal(loaded.clip.model.state_dict()["visual.proj"], tiny_clip_state["visual.proj"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.temporal(x, mask), _ref_seq_transf(sd, x, mask, heads=1),
                                   atol=1e-5, rtol=1e-4)
    # `vidclip index --temporal run2` (with the run's CLIP) and `vidclip train run2` find it too
    assert Pooler.create(moved, loaded.clip).spec["module"] == "seq_transformer"
    assert load_run_config(moved).model.pretrained == str(moved / CLIP_FILE)


def test_run_paths_only_rewrite_files_inside_the_run(tmp_path, monkeypatch):
    from vidclip.models.checkpoint import path_for_run, resolve_in_run

    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    (run / "sub" / "w.pt").write_bytes(b"x")
    outside = tmp_path / "w.pt"
    outside.write_bytes(b"x")
    assert path_for_run(str(run / "sub" / "w.pt"), run) == "sub/w.pt"
    assert path_for_run(str(outside), run) == str(outside)  # outside the run: as given
    monkeypatch.chdir(tmp_path)
    assert path_for_run("run/sub/w.pt", run) == "sub/w.pt" and path_for_run("w.pt", run) == "w.pt"
    for given in ("openai", None, "none"):  # tags and the random-weights word are not paths
        assert path_for_run(given, run) == given and resolve_in_run(given, run) == given
    assert resolve_in_run("sub/w.pt", run) == str(run / "sub" / "w.pt")
    # a relative path that is not in the run keeps meaning what it did (relative to the cwd)
    assert resolve_in_run("w.pt", run) == "w.pt"
    assert resolve_in_run(str(outside), run) == str(outside)


def test_convert_checks_its_paths_first_and_a_failure_leaves_nothing(tmp_path, tiny_clip_state, monkeypatch):
    """Junk says what the file is not; --out is checked before the checkpoint is read; a conversion
    that fails (before or after writing files) leaves no run folder, no temp folder, no new parents."""
    import vidclip.models.convert as convert_module
    import vidclip.train.model as train_model

    out = tmp_path / "new" / "deeper" / "run"
    junk = tmp_path / "junk.bin"
    junk.write_text("<html>not found</html>")
    with pytest.raises(ConfigError, match=r"junk\.bin is not a PyTorch checkpoint \(expected a state dict saved by "
                                          r"torch\.save / a \.pth/\.bin/\.pt file\): it is an HTML page"):
        convert_checkpoint(junk, out, "clip4clip")
    listed = tmp_path / "list.pth"
    torch.save([1, 2], listed)
    with pytest.raises(ConfigError, match=r"list\.pth is not a PyTorch checkpoint .*: it holds a list, not a state dict"):
        convert_checkpoint(listed, out, "clip4clip")
    good = tmp_path / "pytorch_model.bin.1"
    torch.save(clip4clip_state(D=64, layers=1, clip=tiny_clip_state), good)
    afile = tmp_path / "afile"
    afile.write_text("x")
    real_read = convert_module.read_official_state
    monkeypatch.setattr(convert_module, "read_official_state", lambda p: pytest.fail("read before --out was checked"))
    with pytest.raises(ConfigError, match=r"--out .*afile: exists and is not a directory"):
        convert_checkpoint(good, afile, "clip4clip")
    monkeypatch.setattr(convert_module, "read_official_state", real_read)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_model, "save_weights", disk_full)  # fails after the CLIP file was written
    with pytest.raises(OSError, match="No space left"):
        convert_checkpoint(good, out, "clip4clip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "junk.bin", "list.pth", "pytorch_model.bin.1"]
    monkeypatch.undo()
    summary = convert_checkpoint(good, out, "clip4clip")
    assert summary["clip"]["pretrained"] == str(out / "clip_finetuned.safetensors")
    assert sorted(p.name for p in out.iterdir()) == ["best.safetensors", "clip_finetuned.safetensors",
                                                     "config.yaml", "conversion.json"]
    assert [p.name for p in out.parent.iterdir()] == ["run"]  # no temp folder beside it
    convert_checkpoint(good, out, "clip4clip", overwrite=True)  # --force: replaced file by file
    assert load_checkpoint(out).model_config.temporal == "seq_transformer"
