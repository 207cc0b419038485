"""The ``vidclip rerank`` job: read a run, topics and frames, rerank every topic, write a TREC run.

Policies (documented in README, *Rerank results from another system*):

- the initial ranking of a topic is its run's scores, descending, ties by docid descending (the
  order trec_eval and sample_eval read); a rank column is not used for ordering;
- only the first ``depth`` candidates are reranked; the rest follow in their initial order;
- a candidate whose frames cannot be found (docid not in the mapping / index, video missing or
  undecodable, no sampled frame in its span) is *unresolved*: it is counted and listed in the
  report and keeps its slot in the ranking (it is not moved up or down);
- OUT is a TREC 6-column run, written atomically, ranks 1..n per topic; its score column is
  ``n + 1 - rank`` (strictly descending), so every evaluator, which re-sorts by score, reads
  exactly this order (the fused values are per-topic normalised and not comparable across topics).
  Temp files of an earlier write of OUT that was killed (``.OUT.<hex>.tmp``) are deleted before
  writing (:func:`vidclip.core.fileio.clean_stale_temps`: only ours, only when no live writer holds one).

Checks come first: :func:`read_inputs` checks the options and OUT's path and reads every input
file before any model is loaded (or torch imported), so a bad input is refused at once.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidclip.core.errors import ConfigError, DatasetError, VidclipError, display_path
from vidclip.core.fileio import atomic_write_text, check_output_file, clean_stale_temps
from vidclip.eval.trec import Qrels, evaluate_run, format_trec_run, ranked, read_qrels, read_run
from vidclip.rerank.bank import FrameBank, candidate_scores, rerank_topic
from vidclip.rerank.inputs import Shot, read_mapping, read_topics
from vidclip.retrieval.fusion import NORMS, parse_pool

TUNE_ALPHAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
TUNE_POOLS = ("max", "mean", "topk:3")
TUNE_NORMS = ("minmax", "zscore", "rank", "none")


@dataclass
class RerankConfig:
    alpha: float = 0.4  # weight of the initial score; the CLIP score weighs 1 - alpha (core.fuse)
    depth: int = 1000
    pool: str = "max"
    norm: str = "minmax"
    tag: str = "vidclip-rerank"

    def check(self) -> None:
        parse_pool(self.pool)
        if self.norm not in NORMS:
            raise ConfigError(f"--norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha must be in [0, 1], got {self.alpha}")
        if self.depth <= 0:
            raise ConfigError(f"--depth must be positive, got {self.depth}")
        if not self.tag or any(ch.isspace() for ch in self.tag):
            raise ConfigError(f"--tag must be one word without spaces (the run's last column), got {self.tag!r}")


@dataclass
class RerankInputs:
    """What a rerank job reads from files, read and checked before any model is loaded."""

    orders: dict[str, list[str]]  # topic -> docids in initial order
    scores: dict[str, np.ndarray]  # topic -> their initial scores, float64 [n]
    topics: dict[str, str]  # topic -> text
    shots: dict[str, Shot] | None  # docid -> video and span (--videos MAP), else None
    qrels: Qrels | None  # for tuning, else None


def load_inputs(run_path, topics_path) -> tuple[dict[str, list[str]], dict[str, np.ndarray], dict[str, str]]:
    """(topic -> docids in initial order, topic -> their scores float64 [n], topic -> text)."""
    run = read_run(run_path)
    topics = read_topics(topics_path)
    missing = [t for t in run if t not in topics]
    if missing:
        raise DatasetError(f"{display_path(topics_path)}: no text for topic(s) {', '.join(missing[:10])}"
                           f"{' ...' if len(missing) > 10 else ''} of the run {display_path(run_path)}")
    orders, scores = {}, {}
    for t, entries in run.items():
        by_doc = {e.docid: e.score for e in entries}
        orders[t] = ranked(by_doc)
        scores[t] = np.array([by_doc[d] for d in orders[t]], dtype=np.float64)
    return orders, scores, topics


def read_inputs(run_path, topics_path, out_path, *, cfg: RerankConfig, index_dir=None, mapping_path=None,
                match: str = "auto", tune_qrels=None) -> RerankInputs:
    """Check the options and OUT's path, and read every input file (errors name the file and line).

    Imports no torch and loads no model, so a wrong option, a missing or malformed file or an
    unwritable OUT is refused before the minutes of model loading and decoding.
    """
    cfg.check()
    if index_dir is None and mapping_path is None:
        raise ConfigError("give --index DIR (stored frame embeddings) or --videos MAP (decode the mapped videos)")
    out = check_output_file(out_path, "--out")
    for option, given in (("--run", run_path), ("--topics", topics_path), ("--videos", mapping_path),
                          ("--qrels", tune_qrels)):
        if given is not None and Path(given).expanduser().resolve() == out.resolve():
            raise ConfigError(f"--out {display_path(out)} is the {option} file; write the reranked run elsewhere")
    if index_dir is not None:
        from vidclip.rerank.frames import check_index_dir

        check_index_dir(index_dir, match)
    orders, scores, topics = load_inputs(run_path, topics_path)
    shots = read_mapping(mapping_path) if mapping_path is not None else None
    qrels = read_qrels(tune_qrels) if tune_qrels is not None else None
    return RerankInputs(orders, scores, topics, shots, qrels)


def _stage(progress: bool, what: str) -> None:
    if progress:  # a line per slow stage, next to the tqdm bars (stderr: stdout is the report)
        print(f"vidclip rerank: {what}", file=sys.stderr, flush=True)


def encode_topics(clip, texts: list[str]) -> np.ndarray:
    """float32 [Q, D] text embeddings (normalised later, per use)."""
    return clip.encode_text(texts).float().cpu().numpy()


def rerank_all(orders: dict[str, list[str]], scores: dict[str, np.ndarray], text_emb: dict[str, np.ndarray],
               bank: FrameBank, cfg: RerankConfig, progress: bool = False
               ) -> tuple[dict[str, list[str]], dict[str, list[str]], float]:
    """Rerank every topic: (topic -> final order, topic -> unresolved docids in depth, seconds spent)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    final, unresolved = {}, {}
    for t, docids in tqdm(orders.items(), total=len(orders), desc="rerank", unit="topic", disable=not progress,
                          dynamic_ncols=True):
        res = rerank_topic(text_emb[t], docids, scores[t], bank, alpha=cfg.alpha, depth=cfg.depth, pool=cfg.pool,
                           norm=cfg.norm)
        final[t], unresolved[t] = res.order, res.unresolved
    return final, unresolved, time.perf_counter() - t0


