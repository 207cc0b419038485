"""Official CLIP4Clip / CLIP2Video / X-Pool checkpoints as vidclip runs (the ``convert-checkpoint``
verb is in :mod:`vidclip.train.commands`).

The key mapping and the official numerics are in :mod:`vidclip.models.convert`; loading an official
file in memory is :func:`vidclip.models.checkpoint.load_official`. This module writes what training
produces (a run dir with a training config), so it sits in train/ (models/ never imports train/).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from vidclip.core.errors import ConfigError, display_path

# torch and the models are imported inside the functions: importing this module stays cheap.

__all__ = ["convert_checkpoint", "check_convert_paths"]

RUN_MARKER = "best.safetensors"  # a folder holding it is a run (written last: a run is complete when it is there)


def check_convert_paths(path: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> tuple[Path, Path]:
    """The checks of :func:`convert_checkpoint` that need no torch: the source is a file torch.save
    could have written, and ``out`` can become the run dir (not a file, not a run unless
    ``overwrite``, inside a folder that can be written). Returns both paths resolved."""
    from vidclip.models.convert import checkpoint_file_problem, not_a_checkpoint

    src = Path(path).expanduser().resolve()
    if not src.exists():
        raise ConfigError(f"{display_path(src)}: checkpoint file not found")
    problem = checkpoint_file_problem(src)
    if problem is not None:
        raise not_a_checkpoint(display_path(src), problem)
    run = Path(out).expanduser().resolve()
    if os.path.lexists(run) and not run.is_dir():
        raise ConfigError(f"--out {display_path(out)}: exists and is not a directory; a run is a folder (give a new "
                          "folder, or an existing run with --force)")
    if (run / RUN_MARKER).exists() and not overwrite:
        raise ConfigError(f"{display_path(run)}: already holds a run ({RUN_MARKER}); pass overwrite / --force to "
                          "replace it")
    ancestor = run.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"--out {display_path(out)}: {display_path(ancestor)} is a file, so the run folder cannot be "
                          "made there")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {display_path(out)}: cannot write in {display_path(ancestor)} (permission denied)")
    return src, run


def _install(tmp: Path, run: Path) -> None:
    """Move the finished run ``tmp`` to ``run``: one rename when ``run`` is new or an empty folder;
    into an existing folder file by file, the run marker last (a run is complete when it is there),
    dropping a fine-tuned CLIP file of the run it replaces that the new run does not have."""
    from vidclip.models.convert import CLIP_FILE

    if not os.path.lexists(run) or (run.is_dir() and not any(run.iterdir())):
        os.replace(tmp, run)  # POSIX: a directory may replace an empty one
        return
    if not (tmp / CLIP_FILE).exists() and (run / CLIP_FILE).exists():
        (run / CLIP_FILE).unlink()
    names = sorted(p.name for p in tmp.iterdir())
    for name in [n for n in names if n != RUN_MARKER] + [RUN_MARKER]:
        os.replace(tmp / name, run / name)
    tmp.rmdir()


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

    The paths are checked first (:func:`check_convert_paths`), before torch loads; the run is built
    in a temporary folder beside ``out`` and moved into place when complete, so a conversion that
    fails leaves nothing behind (not even an empty ``out``).

    Returns a summary dict (module, clip, notes, files).
    """
    src_path, out = check_convert_paths(path, out, overwrite)
    made = []  # parent folders created here, removed again if the conversion fails
    parent = out.parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    for folder in reversed(made):
        folder.mkdir()
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        summary = _convert_into(tmp, out, src_path, source, clip_model=clip_model, clip_pretrained=clip_pretrained,
                                xpool_heads=xpool_heads, drop_tab=drop_tab, data_root=data_root,
                                num_frames=num_frames)
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return summary


def _convert_into(tmp: Path, out: Path, src_path: Path, source: str | None, *, clip_model, clip_pretrained,
                  xpool_heads, drop_tab, data_root, num_frames) -> dict:
    """The conversion, written into ``tmp``; every path recorded in the run names ``out``."""
    from vidclip.core.fileio import atomic_write_text
    from vidclip.models.checkpoint import RetrievalModel, converted_logit_scale, path_for_run
    from vidclip.models.clip.load import load_clip
    from vidclip.models.convert import (
        CLIP_FILE,
        build_converted_temporal,
        clip_architecture,
        clip_matches,
        convert_state,
        read_official_state,
    )
    from vidclip.train.config import TrainConfig, dump_config
    from vidclip.train.model import save_weights

    conv = convert_state(read_official_state(src_path), source, xpool_heads=xpool_heads, drop_tab=drop_tab,
                         where=str(src_path))
    notes = list(conv.notes)
    if clip_model is None:
        if conv.clip_layout != "openai":
            why = ("holds no CLIP weights" if not conv.clip_state else
                   "holds its CLIP in the transformers layout (X-Pool --huggingface), which is not exported")
            raise ConfigError(f"{src_path}: {why}; pass the frozen CLIP to use (--model/--pretrained), knowing the "
                              "temporal module was trained on the checkpoint's fine-tuned CLIP")
        arch = clip_architecture(conv.clip_state)
        clip_file = tmp / CLIP_FILE
        from safetensors.torch import save_file

        from vidclip.core.fileio import atomic_path

        with atomic_path(clip_file) as tmp_file:
            save_file({k: v.detach().contiguous().clone() for k, v in conv.clip_state.items()}, str(tmp_file))
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
    cfg.model.clip, cfg.model.pretrained = clip_model, path_for_run(clip_pretrained, tmp)
    cfg.model.temporal, cfg.model.temporal_args = conv.temporal, dict(conv.temporal_args)
    cfg.model.max_frames, cfg.model.text_tower = conv.max_frames, "frozen"
    identity = clip.identity.to_dict()
    if equivalent_clip:  # loaded from the temporary folder: name the file where the run will have it
        clip_pretrained = identity["pretrained"] = str(out / CLIP_FILE)
    model = RetrievalModel(temporal, converted_logit_scale(conv.log_logit_scale), None)
    save_weights(tmp / RUN_MARKER, model, cfg, identity, converted_from=conv.spec() | {"file": str(src_path)},
                 conversion_notes=notes)
    atomic_write_text(tmp / "config.yaml", dump_config(cfg))
    summary = {"run_dir": str(out), "source": conv.source, "temporal": conv.temporal,
               "temporal_args": conv.temporal_args, "max_frames": conv.max_frames, "embed_dim": conv.embed_dim,
               "clip": {"model": clip_model, "pretrained": clip_pretrained, "finetuned_from_checkpoint": equivalent_clip},
               "notes": notes}
    atomic_write_text(tmp / "conversion.json", json.dumps(summary, indent=2) + "\n")
    return summary
