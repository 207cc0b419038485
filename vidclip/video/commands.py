"""``vidclip probe`` and ``vidclip frames``: look at videos without a model.

Registered by :mod:`vidclip.cli.main` through :func:`add_probe_parser` and
:func:`add_frames_parser`. Neither verb imports torch before a bad file has failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vidclip.cli.options import add_sampler_args, check_out_folder, print_json, sampler_from_args
from vidclip.core.errors import VidclipError, display_path


def cmd_probe(ns: argparse.Namespace) -> int:
    from vidclip.video.header import probe  # header only: no torch, no decoding

    results, failed = [], 0
    for path in ns.videos:
        try:
            info = probe(path, backend=ns.backend).to_dict()
        except VidclipError as e:
            failed += 1
            print(f"vidclip probe: {e}", file=sys.stderr)
            results.append({"path": str(path), "error": str(e)})
            continue
        results.append(info)
        for w in info["warnings"]:
            print(f"vidclip probe: warning: {w}", file=sys.stderr)
    if ns.json:
        print_json(results if len(ns.videos) > 1 else results[0])
    else:
        for r in results:
            if "error" in r:
                continue
            print(f"{display_path(r['path'])}: {r['duration']:.2f} s, {r['fps']:.3f} fps, {r['num_frames']} frames, "
                  f"{r['width']}x{r['height']}, {r['codec']}, rotation {r['rotation']}, "
                  f"audio {'yes' if r['has_audio'] else 'no'}")
    return 1 if failed else 0


def frames_folders(videos: list[str]) -> dict[str, Path]:
    """Output subfolder (relative) of each video of ``vidclip frames`` with several videos.

    Rule: the file's stem (``clip`` for ``a/clip.mp4``); when stems collide, as many parent
    folders of the absolute path as tell the videos apart (``a/clip``, ``b/clip``); when even the
    whole folder path does not (``clip.mp4`` and ``clip.mkv`` side by side), the file name with
    its extension. The same file given twice is written once.
    """
    parts = {v: Path(os.path.abspath(v)).parts[1:] for v in videos}
    out: dict[str, Path] = {}
    for v, p in parts.items():
        stem = Path(p[-1]).stem
        rivals = [q for w, q in parts.items() if q != p and Path(q[-1]).stem == stem]
        if not rivals:
            out[v] = Path(stem)
            continue
        for k in range(2, len(p) + 1):
            mine = (*p[-k:-1], stem)
            if all((*q[-k:-1], Path(q[-1]).stem) != mine for q in rivals):
                out[v] = Path(*mine)
                break
        else:
            out[v] = Path(*p[-2:-1], p[-1]) if len(p) > 1 else Path(p[-1])
    return out


def cmd_frames(ns: argparse.Namespace) -> int:
    from vidclip.video.frames import write_frames
    from vidclip.video.header import probe

    sampler = sampler_from_args(ns)
    check_out_folder(ns.out)
    failed = 0
    videos = []
    for video in dict.fromkeys(ns.videos):
        try:
            probe(video, backend=ns.backend)  # the container header: a bad file fails here, before torch loads
        except VidclipError as e:
            failed += 1
            print(f"vidclip frames: {e}", file=sys.stderr)
            continue
        videos.append(video)
    folders = frames_folders(videos) if len(videos) > 1 else {v: Path() for v in videos}
    summaries = []
    for video in videos:
        out = Path(ns.out) / folders[video]
        try:
            summary = write_frames(video, out, sampler, backend=ns.backend)
        except VidclipError as e:
            failed += 1
            print(f"vidclip frames: {e}", file=sys.stderr)
            continue
        summaries.append(summary)
        for w in summary["info"]["warnings"]:
            print(f"vidclip frames: warning: {w}", file=sys.stderr)
        if not ns.json:
            print(f"{display_path(video)}: wrote {int(sum(summary['mask']))} frames to {display_path(out)} "
                  "(frames.json has indices and timestamps)")
    if ns.json:
        print_json(summaries)
    return 1 if failed else 0


def add_probe_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("probe", help="print a video's duration, fps, frame count, size, codec, rotation",
                              description="Inspect videos without decoding them.")
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--backend", default="auto", help="auto, decord, pyav, torchcodec")
    p.add_argument("--json", action="store_true", help="print JSON (one object, or a list for several videos)")
    p.set_defaults(func=cmd_probe)
    return p


def add_frames_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("frames", help="write the frames a sampler picks as PNG files plus frames.json",
                              description="See what the model sees: sample frames and save them with their indices "
                                          "and timestamps.")
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--out", required=True,
                   help="output folder; with several videos one subfolder each, named by the file's stem (clip for "
                        "a/clip.mp4), with as many parent folders as tell same-named videos apart (a/clip, b/clip), "
                        "or the full file name when only the extension differs (clip.mp4, clip.mkv)")
    p.add_argument("--json", action="store_true", help="print the frames.json content")
    add_sampler_args(p)
    p.set_defaults(func=cmd_frames)
    return p
