"""The server's memory under image uploads (issue 16, part 4).

An 8K PNG of ~100 KB decodes to 100 MB; before the fix eight concurrent uploads took a server
from ~0.9 GB to ~4.9 GB of RSS and left ~3 GB behind. Now image searches are bounded
(``max_image_decodes``), a big picture is resized to the model's input size straight after
decoding (``load_query_image(min_side=S)``), and the freed heap goes back to the system
(``release_freed_memory``). The burst test runs ``vidclip serve`` as its own process and reads
its ``/proc/PID/status`` through tools/bench_serve_memory.py, which BENCHMARKS.md's figures
come from too; the others check that the early resize keeps what the model sees.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_serve_memory.py"


def _tool():
    spec = importlib.util.spec_from_file_location("bench_serve_memory", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
def test_upload_burst_memory_is_bounded_and_given_back(tmp_path):
    from serve_fixtures import build_real_index, make_video

    lib = tmp_path / "library"
    lib.mkdir()
    make_video(lib / "ramp.mp4", seconds=2.0)
    index, _, _ = build_real_index(lib, tmp_path / "index")
    index.close()
    tool = _tool()
    body = tool.worst_png(7680, 4320)  # ~100 KB, 100 MB decoded: the largest the pixel limit admits
    r = tool.measure(tmp_path / "index", body, 8)
    print(f"\nserver RSS for 8 concurrent {len(body) / 1e3:.0f} KB 7680x4320 PNG uploads: before {r['before']:.0f} MB, "
          f"peak {r['peak']:.0f} MB (+{r['peak'] - r['before']:.0f}), after {r['after']:.0f} MB "
          f"(+{r['after'] - r['before']:.0f}); peak from {r['peak_from']}")
    assert r["status"] == [200] * 8
    # before the fix: peak +4,000 MB, after +3,000 MB
    assert r["peak"] - r["before"] < 1000, r
    assert r["after"] - r["before"] < 200, r


def natural_ish(width: int, height: int, seed: int = 0):
    """A picture with what photos have: smooth colour fields, hard edges, thin lines and grain."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8)).resize((width, height),
                                                                                   Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(60):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(width // 100, width // 8))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x - r, y - r, x + r, y + r // 2], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    for _ in range(200):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, [width, height, width, height]))
        draw.line([x0, y0, x1, y1], fill=tuple(int(c) for c in rng.integers(0, 256, 3)),
                  width=int(rng.integers(2, 30)))
    arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, (height, width, 1), dtype=np.int16)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _encoded(img, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo_4k():
    img = natural_ish(3840, 2160)
    return {"PNG": _encoded(img, "PNG", compress_level=1), "JPEG": _encoded(img, "JPEG", quality=90)}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_big_picture_is_resized_on_load_as_the_full_size_path_would(photo_4k, fmt):
    """``min_side=S`` gives the shorter-side-S picture resize_center_crop makes of the full-size one,
    within a grey level on average, and the model's embedding of it is the same (cosine >= 0.999)."""
    import torch

    from vidclip.index.queries import load_query_image
    from vidclip.models.clip.load import load_clip
    from vidclip.models.clip.preprocess import resize_center_crop

    data = photo_4k[fmt]
    full = load_query_image(data)
    assert full.shape == (1, 2160, 3840, 3)
    for s in (224, 64):
        early = load_query_image(data, min_side=s)
        assert early.shape == (1, s, int(s * 3840 / 2160), 3)  # already the model's size: nothing big kept
        diff = (resize_center_crop(full, s).float() - resize_center_crop(early, s).float()).abs()
        print(f"\n{fmt} S={s}: mean |difference| {diff.mean():.3f} grey levels, max {diff.max():.0f}")
        assert diff.mean() < 1.0, diff.mean()
    clip = load_clip("vidclip-synth", None)  # trained (on synthetic videos); its input side is 64
    with torch.no_grad():
        a = clip.encode_frames(resize_center_crop(full, clip.image_size)).float()
        b = clip.encode_frames(resize_center_crop(load_query_image(data, min_side=clip.image_size),
                                                  clip.image_size)).float()
    cos = torch.nn.functional.cosine_similarity(a, b).item()
    print(f"{fmt}: cosine of the two embeddings {cos:.6f}")
    assert cos >= 0.999


def _exif(orientation: int):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("case", ["RGBA png", "palette png", "grey png", "JPEG turned 6", "TIFF turned 8",
                                  "PNG turned 3", "panorama png", "small png"])
def test_modes_and_orientation_survive_the_early_resize(case):
    """Alpha dropped, palette and grey mapped to RGB, EXIF orientation applied: as at full size.
    A long thin picture is resized early too; a small one is decoded exactly as before."""
    from PIL import Image

    from vidclip.index.queries import load_query_image
    from vidclip.models.clip.geometry import resized_shape
    from vidclip.models.clip.preprocess import resize_center_crop

    img = natural_ish(1600, 1000, seed=1)
    data = {
        "RGBA png": lambda: _encoded(img.convert("RGBA"), "PNG", compress_level=1),
        "palette png": lambda: _encoded(img.quantize(64), "PNG", compress_level=1),
        "grey png": lambda: _encoded(img.convert("L"), "PNG", compress_level=1),
        "JPEG turned 6": lambda: _encoded(img, "JPEG", quality=92, exif=_exif(6)),
        "TIFF turned 8": lambda: _encoded(img, "TIFF", tiffinfo={0x0112: 8}),  # PIL turns it when loading
        "PNG turned 3": lambda: _encoded(img, "PNG", compress_level=1, exif=_exif(3)),
        "panorama png": lambda: _encoded(natural_ish(4000, 300, seed=2), "PNG", compress_level=1),
        "small png": lambda: _encoded(img.resize((300, 200)), "PNG"),
    }[case]()
    s = 64
    full = load_query_image(data)
    early = load_query_image(data, min_side=s)
    if case.endswith(("6", "8")):
        assert full.shape[1:3] == (1600, 1000)  # turned upright
    if case == "small png":
        assert early.shape == full.shape and bool((early == full).all())
        return
    assert early.shape[1:3] == resized_shape(full.shape[1], full.shape[2], s)  # upright, shorter side S
    diff = (resize_center_crop(full, s).float() - resize_center_crop(early, s).float()).abs()
    assert diff.mean() < 1.5, (case, diff.mean())
    with Image.open(io.BytesIO(data)) as opened:  # a caller's PIL image is used, never changed
        size = opened.size
        load_query_image(opened, min_side=s)
        assert opened.size == size
