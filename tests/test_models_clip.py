"""Tests of vidclip/models/clip (load.py, spec.py, the backends) on tiny random-init models (no network, no real weights).

References are the wrapped libraries called directly (open_clip encode_image/encode_text,
transformers get_image_features/get_text_features, open_clip's PIL preprocess), not our code.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidclip.core.errors import ConfigError, VidclipError, WeightsNotFoundError
from vidclip.models.clip import (
    SHIPPED_WEIGHTS,
    FrameFormatError,
    FrozenCLIP,
    ModelIdentity,
    list_models,
    load_clip,
    load_clip_from_identity,
    state_dict_digest,
)
from vidclip.models.clip import backend as clip_backend

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def frames_u8(n=4, h=40, w=56, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def perturbed_state(module: torch.nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    """A state dict visibly different from the seeded random init (stands in for trained weights)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in module.state_dict().items():
        if v.is_floating_point():
            v = v + 0.05 * torch.randn(v.shape, generator=g, dtype=v.dtype)
        sd[k] = v.clone()
    return sd


@pytest.fixture(scope="module")
def tiny() -> FrozenCLIP:
    return load_clip("tiny-vit")


@pytest.fixture(scope="module")
def hf_tiny() -> FrozenCLIP:
    return load_clip("hf-tiny")


# ------------------------------------------------------------------------------------------
# identity, registry, freezing
# ------------------------------------------------------------------------------------------
def test_registry_lists_tiny_and_open_clip_models():
    names = list_models()
    for n in ("tiny-vit", "tiny-vit-224", "hf-tiny", "ViT-B-32"):
        assert n in names
    assert names.index("tiny-vit") < names.index("ViT-B-32")


@pytest.mark.parametrize("fixture", ["tiny", "hf_tiny"])
def test_frozen_and_identity(fixture, request):
    clip: FrozenCLIP = request.getfixturevalue(fixture)
    params = list(clip.model.parameters())
    assert params and all(not p.requires_grad for p in params)
    assert not clip.model.training and all(not m.training for m in clip.model.modules())
    ident = clip.identity
    assert ident.random_weights is True and ident.pretrained is None
    assert ident.family == clip.family == ("open_clip" if fixture == "tiny" else "hf")
    assert (ident.embed_dim, ident.image_size) == (32, 32) == (clip.embed_dim, clip.image_size)
    assert clip.context_length == 32
    assert len(ident.weights_digest) == 16
    assert ident.weights_digest == state_dict_digest(clip.model)
    d = ident.to_dict()
    assert ModelIdentity.from_dict(d) == ident and ModelIdentity.from_dict(d).key() == ident.key()
    assert "RANDOM WEIGHTS" in repr(clip)
    with pytest.raises(ConfigError, match="weights_digest"):
        ModelIdentity.from_dict({k: v for k, v in d.items() if k != "weights_digest"})


def test_random_init_is_reproducible_and_leaves_caller_rng_alone(tiny):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    again = load_clip("tiny-vit")
    assert torch.equal(torch.get_rng_state(), before)
    assert again.identity == tiny.identity
    f = frames_u8(2)
    assert torch.equal(again.encode_frames(f), tiny.encode_frames(f))


def test_digest_distinguishes_weights(tiny):
    other = load_clip("tiny-vit")
    with torch.no_grad():
        next(other.model.parameters()).add_(1e-3)
    assert state_dict_digest(other.model) != tiny.identity.weights_digest


