"""What a query becomes before it is searched: the index's text encoder without torch, and an
example image decoded in bounded memory.

:func:`onnx_text_encoder` picks the index's exported text tower (ONNX Runtime, no torch) when it
matches the index's model (:func:`export_query_tower` puts it there when the index is built or
synced); :func:`load_query_image` turns an untrusted picture into frames,
checking its size from the header before decoding and shrinking a big one while decoding.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vidclip.core.errors import ConfigError, VidclipError, display_path
from vidclip.index.catalog import Catalog
from vidclip.index.directory import IndexDir

#: the index's exported ONNX towers live in <index>/onnx/ (they move with the index)
ONNX_DIR = "onnx"
#: catalog meta key recording the text tower's export (dir relative to the index, identity key, check)
ONNX_TEXT_META = "onnx_text"


def onnx_text_encoder(index_dir: IndexDir, catalog: Catalog):
    """The index's exported text tower on ONNX Runtime (an OnnxCLIP), or None: no onnxruntime,
    a temporal checkpoint (queries go through its own text tower), no export in the index, or
    one that is incomplete, damaged or of another model identity. Imports no torch."""
    model, key = catalog.get_meta("model"), catalog.get_meta("model_key")
    temporal = catalog.get_meta("temporal") or {"name": "mean"}
    if model is None or key is None or temporal.get("name", "mean") != "mean":
        return None
    from vidclip.models.clip import onnx_runtime as rt
    from vidclip.models.clip.identity import identity_key

    if not rt.onnx_available():
        return None
    try:
        if identity_key(model) != key:
            return None
        folder = rt.find_export(model, "text", cache_dir=index_dir.path / ONNX_DIR)
        return None if folder is None else rt.OnnxCLIP(folder.parent, key=key)
    except (VidclipError, KeyError, TypeError, ValueError):  # an odd record: the torch path decides
        return None


def load_query_image(image, *, max_pixels: int | None = None, min_side: int | None = None):
    """An example image -> uint8 torch tensor [1, H, W, 3] (RGB, EXIF orientation applied).

    ``image``: a ``PIL.Image.Image``, a file path, or the bytes of an image file (e.g. an upload).
    Untrusted input is safe: the size is read from the header and checked against the decoding
    pixel limit (:func:`vidclip.video.reader.max_pixels_limit`, 8K UHD unless raised) before any
    pixel is decoded; a file that is not an image is a ConfigError naming it. Animated images
    give their first frame.

    ``min_side`` (the model's input side S): a picture of at least (2 * ``REDUCING_GAP`` * S)^2
    pixels (1344^2 for S = 224) whose shorter side is over S comes back already resized to a
    shorter side of S, as :func:`~vidclip.models.clip.preprocess.resize_center_crop` would (JPEG decoded
    at 1/2, 1/4 or 1/8 scale, then PIL's resize with ``reducing_gap``), so an 8K picture holds
    ~100 MB only while it is decoded, not the ~470 MB of full-size copies. Smaller ones, and all
    with None, come back at full size.
    """
    import io

    from PIL import Image

    from vidclip.video.reader import max_pixels_limit

    limit = max_pixels_limit(max_pixels)
    if isinstance(image, Image.Image):
        name, img = "image", image
    else:
        if isinstance(image, (bytes, bytearray, memoryview)):
            name, src = f"image data ({len(image)} bytes)", io.BytesIO(bytes(image))
        elif isinstance(image, (str, os.PathLike)):
            name, src = display_path(image), Path(image).expanduser()
            if not src.is_file():
                raise ConfigError(f"{name}: no such image file")
            if src.stat().st_size == 0:
                raise ConfigError(f"{name}: empty file (0 bytes)")
        else:
            raise ConfigError(f"search_image: expected a PIL image, a path or bytes, got {type(image).__name__}")
        try:
            img = Image.open(src)
        except Image.DecompressionBombError as e:
            raise ConfigError(f"{name}: refused, the picture is too large ({e})") from None
        except Image.UnidentifiedImageError:
            raise ConfigError(f"{name}: not a readable image (not a format PIL knows)") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ConfigError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None
    # the way to raise the limit is the operator's: not said for bytes (an upload, over HTTP)
    hint = "" if isinstance(image, (bytes, bytearray, memoryview)) else " (raise it with VIDCLIP_MAX_PIXELS)"
    try:
        return _image_tensor(img, name, limit, hint, min_side, may_draft=img is not image)
    finally:
        if img is not image:
            img.close()


# load_query_image(min_side=S) resizes big pictures in PIL, which box-averages by a whole factor
# (Image.reduce) down to no less than this many times the target size before the bicubic resize:
# the near-exact resize PIL documents for reducing_gap=3 (tests/test_serve_memory.py measures it).
REDUCING_GAP = 3.0


def _shrunk(img, min_side: int, may_draft: bool):
    """``img`` (not yet loaded unless the caller's) resized to a shorter side of ``min_side`` as
    :func:`~vidclip.models.clip.preprocess.resize_center_crop` would (RGB, bicubic) when it is big (see
    load_query_image); else ``img`` itself. The copy keeps ``img.info``, so its EXIF orientation."""
    from PIL import Image

    from vidclip.models.clip.geometry import resized_shape

    w, h = img.size
    want = int(np.ceil(REDUCING_GAP * min_side))
    # Small pictures stay on the exact path indexing takes (PIL's bicubic differs from torch's by
    # a grey level here and there); a long thin one is big however short its shorter side.
    if min(w, h) <= min_side or w * h < (2 * want) ** 2:
        return img
    if may_draft:  # JPEG: scaled in the DCT (never below the size asked); other formats ignore it
        img.draft(None, (-(-w * want // min(w, h)), -(-h * want // min(w, h))))
    img.load()  # before the copies: a PNG's eXIf chunk may follow its pixels
    rgb = img if img.mode == "RGB" else img.convert("RGB")  # as the full-size path: alpha dropped, palette mapped
    rh, rw = resized_shape(h, w, min_side)  # from the header's size: a JPEG draft may round its own
    return rgb.resize((rw, rh), Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP)


def _image_tensor(img, name: str, limit: int, hint: str = "", min_side: int | None = None,
                  may_draft: bool = False):
    import torch
    from PIL import ImageOps

    w, h = img.size
    if w * h > limit:
        raise ConfigError(f"{name}: picture size {w}x{h} ({w * h / 1e6:.1f} Mpixel) is over the decoding limit of "
                          f"{limit / 1e6:.1f} Mpixel{hint}")
    if w == 0 or h == 0:
        raise ConfigError(f"{name}: the picture is empty ({w}x{h})")
    try:
        img.seek(0)
        if min_side:
            img = _shrunk(img, min_side, may_draft)
        rgb = ImageOps.exif_transpose(img).convert("RGB")
        pixels = np.asarray(rgb, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt pixel data
        raise ConfigError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None
    return torch.from_numpy(pixels.copy())[None]


# ----------------------------------------------------------------------------- made when an index is built


_export_warned: set = set()


def export_query_tower(index_dir: IndexDir, catalog: Catalog, load) -> bool:
    """Give the index the ONNX text tower of its model, for torch-free text search
    (:func:`onnx_text_encoder`), and record it in the catalog meta.

    The tower is exported once per model identity into the user cache
    (:func:`vidclip.models.clip.onnx_runtime.default_cache_dir`, verified there to 1e-5) and copied
    (hard-linked when it can) into ``<index>/onnx/<identity>/text`` whole, through a temporary
    sibling renamed into place, so the index carries it when it moves. ``load()`` returns the
    index's FrozenCLIP; it is called only when the user cache has no export yet. Nothing to do
    when the index already has a complete export of its model. When it cannot be made (no
    onnxruntime, a tokenizer without a torch-free equivalent, a failed verification, a read-only
    cache) it warns once and returns False: the index is searched through torch, as before.
    """
    import shutil
    import uuid
    import warnings

    from vidclip.models.clip import onnx_runtime as rt

    model, key = catalog.get_meta("model"), catalog.get_meta("model_key")
    if model is None or key is None:
        return False
    base = index_dir.path / ONNX_DIR
    have = rt.find_export(model, "text", cache_dir=base)
    try:
        if have is None:
            src = rt.find_export(model, "text")  # the user cache
            if src is None:
                from vidclip.models.clip.onnx_export import export_text_tower

                src = export_text_tower(load())
            target = rt.tower_dir(rt.export_root(base, model), "text")
            target.parent.mkdir(parents=True, exist_ok=True)
            for stale in target.parent.glob(f".{target.name}.*.tmp"):  # a killed copy (we hold the index lock)
                shutil.rmtree(stale, ignore_errors=True)
            tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
            try:
                shutil.copytree(src, tmp, copy_function=_link_or_copy)
                rt.read_manifest(tmp)
                if target.exists():  # damaged or another identity's: replaced whole
                    shutil.rmtree(target)
                os.rename(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            have = rt.find_export(model, "text", cache_dir=base)
            if have is None:
                raise ConfigError(f"{display_path(target)}: the copied export does not read back")
    except Exception as e:  # OnnxExportError, OnnxRuntimeUnavailable, OSError, ...: torch search still works
        msg = f"{type(e).__name__}: {e}"
        if msg not in _export_warned:
            _export_warned.add(msg)
            warnings.warn(f"{display_path(index_dir.path)}: no ONNX text tower for torch-free search ({msg}); "
                          "text queries load torch", stacklevel=2)
        return False
    manifest = rt.read_manifest(have)
    record = {"dir": have.relative_to(index_dir.path).as_posix(), "key": key,
              "max_abs_diff": (manifest.get("verification") or {}).get("max_abs_diff")}
    if catalog.get_meta(ONNX_TEXT_META) != record:
        with catalog.transaction() as cur:
            catalog.set_meta(cur, ONNX_TEXT_META, record)
    return True


def _link_or_copy(src, dst):
    """A hard link when the cache and the index share a file system (the export is never modified
    in place: a re-export is a new folder), else a copy."""
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
