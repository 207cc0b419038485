"""``vidclip classify``: zero-shot and few-shot video classification (a thin layer over run.classify)."""

from __future__ import annotations

import argparse
import sys

from vidclip.cli.options import (
    add_model_args,
    add_sampler_args,
    check_runtime_args,
    model_from_args,
    print_json,
    sampler_from_args,
)
from vidclip.core.errors import ConfigError

EPILOG = """examples:
  vidclip classify clip.mp4 videos/ --classes classes.txt --model vidclip-synth     # top-5 labels per video
  vidclip classify --data actions/test --model vidclip-synth --confusion cm.png    # zero-shot accuracy
  vidclip classify --data actions/test --train actions/train --method tip --shots 4 --save tip.safetensors
  vidclip classify --classifier tip.safetensors videos/                             # reuse it
  vidclip classify --data UCF101/ --fold 1 --method gda --shots 16 --train train --model ViT-B-32

Datasets (--data): a folder-per-class tree, UCF101 (classInd.txt, trainlist0N/testlist0N.txt),
HMDB51 (<class>_test_split<N>.txt), a Kinetics CSV (label,youtube_id,time_start,time_end,split) or a
path,label CSV. A SPLIT (--test/--train/--val) is a split name of that dataset (train, test, val,
all), a folder-per-class folder, a .csv or a UCF-style .txt list.
Hyper-parameters are searched on --val, else on a quarter of the shots held out (then refitted on
all shots); never on the test split. Frame features are encoded once into --features and reused.
Model: --pretrained defaults to what --model implies (vidclip-synth: its shipped weights). Sampling: uniform only (--num-frames N per video)."""


