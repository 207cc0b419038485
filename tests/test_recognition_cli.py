"""`vidclip classify` end to end on a tiny synthetic action set with the shipped vidclip-synth model."""

from __future__ import annotations

import json
import shutil

import pytest

from vidclip.cli.main import main
from vidclip.synthetic.actions import make_synthetic_actions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def actions(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec") / "actions"
    make_synthetic_actions(root, train_per_class=3, test_per_class=1, directions=("left", "up"), seed=1)
    return root


def run(capsys, *args):
    code = main(["classify", *map(str, args), "--model", "vidclip-synth", "--device", "cpu", "--workers", "0",
                 "--num-frames", "4", "--quiet"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_zero_shot_few_shot_save_and_reuse(actions, tmp_path, capsys):
    feats = tmp_path / "feats"
    common = ["--features", feats, "--class-names", actions / "class_names.txt", "--templates", actions / "templates.txt"]
    code, out, err = run(capsys, "--data", actions / "test", *common, "--json", "--confusion", tmp_path / "cm.png")
    assert code == 0, err
    r = json.loads(out)
    assert r["method"] == "zeroshot" and r["test"]["videos"] == 4 and len(r["test"]["confusion"]) == 4
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, out, err = run(capsys, "--data", actions / "test", "--train", actions / "train", "--method", "tip",
                         "--shots", "2", "--save", tmp_path / "tip.safetensors", *common, "--json")
    assert code == 0, err
    r = json.loads(out)
    fit = r["fit"]
    assert fit["shots"] == 2 and fit["train_videos"] == 8 and set(fit["params"]) == {"alpha", "beta"}
    assert fit["search"]["grid"]["alpha"] and "carved" in fit["search"]["validation"]
    acc_fitted = r["test"]["top1"]

    # Reuse on a folder: top-k labels with probabilities; the same numbers as the fitted run.
    code, out, err = run(capsys, "--classifier", tmp_path / "tip.safetensors", actions / "test", "--features", feats,
                         "-k", "2", "--json")
    assert code == 0, err
    preds = json.loads(out)["predictions"]
    assert len(preds) == 4 and all(len(p["top"]) == 2 for p in preds)
    assert all(p["top"][0]["probability"] >= p["top"][1]["probability"] for p in preds)
    right = sum(p["top"][0]["label"] == p["path"].split("/")[-2] for p in preds)
    assert right / 4 == acc_fitted

    code, out, err = run(capsys, "--classifier", tmp_path / "tip.safetensors", actions / "test", "--features", feats)
    assert code == 0 and "test_000.mp4" in out and "%" not in err


def test_bad_inputs_are_named(actions, tmp_path, capsys):
    common = ["--features", tmp_path / "feats"]
    code, _, err = run(capsys, "--data", actions / "test", "--train", actions / "train", "--method", "gda",
                       "--shots", "5", *common)
    assert code == 2 and "--shots 5 needs 5 training videos per class, but 'blue_moving_left' has 3" in err
    bad = tmp_path / "mixed"
    shutil.copytree(actions / "test", bad)
    (bad / "red_moving_up" / "broken.mp4").write_bytes(b"not a video")
    code, out, err = run(capsys, "--data", bad, *common, "--json")
    assert code == 1
    assert "broken.mp4" in err and json.loads(out)["test"]["videos"] == 4  # reported, skipped, the rest scored
    (bad / "empty_class").mkdir()
    code, _, err = run(capsys, "--data", bad, *common)
    assert code == 2 and "empty_class: class folder holds no video files" in err
    code, _, err = run(capsys, "--classifier", tmp_path / "nope.safetensors", actions / "test", *common)
    assert code == 2 and "nope.safetensors: no such file" in err


def test_classifier_of_another_model_is_refused(actions, tmp_path, capsys):
    code, _, err = run(capsys, "--data", actions / "test", "--save", tmp_path / "zs.safetensors",
                       "--features", tmp_path / "f1")
    assert code == 0, err
    code = main(["classify", "--classifier", str(tmp_path / "zs.safetensors"), str(actions / "test"),
                 "--model", "tiny-vit", "--pretrained", "none", "--device", "cpu", "--workers", "0", "--quiet",
                 "--features", str(tmp_path / "f2")])
    err = capsys.readouterr().err
    assert code == 2 and "classifier was fitted on features of vidclip-synth" in err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["classify", "--help"])
    text = capsys.readouterr().out
    for opt in ("--classes", "--class-names", "--templates", "--data", "--layout", "--fold", "--test", "--train",
                "--val", "--method", "--shots", "--save", "--classifier", "--confusion", "--top-k", "--json",
                "--temporal", "--features", "--skip-missing"):
        assert opt in text


def test_a_video_replaced_at_the_same_path_is_encoded_again(actions, tmp_path, capsys):
    # Features are keyed by path; a file swapped in at that path must not reuse the old file's features.
    folder = tmp_path / "videos"
    shutil.copytree(actions / "test", folder)
    target, other = folder / "red_moving_up" / "test_000.mp4", folder / "blue_moving_left" / "test_000.mp4"
    (tmp_path / "classes.txt").write_text("".join(p.name + "\n" for p in sorted((actions / "test").iterdir())))
    common = ["--classes", tmp_path / "classes.txt", "--features", tmp_path / "feats", "--json"]

    def tops():
        code, out, err = run(capsys, folder, *common)
        assert code == 0, err
        return {p["path"]: p["top"] for p in json.loads(out)["predictions"]}, err

    before, _ = tops()
    assert before[str(target)] != before[str(other)]
    shutil.copyfile(other, target)  # another video, same path
    after, err = tops()
    assert after[str(target)] == before[str(other)]  # its own features, freshly encoded
    assert "1 video(s) changed since their features were encoded" in err and "encoding them again" in err
    again, err = tops()
    assert again == after and "changed" not in err  # and then reused
