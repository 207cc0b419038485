"""A FrozenCLIP whose image tower runs on ONNX Runtime (CPU): ``--runtime onnx [--precision int8]``.

:func:`onnx_image_clip` wraps a loaded :class:`~vidclip.models.clip.load.FrozenCLIP`: frames are
preprocessed by the model's own torch code (so the pixels are the torch path's, bit for bit) and
the exported image tower (:func:`~vidclip.models.clip.onnx_export.export_image_tower`, exported
once per model identity into the user cache :func:`~vidclip.models.clip.onnx_runtime.default_cache_dir`,
then reused; int8 by :func:`~vidclip.models.clip.onnx_export.quantize_dynamic_int8`) computes the
embeddings. Everything else (text tower, tokenizer, attributes) is the wrapped model's.

Identity (what stored features are said to be of):

- ``fp32``: the wrapped model's own identity. ONNX Runtime fp32 and torch fp32 agree to ~1e-7 on
  unit vectors (the export is verified to 1e-5), closer than torch's fp16 autocast on a GPU,
  which has always shared the identity; features of either may sit in one store or index.
- ``int8``: the identity with :data:`INT8_TAG` appended to its weights digest (cosine to fp32
  ~0.99: other features). A store or index built with one refuses features of the other through
  the ordinary identity check, naming both keys; :func:`base_identity` / :func:`identity_precision`
  read the tag back (an index's text queries use the fp32 text tower, which int8 leaves as is).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vidclip.core.errors import ConfigError
from vidclip.models.clip import onnx_runtime as rt
from vidclip.models.clip.onnx_runtime import INT8_TAG, base_identity, identity_precision

__all__ = ["INT8_TAG", "RUNTIMES", "OnnxImageCLIP", "onnx_image_clip", "load_for_identity", "base_identity",
           "identity_precision"]

RUNTIMES = ("torch", "onnx")


class OnnxImageCLIP:
    """FrozenCLIP-compatible: ``encode_frames`` on ONNX Runtime, the rest delegated to ``base``."""

    def __init__(self, base, folder: Path, precision: str, threads: int | None = None):
        self.base = base
        self.folder = Path(folder)
        self.runtime = "onnx"
        self.onnx_precision = precision
        self.identity = base.identity if precision == "fp32" else replace(
            base.identity, weights_digest=base.identity.weights_digest + INT8_TAG)
        self._session = rt.make_session(self.folder / rt.MODEL_FILE, threads)
        self._input = self._session.get_inputs()[0].name

    def __getattr__(self, name):  # everything not overridden is the wrapped FrozenCLIP's
        return getattr(self.__dict__["base"], name)

    def __repr__(self) -> str:
        return f"OnnxImageCLIP({self.base!r}, precision={self.onnx_precision})"

    def default_batch_size(self) -> int:
        return 16

    def encode_frames(self, frames_or_pixels: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """As :meth:`FrozenCLIP.encode_frames` (uint8 ``[N, H, W, 3]`` frames or float ``[N, 3, S, S]``
        pixels -> float32 ``[N, D]``, not normalised), the tower on ONNX Runtime (CPU tensors out)."""
        x = frames_or_pixels
        if isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[0] == 0:
            return torch.zeros((0, self.base.embed_dim), dtype=torch.float32)
        bs = batch_size or self.default_batch_size()
        if bs <= 0:
            raise ConfigError(f"batch_size: must be positive, got {batch_size}")
        outs = []
        with torch.no_grad():
            for i in range(0, x.shape[0], bs):
                pixels = self._to_pixels(x[i: i + bs], "frames_or_pixels").float().cpu().numpy()
                outs.append(self._session.run(None, {self._input: np.ascontiguousarray(pixels)})[0])
        return torch.from_numpy(np.concatenate(outs).astype(np.float32, copy=False))


def onnx_image_clip(clip, precision: str = "fp32", cache_dir: str | os.PathLike | None = None,
                    threads: int | None = None) -> OnnxImageCLIP:
    """``clip`` (a FrozenCLIP) with its image tower on ONNX Runtime at ``precision`` ("fp32",
    "int8"; "auto" = fp32). The tower is exported (and quantised) on first use per model identity
    into ``cache_dir`` (default the user cache) and reused after. Raises OnnxRuntimeUnavailable /
    OnnxExportError when that cannot be done."""
    from vidclip.models.clip.onnx_export import export_image_tower, quantize_dynamic_int8

    precision = "fp32" if precision == "auto" else precision
    if precision not in ("fp32", "int8"):
        raise ConfigError(f"precision: expected fp32 or int8 for the ONNX runtime, got {precision!r}")
    if isinstance(clip, OnnxImageCLIP):
        clip = clip.base
    folder = rt.find_export(clip.identity, "image", precision, cache_dir=cache_dir)
    if folder is None:
        fp32 = rt.find_export(clip.identity, "image", "fp32", cache_dir=cache_dir) or export_image_tower(clip, cache_dir)
        folder = fp32 if precision == "fp32" else quantize_dynamic_int8(fp32)
    return OnnxImageCLIP(clip, folder, precision, threads)


def load_for_identity(identity: dict, device: str | None = None):
    """The encoder an identity was recorded from (an index's, a store's): the FrozenCLIP, or for
    int8 features that model with its int8 image tower (always on the CPU)."""
    from vidclip.models.clip.load import load_clip_from_identity

    if identity_precision(identity) == "int8":
        return onnx_image_clip(load_clip_from_identity(base_identity(identity), device="cpu", precision="fp32"), "int8")
    return load_clip_from_identity(identity, **({"device": device} if device else {}))
