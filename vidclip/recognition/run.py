"""What ``vidclip classify`` does: encode videos once, pool them, fit or load a classifier, score.

Frame features go through the project's encode pipeline into a feature store
(:func:`vidclip.encode.pipeline.encode_videos`), keyed by the video's absolute path, so a second run (or
another method on the same videos) decodes nothing. Stored features are reused only while they
are still from the same file, model and sampler (:func:`vidclip.features.cache.check_features`,
as training and evaluation): a video replaced at the same path is encoded again. Video features are pooled from the stored
frames by the index's pooler (:class:`vidclip.features.pooling.Pooler`): ``mean`` (normalised mean
of normalised frames) or a ``vidclip train`` checkpoint's module, L2-normalised; a text-conditioned
module is refused (classification needs one vector per video). With a checkpoint whose text tower
was fine-tuned, the zero-shot text weights come from that tower (what its module was trained against).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vidclip.core.errors import ConfigError, display_path
from vidclip.core.fileio import check_output_file
from vidclip.features.pooling import Pooler, temporal_path
from vidclip.recognition.classifier import VideoClassifier
from vidclip.recognition.datasets import LabeledVideos, clean_class_name
from vidclip.recognition.zeroshot import DEFAULT_TEMPLATES, text_classifier

if TYPE_CHECKING:  # torch loads in the functions that need it: plan_classify checks inputs before it
    import torch


def default_store_dir(identity, num_frames: int, cache: str | os.PathLike = "cache") -> Path:
    """``cache/classify-<model>-<digest8>/features-<n>f``: one store per model and frame count."""
    name = re.sub(r"[^a-z0-9._]+", "-", Path(str(identity.name).rstrip("/\\")).name.lower()).strip("-.") or "model"
    return Path(cache) / f"classify-{name}-{identity.weights_digest[:8]}" / f"features-{num_frames}f"


def classify_pooler(temporal: str | None, clip) -> Pooler:
    """The pooler of ``--temporal`` (:meth:`Pooler.create`), refusing a text-conditioned module:
    classification needs one vector per video."""
    pooler = Pooler.create(temporal, clip)
    if pooler.conditioned:
        raise ConfigError(f"--temporal {temporal}: module {pooler.spec.get('module')!r} is text-conditioned; "
                          "classification needs one vector per video (mean, seq_transformer, tdb)")
    return pooler


def check_pooling(pooler: Pooler, spec: dict | None, where: str) -> None:
    """Refuse a classifier fitted on video features pooled otherwise than by ``pooler``."""
    if not pooler.matches(spec):
        raise ConfigError(f"{where}: classifier was fitted on video features pooled by {spec}, not by "
                          f"{pooler.spec}; pass the same --temporal")


@dataclass
class Featurizer:
    """Videos -> pooled features, encoding only what the store lacks. Failures accumulate."""

    clip: object
    store_dir: Path
    sampler: object  # SamplerConfig
    pooler: Pooler
    workers: int = 2
    backend: str = "auto"
    progress: bool = True
    log: object = None  # callable(str) for one-line notes (re-encoded changed videos); None: silent
    failures: list = field(default_factory=list)  # pipeline.Failure of every bad video

    def features(self, paths: list[str], desc: str = "encode") -> tuple[torch.Tensor, np.ndarray]:
        """(features [M, D] of the good videos, bool mask [len(paths)] of which were good)."""
        from vidclip.encode.pipeline import encode_videos
        from vidclip.features.cache import check_features
        from vidclip.features.store import FeatureStore

        keys = [str(Path(p).resolve()) for p in paths]
        # The training/eval check: refuses another model's or sampler's store, and reports (and
        # drops) videos whose file changed since they were encoded, so they are encoded afresh.
        found = check_features(self.store_dir, self.clip.identity, zip(keys, paths),
                               encode_frames=self.sampler.num_frames, for_encoding=True,
                               elsewhere="pass another --features folder")
        if found.changed and self.log is not None:
            self.log(f"vidclip classify: {len(found.changed)} video(s) changed since their features were encoded "
                     f"(first: {display_path(found.changed[0])}); encoding them again")
        bad: set[str] = set()
        if found.missing:
            report = encode_videos(found.missing, self.store_dir, self.clip, self.sampler, workers=self.workers,
                                   backend=self.backend, progress=desc if self.progress else False)
            bad = {f.key for f in report.failed}
            self.failures += [f for f in report.failed if f.key not in {g.key for g in self.failures}]
        import torch

        store = FeatureStore(self.store_dir)
        ok = np.array([k in store and k not in bad for k in keys], dtype=bool)
        good = [k for k, g in zip(keys, ok) if g]
        return torch.from_numpy(self.pooler.pool_store(store, good)), ok


def zero_shot_classifier(clip, classes: list[str], *, templates=DEFAULT_TEMPLATES, names: dict | None = None,
                         temporal: dict | None = None, text_tower=None) -> VideoClassifier:
    """Text weights from the prompts; ``text_tower``: a checkpoint's fine-tuned one (else CLIP's)."""
    prompt_names = [(names or {}).get(c, clean_class_name(c)) for c in classes]
    W = text_classifier(clip, prompt_names, templates, text_tower=text_tower)
    return VideoClassifier("zeroshot", list(classes), prompt_names, list(templates), W, clip.identity.to_dict(),
                           temporal or {"name": "mean"})


def carve_validation(labels: torch.Tensor, num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (fit, val) carved from K shots per class: a quarter of each class's shots (at least
    one) go to validation when the class has >= 2; with one shot there is nothing to carve (val empty)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    fit_idx, val_idx = [], []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = max(1, len(idx) // 4) if len(idx) >= 2 else 0
        val_idx.append(idx[:n_val])
        fit_idx.append(idx[n_val:])
    return torch.cat(fit_idx).sort().values, torch.cat(val_idx).sort().values


def fit_few_shot(base: VideoClassifier, method: str, F: torch.Tensor, y: torch.Tensor, *,
                 val: tuple[torch.Tensor, torch.Tensor] | None = None, shots: int | None = None,
                 seed: int = 0) -> VideoClassifier:
    """``method`` fitted on shot features F [N, D] / labels y [N] around ``base``'s text weights.

    Hyper-parameters are searched on ``val`` when given, else on a split carved from the shots
    (:func:`carve_validation`) and then refitted on all shots; never on the test set.
    """
    from vidclip.recognition.fewshot import fit

    C = len(base.classes)
    y = y.long()
    if val is not None:
        fitted = fit(method, F, y, base.text_weights, val=val, seed=seed)
        fitted.search["validation"] = f"given split ({len(val[1])} videos)"
    else:
        fit_idx, val_idx = carve_validation(y, C, seed)
        if len(val_idx) == 0:
            fitted = fit(method, F, y, base.text_weights, seed=seed)
            fitted.search["validation"] = "none: 1 shot per class leaves nothing to carve; the methods' defaults"
        else:
            fitted = fit(method, F[fit_idx], y[fit_idx], base.text_weights, val=(F[val_idx], y[val_idx]),
                         final=(F, y), seed=seed)
            fitted.search["validation"] = (f"carved from the shots: {len(val_idx)} videos held out for the search, "
                                           "then refitted on all shots")
    fitted.search["fit_seconds"] = round(fitted.fit_seconds, 4)
    return VideoClassifier(method, base.classes, base.prompt_names, base.templates, base.text_weights, base.model,
                           base.temporal, fitted.tensors, fitted.params, fitted.search, shots)


# ----------------------------------------------------------------------------- metrics


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """top-1, top-5 (top-min(5, C)), mean per-class accuracy (classes with test videos), confusion [C, C]."""
    import torch

    labels = labels.long()
    C = len(classes)
    n = int(labels.numel())
    if n == 0:
        return {"videos": 0, "top1": None, "top5": None, "mean_class_accuracy": None, "confusion": []}
    k = min(5, C)
    topk = logits.topk(k, dim=1).indices
    pred = topk[:, 0]
    conf = torch.zeros(C, C, dtype=torch.long)
    conf.index_put_((labels, pred), torch.ones(n, dtype=torch.long), accumulate=True)
    support = conf.sum(1)
    per_class = conf.diag().double() / support.clamp(min=1)
    present = support > 0
    return {
        "videos": n,
        "top1": float((pred == labels).double().mean()),
        "top5": float((topk == labels[:, None]).any(1).double().mean()),
        "top5_k": k,
        "mean_class_accuracy": float(per_class[present].mean()),
        "per_class": {classes[i]: round(float(per_class[i]), 4) for i in range(C) if present[i]},
        "confusion": conf.tolist(),
    }


def write_confusion_png(confusion: list[list[int]], classes: list[str], path: str | os.PathLike,
                        title: str = "") -> Path:
    """Row-normalised confusion matrix with class names (rows: true class, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vidclip.core.fileio import atomic_path

    conf = np.asarray(confusion, dtype=np.float64)
    rows = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    C = len(classes)
    side = min(4 + 0.35 * C, 40)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(C), labels=classes, rotation=90, fontsize=max(4, 9 - C // 20))
    ax.set_yticks(range(C), labels=classes, fontsize=max(4, 9 - C // 20))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if C <= 30:
        for i in range(C):
            for j in range(C):
                if conf[i, j]:
                    ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rows[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out


def top_predictions(probs: torch.Tensor, classes: list[str], k: int) -> list[list[dict]]:
    k = min(k, len(classes))
    p, idx = probs.topk(k, dim=1)
    return [[{"label": classes[int(i)], "probability": round(float(q), 6)} for q, i in zip(pr, ir)]
            for pr, ir in zip(p, idx)]


def describe_failures(failures) -> list[str]:
    return [f"{display_path(f.path)}: {f.reason}" for f in failures]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


__all__ = ["Featurizer", "classify_pooler", "check_pooling", "zero_shot_classifier", "fit_few_shot", "carve_validation",
           "classification_metrics", "write_confusion_png", "top_predictions", "default_store_dir",
           "LabeledVideos"]


# ----------------------------------------------------------------------------- the whole verb


@dataclass
class ClassifyRequest:
    """Everything ``vidclip classify`` was asked; see ``vidclip classify --help``."""

    inputs: list[str] = field(default_factory=list)  # videos / folders to label
    data: str | None = None
    layout: str = "auto"
    fold: int = 1
    test: str = "test"
    train: str | None = None
    val: str | None = None
    method: str = "zeroshot"
    shots: int = 16
    seed: int = 0
    classes_file: str | None = None
    names_file: str | None = None
    templates_file: str | None = None
    classifier_file: str | None = None
    save: str | None = None
    confusion: str | None = None
    temporal: str = "mean"
    features: str | None = None
    skip_missing: bool = False
    top_k: int = 5


@dataclass
class ClassifyPlan:
    """What a ``vidclip classify`` request reads, checked before any model loads (no torch)."""

    classes: list[str]
    classifier_meta: dict | None = None  # --classifier's metadata, checked against its tensor shapes
    templates: list[str] | tuple[str, ...] = DEFAULT_TEMPLATES
    names: dict[str, str] | None = None  # --class-names overrides
    shots: LabeledVideos | None = None  # the K shots per class drawn from --train
    val: LabeledVideos | None = None
    test: LabeledVideos | None = None  # the split evaluated (--data without videos)
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (key, path) of VIDEO_OR_DIR
    warnings: list[str] = field(default_factory=list)  # also logged as they are found


def plan_classify(req: ClassifyRequest, log=print) -> ClassifyPlan:
    """Read and check every input of ``req`` (files, splits, shots, options), loading no model.

    Refused: ``--val`` naming the test split, or a validation split made of test videos (the
    search would tune on the test set). Warned (logged, and in ``warnings``): test videos also in
    ``--train`` or ``--val``, with the count, and a one-class problem, whose accuracy is
    trivially 100%.
    """
    from vidclip.recognition.classifier import check_classifier_file
    from vidclip.recognition.datasets import (
        dataset_classes,
        read_class_list,
        read_class_names,
        read_split,
        sample_shots,
    )
    from vidclip.recognition.zeroshot import read_templates

    def warn(message: str) -> None:
        plan.warnings.append(message)
        log(f"vidclip classify: warning: {message}")

    evaluates = bool(req.data) and not req.inputs
    if req.classifier_file and (req.method != "zeroshot" or req.train):
        raise ConfigError("--classifier reuses a fitted classifier; it cannot be combined with --method/--train")
    if req.method != "zeroshot" and not req.train:
        raise ConfigError(f"--method {req.method} needs --train SPLIT (the labelled examples)")
    if req.method != "zeroshot" and req.shots < 1:
        raise ConfigError(f"--shots must be >= 1, got {req.shots}")
    if not (req.data or req.inputs or req.save):
        raise ConfigError("nothing to classify: pass videos/folders, or --data DATASET to evaluate")
    if req.val and req.method != "zeroshot" and evaluates and _same_split(req.val, req.test):
        raise ConfigError(f"--val {req.val} names the test split (--test {req.test}): the hyper-parameters would be "
                          "tuned on the test videos; pass a separate validation split, or leave out --val to carve "
                          "one from the shots")
    temporal_path(req.temporal)
    # output files are checked now, not after the model load and the encoding
    if req.save:
        check_output_file(req.save, "--save")
    if req.confusion:
        check_output_file(req.confusion, "--confusion")

    meta = check_classifier_file(req.classifier_file) if req.classifier_file else None
    if meta is not None:
        classes = meta["classes"]
    elif req.data:
        classes = dataset_classes(req.data, req.layout)
    elif req.classes_file:
        classes = read_class_list(req.classes_file)
    else:
        raise ConfigError("no classes: pass --data DATASET, --classes FILE or --classifier FILE")
    plan = ClassifyPlan(list(classes), meta)
    train_set = None
    if len(classes) == 1:
        warn(f"only one class ({classes[0]!r}): every video is given it, so the accuracy is trivially 100% "
             "and the probabilities all 1")
    if meta is None:
        plan.templates = read_templates(req.templates_file) if req.templates_file else DEFAULT_TEMPLATES
        plan.names = read_class_names(req.names_file) if req.names_file else None
        if req.method != "zeroshot":
            train_set = read_split(req.data, req.train, layout=req.layout, fold=req.fold, classes=classes,
                                   skip_missing=req.skip_missing)
            _report_missing(train_set, log)
            plan.shots = sample_shots(train_set, req.shots, req.seed)
            if req.val:
                plan.val = read_split(req.data, req.val, layout=req.layout, fold=req.fold, classes=classes,
                                      skip_missing=req.skip_missing)
                _report_missing(plan.val, log)
    if evaluates:
        plan.test = read_split(req.data, req.test, layout=req.layout, fold=req.fold, classes=plan.classes,
                               skip_missing=req.skip_missing)
        _report_missing(plan.test, log)
        test_videos = _video_set(plan.test)
        if plan.val is not None:
            both = len(_video_set(plan.val) & test_videos)
            if both and both == len(_video_set(plan.val)):
                raise ConfigError(f"--val {req.val}: all {both} of its videos are in the test split (--test "
                                  f"{req.test}): the hyper-parameters would be tuned on the test videos; pass a "
                                  "separate validation split, or leave out --val to carve one from the shots")
            if both:
                warn(f"{both} of the {len(test_videos)} test videos are also in --val {req.val}: the "
                     "hyper-parameters are tuned on them, so the test accuracy is optimistic")
        if train_set is not None:
            both = len(_video_set(train_set) & test_videos)
            if both:
                drawn = len(_video_set(plan.shots) & test_videos)
                warn(f"{both} of the {len(test_videos)} test videos are also in --train {req.train} ({drawn} of "
                     f"them among the {len(plan.shots.items)} shots drawn): the test accuracy is not a held-out "
                     "measure")
    elif req.inputs:
        from vidclip.encode.pipeline import collect_videos

        plan.inputs = collect_videos(req.inputs)
        if not plan.inputs:
            raise ConfigError(f"no videos found in {' '.join(map(str, req.inputs))}")
    return plan


def _same_split(a: str, b: str) -> bool:
    """The same split name, or two names of one existing file or folder."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _video_set(videos: LabeledVideos) -> set[str]:
    return {os.path.realpath(p) for p in videos.paths}


def classify(req: ClassifyRequest, clip, sampler, *, workers: int = 2, backend: str = "auto",
             progress: bool = True, log=print, plan: ClassifyPlan | None = None) -> dict:
    """Run one ``vidclip classify`` request with a loaded CLIP; returns the JSON-able result.

    ``plan``: :func:`plan_classify`'s (made here when None), checked before the model was loaded.
    """
    from vidclip.recognition.classifier import check_model, load_classifier

    plan = plan if plan is not None else plan_classify(req, log)
    pooler = classify_pooler(req.temporal, clip)
    store_dir = Path(req.features) if req.features else default_store_dir(clip.identity, sampler.num_frames)
    feats = Featurizer(clip, store_dir, sampler, pooler, workers=workers, backend=backend, progress=progress,
                       log=log)
    result: dict = {"model": clip.identity.to_dict(), "temporal": pooler.spec, "features": str(store_dir)}
    if clip.identity.random_weights:
        result["warning"] = "the model has RANDOM weights: the predictions mean nothing"
    if plan.warnings:
        result["warnings"] = list(plan.warnings)

    if plan.classifier_meta is not None:
        clf = load_classifier(req.classifier_file)
        check_model(clf, clip.identity, req.classifier_file)
        check_pooling(pooler, clf.temporal, req.classifier_file)
    else:
        clf = zero_shot_classifier(clip, plan.classes, templates=plan.templates, names=plan.names,
                                   temporal=pooler.spec, text_tower=pooler.text_tower)
        if plan.shots is not None:
            F, y, lost = _labelled_features(feats, plan.shots, "encode train")
            if lost:
                log(f"vidclip classify: {lost} training video(s) failed to decode and were skipped")
            val = None
            if plan.val is not None:
                vF, vy, _ = _labelled_features(feats, plan.val, "encode val")
                val = (vF, vy)
            clf, seconds = timed(fit_few_shot, clf, req.method, F, y, val=val, shots=req.shots, seed=req.seed)
            result["fit"] = {"method": req.method, "shots": req.shots, "train_videos": int(len(y)),
                             "params": clf.params, "search": clf.search, "seconds": round(seconds, 4)}
    result["method"] = clf.method
    result["classes"] = clf.classes
    if req.save:
        result["saved"] = str(clf.save(req.save))

    if plan.test is not None:
        F, y, _ = _labelled_features(feats, plan.test, "encode test")
        logits = clf.logits(F)
        metrics = classification_metrics(logits, y, clf.classes)
        result["test"] = {"split": req.test, "listed": len(plan.test.items), **metrics}
        if req.confusion:
            title = f"{clf.method} ({clf.shots} shots)" if clf.shots else "zero-shot"
            result["confusion_png"] = str(write_confusion_png(metrics["confusion"], clf.classes, req.confusion,
                                                              f"{Path(str(req.data)).name}: {title}, top-1 "
                                                              f"{100 * metrics['top1']:.1f}%"))
    elif plan.inputs:
        paths = [p for _, p in plan.inputs]
        F, ok = feats.features(paths, "encode")
        probs = clf.probabilities(F)
        tops = top_predictions(probs, clf.classes, req.top_k)
        good = [p for p, g in zip(paths, ok) if g]
        result["predictions"] = [{"path": p, "top": t} for p, t in zip(good, tops)]
    result["failed"] = [f.to_dict() for f in feats.failures]
    return result


def _labelled_features(feats: Featurizer, videos: LabeledVideos, desc: str):
    import torch

    F, ok = feats.features(videos.paths, desc)
    y = torch.tensor(videos.labels, dtype=torch.long)[torch.from_numpy(ok)]
    return F, y, int((~ok).sum())


def _report_missing(videos: LabeledVideos, log) -> None:
    for m in videos.missing:
        log(f"vidclip classify: {m}; skipped")
