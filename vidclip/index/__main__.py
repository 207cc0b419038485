"""``python -m vidclip.index ARGS`` = ``vidclip index ARGS``; ``python -m vidclip.index search ARGS`` = ``vidclip search ARGS``."""

import sys

from vidclip.cli.main import main

argv = sys.argv[1:]
sys.exit(main(argv if argv[:1] == ["search"] else ["index", *argv]))
