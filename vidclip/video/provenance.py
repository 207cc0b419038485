"""Whether footage was made by vidclip's synthetic world, and the warning when it is not.

The shipped ``vidclip-synth`` model knows only the synthetic world (:mod:`vidclip.synthetic`), so
the verbs that use a model on footage (``index``, ``search``, ``eval``) warn when that model meets
other footage. The check lives here, below the verbs that need it: it reads container headers and
one JSON file, nothing of the synthetic world's code; the world imports :data:`SYNTH_TAG` from here
to tag what it writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vidclip.core.errors import display_path
from vidclip.video.files import is_video_name

#: Written into every synthetic mp4's container metadata (the ``comment`` tag) by
#: :func:`vidclip.synthetic.world.write_mp4`; :func:`is_synthetic_footage` looks for it.
SYNTH_TAG = "vidclip synthetic footage"

#: The file a synthetic dataset root holds (:func:`vidclip.synthetic.datasets.make_synthetic_dataset`).
SYNTH_META_FILE = "synth_meta.json"

#: The shipped model trained on the synthetic world alone (vidclip/assets): it knows its shapes,
#: colours and backgrounds, nothing else.
SYNTH_MODEL = "vidclip-synth"

#: How many video files of a folder :func:`is_synthetic_footage` inspects.
_DETECT_SAMPLE = 8


def has_synth_tag(path: str | os.PathLike) -> bool:
    """True when the container's ``comment`` tag is :data:`SYNTH_TAG` (header read only)."""
    import av  # local import: PyAV is only needed when looking at videos

    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment", "") == SYNTH_TAG
    except (OSError, ValueError, av.error.FFmpegError):  # unreadable: not ours
        return False


def _listed_in_synth_meta(path: Path) -> bool:
    """True for ``ROOT/videos/<video_id>.mp4`` whose ROOT's synth_meta.json lists it (files
    written before the synthetic world tagged them)."""
    meta = path.parent.parent / SYNTH_META_FILE
    if path.parent.name != "videos" or not meta.is_file():
        return False
    try:
        listed = json.loads(meta.read_text(encoding="utf-8")).get("videos", [])
        return any(v.get("video_id") == path.stem for v in listed)
    except (OSError, ValueError, AttributeError):
        return False


def is_synthetic_footage(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds footage made by the synthetic world (what ``vidclip-synth`` knows).

    The rule, cheapest first:

    - a folder that is a synthetic dataset root (it has ``synth_meta.json``), or its
      ``videos/`` folder, is synthetic;
    - a video file is synthetic when its container carries the :data:`SYNTH_TAG` comment, or
      when it is ``ROOT/videos/<id>.mp4`` of a dataset root whose ``synth_meta.json`` lists
      ``<id>`` (datasets written before the tag existed);
    - any other folder is synthetic when it holds video files (names with a
      :data:`~vidclip.video.files.VIDEO_EXTENSIONS` extension) and the first ``_DETECT_SAMPLE``
      of them (sorted, searched recursively) are all synthetic.

    Missing or unreadable paths are not synthetic. Never raises for a bad path; reads only
    container headers (a few ms per file), never decodes, and does not import torch.
    """
    p = Path(path)
    try:
        if p.is_dir():
            if (p / SYNTH_META_FILE).is_file():
                return True
            if p.name == "videos" and (p.parent / SYNTH_META_FILE).is_file():
                return True
            sample: list[Path] = []
            for f in sorted(p.rglob("*")):
                if is_video_name(f.name) and f.is_file():
                    sample.append(f)
                    if len(sample) == _DETECT_SAMPLE:
                        break
            return bool(sample) and all(is_synthetic_footage(f) for f in sample)
        if not p.is_file():
            return False
    except OSError:
        return False
    return has_synth_tag(p) or _listed_in_synth_meta(p)


def synthetic_model_warning(model_name: str, footage: str | os.PathLike) -> str | None:
    """The one line to show when the synthetic-domain model (:data:`SYNTH_MODEL`) is used on
    ``footage`` (a file or folder) that :func:`is_synthetic_footage` says is not synthetic;
    None when there is nothing to say (another model, or synthetic footage)."""
    if model_name != SYNTH_MODEL or is_synthetic_footage(footage):
        return None
    return (f"warning: {SYNTH_MODEL} knows only the synthetic shapes world of `vidclip synth`; "
            f"its scores mean nothing on {display_path(footage)}")
