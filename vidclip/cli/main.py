"""The ``vidclip`` command line: a thin layer over the Python API. This module registers the verbs
and runs one.

Each verb parses its options, calls one API function and prints the result (``--json`` where
scripts consume it). Errors vidclip raises on purpose become one line on stderr and exit code 2;
per-file problems in batch verbs are one line per file and exit code 1.

Verbs live beside their code (``vidclip/<area>/commands.py`` with an ``add_*_parser(subparsers)``
function; ``vidclip demo`` in ``cli/demo.py``) and are imported by :func:`build_parser`; the
options several verbs share are in ``cli/options.py``.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import types

from vidclip import __version__
from vidclip.cli.options import (
    run_verb,
)

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
    from vidclip.encode.commands import add_encode_parser
    from vidclip.eval.commands import add_eval_parser
    from vidclip.index.commands import add_index_parser, add_search_parser
    from vidclip.index.export import add_export_parser
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
                       add_search_parser, add_export_parser, add_serve_parser, add_demo_parser, add_rerank_parser,
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
