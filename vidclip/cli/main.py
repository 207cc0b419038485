"""The ``vidclip`` command line: a thin layer over the Python API.

Each verb parses its options, calls one API function and prints the result (``--json`` where
scripts consume it). Errors vidclip raises on purpose become one line on stderr and exit code 2;
per-file problems in batch verbs are one line per file and exit code 1.

Verbs beyond the foundation live beside their code (``vidclip/<area>/commands.py`` with an
``add_*_parser(subparsers)`` function) and are imported by ``build_parser``; the options several
verbs share are in ``cli_options.py``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from pathlib import Path

from vidclip import __version__
from vidclip.cli.options import (
    add_engine_args,
    add_model_args,
    add_sampler_args,
    model_from_args,
    print_json,
    ray_options_from_args,
    run_verb,
    sampler_from_args,
)
from vidclip.core.errors import ConfigError, VidclipError, display_path

# ----------------------------------------------------------------------------- foundation verbs


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
    import os

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


def _check_out_folder(out: str) -> None:
    """``--out`` of a verb that writes a folder: it must not be a file (checked before any work)."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {display_path(out)}: exists and is not a directory (the output is a folder)")


def cmd_frames(ns: argparse.Namespace) -> int:
    from vidclip.video.frames import write_frames
    from vidclip.video.header import probe

    sampler = sampler_from_args(ns)
    _check_out_folder(ns.out)
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


def _workers_arg(value: str):
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number >= 0, got {value!r}")
    return n


def cmd_encode(ns: argparse.Namespace) -> int:
    from vidclip.encode.pipeline import collect_videos, encode_videos
    from vidclip.features.store import STORE_FILE, read_store_header

    sampler = sampler_from_args(ns)
    ray_options_from_args(ns)  # a bad --encoders / --num-gpus fails before any model loads
    _check_out_folder(ns.out)
    if ns.batch_frames <= 0 or ns.shard_size <= 0:
        raise ConfigError(f"--batch-frames and --shard-size must be positive, got {ns.batch_frames} and {ns.shard_size}")
    if os.path.isfile(os.path.join(ns.out, STORE_FILE)):
        read_store_header(ns.out)  # a corrupt or foreign store, before the model loads
    problems: list[tuple[str, str]] = []
    items = collect_videos(ns.inputs, problems)
    for path, reason in problems:
        print(f"vidclip encode: {display_path(path)}: {reason}", file=sys.stderr)
    if not items:  # nothing to encode: create no store
        raise VidclipError(f"no videos found in {' '.join(display_path(p) for p in ns.inputs)}")
    clip = model_from_args(ns)
    if clip.identity.random_weights:
        print("vidclip encode: note: the model has RANDOM weights; features are for testing only, not meaningful.",
              file=sys.stderr)
    report = encode_videos(items, ns.out, clip, sampler, workers=ns.workers, backend=ns.backend,
                           decode_device=ns.decode_device, batch_frames=ns.batch_frames,
                           shard_size=ns.shard_size, progress=not ns.json and not ns.quiet,
                           engine=ns.engine, ray=ray_options_from_args(ns))
    for f in report.failed:
        print(f"vidclip encode: {display_path(f.path)}: {f.reason}", file=sys.stderr)
    for w in report.warnings:
        print(f"vidclip encode: warning: {w}", file=sys.stderr)
    if ns.json:
        print_json(report.to_dict())
    else:
        r = report.to_dict()
        print(f"encoded {r['done']} videos ({r['frames']} frames, {r['frames_per_s'] or 0:.1f} frames/s), "
              f"skipped {r['skipped']} already done, failed {len(report.failed) + len(problems)} -> {ns.out}")
    return 1 if report.failed or problems else 0


def cmd_synth(ns: argparse.Namespace) -> int:
    from vidclip.core.errors import display_path
    from vidclip.synthetic.world import SynthConfig, make_synthetic_dataset

    cfg = SynthConfig(num_videos=ns.videos, seed=ns.seed, size=ns.size, num_frames=ns.frames,
                      train_twins=ns.train_twins)
    summary = make_synthetic_dataset(ns.out, cfg, progress=not ns.json)
    if ns.json:
        print_json(summary)
    else:
        seconds = summary["seconds"]
        rate = f", {summary['num_videos'] / seconds:.0f} videos/s" if seconds > 0 else ""
        print(f"wrote {summary['num_videos']} synthetic videos ({summary['num_train']} train, {summary['num_test']} "
              f"test, {summary['num_captions']} captions) to {display_path(summary['root'])} in {seconds:.1f} s{rate}")
    return 0


# ----------------------------------------------------------------------------- parser


class VidclipParser(argparse.ArgumentParser):
    """argparse, with a did-you-mean for a mistyped verb or choice ("invalid choice: 'serch'; did you
    mean 'search'?"). Verb parsers are made by ``add_parser`` of the top one, so they are one too."""

    def error(self, message: str):
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2)) or [c.strip() for c in m.group(2).split(",")]
            close = difflib.get_close_matches(m.group(1), choices, n=1)
            if close:
                message = f"{message[:m.start(2) - len(' (choose from ')]}; did you mean {close[0]!r}? (choose from {m.group(2)})"
        super().error(message)