def tune(orders, scores, text_emb, bank: FrameBank, qrels: Qrels, depth: int, progress: bool = False
         ) -> tuple[list[dict], dict]:
    """Grid search of (alpha, pool, norm) by mean xinfAP on these topics; (grid rows, best row).

    alpha is the weight of the initial score (1.0: the initial ranking; 0.0: CLIP alone).
    """
    from tqdm.auto import tqdm

    rows = []
    bar = tqdm(total=len(TUNE_POOLS) * len(TUNE_NORMS) * len(TUNE_ALPHAS), desc="tune", unit="setting",
               disable=not progress, dynamic_ncols=True)
    for pool in TUNE_POOLS:
        clip_m = {t: candidate_scores(text_emb[t], bank, bank.lookup(d[:depth]), pool) for t, d in orders.items()}
        for norm in TUNE_NORMS:
            for alpha in TUNE_ALPHAS:
                bar.update(1)
                run = {}
                for t, d in orders.items():
                    res = rerank_topic(text_emb[t], d, scores[t], bank, alpha=alpha, depth=depth, pool=pool,
                                       norm=norm, clip_scores=clip_m[t])
                    run[t] = {doc: float(len(res.order) - i) for i, doc in enumerate(res.order)}
                ev = evaluate_run(run, qrels, depth)
                rows.append({"alpha": alpha, "pool": pool, "norm": norm, "xinfAP": ev["mean"]["xinfAP"],
                             "AP": ev["mean"]["AP"]})
    bar.close()
    best = max(rows, key=lambda r: r["xinfAP"])  # first of equals: grid order
    return rows, best


