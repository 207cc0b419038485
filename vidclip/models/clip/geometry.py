"""CLIP's eval-transform geometry in plain integers (no torch, no numpy): where a frame is resized
to and where the centre crop starts. Shared by the torch preprocessing
(:mod:`vidclip.models.clip.preprocess`) and the torch-free ONNX Runtime path
(:mod:`vidclip.models.clip.onnx_runtime`), so both crop the same pixels.
"""

from __future__ import annotations

__all__ = ["resized_shape", "crop_offsets"]


def resized_shape(height: int, width: int, image_size: int) -> tuple[int, int]:
    """(h, w) after resizing the shorter side to ``image_size`` (torchvision ``Resize(int)`` rule:
    the longer side is ``int(S * long / short)``, truncated)."""
    if height <= width:
        return image_size, int(image_size * width / height)
    return int(image_size * height / width), image_size


def crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the centred ``size x size`` crop of a ``height x width`` image.

    torchvision ``CenterCrop``: ``int(round((h - s) / 2.0))``; Python's round() is banker's
    rounding, identical to what torchvision uses.
    """
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
