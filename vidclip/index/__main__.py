"""``python -m vidclip.index ARGS`` = ``vidclip index ARGS``; ``python -m vidclip.index search ARGS`` = ``vidclip search ARGS``.

Builds only those two verbs (not the whole CLI, whose other verbs reach the training package)."""

import argparse
import sys

from vidclip.cli.options import run_verb
from vidclip.index.commands import add_index_parser, add_search_parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verb, args = ("search", argv[1:]) if argv[:1] == ["search"] else ("index", argv)
    parser = argparse.ArgumentParser(prog="python -m vidclip.index")
    subparsers = parser.add_subparsers(dest="verb", required=True)
    (add_search_parser if verb == "search" else add_index_parser)(subparsers)
    return run_verb(parser.parse_args([verb, *args]))


if __name__ == "__main__":
    sys.exit(main())
