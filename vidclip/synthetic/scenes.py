"""Scene libraries: videos that string several synthetic scenes together.

A scene is one clip of the synthetic world (:data:`SCENE_SECONDS` long); a video of a library
holds a few of them in a row, so a query has a right *moment* as well as a right video. Used by
``vidclip demo`` (:mod:`vidclip.cli.demo`) and the rerank example
(:mod:`vidclip.synthetic.rerank_example`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidclip.core.fileio import atomic_path
from vidclip.synthetic.captions import caption_for, scene_description
from vidclip.synthetic.world import ClipSpec, SynthConfig, random_spec, render_clip, write_mp4

#: The clips of a scene library (``vidclip demo``, ``python -m vidclip.synthetic.rerank_example``).
SCENE_CONFIG = SynthConfig(size=64, num_frames=24, fps=8.0)
#: Length of one scene of a scene library: 24 frames at 8 fps.
SCENE_SECONDS = SCENE_CONFIG.num_frames / SCENE_CONFIG.fps


@dataclass(frozen=True)
class SceneVideo:
    """One video of a scene library: ``name`` (``sceneNNN.mp4``), its scenes ``specs`` in order
    (:data:`SCENE_SECONDS` each) and, when asked for, one full caption per scene."""

    name: str
    specs: tuple[ClipSpec, ...]
    captions: tuple[str, ...] = ()


def write_scene_library(library: str | os.PathLike, num_videos: int, scenes_per_video: int, seed: int,
                        *, captions: bool = False) -> list[SceneVideo]:
    """Write ``num_videos`` mp4 files of ``scenes_per_video`` random scenes each into ``library``.

    Every video's scenes are drawn from one random stream seeded with ``seed``; with
    ``captions=True`` each video's full captions (:func:`~vidclip.synthetic.captions.caption_for` ``full=True``) are drawn
    from that same stream right after its scenes, so a library with captions holds other videos
    (after the first) than one without: each caller keeps its own, fixed, rule. Same arguments,
    same specs and captions. Existing files are kept, so a second run reuses the library (and
    whatever was indexed from it); a new file is written beside its place and renamed into it.
    """
    cfg = SCENE_CONFIG
    library = Path(library)
    rng = np.random.default_rng(seed)
    library.mkdir(parents=True, exist_ok=True)
    videos = []
    for v in range(num_videos):
        specs = tuple(random_spec(rng, cfg) for _ in range(scenes_per_video))
        texts = tuple(caption_for(spec, rng, full=True) for spec in specs) if captions else ()
        name = f"scene{v:03d}.mp4"
        path = library / name
        if not path.exists():
            with atomic_path(path) as tmp:
                write_mp4(np.concatenate([render_clip(s, cfg) for s in specs]), tmp, cfg.fps)
        videos.append(SceneVideo(name, specs, texts))
    return videos


def make_scene_library(out_dir: str | os.PathLike, num_videos: int, scenes_per_video: int,
                       seed: int) -> list[dict]:
    """Write ``num_videos`` mp4 files of ``scenes_per_video`` synthetic scenes each
    (:func:`write_scene_library`, with captions): the library of ``vidclip demo``.

    Returns, per video, its file name and its scenes (full caption, search query, start and end
    seconds). A scene's query is its object and background
    (:func:`~vidclip.synthetic.captions.scene_description`): the demo
    indexes with the frozen synthetic CLIP and mean pooling, which learnt frame captions only;
    motion ("drifts to the left") needs a trained temporal module.
    Existing files are kept, so a second run reuses the library (and its index is not redone).
    """
    return [
        {"path": video.name,
         "scenes": [{"caption": caption, "query": scene_description(spec),
                     "start": i * SCENE_SECONDS, "end": (i + 1) * SCENE_SECONDS}
                    for i, (spec, caption) in enumerate(zip(video.specs, video.captions))]}
        for video in write_scene_library(out_dir, num_videos, scenes_per_video, seed, captions=True)
    ]
