"""``vidclip frames``: write a video's sampled frames as PNGs plus a ``frames.json`` manifest.

Layout of ``out_dir``::

    frame_000.png ...   one PNG per real (mask True) position k of the Sample, named by k
    frames.json         {"video", "sampler", "indices", "timestamps", "mask", "windows",
                         "files", "info"}: what was sampled, where and when

Every file is written to a temporary name and renamed into place, ``frames.json`` last, so a
reader that sees ``frames.json`` sees complete PNGs. PNGs of an earlier run that the new run
does not produce are removed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vidclip.core.errors import VidclipError, display_path
from vidclip.core.fileio import atomic_path, atomic_write_text
from vidclip.video.decode import probe  # noqa: F401  (re-exported: the `probe` verb's API lives with `frames`)
from vidclip.video.files import check_video_file
from vidclip.video.sample import SamplerConfig, sample_video

__all__ = ["write_frames", "probe"]


def write_frames(video, out_dir, cfg: SamplerConfig, backend: str = "auto") -> dict:
    """Sample ``video`` with ``cfg`` and write PNGs + ``frames.json`` into ``out_dir``.

    Returns:
        The manifest dict written to ``frames.json`` (indices, timestamps, mask, windows as
        ``[start, end, first, count]`` lists, files, info).
    """
    from PIL import Image

    if not isinstance(cfg, SamplerConfig):
        cfg = SamplerConfig.from_dict(cfg)
    check_video_file(video)  # cheap checks first: decoding imports torch
    out = Path(out_dir)
    if os.path.lexists(out) and not out.is_dir():
        raise VidclipError(f"{display_path(out)}: exists and is not a directory; the frames go into a folder")
    sampled = sample_video(video, cfg, backend=backend)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VidclipError(f"{out}: cannot create output directory ({e})") from e

    sample = sampled.sample
    positions = [k for k, real in enumerate(sample.mask.tolist()) if real]
    digits = max(3, len(str(len(sample.indices) - 1)))
    files = [f"frame_{k:0{digits}d}.png" for k in positions]
    frames = sampled.frames.cpu().numpy()
    for name, frame in zip(files, frames):
        with atomic_path(out / name) as tmp:
            Image.fromarray(frame).save(tmp, format="PNG")

    manifest = {
        "video": str(video),
        "sampler": cfg.to_dict(),
        "indices": sample.indices.tolist(),
        "timestamps": sample.timestamps.tolist(),
        "mask": sample.mask.tolist(),
        "windows": None if sample.windows is None else
        [[w.start, w.end, w.first, w.count] for w in sample.windows],
        "files": files,
        "info": sampled.info.to_dict(),
    }
    keep = set(files)
    for old in out.glob("frame_*.png"):
        if old.name not in keep:
            old.unlink()
    atomic_write_text(out / "frames.json", json.dumps(manifest, indent=2) + "\n", durable=False)
    return manifest
