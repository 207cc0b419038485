"""The zero-shot text classifier: class names x prompt templates -> normalised weights [C, D].

Each class's prompts are encoded, L2-normalised, averaged and normalised again (CLIP's prompt
ensembling). Templates contain ``{}`` where the (cleaned) class name goes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from vidclip.core.errors import ConfigError
from vidclip.core.textio import parse_json, read_text, split_lines

if TYPE_CHECKING:
    import torch

#: The default ensemble for actions (a subset of the Kinetics / UCF101 templates of CLIP's paper).
DEFAULT_TEMPLATES = (
    "a video of a person {}.",
    "a video of a person doing {}.",
    "a photo of a person {}.",
    "a person {}.",
    "an example of a person {}.",
    "a demonstration of a person {}.",
    "a video of {}.",
    "{}",
)


def read_templates(path: str | os.PathLike) -> list[str]:
    """Templates from a file: a JSON list of strings, or one template per line (``#`` comments)."""
    p = Path(path)
    text = read_text(p, error=ConfigError)  # BOM dropped; unreadable / not UTF-8: one line naming the file
    if p.suffix.lower() == ".json":
        templates = parse_json(text, p, error=ConfigError)
        if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
            raise ConfigError(f"{p}: expected a JSON list of template strings")
    else:
        templates = [ln.strip() for ln in split_lines(text) if ln.strip() and not ln.lstrip().startswith("#")]
    for i, t in enumerate(templates, 1):
        if t.count("{}") != 1:
            raise ConfigError(f"{p}: template {i} {t!r} must contain '{{}}' exactly once (where the class name goes)")
    if not templates:
        raise ConfigError(f"{p}: no prompt templates in the file")
    return templates


def text_classifier(clip, class_names: list[str], templates=DEFAULT_TEMPLATES, text_tower=None) -> torch.Tensor:
    """Zero-shot weights float32 [C, D] on the CPU: per class, mean of normalised prompt embeddings, normalised.

    ``text_tower``: a checkpoint's fine-tuned text tower (``text_tower: finetune`` runs), whose
    embeddings its temporal module was trained against; None: the frozen CLIP text tower.
    """
    import torch  # here, not at import: `vidclip classify` checks its inputs before torch loads

    templates = list(templates)
    prompts = [t.format(name) for name in class_names for t in templates]
    with torch.no_grad():
        if text_tower is None:
            emb = clip.encode_text(prompts).float().cpu()
        else:
            from vidclip.eval.evaluate import encode_captions

            emb = encode_captions(prompts, clip, text_tower)
    emb = torch.nn.functional.normalize(emb, dim=-1).reshape(len(class_names), len(templates), -1)
    return torch.nn.functional.normalize(emb.mean(dim=1), dim=-1)
