"""A small, offline rerank-and-evaluate world: ``python -m vidclip.synthetic.rerank_example DIR``.

Writes, from the synthetic world of ``vidclip demo`` (videos of several 3-second scenes, written by
:func:`vidclip.synthetic.scenes.write_scene_library` without captions, so other scenes than the demo's
after the first video):

    DIR/library/scene000.mp4 ...   the videos
    DIR/shots.csv                  docid,path,start,end: one docid per scene (a "shot")
    DIR/topics.txt                 TRECVID-style 'topicId text' lines: a scene's description
    DIR/run.txt                    a deliberately weak first-stage run (TREC 6-column), all shots per topic
    DIR/qrels.txt                  TRECVID sampled qrels, two strata: the run's top 10 judged in full,
                                   the rest judged at 50% (the others -1, pooled but not judged)

Relevance: a shot is relevant to a topic when its object has the topic's colour and shape.
The weak first stage scores a shot ``[same colour] + [same shape] + N(0, noise)``: better than
chance, far from right. Same seed, same files.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from vidclip.synthetic.captions import scene_description
from vidclip.synthetic.scenes import SCENE_SECONDS, write_scene_library


def make_example(out_dir: str | Path, *, num_videos: int = 12, scenes_per_video: int = 3, num_topics: int = 8,
                 noise: float = 1.5, seed: int = 0, sample_rate: float = 0.5) -> dict:
    """Write the files above; returns their paths and counts."""
    from vidclip.core.fileio import atomic_path, atomic_write_text

    out = Path(out_dir)
    videos = write_scene_library(out / "library", num_videos, scenes_per_video, seed)
    shots = []
    for video in videos:
        for i, spec in enumerate(video.specs):
            shots.append({"docid": f"{Path(video.name).stem}_s{i}", "path": f"library/{video.name}",
                          "start": i * SCENE_SECONDS, "end": (i + 1) * SCENE_SECONDS,
                          "attrs": (spec.size, spec.color, spec.shape, spec.background),
                          "query": scene_description(spec)})
    rng = np.random.default_rng(seed + 7)
    topics, seen = [], set()
    for j in rng.permutation(len(shots)).tolist():
        key = shots[j]["attrs"][1:3]  # colour, shape
        if key not in seen:
            seen.add(key)
            topics.append(shots[j])
        if len(topics) == num_topics:
            break
    run_lines, qrel_lines = [], []
    for t, topic in enumerate(topics, 1):
        color, shape = topic["attrs"][1:3]
        same_c = np.array([s["attrs"][1] == color for s in shots], dtype=float)
        same_s = np.array([s["attrs"][2] == shape for s in shots], dtype=float)
        score = same_c + same_s + rng.normal(0.0, noise, len(shots))
        order = np.argsort(-score, kind="stable")
        for rank, j in enumerate(order.tolist(), 1):
            run_lines.append(f"{t} Q0 {shots[j]['docid']} {rank} {score[j]:.6f} weak")
        sampled2 = rng.random(len(shots)) < sample_rate
        for rank, j in enumerate(order.tolist(), 1):
            rel = int(same_c[j] == 1 and same_s[j] == 1)
            stratum = 1 if rank <= 10 else 2
            judged = stratum == 1 or bool(sampled2[j])
            qrel_lines.append(f"{t} 0 {shots[j]['docid']} {stratum} {rel if judged else -1}")
    atomic_write_text(out / "run.txt", "\n".join(run_lines) + "\n")
    atomic_write_text(out / "qrels.txt", "\n".join(qrel_lines) + "\n")
    atomic_write_text(out / "topics.txt", "".join(f"{t} {topic['query']}\n" for t, topic in enumerate(topics, 1)))
    with atomic_path(out / "shots.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["docid", "path", "start", "end"])
        for s in shots:
            w.writerow([s["docid"], s["path"], s["start"], s["end"]])
    return {"dir": str(out), "videos": len(videos), "shots": len(shots), "topics": len(topics),
            "files": ["shots.csv", "topics.txt", "run.txt", "qrels.txt"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vidclip.synthetic.rerank_example",
                                description="Write a small offline rerank world (videos, shot mapping, topics, "
                                            "a weak run, sampled qrels) from the synthetic demo world.")
    p.add_argument("out", help="output folder")
    p.add_argument("--videos", type=int, default=12, help="videos of 3 scenes each (default: %(default)s)")
    p.add_argument("--topics", type=int, default=8, help="topics (default: %(default)s)")
    p.add_argument("--noise", type=float, default=1.5, help="noise of the weak first stage (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    ns = p.parse_args(argv)
    summary = make_example(ns.out, num_videos=ns.videos, num_topics=ns.topics, noise=ns.noise, seed=ns.seed)
    print(f"wrote {summary['videos']} videos, {summary['shots']} shots, {summary['topics']} topics to {summary['dir']}: "
          + ", ".join(summary["files"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
