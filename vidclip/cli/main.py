"""The ``vidclip`` command line: a thin layer over the Python API. This module registers the verbs
and runs one.

Each verb parses its options, calls one API function and prints the result (``--json`` where
scripts consume it). Errors vidclip raises on purpose become one line on stderr and exit code 2;
per-file problems in batch verbs are one line per file and exit code 1.

Verbs live beside their code (``vidclip/<area>/commands.py`` with an ``add_*_parser(subparsers)``
function; ``vidclip demo`` in ``cli/demo.py``) and are imported by :func:`build_parser`; the
options several verbs share are in ``cli/options.py``. ``vidclip encode`` is still here: its
package (``vidclip/encode``) is being reshaped around one engine protocol.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import types

from vidclip import __version__
from vidclip.cli.options import (
    add_engine_args,
    add_model_args,
    add_sampler_args,
    check_out_folder,
    model_from_args,
    print_json,
    ray_options_from_args,
    run_verb,
    sampler_from_args,
)
from vidclip.core.errors import ConfigError, VidclipError, display_path

# ----------------------------------------------------------------------------- vidclip encode


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
    from vidclip.encode.options import EncodeOptions
    from vidclip.encode.pipeline import collect_videos, encode_videos
    from vidclip.features.store import STORE_FILE, read_store_header

    sampler = sampler_from_args(ns)
    ray = ray_options_from_args(ns)  # a bad --encoders / --num-gpus fails before any model loads
    check_out_folder(ns.out)
    if ns.batch_frames <= 0 or ns.shard_size <= 0:
        raise ConfigError(f"--batch-frames and --shard-size must be positive, got {ns.batch_frames} and {ns.shard_size}")
    options = EncodeOptions(sampler=sampler, workers=ns.workers, backend=ns.backend, decode_device=ns.decode_device,
                            batch_frames=ns.batch_frames, shard_size=ns.shard_size,
                            progress=not ns.json and not ns.quiet, engine=ns.engine, ray=ray)
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
    report = encode_videos(items, ns.out, clip, options)
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


def add_encode_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("encode", help="encode videos' frames with a frozen CLIP into a feature store",
                              description="Decode, sample and encode videos into a sharded fp16 feature store (see "
                                          "docs/architecture.md). Re-running skips videos already stored; bad "
                                          "files are reported and skipped.")
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
    return p


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

    # Imported directly: the verb modules import nothing heavy at import time (torch loads when a
    # verb runs), and a renamed module fails loudly here.
    from vidclip.cli.demo import add_demo_parser
    from vidclip.eval.commands import add_eval_parser
    from vidclip.index.commands import add_index_parser, add_search_parser
    from vidclip.recognition.commands import add_classify_parser
    from vidclip.rerank.commands import add_rerank_parser, add_trec_eval_parser
    from vidclip.serve.commands import add_serve_parser
    from vidclip.synthetic.commands import add_synth_parser
    from vidclip.train.commands import add_convert_parser, add_pretrain_parser, add_train_parser
    from vidclip.video.commands import add_frames_parser, add_probe_parser

    # In the order of `vidclip --help`.
    add_probe_parser(sub)
    add_frames_parser(sub)
    add_encode_parser(sub)
    for add_parser in (add_synth_parser, add_train_parser, add_pretrain_parser, add_eval_parser, add_index_parser,
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


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`main`. ``vidclip.cli:main`` (the console script of installs
    made before ``cli`` became a package) does ``from vidclip.cli import main; main()``, and
    ``vidclip.cli.main`` is this module: Python binds a package's submodule to its name."""

    def __call__(self, argv: list[str] | None = None) -> int:
        return main(argv)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