def unrecognized_message(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """argparse's "unrecognized arguments: ..." for ``parser`` (a verb's), with the closest option
    of that verb for each mistyped one ("--topk" -> "did you mean --top-k?")."""
    options = [s for action in parser._actions for s in action.option_strings]
    hints = []
    for arg in extras:
        if arg.startswith("-") and len(arg) > 1:
            close = difflib.get_close_matches(arg.split("=", 1)[0], options, n=1, cutoff=0.6)
            if close and close[0] not in hints:
                hints.append(close[0])
    return (f"unrecognized arguments: {' '.join(extras)}"
            + (f"; did you mean {' or '.join(hints)}?" if hints else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = VidclipParser(
        prog="vidclip",
        description="Text-to-video search and video recognition on a frozen image CLIP.",
        epilog="Run 'vidclip VERB --help' for the options of each verb. Start with 'vidclip demo'.",
    )
    parser.add_argument("--version", action="version", version=f"vidclip {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    p = sub.add_parser("probe", help="print a video's duration, fps, frame count, size, codec, rotation",
                       description="Inspect videos without decoding them.")
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--backend", default="auto", help="auto, decord, pyav, torchcodec")
    p.add_argument("--json", action="store_true", help="print JSON (one object, or a list for several videos)")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("frames", help="write the frames a sampler picks as PNG files plus frames.json",
                       description="See what the model sees: sample frames and save them with their indices and timestamps.")
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--out", required=True,
                   help="output folder; with several videos one subfolder each, named by the file's stem (clip for "
                        "a/clip.mp4), with as many parent folders as tell same-named videos apart (a/clip, b/clip), "
                        "or the full file name when only the extension differs (clip.mp4, clip.mkv)")
    p.add_argument("--json", action="store_true", help="print the frames.json content")
    add_sampler_args(p)
    p.set_defaults(func=cmd_frames)

    p = sub.add_parser("encode", help="encode videos' frames with a frozen CLIP into a feature store",
                       description="Decode, sample and encode videos into a sharded fp16 feature store (see "
                                   "docs/architecture.md). Re-running skips videos already stored; bad files are "
                                   "reported and skipped.")
    p.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="video files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, help="feature store folder")
    p.add_argument("--workers", type=_workers_arg, default="auto",
                   help="decoding worker processes; 0 decodes in this process; auto: in this process for up to 4 "
                        "videos, else one worker per core up to 4 (default: %(default)s)")
    p.add_argument("--batch-frames", type=int, default=256, help="frames per encoder batch (default: %(default)s)")
    p.add_argument("--shard-size", type=int, default=256,
                   help="videos per committed shard; with --engine ray also per partition (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    add_sampler_args(p)
    add_engine_args(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("synth", help="write a synthetic MSR-VTT-style dataset (offline test data)",
                       description="Generate videos of simple moving objects with paraphrased captions, in the "
                                   "MSR-VTT layout. Every test video has a time-reversed twin with the opposite motion.")
    p.add_argument("out", help="output folder")
    p.add_argument("--videos", type=int, default=100, help="number of videos (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same dataset (default: %(default)s)")
    p.add_argument("--size", type=int, default=64, help="frame width and height in pixels (default: %(default)s)")
    p.add_argument("--frames", type=int, default=24, help="frames per video (default: %(default)s)")
    p.add_argument("--train-twins", action="store_true",
                   help="make the training videos time-reversed twin pairs too; order-aware modules need "
                        "them to learn the direction of motion (see BENCHMARKS.md, Temporal modelling)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_synth)

    # Verbs implemented beside their code. Imported directly: their modules import nothing heavy
    # at import time (torch loads when a verb runs), and a renamed module fails loudly here.
    from vidclip.cli.demo import add_demo_parser
    from vidclip.eval.commands import add_eval_parser
    from vidclip.index.commands import add_index_parser, add_search_parser
    from vidclip.recognition.commands import add_classify_parser
    from vidclip.rerank.commands import add_rerank_parser, add_trec_eval_parser
    from vidclip.serve.commands import add_serve_parser
    from vidclip.train.commands import add_convert_parser, add_pretrain_parser, add_train_parser

    for add_parser in (add_train_parser, add_pretrain_parser, add_eval_parser, add_index_parser,
                       add_search_parser, add_serve_parser, add_demo_parser, add_rerank_parser,
                       add_trec_eval_parser, add_classify_parser, add_convert_parser):
        add_parser(sub)
    parser.verb_parsers = sub.choices  # main: a verb's own usage for its unrecognized arguments
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that arguments a verb does not know get that verb's usage
    and a did-you-mean (argparse leaves them to the top parser, which prints the usage of all verbs)."""
    args = sys.argv[1:] if argv is None else list(argv)
    ns, extras = parser.parse_known_args(args)
    if extras:
        verb = getattr(ns, "verb", None)
        before_verb = verb in args and all(x in args[:args.index(verb)] for x in extras)  # `vidclip --x VERB`
        target = parser if before_verb else parser.verb_parsers.get(verb, parser)
        target.error(unrecognized_message(target, extras))
    return ns


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_verb(parse(parser, argv))


if __name__ == "__main__":
    sys.exit(main())