def add_classify_parser(sub) -> None:
    p = sub.add_parser("classify", help="classify videos: zero-shot from class names, or few-shot (Tip-Adapter, GDA, ...)",
                       description="Label videos with a frozen CLIP: zero-shot from class names and prompt templates, "
                                   "or from K examples per class with a training-free few-shot method. Prints the top-k "
                                   "labels per video, or top-1/top-5/mean-class accuracy on a dataset's test split.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="VIDEO_OR_DIR", help="videos and/or folders (recursive) to label")
    g = p.add_argument_group("classes and prompts")
    g.add_argument("--classes", dest="classes_file", metavar="FILE", help="class list, one per line (for VIDEO_OR_DIR without --data)")
    g.add_argument("--class-names", dest="names_file", metavar="FILE",
                   help="prompt names overriding the cleaned class names: lines 'RAW<TAB>name' or 'RAW,name' "
                        "(default: ApplyEyeMakeup -> 'apply eye makeup', brush_hair -> 'brush hair')")
    g.add_argument("--templates", dest="templates_file", metavar="FILE",
                   help="prompt templates with '{}' for the class name: one per line, or a JSON list "
                        "(default: 8 templates such as 'a video of a person {}.')")
    g = p.add_argument_group("dataset")
    g.add_argument("--data", metavar="DATASET", help="dataset folder or CSV; evaluates its --test split")
    g.add_argument("--layout", default="auto", choices=["auto", "folder", "ucf101", "hmdb51", "kinetics", "csv"],
                   help="dataset layout (default: detected)")
    g.add_argument("--fold", type=int, default=1, help="UCF101/HMDB51 official split number 1-3 (default: %(default)s)")
    g.add_argument("--test", default="test", metavar="SPLIT", help="split to evaluate (default: %(default)s; the whole folder for folder-per-class)")
    g.add_argument("--skip-missing", action="store_true", help="report videos listed but missing and go on (default: an error)")
    g = p.add_argument_group("few-shot")
    g.add_argument("--method", default="zeroshot", choices=["zeroshot", "tip", "tip-f", "gda", "proker", "ape", "linear"],
                   help="zeroshot; tip (Tip-Adapter), tip-f (keys fine-tuned), gda (Gaussian discriminant analysis), "
                        "proker (kernel ridge regression around zero-shot), ape (adaptive prior refinement), "
                        "linear (logistic-regression probe) (default: %(default)s)")
    g.add_argument("--shots", type=int, default=16, metavar="K", help="training examples per class (default: %(default)s)")
    g.add_argument("--train", metavar="SPLIT", help="split the K shots are drawn from")
    g.add_argument("--val", metavar="SPLIT", help="validation split for the hyper-parameter search (default: carved from the shots)")
    g.add_argument("--seed", type=int, default=0, help="seed of the shot sampling and the carve (default: %(default)s)")
    g = p.add_argument_group("classifier files and outputs")
    g.add_argument("--save", metavar="FILE", help="write the fitted classifier (.safetensors with JSON metadata)")
    g.add_argument("--classifier", dest="classifier_file", metavar="FILE",
                   help="reuse a saved classifier (refused if fitted with another model or temporal module)")
    g.add_argument("--confusion", metavar="PNG", help="write the test split's confusion matrix as a PNG")
    g.add_argument("-k", "--top-k", type=int, default=5, help="labels shown per video (default: %(default)s)")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("features")
    g.add_argument("--temporal", default="mean",
                   help="'mean' (normalised mean of frame embeddings) or a `vidclip train` checkpoint / run dir (default: %(default)s)")
    g.add_argument("--features", metavar="DIR",
                   help="feature store to encode into and reuse (default: cache/classify-<model>-<digest>/features-<N>f)")
    g.add_argument("--workers", type=int, default=2, help="decoding worker processes (default: %(default)s)")
    add_model_args(p, runtime=True)  # --model vidclip-synth uses its shipped weights unless --pretrained names others
    add_sampler_args(p)
    p.set_defaults(func=cmd_classify)


def cmd_classify(ns: argparse.Namespace) -> int:
    from vidclip.recognition.run import ClassifyRequest, classify, plan_classify  # no torch yet

    if ns.sampler != "uniform":
        raise ConfigError("--sampler: classification pools a fixed number of frames; use uniform with --num-frames")
    if ns.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {ns.top_k}")
    req = ClassifyRequest(**{k: getattr(ns, k) for k in ClassifyRequest.__dataclass_fields__})
    sampler = sampler_from_args(ns)

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    check_runtime_args(ns)
    plan = plan_classify(req, log)  # every file, split and option checked before torch and the model load
    clip = model_from_args(ns)
    if clip.identity.random_weights:
        print("vidclip classify: note: the model has RANDOM weights; predictions are for testing only.", file=sys.stderr)
    result = classify(req, clip, sampler, workers=ns.workers, backend=ns.backend,
                      progress=not (ns.json or ns.quiet), log=log, plan=plan)
    for f in result["failed"]:
        print(f"vidclip classify: {f['path']}: {f['reason']}; skipped", file=sys.stderr)
    if ns.json:
        print_json(result)
    else:
        _print_text(result)
    return 1 if result["failed"] else 0


def _print_text(r: dict) -> None:
    if "fit" in r:
        fit = r["fit"]
        chosen = ", ".join(f"{k}={v}" for k, v in fit["params"].items())
        print(f"fitted {fit['method']} on {fit['train_videos']} videos ({fit['shots']} per class) in "
              f"{fit['seconds']:.2f} s; {chosen}; search: {fit['search'].get('validation')}")
        grid = fit["search"].get("grid", {})
        print("  grid: " + "; ".join(f"{k} {v}" for k, v in grid.items()))
    if "saved" in r:
        print(f"saved the classifier to {r['saved']}")
    if "test" in r:
        t = r["test"]
        if not t["videos"]:
            print("no test videos could be classified")
        else:
            print(f"{'method':<10} {'videos':>6} {'top-1':>7} {'top-' + str(t['top5_k']):>7} {'mean class':>10}")
            print(f"{r['method']:<10} {t['videos']:>6} {100 * t['top1']:>6.1f}% {100 * t['top5']:>6.1f}% "
                  f"{100 * t['mean_class_accuracy']:>9.1f}%")
        if "confusion_png" in r:
            print(f"confusion matrix: {r['confusion_png']}")
    for pred in r.get("predictions", []):
        print(pred["path"])
        for t in pred["top"]:
            print(f"  {t['probability']:7.3f}  {t['label']}")
