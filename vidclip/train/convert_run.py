"""Official CLIP4Clip / CLIP2Video / X-Pool checkpoints as vidclip runs (the ``convert-checkpoint``
verb is in :mod:`vidclip.train.commands`).

The key mapping and the official numerics are in :mod:`vidclip.models.convert`; loading an official
file in memory is :func:`vidclip.models.checkpoint.load_official`. This module writes what training
produces (a run dir with a training config), so it sits in train/ (models/ never imports train/).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ConfigError

# torch and the models are imported inside the functions: importing this module stays cheap.

__all__ = ["convert_checkpoint"]


def convert_checkpoint(path: str | os.PathLike, out: str | os.PathLike, source: str | None = None, *,
                       clip_model: str | None = None, clip_pretrained: str | None = None,
                       xpool_heads: int = 1, drop_tab: bool = False, data_root: str = "data/msrvtt",
                       num_frames: int = 12, overwrite: bool = False) -> dict:
    """Convert an official checkpoint into a vidclip run dir ``out``.

    Writes ``out/best.safetensors`` (vidclip's training-checkpoint format, so ``vidclip eval``,
    ``index --temporal`` and ``serve`` use it as any run), ``out/config.yaml`` and, unless
    ``clip_model`` is given, ``out/clip_finetuned.safetensors`` (the checkpoint's fine-tuned CLIP,
    OpenAI layout), which the run names as its frozen CLIP. ``model.pretrained`` names a file inside
    ``out`` relative to it (``clip_finetuned.safetensors``), so the run dir can be moved or copied;
    ``load_checkpoint`` resolves it against the run dir.

    Returns a summary dict (module, clip, notes, files).
    """

    from ..fileio import atomic_write_text
    from ..models.checkpoint import RetrievalModel, converted_logit_scale, path_for_run
    from ..models.clip import load_clip
    from ..models.convert import (
        CLIP_FILE,
        build_converted_temporal,
        clip_architecture,
        clip_matches,
        convert_state,
        read_official_state,
    )
    from .config import TrainConfig, dump_config
    from .model import save_weights

    src_path = Path(path).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if (out / "best.safetensors").exists() and not overwrite:
        raise ConfigError(f"{out}: already holds a run (best.safetensors); pass overwrite / --force to replace it")
    conv = convert_state(read_official_state(src_path), source, xpool_heads=xpool_heads, drop_tab=drop_tab,
                         where=str(src_path))
    notes = list(conv.notes)
    out.mkdir(parents=True, exist_ok=True)
    if clip_model is None:
        if conv.clip_layout != "openai":
            why = ("holds no CLIP weights" if not conv.clip_state else
                   "holds its CLIP in the transformers layout (X-Pool --huggingface), which is not exported")
            raise ConfigError(f"{src_path}: {why}; pass the frozen CLIP to use (--model/--pretrained), knowing the "
                              "temporal module was trained on the checkpoint's fine-tuned CLIP")
        arch = clip_architecture(conv.clip_state)
        clip_file = out / CLIP_FILE
        from safetensors.torch import save_file

        from ..fileio import atomic_path

        with atomic_path(clip_file) as tmp:
            save_file({k: v.detach().contiguous().clone() for k, v in conv.clip_state.items()}, str(tmp))
        clip_model, clip_pretrained = arch, str(clip_file)
        equivalent_clip = True
    else:
        equivalent_clip = False
    clip = load_clip(clip_model, clip_pretrained)
    if not equivalent_clip:
        same = clip_matches(clip, conv) if conv.clip_state else None
        if same is not True:
            notes.append(f"the frozen CLIP is {clip_model} ({clip_pretrained}), not the checkpoint's fine-tuned "
                         "CLIP: the temporal module sees other features than it was trained on, so this is not "
                         "the official model")
    if clip.embed_dim != conv.embed_dim:
        raise ConfigError(f"{clip_model}: embed_dim {clip.embed_dim} != the checkpoint's temporal width {conv.embed_dim}")
    temporal = build_converted_temporal(conv, clip, where=str(src_path))
    cfg = TrainConfig(name=out.name, run_dir=str(out))
    cfg.data.root, cfg.data.num_frames, cfg.data.encode_frames = data_root, num_frames, num_frames
    # the CLIP file inside the run is stored relative to it: the run stays usable when moved
    cfg.model.clip, cfg.model.pretrained = clip_model, path_for_run(clip_pretrained, out)
    cfg.model.temporal, cfg.model.temporal_args = conv.temporal, dict(conv.temporal_args)
    cfg.model.max_frames, cfg.model.text_tower = conv.max_frames, "frozen"
    model = RetrievalModel(temporal, converted_logit_scale(conv.log_logit_scale), None)
    save_weights(out / "best.safetensors", model, cfg, clip.identity.to_dict(),
                 converted_from=conv.spec() | {"file": str(src_path)}, conversion_notes=notes)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    summary = {"run_dir": str(out), "source": conv.source, "temporal": conv.temporal,
               "temporal_args": conv.temporal_args, "max_frames": conv.max_frames, "embed_dim": conv.embed_dim,
               "clip": {"model": clip_model, "pretrained": clip_pretrained, "finetuned_from_checkpoint": equivalent_clip},
               "notes": notes}
    atomic_write_text(out / "conversion.json", json.dumps(summary, indent=2) + "\n")
    return summary