# ------------------------------------------------------------------------------------------
# image encoding
# ------------------------------------------------------------------------------------------
def test_encode_frames_open_clip_matches_direct_call(tiny):
    f = frames_u8(5)
    emb = tiny.encode_frames(f)
    assert emb.shape == (5, 32) and emb.dtype == torch.float32
    pixels = tiny.preprocess(f)
    assert pixels.shape == (5, 3, 32, 32)
    with torch.no_grad():
        ref = tiny.model.encode_image(pixels)
    torch.testing.assert_close(emb, ref, rtol=0, atol=1e-6)
    # pixels in == frames in; any batch size gives the same result; not normalised
    torch.testing.assert_close(tiny.encode_frames(pixels), emb, rtol=0, atol=1e-6)
    torch.testing.assert_close(tiny.encode_frames(f, batch_size=2), emb, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(emb.norm(dim=-1), torch.ones(5), atol=1e-3)
    assert not emb.requires_grad


def test_encode_frames_hf_matches_direct_call(hf_tiny):
    f = frames_u8(3, seed=2)
    emb = hf_tiny.encode_frames(f)
    with torch.no_grad():
        out = hf_tiny.model.get_image_features(pixel_values=hf_tiny.preprocess(f))
    ref = out if isinstance(out, torch.Tensor) else out.pooler_output
    assert ref.shape == (3, 32)  # the projected embedding, not the 64-wide pooled state
    torch.testing.assert_close(emb, ref, rtol=0, atol=1e-6)


def test_encode_frames_empty_and_bad_input(tiny):
    assert tiny.encode_frames(torch.zeros((0, 10, 10, 3), dtype=torch.uint8)).shape == (0, 32)
    with pytest.raises(FrameFormatError, match="frames_or_pixels"):
        tiny.encode_frames(torch.zeros((2, 3, 16, 16)))  # wrong pixel size
    with pytest.raises(FrameFormatError):
        tiny.encode_frames(torch.zeros((2, 10, 10, 3), dtype=torch.int32))


@pytest.mark.parametrize("fixture", ["tiny", "hf_tiny"])
def test_frame_tokens_blocks_and_pooling(fixture, request):
    clip: FrozenCLIP = request.getfixturevalue(fixture)
    pixels = clip.preprocess(frames_u8(3, seed=3))
    blocks = clip.visual_blocks()
    assert len(blocks) == 2
    if clip.family == "open_clip":
        assert blocks[0] is clip.model.visual.transformer.resblocks[0]
    else:
        assert blocks[0] is clip.model.vision_model.encoder.layers[0]
    with torch.no_grad():
        toks = clip.encode_frame_tokens(pixels)
        assert len(toks) == 2 and all(t.shape == (3, 1 + 16, 64) for t in toks)
        # hand-built reference for the first block: embed + block 0
        if clip.family == "open_clip":
            v = clip.model.visual
            x = v.conv1(pixels).flatten(2).transpose(1, 2)  # [N, P, width]
            x = torch.cat([v.class_embedding.expand(3, 1, -1), x], 1) + v.positional_embedding
            ref0 = blocks[0](v.ln_pre(x))
        else:
            vm = clip.model.vision_model
            ref0 = blocks[0](vm.pre_layrnorm(vm.embeddings(pixels)), None)
            ref0 = ref0[0] if isinstance(ref0, tuple) else ref0
        torch.testing.assert_close(toks[0], ref0, rtol=0, atol=1e-5)
        torch.testing.assert_close(clip.pool_tokens(toks[-1]), clip.encode_frames(pixels), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------
# text
# ------------------------------------------------------------------------------------------
TEXTS = ["a dog runs on the beach", "Two people play BASKETBALL in a gym!", "cooking, 3 eggs & a pan"]


def test_tokenize_matches_open_clip_and_truncates_with_one_warning(tiny):
    from open_clip.tokenizer import SimpleTokenizer

    long = " ".join(["word"] * 60)
    texts = TEXTS + [long, long + " more"]
    ref = SimpleTokenizer(context_length=32)(texts)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ids = tiny.tokenize(texts)
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 1 and "2 of 5" in msgs[0] and "32" in msgs[0]
    assert ids.dtype == torch.long and ids.shape == (5, 32)
    assert torch.equal(ids, ref)
    assert ids[3, -1].item() == 49407  # end-of-text kept after truncation
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny.tokenize(TEXTS)  # nothing cut: no warning


def test_encode_text_open_clip_matches_direct_call(tiny):
    from open_clip.tokenizer import SimpleTokenizer

    emb = tiny.encode_text(TEXTS, batch_size=2)
    with torch.no_grad():
        ref = tiny.model.encode_text(SimpleTokenizer(context_length=32)(TEXTS))
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb, ref, rtol=0, atol=1e-5)  # batch 2+1 vs 3: float reassociation
    assert tiny.encode_text([]).shape == (0, 32)
    with pytest.raises(ConfigError, match="item 1"):
        tiny.encode_text(["ok", 3])


def test_hf_bpe_tokenizer_equals_open_clip_ids(hf_tiny):
    from open_clip.tokenizer import SimpleTokenizer

    st = SimpleTokenizer()
    for t in TEXTS:
        ids = hf_tiny.tokenize([t])[0]
        ref = [st.sot_token_id] + st.encode(t) + [st.eot_token_id]
        assert ids[: len(ref)].tolist() == ref
    long = " ".join(["cat"] * 50)
    with pytest.warns(UserWarning, match="1 of 1"):
        ids = hf_tiny.tokenize([long])
    assert ids.shape == (1, 32) and ids[0, -1].item() == 49407 and ids[0, 0].item() == 49406


def test_encode_text_hf_matches_direct_call(hf_tiny):
    emb = hf_tiny.encode_text(TEXTS)
    tok = hf_tiny._tokenizer.impl
    batch = tok(TEXTS, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = hf_tiny.model.get_text_features(**batch)
    ref = out if isinstance(out, torch.Tensor) else out.pooler_output
    torch.testing.assert_close(emb, ref, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------
# checkpoints on disk, through the same path a user's real checkpoint takes
# ------------------------------------------------------------------------------------------
def test_open_clip_checkpoint_roundtrip(tmp_path, tiny):
    import open_clip
    from safetensors.torch import save_file

    sd = perturbed_state(tiny.model)
    ref_model = open_clip.create_model("tiny-vit")
    ref_model.load_state_dict(sd)
    ref_model.eval()
    f = frames_u8(3, seed=5)
    with torch.no_grad():
        ref_img = ref_model.encode_image(tiny.preprocess(f))
        ref_txt = ref_model.encode_text(tiny.tokenize(TEXTS))
    paths = {
        "pt": tmp_path / "ckpt.pt",
        "safetensors": tmp_path / "ckpt.safetensors",
        "ddp": tmp_path / "epoch_3.pt",  # open_clip training output: {"state_dict": {"module.*"}}
    }
    torch.save(sd, paths["pt"])
    save_file({k: v.contiguous() for k, v in sd.items()}, str(paths["safetensors"]))
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, paths["ddp"])
    for kind, p in paths.items():
        clip = load_clip("tiny-vit", str(p))
        assert clip.identity.random_weights is False, kind
        assert clip.identity.pretrained == str(p.resolve())
        assert clip.identity.weights_digest == state_dict_digest(ref_model) != tiny.identity.weights_digest
        torch.testing.assert_close(clip.encode_frames(f), ref_img, rtol=0, atol=1e-6)
        torch.testing.assert_close(clip.encode_text(TEXTS), ref_txt, rtol=0, atol=1e-5)
        assert all(not q.requires_grad for q in clip.model.parameters())
    # reload from the recorded identity, as an index would
    again = load_clip_from_identity(clip.identity.to_dict())
    assert again.identity.key() == clip.identity.key()
    # the checkpoint changed on disk since it was recorded -> refused
    torch.save(perturbed_state(tiny.model, seed=9), paths["ddp"])
    with pytest.raises(WeightsNotFoundError, match="digest"):
        load_clip_from_identity(clip.identity)


def test_open_clip_torchscript_and_local_dir(tmp_path, tiny):
    """OpenAI's own releases are TorchScript archives of QuickGELU models; open_clip folders
    hold open_clip_config.json + weights."""
    import json

    import open_clip
    from open_clip.transformer import QuickGELU
    from safetensors.torch import save_file

    sd = perturbed_state(tiny.model, seed=4)
    src = open_clip.create_model("tiny-vit", force_quick_gelu=True)
    src.load_state_dict(sd)
    src.eval()
    f = frames_u8(2, seed=8)
    pixels = tiny.preprocess(f)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(src, (pixels, tiny.tokenize(TEXTS[:2])), strict=False, check_trace=False)
        traced.save(str(tmp_path / "ViT-tiny.pt"))
        ref = src.encode_image(pixels)
    clip = load_clip("tiny-vit", str(tmp_path / "ViT-tiny.pt"))
    assert clip.identity.random_weights is False
    assert isinstance(clip.model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    torch.testing.assert_close(clip.encode_frames(f), ref, rtol=0, atol=1e-5)

    d = tmp_path / "oc_dir"
    d.mkdir()
    cfg = open_clip.get_model_config("tiny-vit")
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}))
    plain = open_clip.create_model("tiny-vit")
    plain.load_state_dict(sd)
    plain.eval()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "open_clip_model.safetensors"))
    for spec in (str(d), f"local-dir:{d}"):
        clip = load_clip(spec)
        assert clip.family == "open_clip" and clip.identity.random_weights is False
        assert clip.mean == (0.5, 0.5, 0.5) == clip.std  # the folder's preprocess config is used
        with torch.no_grad():
            ref = plain.encode_image(clip.preprocess(f))
        torch.testing.assert_close(clip.encode_frames(f), ref, rtol=0, atol=1e-6)
        assert load_clip_from_identity(clip.identity).identity == clip.identity