def rerank_run(run_path, topics_path, out_path, *, cfg: RerankConfig, index_dir=None, mapping_path=None,
               match: str = "auto", clip=None, sampler=None, cache_dir=None, workers: int = 2,
               backend: str = "auto", tune_qrels=None, progress: bool = False,
               inputs: RerankInputs | None = None) -> dict:
    """Rerank ``run_path`` and write ``out_path``; returns the report (JSON-able).

    Frames from ``index_dir`` (a library index; the model is the index's) or, without it, by
    decoding ``mapping_path``'s videos with ``clip`` and ``sampler`` (cached in ``cache_dir``).
    ``tune_qrels``: choose alpha, pool and norm on these topics first (the report has the grid).
    ``inputs``: what :func:`read_inputs` returned for these arguments (read here when None).
    ``progress``: a line per stage and tqdm bars on stderr.
    """
    if inputs is None:
        inputs = read_inputs(run_path, topics_path, out_path, cfg=cfg, index_dir=index_dir,
                             mapping_path=mapping_path, match=match, tune_qrels=tune_qrels)
    t0 = time.perf_counter()
    orders, scores, topics, shots = inputs.orders, inputs.scores, inputs.topics, inputs.shots
    base = Path(mapping_path).resolve().parent if mapping_path is not None else None
    heads = list(dict.fromkeys(d for t in orders for d in orders[t][:cfg.depth]))
    if index_dir is not None:
        from vidclip.rerank.frames import bank_from_index

        _stage(progress, f"reading the stored frames of {len(heads)} candidates from {display_path(index_dir)}")
        bank, model, stats = bank_from_index(index_dir, heads, shots, match=match, mapping_base=base)
        if clip is None:
            from vidclip.models.clip.load import load_clip_from_identity

            _stage(progress, f"loading the index's model {model.get('name')}")
            clip = load_clip_from_identity(model)
        elif clip.identity.to_dict().get("weights_digest") != model.get("weights_digest"):
            raise ConfigError(f"{display_path(index_dir)}: the index was built with model {model.get('name')!r}; "
                              "rerank with the index's own model (leave out --model)")
    else:
        from vidclip.rerank.frames import bank_from_videos

        if clip is None or sampler is None:
            raise ConfigError("decoding the mapped videos needs a model and a sampler")
        _stage(progress, f"frames of {len(heads)} candidates: decoding and encoding their videos (cached for the "
                         "next run)")
        bank, stats = bank_from_videos(heads, shots, base, clip, sampler, cache_dir=cache_dir, workers=workers,
                                       backend=backend, progress="encode candidates' videos" if progress else False)
    texts = list(orders)
    _stage(progress, f"encoding {len(texts)} topic texts")
    emb = encode_topics(clip, [topics[t] for t in texts])
    text_emb = dict(zip(texts, emb))
    report: dict = {}
    if inputs.qrels is not None:
        grid, best = tune(orders, scores, text_emb, bank, inputs.qrels, cfg.depth, progress=progress)
        cfg = RerankConfig(alpha=best["alpha"], depth=cfg.depth, pool=best["pool"], norm=best["norm"], tag=cfg.tag)
        report["tune"] = {"grid": grid, "best": best,
                          "note": "tuned on these topics: report results on other topics only"}
    final, unresolved, rerank_s = rerank_all(orders, scores, text_emb, bank, cfg, progress=progress)
    ranking = {t: [(d, float(len(order) - i)) for i, d in enumerate(order)] for t, order in final.items()}
    temps = clean_stale_temps(out_path)  # debris of a killed earlier write of OUT
    try:
        atomic_write_text(out_path, format_trec_run(ranking, cfg.tag))
    except OSError as e:  # checked before the work, but the path may have changed since
        raise VidclipError(f"--out {display_path(out_path)}: cannot write it ({e.strerror or e})") from None
    listed = sorted({d for ds in unresolved.values() for d in ds})
    report.update({
        "out": str(out_path), "topics": len(orders), "candidates": sum(len(d) for d in orders.values()),
        "reranked": sum(min(len(d), cfg.depth) for d in orders.values()) - sum(len(u) for u in unresolved.values()),
        "unresolved": sum(len(u) for u in unresolved.values()),
        "unresolved_docids": {d: bank.unresolved.get(d, "no frames") for d in listed},
        "config": {"alpha": cfg.alpha, "depth": cfg.depth, "pool": cfg.pool, "norm": cfg.norm, "tag": cfg.tag},
        "frames": {"source": "index" if index_dir is not None else "videos", "videos": stats.videos,
                   "decoded": stats.decoded, "cached": stats.cached, "failed": stats.failed,
                   "seconds": round(stats.seconds, 3)},
        "ms_per_topic": round(1000 * rerank_s / max(1, len(orders)), 3),
        "temps_removed": [str(t) for t in temps],
        "seconds": round(time.perf_counter() - t0, 3),
    })
    return report
