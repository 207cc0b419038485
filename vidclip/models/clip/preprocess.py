"""Batched torch preprocessing of decoded frames for CLIP.

Frames arrive as ``uint8 [N, H, W, 3]`` (RGB, see docs/architecture.md) and leave as the
``float32 [N, 3, S, S]`` pixels a CLIP vision tower expects. The steps are those of CLIP's own
(PIL / torchvision) eval transform, which open_clip and OpenAI use:

1. resize so the *shorter* side is ``S`` (bicubic, antialiased; the longer side is
   ``int(S * long / short)`` exactly as ``torchvision.transforms.Resize(S)`` computes it),
2. centre-crop ``S x S`` (offsets rounded as ``torchvision.transforms.CenterCrop`` does),
3. scale to [0, 1] and normalise with the model's mean / std.

Everything runs in torch on the frames' own device, on the whole batch at once (no per-frame
Python loop). The resized image is rounded back to uint8 between step 2 and 3, as PIL does, so
``preprocess_frames == normalise(resize_center_crop(frames))`` and decode workers can shrink
frames with :func:`resize_center_crop` before sending them between processes (an ``S x S``
uint8 frame is ~40x smaller than a 1080p one).

On CPU the resize runs directly on uint8 (torch's AVX path, a port of PIL's resampler); on
CUDA, uint8 bicubic is not implemented, so it runs in float32 and is rounded to uint8.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vidclip.core.errors import VidclipError
from vidclip.models.clip.geometry import crop_offsets, resized_shape

__all__ = [
    "FrameFormatError",
    "preprocess_frames",
    "resize_center_crop",
    "normalize_pixels",
]

_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")

# Upper bound on the float32 working set of one resize chunk (bytes). Full-HD frames are ~25 MB
# each in float32, so a 64-frame batch would otherwise need 1.6 GB at once.
_CHUNK_BYTES = 256 * 1024 * 1024


class FrameFormatError(VidclipError, ValueError):
    """A frames / pixels tensor has the wrong dtype, rank or channel count.

    (Subclasses ValueError too, so generic callers that catch ValueError keep working.)
    """


def _check_frames(frames: torch.Tensor, name: str = "frames") -> None:
    if not isinstance(frames, torch.Tensor):
        raise FrameFormatError(f"{name}: expected a torch.Tensor uint8 [N,H,W,3], got {type(frames).__name__}")
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise FrameFormatError(
            f"{name}: expected uint8 [N,H,W,3] RGB frames, got {str(frames.dtype).replace('torch.', '')} "
            f"{list(frames.shape)}"
        )
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise FrameFormatError(f"{name}: frames have zero height or width: shape {list(frames.shape)}")


def _check_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise FrameFormatError(f"image_size: expected a positive int, got {image_size!r}")
    return image_size


def _uint8_kernel_ok(device: torch.device, interpolation: str) -> bool:
    """torch resamples uint8 directly (antialiased, PIL-exact rounding) only on CPU."""
    return device.type == "cpu" and interpolation != "nearest"


def _resize_crop_chunk(x: torch.Tensor, s: int, interpolation: str) -> torch.Tensor:
    """uint8 [n,H,W,3] -> uint8 [n,s,s,3] (one memory-bounded chunk)."""
    n, h, w, _ = x.shape
    rh, rw = resized_shape(h, w, s)
    # NHWC storage viewed as NCHW is exactly channels_last: no copy, and it is the layout torch's
    # fast uint8 resampler wants.
    nchw = x.permute(0, 3, 1, 2)
    if (rh, rw) != (h, w):
        kwargs = {} if interpolation == "nearest" else {"antialias": True, "align_corners": False}
        if _uint8_kernel_ok(x.device, interpolation):
            out = F.interpolate(nchw.contiguous(memory_format=torch.channels_last), size=(rh, rw),
                                mode=interpolation, **kwargs)
        else:
            out = F.interpolate(nchw.float(), size=(rh, rw), mode=interpolation, **kwargs)
            # bicubic overshoots [0, 255]; clamp + round like PIL.
            out = out.round_().clamp_(0, 255).to(torch.uint8)
    else:
        out = nchw
    top, left = crop_offsets(rh, rw, s)
    if rh < s or rw < s:  # cannot happen after a shorter-side resize, kept as a guard
        raise FrameFormatError(f"frames: resized to {rh}x{rw}, smaller than crop {s}")
    out = out[:, :, top:top + s, left:left + s]
    return out.permute(0, 2, 3, 1).contiguous()


def resize_center_crop(frames: torch.Tensor, image_size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Resize shorter side to ``image_size`` and centre-crop a square.

    Args:
        frames: uint8 ``[N, H, W, 3]`` on any device.
        image_size: output side ``S``.
        interpolation: "bicubic" (CLIP's, default), "bilinear" or "nearest".
    Returns:
        uint8 ``[N, S, S, 3]`` on the same device. Frames already ``S x S`` are returned as is.
    """
    _check_frames(frames)
    s = _check_size(image_size)
    if interpolation not in _INTERPOLATIONS:
        raise FrameFormatError(f"interpolation: expected one of {_INTERPOLATIONS}, got {interpolation!r}")
    n, h, w, _ = frames.shape
    if (h, w) == (s, s) or n == 0:
        return frames if n else frames.new_empty((0, s, s, 3))
    rh, rw = resized_shape(h, w, s)
    per_frame = 4 * 3 * (h * w + rh * rw)  # float32 input + output of one frame
    chunk = max(1, _CHUNK_BYTES // per_frame)
    if chunk >= n:
        return _resize_crop_chunk(frames, s, interpolation)
    # Chunking bounds peak memory; each chunk is still a batched op.
    return torch.cat([_resize_crop_chunk(frames[i:i + chunk], s, interpolation)
                      for i in range(0, n, chunk)])


def normalize_pixels(frames: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[N, S, S, 3]`` -> float32 ``[N, 3, S, S]``: ``(x / 255 - mean) / std`` per channel."""
    _check_frames(frames)
    if len(mean) != 3 or len(std) != 3:
        raise FrameFormatError(f"mean/std: expected 3 values each, got mean={tuple(mean)} std={tuple(std)}")
    if any(v <= 0 for v in std):
        raise FrameFormatError(f"std: values must be > 0, got {tuple(std)}")
    dev = frames.device
    m = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    sd = torch.tensor(std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(m).div_(sd).contiguous()


def preprocess_frames(
    frames: torch.Tensor,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """CLIP eval preprocessing of a batch of frames, in torch on the frames' device.

    Args:
        frames: uint8 ``[N, H, W, 3]`` RGB.
        image_size: side ``S`` of the square model input.
        mean, std: per-channel normalisation of the model (RGB order, for values in [0, 1]).
        interpolation: resize filter, "bicubic" as CLIP was trained with.
    Returns:
        float32 ``[N, 3, S, S]`` on ``frames.device``.
    """
    return normalize_pixels(resize_center_crop(frames, image_size, interpolation), mean, std)