def test_hf_save_pretrained_roundtrip(tmp_path, hf_tiny):
    from transformers import CLIPModel

    ref_model = CLIPModel(hf_tiny.model.config)
    ref_model.load_state_dict(perturbed_state(hf_tiny.model))
    ref_model.eval()
    d_with_tok, d_plain = tmp_path / "with_tok", tmp_path / "plain"
    ref_model.save_pretrained(d_with_tok)
    hf_tiny._tokenizer.impl.save_pretrained(d_with_tok)
    ref_model.save_pretrained(d_plain)  # no tokenizer files: falls back to the OpenAI BPE
    f = frames_u8(2, seed=6)
    with torch.no_grad():
        out = ref_model.get_image_features(pixel_values=hf_tiny.preprocess(f))
        ref_img = out if isinstance(out, torch.Tensor) else out.pooler_output
    ref_txt = None
    for spec, pre in [(str(d_with_tok), None), ("hf:" + str(d_plain), None), ("hf-tiny", str(d_with_tok))]:
        clip = load_clip(spec, pre)
        assert clip.family == "hf" and clip.identity.random_weights is False
        assert clip.identity.weights_digest != hf_tiny.identity.weights_digest
        torch.testing.assert_close(clip.encode_frames(f), ref_img, rtol=0, atol=1e-5)
        txt = clip.encode_text(TEXTS)
        ref_txt = txt if ref_txt is None else ref_txt
        torch.testing.assert_close(txt, ref_txt, rtol=0, atol=1e-5)
        assert all(not q.requires_grad for q in clip.model.parameters()) and not clip.model.training
        again = load_clip_from_identity(clip.identity)
        assert again.identity.key() == clip.identity.key()
    # a plain state-dict file for the registered tiny config
    p = tmp_path / "hf.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in ref_model.state_dict().items()}, str(p))
    clip = load_clip("hf-tiny", str(p))
    assert clip.identity.random_weights is False
    torch.testing.assert_close(clip.encode_frames(f), ref_img, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------
# missing / bad weights, offline
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env", [True, False])
@pytest.mark.parametrize(
    "model,pretrained",
    [
        ("ViT-B-32", "openai"),
        ("ViT-B-32", "laion2b_s34b_b79k"),
        ("hf:openai/clip-vit-base-patch32", None),
        ("openai/clip-vit-base-patch32", None),
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None),
    ],
)
def test_missing_weights_offline_fails_fast(model, pretrained, env, monkeypatch, tmp_path):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VIDCLIP_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    if env:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        # no env var: the TCP probe must decide; point it at a closed local port so the test never
        # touches the network, whatever machine it runs on
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
        clip_backend._host_reachable.cache_clear()
    t0 = time.monotonic()
    with pytest.raises(WeightsNotFoundError) as ei:
        load_clip(model, pretrained, cache_dir=str(tmp_path / "cache"))
    assert time.monotonic() - t0 < 15
    msg = str(ei.value)
    assert "--pretrained /path/to/" in msg and "save_pretrained" in msg
    assert model.split(":")[-1].split("/")[0] in msg
    clip_backend._host_reachable.cache_clear()


