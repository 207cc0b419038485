"""vidclip.cli.options: the helpers every verb's parser is built with."""

from __future__ import annotations

import argparse

from vidclip.cli.options import add_verb_parser

EXAMPLES = "examples:\n  vidclip x a\n  vidclip x b   # kept on its own line\n"
DESCRIPTION = "word " * 40  # one long line: argparse wraps it unless told to keep it as written


def _help(examples):
    sub = argparse.ArgumentParser(prog="vidclip").add_subparsers()
    p = add_verb_parser(sub, "x", help="do x", description=DESCRIPTION, examples=examples)
    return p, p.format_help()


def test_examples_are_printed_as_written():
    p, text = _help(EXAMPLES)
    assert p.prog == "vidclip x" and p.formatter_class is argparse.RawDescriptionHelpFormatter
    assert text.endswith(EXAMPLES) and "\n  vidclip x b   # kept on its own line\n" in text
    assert DESCRIPTION.strip() in text  # raw: the description is not wrapped either


def test_without_examples_the_description_is_wrapped():
    p, text = _help(None)
    assert p.formatter_class is argparse.HelpFormatter and p.epilog is None
    assert DESCRIPTION.strip() not in text and " ".join(text.split()).count("word") == 40


def test_a_closed_stdout_pipe_ends_quietly():
    """`vidclip search ... | head -1`: the reader leaves early; no traceback, exit code 141 (SIGPIPE)."""
    import subprocess
    import sys

    script = ("import sys, vidclip.cli.main as cli, vidclip.synthetic.commands as synth\n"
              "def many_lines(ns):\n"
              "    for i in range(200000):\n"
              "        print('line', i)\n"
              "synth.cmd_synth = many_lines\n"
              "sys.exit(cli.main(['synth', 'unused']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"line 0\n"
    proc.stdout.close()  # what `head -1` does after its line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, stderr
    assert stderr == ""


def test_the_entry_point_of_older_installs_still_runs():
    """Console scripts written before cli/ became a package run `from vidclip.cli import main; main()`;
    the module vidclip.cli.main is callable as its main(), and its attributes stay reachable."""
    import subprocess
    import sys

    script = ("import sys\n"
              "from vidclip.cli import main\n"
              "import vidclip.cli.main as module\n"
              "assert main is module and callable(main) and module.build_parser\n"
              "sys.exit(main(['--version']))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("vidclip "), proc.stderr
    script = "import sys\nfrom vidclip.cli import main\nsys.argv = ['vidclip', 'probe', 'missing.mp4']\nsys.exit(main())\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "vidclip probe: " in proc.stderr and "missing.mp4" in proc.stderr
