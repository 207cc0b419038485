"""``vidclip demo``: the whole search loop on a fresh machine with no network.

It builds a small library of videos from the ``vidclip synth`` world
(:func:`vidclip.synthetic.scenes.make_scene_library`: each video strings a few scenes together,
so a query has a right *moment* as well as a right video), indexes it with the shipped
synthetic-domain CLIP, runs text queries and prints ranked videos with time spans.

The shipped model was trained only on that synthetic world (coloured shapes on plain
backgrounds): it knows nothing about real footage. For real videos use a real CLIP checkpoint
(see the closing lines it prints, and README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# The synthetic world is imported where used: `vidclip --help` builds this module's parser.

DEMO_SAMPLER = dict(name="windows", fps=4.0, window=3.0, stride=1.5)


def pick_queries(videos: list[dict], num_queries: int, seed: int) -> list[tuple[int, dict]]:
    """``num_queries`` (video index, scene) pairs drawn with ``seed``, one per video, preferring
    scenes whose description no other scene of the library shares (a query that fits two videos
    equally has no single right answer)."""
    count: dict[str, int] = {}  # a query names size, colour, shape and background: all a frame shows
    for video in videos:
        for scene in video["scenes"]:
            count[scene["query"]] = count.get(scene["query"], 0) + 1
    rng = np.random.default_rng(seed + 1)
    picks = []
    for v in rng.permutation(len(videos))[: min(num_queries, len(videos))]:
        scenes = videos[int(v)]["scenes"]
        unique = [s for s in scenes if count[s["query"]] == 1] or scenes
        picks.append((int(v), unique[int(rng.integers(len(unique)))]))
    return picks


def run_query(index, query: str, path: str, scene: dict, num_videos: int, scenes_per_video: int) -> dict:
    """Search ``query`` and say where the right video (``path``) ranked.

    Videos are ranked by their best-matching moment (window): the search returns windows best
    first, and a video's rank is the position of its first window among the videos. Whole-video
    vectors average every scene of a video, so a one-scene query would be diluted by the others.
    """
    from vidclip.synthetic.scenes import SCENE_SECONDS

    windows_per_video = 4 * scenes_per_video * int(np.ceil(SCENE_SECONDS / DEMO_SAMPLER["stride"]))
    moments = index.search(query, k=num_videos * windows_per_video, segments=True)
    best: dict[str, object] = {}
    for hit in moments:
        best.setdefault(hit.path, hit)  # first = best window of that video
    ranking = list(best)
    rank = ranking.index(path) + 1 if path in best else len(ranking) + 1
    right = best.get(path)
    moment_found = bool(right is not None and right.start < scene["end"] and right.end > scene["start"])
    return {"query": query, "expected": {"path": path, "start": scene["start"], "end": scene["end"]},
            "hits": [best[p].to_dict() for p in ranking[:3]], "ranking": ranking, "rank": rank,
            "num_videos": num_videos, "moment_found": moment_found}


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``; psutil elsewhere when installed),
    or None where that is unknown."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            # starttime (field 22, clock ticks after boot); fields counted after "(comm)", which may hold spaces
            start_ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return max(0.0, time.time() - psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - not installed, or no such information here
        return None


def run_demo(workdir: str | Path = "vidclip-demo", *, num_videos: int = 24, scenes_per_video: int = 3,
             num_queries: int = 4, seed: int = 0, model: str = "vidclip-synth", workers: int = 2,
             progress: bool = True, log=print, count_startup: bool = False) -> dict:
    """Build, index and query the demo library; returns a JSON-able summary (per query: the top 3
    videos, the full ``ranking`` of video paths and the right video's ``rank`` in it; ``first`` and
    ``top3``: how many queries had the right video first / in the top 3). ``seconds``: this call;
    ``count_startup`` (the CLI): also report the process's start-up before it (interpreter,
    imports) as ``startup_seconds``, else None."""
    from vidclip.index import VideoIndex, index_library
    from vidclip.models.clip.load import load_clip
    from vidclip.synthetic.scenes import SCENE_SECONDS, make_scene_library
    from vidclip.video.sample import SamplerConfig

    startup = process_age() if count_startup else None
    workdir = Path(workdir).expanduser().resolve()
    library, index_dir = workdir / "library", workdir / "index"
    t0 = time.perf_counter()
    log(f"1/3  writing {num_videos} synthetic videos ({scenes_per_video} scenes of {SCENE_SECONDS:.0f} s each) to {library}")
    videos = make_scene_library(library, num_videos, scenes_per_video, seed)

    log(f"2/3  indexing them with the shipped synthetic-domain model '{model}' into {index_dir}")
    clip = load_clip(model)
    report = index_library(library, index_dir, clip, SamplerConfig(**DEMO_SAMPLER), temporal="mean",
                           workers=workers, progress=progress)
    summary = report.to_dict()
    log(f"     indexed {summary.get('indexed')}, unchanged {summary.get('unchanged')}, failed {len(summary.get('failed', []))}")

    log("3/3  searching (videos ranked by their best-matching moment)")
    index = VideoIndex.open(index_dir, clip=clip)
    results = []
    for v, scene in pick_queries(videos, num_queries, seed):
        results.append(run_query(index, scene["query"], videos[v]["path"], scene, num_videos, scenes_per_video))
        r = results[-1]
        log(f'\n  query: "{r["query"]}"   (it happens in {r["expected"]["path"]} at '
            f'{scene["start"]:.1f}-{scene["end"]:.1f} s)')
        for rank, hit in enumerate(r["hits"], 1):
            mark = "  <- the right video" if hit["path"] == r["expected"]["path"] else ""
            log(f"    {rank}. {hit['path']}  score {hit['score']:.3f}  best moment "
                f"{hit['start']:.1f}-{hit['end']:.1f} s{mark}")
        where = "the right moment" if r["moment_found"] else "another moment of it"
        log(f"    the right video ranked {r['rank']} of {r['num_videos']}" + (f" ({where})" if r["rank"] <= 3 else ""))
    first = sum(r["rank"] == 1 for r in results)
    top3 = sum(r["rank"] <= 3 for r in results)
    log(f"\nThe right video came first for {first} of {len(results)} queries and in the top 3 for {top3} of "
        f"{len(results)} (among {num_videos} videos, {num_videos * scenes_per_video} scenes).")
    index.close()
    seconds = time.perf_counter() - t0
    log(f"\nDone in {seconds:.0f} s" + (f" (after {startup:.0f} s start-up)." if startup is not None else "."))
    log("NOTE: the shipped model knows only this synthetic world of coloured shapes; its scores mean nothing on "
        "real footage.")
    log("Browse these results in a web page:")
    log(f"    vidclip serve {index_dir}")
    log("Index your own videos with a real CLIP checkpoint (a hub name, or a local file when offline):")
    log("    vidclip index ~/Videos --index ~/vidx --model ViT-B-32 --pretrained openai")
    log("    vidclip index ~/Videos --index ~/vidx --model ViT-B-32 --pretrained /path/to/open_clip_vit_b_32.pt")
    log('    vidclip search "a dog catches a frisbee" --index ~/vidx')
    return {"workdir": str(workdir), "library": str(library), "index": str(index_dir), "index_report": summary,
            "queries": results, "first": first, "top3": top3, "seconds": round(seconds, 1),
            "startup_seconds": round(startup, 1) if startup is not None else None}


def add_demo_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo", help="offline end-to-end demo: synthetic library -> index -> text search",
        description="Generate a small synthetic video library, index it with the shipped synthetic-domain CLIP "
                    "(it knows only that synthetic world), run a few text queries and print ranked videos with "
                    "time spans. Needs no network and no GPU; re-running reuses what it built.")
    p.add_argument("--workdir", default="vidclip-demo", help="where to put the library and index (default: %(default)s)")
    p.add_argument("--videos", type=int, default=24, help="videos in the library (default: %(default)s)")
    p.add_argument("--scenes", type=int, default=3, help="scenes per video (default: %(default)s)")
    p.add_argument("--queries", type=int, default=4, help="queries to run (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of the walkthrough")
    p.set_defaults(func=_cmd_demo)
    return p


def _cmd_demo(ns: argparse.Namespace) -> int:
    for name in ("videos", "scenes", "queries"):
        if getattr(ns, name) <= 0:
            from vidclip.core.errors import ConfigError

            raise ConfigError(f"--{name} must be positive, got {getattr(ns, name)}")
    if Path(ns.workdir).exists() and not Path(ns.workdir).is_dir():  # before any work (issue 16)
        from vidclip.core.errors import ConfigError

        raise ConfigError(f"--workdir {ns.workdir}: exists and is not a directory")
    log = (lambda *a, **k: None) if ns.json else print
    summary = run_demo(ns.workdir, num_videos=ns.videos, scenes_per_video=ns.scenes, num_queries=ns.queries,
                       seed=ns.seed, workers=ns.workers, progress=not ns.json, log=log, count_startup=True)
    if ns.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0