def _fake_hub_snapshot(cache: Path, repo: str) -> Path:
    """The huggingface_hub cache layout (models--org--name/{refs/main, snapshots/<sha>/})."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(sha)
    snap = root / "snapshots" / sha
    snap.mkdir(parents=True)
    return snap


def test_offline_hub_ids_load_from_local_cache(tmp_path, monkeypatch, tiny, hf_tiny):
    """Offline, hub ids resolve from the download cache (what a previous online run left)."""
    import json

    import open_clip
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    # transformers CLIPModel
    hf_tiny.model.save_pretrained(_fake_hub_snapshot(cache, "fake-org/tiny-clip"))
    clip = load_clip("hf:fake-org/tiny-clip", cache_dir=str(cache))
    assert clip.identity.name == "fake-org/tiny-clip" and clip.identity.random_weights is False
    assert clip.identity.weights_digest == hf_tiny.identity.weights_digest
    # open_clip hf-hub: model
    snap = _fake_hub_snapshot(cache, "fake-org/tiny-open-clip")
    (snap / "open_clip_config.json").write_text(json.dumps({"model_cfg": open_clip.get_model_config("tiny-vit")}))
    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(snap / "open_clip_model.safetensors"))
    clip = load_clip("hf-hub:fake-org/tiny-open-clip", cache_dir=str(cache))
    assert clip.identity.random_weights is False
    f = frames_u8(2, seed=11)
    torch.testing.assert_close(clip.encode_frames(f), tiny.encode_frames(f), rtol=0, atol=1e-6)


def test_bad_checkpoints_and_names(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_clip("tiny-vit", str(tmp_path / "nope.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(WeightsNotFoundError, match="junk.pt"):
        load_clip("tiny-vit", str(junk))
    wrong = tmp_path / "wrong.pt"
    torch.save({"foo": torch.zeros(3)}, wrong)
    with pytest.raises(WeightsNotFoundError, match="not a valid checkpoint for tiny-vit"):
        load_clip("tiny-vit", str(wrong))
    with pytest.raises(WeightsNotFoundError, match="neither a known tag"):
        load_clip("tiny-vit", "no_such_tag")
    for missing in (str(tmp_path / "no" / "dir"), "hf:" + str(tmp_path / "nodir")):
        with pytest.raises(WeightsNotFoundError, match="nodir|does not exist|neither"):
            load_clip(missing)
    with pytest.raises(ConfigError, match="unknown model 'NoSuchNet'"):
        load_clip("NoSuchNet")
    with pytest.raises(WeightsNotFoundError, match="neither open_clip_config.json"):
        load_clip(str(tmp_path))
    with pytest.raises(ConfigError, match="precision"):
        load_clip("tiny-vit", precision="fp8")
    assert issubclass(WeightsNotFoundError, VidclipError)


def test_precision_on_cpu_is_fp32():
    with pytest.warns(UserWarning, match="only used on CUDA"):
        clip = load_clip("tiny-vit", precision="fp16")
    assert clip.precision == "fp32"
    assert clip.encode_frames(frames_u8(1)).dtype == torch.float32


# ------------------------------------------------------------------------------------------
# preprocessing agreement with open_clip's own PIL transform (224-px tiny config)
# ------------------------------------------------------------------------------------------
def _real_frames(max_videos: int = 8, per_video: int = 2) -> list[np.ndarray]:
    import av

    out = []
    for p in sorted((SHARED / "videos").glob("*"))[:max_videos + 1]:
        if p.suffix == ".tsv":
            continue
        with av.open(str(p)) as c:
            for i, fr in enumerate(c.decode(video=0)):
                if i in (0, 7):
                    out.append(fr.to_ndarray(format="rgb24"))
                if i >= 7 or len(out) >= per_video * max_videos:
                    break
    return out


@pytest.fixture(scope="module")
def tiny224():
    import open_clip

    clip = load_clip("tiny-vit-224")
    _, _, pil_preprocess = open_clip.create_model_and_transforms("tiny-vit-224")
    return clip, pil_preprocess


def _check_agreement(clip, pil_preprocess, frames: list[np.ndarray]):
    from PIL import Image

    ref_pixels = torch.stack([pil_preprocess(Image.fromarray(fr)) for fr in frames])
    with torch.no_grad():
        ref = clip.model.encode_image(ref_pixels)
    # same-size frames are batched together, as the pipeline does
    ours = []
    for fr in frames:
        ours.append(clip.encode_frames(torch.from_numpy(fr)[None]))
    ours = torch.cat(ours)
    cos = F.cosine_similarity(ours, ref, dim=-1)
    assert cos.min() >= 0.99, cos
    # and the pixels themselves agree closely (catches mean/std or crop mistakes that a random
    # network might forgive)
    pix = torch.cat([clip.preprocess(torch.from_numpy(fr)[None]) for fr in frames])
    assert (pix - ref_pixels).abs().mean() < 0.005  # measured ~3e-5; a 1-px crop shift gives ~0.04
    return cos


def test_preprocess_agrees_with_open_clip_pil_synthetic(tiny224):
    clip, pil_pre = tiny224
    yy, xx = np.mgrid[0:300, 0:500]
    syn = np.stack([(xx * 255 / 499), (yy * 255 / 299), ((xx + yy) % 97) * 2.6], -1).astype(np.uint8)
    cos = _check_agreement(clip, pil_pre, [syn, syn[:, ::-1].copy(), syn[:200, :150].copy()])
    assert cos.min() > 0.999


@pytest.mark.shared
def test_preprocess_agrees_with_open_clip_pil_real_videos(tiny224):
    if not (SHARED / "videos").is_dir():
        pytest.skip("../shared not present: real sample videos unavailable")
    frames = _real_frames()
    assert len(frames) >= 8
    clip, pil_pre = tiny224
    _check_agreement(clip, pil_pre, frames)


# ------------------------------------------------------------------------------------------
# CUDA (runs only where a GPU exists)
# ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_encode_matches_cpu(tiny, precision):
    gpu = load_clip("tiny-vit", device="cuda", precision=precision)
    assert gpu.identity.key() == tiny.identity.key()
    f = frames_u8(16, 120, 160, seed=7)
    e_gpu = gpu.encode_frames(f)  # uint8 moved to GPU, preprocessed there
    assert e_gpu.device.type == "cuda" and e_gpu.dtype == torch.float32
    cos = F.cosine_similarity(e_gpu.cpu(), tiny.encode_frames(f), dim=-1)
    assert cos.min() > (0.9999 if precision == "fp32" else 0.99)
    t = F.cosine_similarity(gpu.encode_text(TEXTS).cpu(), tiny.encode_text(TEXTS), dim=-1)
    assert t.min() > (0.9999 if precision == "fp32" else 0.99)
    assert gpu.default_batch_size() >= 1


# ------------------------------------------------------------------------------------------
# one rule for `pretrained` (CLI --pretrained, config model.pretrained, Python load_clip)
# ------------------------------------------------------------------------------------------
def test_pretrained_unspecified_means_what_the_name_implies():
    from vidclip.models.clip import resolve_pretrained

    assert resolve_pretrained("ViT-B-32", None) == ("openai", False)
    assert resolve_pretrained("ViT-B-32", "") == ("openai", False)
    # an architecture without an openai tag: its first listed tag
    from open_clip.pretrained import list_pretrained_tags_by_model

    tags = list_pretrained_tags_by_model("ViT-B-16-SigLIP")
    assert tags and "openai" not in tags
    assert resolve_pretrained("ViT-B-16-SigLIP", None) == (tags[0], False)
    assert resolve_pretrained("tiny-vit", None) == (None, True)  # no tag at all: random
    assert resolve_pretrained("hf-tiny", None) == (None, True)
    assert resolve_pretrained("vidclip-synth", None) == (str(SHIPPED_WEIGHTS["vidclip-synth"]), False)
    assert resolve_pretrained("hf:openai/clip-vit-base-patch32", None) == (None, False)
    for word in ("none", "None", "random"):
        for model in ("ViT-B-32", "vidclip-synth", "tiny-vit"):
            assert resolve_pretrained(model, word) == (None, True)
    assert resolve_pretrained("ViT-B-32", "laion2b_s34b_b79k") == ("laion2b_s34b_b79k", False)


def test_model_spec_parser_reads_every_kind_of_spec(tmp_path):
    """The one parser: backend, source, what the backend loads, and what `pretrained` means."""
    import json

    from vidclip.models.clip import parse_model_spec

    def read(model, pretrained=None):
        s = parse_model_spec(model, pretrained)
        return s.backend, s.source, s.ref, s.weights, s.pretrained

    oc_dir = tmp_path / "oc"
    oc_dir.mkdir()
    (oc_dir / "open_clip_config.json").write_text("{}")
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps({"model_type": "clip", "vision_config": {}}))
    ckpt = tmp_path / "w.safetensors"
    assert read(" ViT-B/32 ") == ("open_clip", "arch", "ViT-B-32", "tag", "openai")
    assert read("ViT-B-32", "laion2b_s34b_b79k")[3:] == ("tag", "laion2b_s34b_b79k")
    assert read("ViT-B-32", Path(ckpt))[3:] == ("file", str(ckpt))  # a path-like: a file, even before it exists
    assert read("tiny-vit") == ("open_clip", "arch", "tiny-vit", "random", None)
    assert read("tiny-vit", "Random") == ("open_clip", "arch", "tiny-vit", "random", None)
    assert read("vidclip-synth")[3:] == ("file", str(SHIPPED_WEIGHTS["vidclip-synth"]))
    assert read("hf-tiny") == ("hf", "config", "hf-tiny", "random", None)
    assert read("hf-tiny", str(ckpt)) == ("hf", "config", "hf-tiny", "file", str(ckpt))
    assert read("hf:openai/clip-vit-base-patch32") == ("hf", "hub", "openai/clip-vit-base-patch32", "own", None)
    assert read("openai/clip-vit-base-patch32") == ("hf", "hub", "openai/clip-vit-base-patch32", "own", None)
    assert read("hf-hub:org/repo") == ("open_clip", "hf-hub", "hf-hub:org/repo", "own", None)
    assert read("hf-hub:org/repo", "openai")[3:] == ("own", "openai")  # ignored by the backend, with a warning
    assert read(str(oc_dir)) == ("open_clip", "local-dir", f"local-dir:{oc_dir.resolve()}", "own", None)
    assert read(f"local-dir:{oc_dir}") == ("open_clip", "local-dir", f"local-dir:{oc_dir}", "own", None)
    for spec in (str(hf_dir), "hf:" + str(hf_dir)):
        assert read(spec) == ("hf", "folder", str(hf_dir.resolve()), "own", None)
    assert read(str(hf_dir), str(tmp_path))[3:] == ("file", str(tmp_path))  # weights from another folder
    for own in ("hf:org/name", "hf-hub:org/repo", str(hf_dir), f"local-dir:{oc_dir}"):
        with pytest.raises(ConfigError, match="brings its own weights"):
            parse_model_spec(own, "none")
    with pytest.raises(ConfigError, match="unknown model 'NoSuchNet'"):
        parse_model_spec("NoSuchNet")
    with pytest.raises(ConfigError, match="expected a model name"):
        parse_model_spec("  ")
    with pytest.raises(WeightsNotFoundError, match="neither a known tag"):
        parse_model_spec("ViT-B-32", "no_such_tag")


def test_identity_load_args_invert_what_the_backends_record(tmp_path):
    from vidclip.models.clip import identity_load_args

    def ident(family, name, pretrained, random_weights=False):
        return {"family": family, "name": name, "pretrained": pretrained, "embed_dim": 8, "image_size": 32,
                "random_weights": random_weights, "weights_digest": "0" * 16}

    assert identity_load_args(ident("open_clip", "ViT-B-32", "openai")) == ("ViT-B-32", "openai")
    assert identity_load_args(ident("open_clip", "tiny-vit", None, True)) == ("tiny-vit", "none")
    assert identity_load_args(ident("hf", "hf-tiny", None, True)) == ("hf-tiny", "none")
    assert identity_load_args(ident("hf", "org/name", "org/name")) == ("hf:org/name", None)
    assert identity_load_args(ident("hf", "/abs/dir", "/abs/other")) == ("hf:/abs/dir", "/abs/other")
    assert identity_load_args(ident("open_clip", "hf-hub:org/repo", "hf-hub:org/repo")) == ("hf-hub:org/repo", None)
    assert identity_load_args(ModelIdentity.from_dict(ident("open_clip", "local-dir:/d", "/d"))) == ("local-dir:/d", "/d")
    with pytest.raises(ConfigError, match="missing field"):
        identity_load_args({"family": "hf", "name": "x"})


def test_vidclip_synth_defaults_to_shipped_weights_and_none_is_random():
    from safetensors.torch import load_file

    shipped = load_clip("vidclip-synth")
    assert not shipped.identity.random_weights
    sd = load_file(str(SHIPPED_WEIGHTS["vidclip-synth"]))
    k = next(k for k in sd if k.endswith("proj") or "weight" in k)
    assert torch.equal(shipped.model.state_dict()[k].float(), sd[k].float())
    for word in ("none", "random"):
        rnd = load_clip("vidclip-synth", word)
        assert rnd.identity.random_weights and rnd.identity.pretrained is None
        assert rnd.identity.weights_digest != shipped.identity.weights_digest
    # a random identity reloads as random, not as the shipped weights
    again = load_clip_from_identity(rnd.identity.to_dict())
    assert again.identity.weights_digest == rnd.identity.weights_digest


def test_vidclip_synth_bad_tag_gives_no_network_advice():
    with pytest.raises(WeightsNotFoundError) as ei:
        load_clip("vidclip-synth", "openai")
    assert "network" not in str(ei.value) and "--pretrained none" in str(ei.value)


def _cli_model(argv):
    import argparse

    from vidclip.cli.options import add_model_args, model_from_args

    p = argparse.ArgumentParser()
    add_model_args(p)
    ns = p.parse_args(argv + ["--device", "cpu"])
    return ns, model_from_args(ns)


def test_cli_pretrained_default_follows_the_model(tmp_path, hf_tiny):
    from transformers import CLIPModel

    ns, clip = _cli_model(["--model", "vidclip-synth"])
    assert ns.pretrained is None and not clip.identity.random_weights
    assert clip.identity.weights_digest == load_clip("vidclip-synth").identity.weights_digest
    _, rnd = _cli_model(["--model", "vidclip-synth", "--pretrained", "none"])
    assert rnd.identity.random_weights
    # a local transformers folder (and hf:FOLDER): its own weights, no --pretrained needed
    net = CLIPModel(hf_tiny.model.config)
    net.load_state_dict(perturbed_state(hf_tiny.model, seed=4))
    folder = tmp_path / "hf-folder"
    net.save_pretrained(folder)
    for spec in (str(folder), "hf:" + str(folder)):
        _, c = _cli_model(["--model", spec])
        assert not c.identity.random_weights
        assert torch.equal(c.model.state_dict()["visual_projection.weight"], net.state_dict()["visual_projection.weight"])
    with pytest.raises(ConfigError, match="brings its own weights"):
        _cli_model(["--model", str(folder), "--pretrained", "none"])
    _, t = _cli_model(["--model", "tiny-vit"])
    assert t.identity.random_weights


def test_config_pretrained_none_means_random_and_null_means_implied(tmp_path):
    from vidclip.train.config import apply_overrides, config_from_dict, load_config

    cfg = config_from_dict({"model": {"clip": "vidclip-synth"}})
    assert cfg.model.pretrained is None  # implied: the shipped weights
    assert apply_overrides(cfg, ["model.pretrained=none"]).model.pretrained == "none"
    assert apply_overrides(cfg, ["model.pretrained=Random"]).model.pretrained == "random"
    assert apply_overrides(cfg, ["model.pretrained=null"]).model.pretrained is None
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  clip: vidclip-synth\n  pretrained: none\n")
    assert load_config(f).model.pretrained == "none"
    with pytest.raises(ConfigError, match="did you mean 'model.pretrained'"):
        apply_overrides(cfg, ["model.pretrianed=none"])


def test_train_weights_hint_uses_config_keys():
    from vidclip.models.clip.spec import HOW_TO_LOCAL
    from vidclip.train.commands import _in_config_words

    msg = _in_config_words("ViT-B-32 pretrained='openai': weights could not be downloaded. " + HOW_TO_LOCAL)
    assert "--pretrained" not in msg and "--model" not in msg
    assert "`model.pretrained=/path/to/checkpoint.pt" in msg and "`model.clip=/path/to/dir`" in msg


def test_open_clip_root_log_records_are_taken_off_the_log(caplog, tmp_path):
    """open_clip's 'No pretrained weights loaded ...' (random init, or a checkpoint loaded right
    after) never reaches the log: vidclip says it itself (RANDOM WEIGHTS in the identity)."""
    import logging

    caplog.set_level(logging.DEBUG)
    clip = load_clip("tiny-vit", "none")
    ckpt = tmp_path / "tiny.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in perturbed_state(clip.model).items()}, str(ckpt))
    load_clip("tiny-vit", str(ckpt))
    assert not [r.getMessage() for r in caplog.records if r.name == "root"]
    assert not logging.getLogger().filters  # the capture is removed afterwards


def test_open_clip_log_capture_leaves_no_root_handler_behind(monkeypatch):
    """open_clip's logging.info() installs a root handler when there is none (basicConfig); after
    loading, vidclip's own warnings must still print as plain text, not 'WARNING:name:...'."""
    import logging

    from vidclip.models.clip.open_clip_backend import _captured_open_clip_log

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # a CLI process: nothing configured logging
    with _captured_open_clip_log():
        logging.info("as open_clip logs")  # module-level call: basicConfig adds a StreamHandler
        assert root.handlers  # it did (what the context must undo)
    assert root.handlers == []
