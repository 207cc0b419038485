"""The command line on bad input (issue 16): a mistyped option or verb gets that verb's usage and a
did-you-mean; bad files, folders and option values are one error line before torch or a model loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vidclip.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_a_mistyped_option_gets_the_verbs_usage_and_the_closest_option(capsys):
    err = _usage_error(["search", "x", "--index", "idx", "--topk", "3"], capsys)
    assert "usage: vidclip search" in err and "usage: vidclip [-h]" not in err
    assert "unrecognized arguments: --topk 3; did you mean --top-k?" in err
    err = _usage_error(["index", "lib", "--index", "idx", "--comit-every=4"], capsys)
    assert "usage: vidclip index" in err and "did you mean --commit-every?" in err
    err = _usage_error(["probe", "a.mp4", "--zzz"], capsys)  # nothing close: no suggestion
    assert "usage: vidclip probe" in err and err.rstrip().endswith("unrecognized arguments: --zzz")


def test_a_mistyped_verb_or_choice_gets_the_closest_one(capsys):
    err = _usage_error(["serch", "x"], capsys)
    assert "usage: vidclip [-h]" in err and "invalid choice: 'serch'; did you mean 'search'?" in err
    err = _usage_error(["frames", "a.mp4", "--out", "o", "--sampler", "unifrom"], capsys)
    assert "usage: vidclip frames" in err and "did you mean 'uniform'?" in err


def test_an_unknown_option_before_the_verb_gets_the_top_usage(capsys):
    err = _usage_error(["--verbose", "search", "x", "--index", "idx"], capsys)
    assert err.startswith("usage: vidclip [-h]") and "unrecognized arguments: --verbose" in err


def _bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    """(argv, what stderr must say) for bad input to every verb that loads torch or a model."""
    (tmp / "notidx").mkdir()
    (tmp / "file.txt").write_text("hi\n")
    (tmp / "junk.bin").write_text("junk\n")
    (tmp / "zip.pth").write_bytes(b"PK\x03\x04" + bytes(60))  # looks like torch.save's zip: passes the format sniff
    lost = tmp / "lost"  # an index whose catalog was truncated to 0 bytes while its frames remain
    (lost / "features" / "shards" / "shard-000000").mkdir(parents=True)
    (lost / "catalog.sqlite").write_bytes(b"")
    (tmp / "lib").mkdir()
    t = str(tmp)
    return [
        (["search", "x", "--index", f"{t}/no-such-dir"], "no-such-dir: no such folder"),
        (["search", "x", "--index", f"{t}/notidx"], "not a vidclip index (no catalog.sqlite)"),
        (["search", "x", "--index", f"{t}/file.txt"], "is a file, not an index folder"),
        (["search", "x", "--index", str(lost)], "catalog.sqlite: empty (0 bytes), but"),
        (["serve", f"{t}/notidx", "--port", "0"], "not a vidclip index"),
        (["index", f"{t}/no-lib", "--index", f"{t}/idx"], "no-lib: no such folder or file"),
        (["index", f"{t}/lib", "--index", f"{t}/file.txt"], "exists and is not a directory"),
        (["index", f"{t}/lib", "--index", str(lost)], "the record of what is indexed is lost"),
        (["index", f"{t}/lib", "--index", f"{t}/idx", "--temporal", f"{t}/no.safetensors"],
         "neither 'mean' nor an existing checkpoint"),
        (["convert-checkpoint", "--from", "clip4clip", f"{t}/junk.bin", "--out", f"{t}/run"],
         "junk.bin is not a PyTorch checkpoint (expected a state dict saved by torch.save / a .pth/.bin/.pt "
         "file): neither a zip archive nor a pickle"),
        (["convert-checkpoint", "--from", "clip4clip", f"{t}/zip.pth", "--out", f"{t}/file.txt"],
         "--out " + f"{t}/file.txt: exists and is not a directory"),
        (["eval", f"{t}/no-run"], "no-run: checkpoint not found"),
        (["eval", "--zero-shot", "--data", f"{t}/no-data"], "--data " + f"{t}/no-data: no such dataset folder"),
        (["train", f"{t}/no.yaml"], "no.yaml: config file not found"),
        (["train", f"{t}/file.txt", "optim.lr"], "override 'optim.lr': expected KEY=VALUE"),
        (["pretrain-synth", f"{t}/no.yaml"], "no.yaml: pretraining recipe not found"),
        (["frames", f"{t}/no.mp4", "--out", f"{t}/frames"], "no.mp4: file not found"),
        (["frames", f"{t}/junk.bin", "--out", f"{t}/frames"], "junk.bin: not a readable media file"),
        (["frames", f"{t}/junk.bin", "--out", f"{t}/file.txt"], "exists and is not a directory"),
        (["encode", f"{t}/lib", "--out", f"{t}/file.txt"], "exists and is not a directory"),
        (["demo", "--workdir", f"{t}/file.txt"], "--workdir " + f"{t}/file.txt: exists and is not a directory"),
    ]


def test_bad_input_is_one_line_before_torch_loads(tmp_path):
    """Each case runs in one fresh interpreter; after each, torch must still be unimported (it takes
    seconds, a model minutes): the error came from checks made before them."""
    cases = _bad_inputs(tmp_path)
    script = (
        "import contextlib, io, json, sys\n"
        "from vidclip.cli.main import main\n"
        "out = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        try:\n"
        "            rc = main(argv)\n"
        "        except SystemExit as e:\n"
        "            rc = e.code\n"
        "    out.append({'rc': rc, 'err': err.getvalue(), 'torch': 'torch' in sys.modules})\n"
        "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", script, json.dumps([argv for argv, _ in cases])], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for (argv, expected), got in zip(cases, json.loads(proc.stdout)):
        assert got["rc"] in (1, 2), (argv, got)
        assert expected in got["err"] and "Traceback" not in got["err"], (argv, got["err"])
        assert not got["torch"], f"torch was imported before {argv} failed: {got['err']}"
    assert not (tmp_path / "run").exists() and not (tmp_path / "idx").exists() and not (tmp_path / "frames").exists()
