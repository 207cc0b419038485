"""Training-free few-shot adapters on top of a zero-shot CLIP classifier.

All methods take pooled, L2-normalised video features ``F`` [N, D] (float32 torch), integer
labels ``y`` [N] and the zero-shot text classifier ``W`` [C, D] (rows L2-normalised), and give
logits [M, C] for query features ``f`` [M, D]. Every residual method has the form

    logits(f) = 100 * f W^T + alpha * adapter(f)

so ``alpha = 0`` is exactly zero-shot CLIP (logit scale 100, as the papers use). Formulas follow
the official code (facts, not code, carried over):

- Tip-Adapter (gaopengcuhk/Tip-Adapter): keys = training features, values = one-hot labels L;
  adapter(f) = exp(-beta (1 - f K^T)) L.
- Tip-Adapter-F: the same with the keys fine-tuned (AdamW lr 1e-3, eps 1e-4, cosine schedule,
  cross-entropy on the training shots), once, at the initial alpha and beta; the search then
  tunes only the inference alpha and beta on the fine-tuned keys (the official protocol).
- GDA (mrflogs/ICLR24): class means mu_c, one shared covariance with the KS shrinkage estimator
  precision P = D * pinv((N - 1) S + tr(S) I) (S: sample covariance of the centred features);
  adapter(f) = f (P mu^T) + b, b_c = log(1/C) - mu_c P mu_c^T / 2.
- ProKeR (Bendou et al., CVPR 2025): kernel ridge regression around the zero-shot classifier in
  the RKHS of k(x, x') = exp(-beta (1 - x x'^T)); closed form
  g(f) = f W^T + k(f, F) (K / lambda + I)^{-1} (L - F W^T), logits = 100 g(f); here written
  100 f W^T + alpha * 100 k(f, F) A, with alpha = 1 in the paper (the grid keeps it at 1).
- APE (yangyangyang127/APE, the training-free method, not the trained APE-T): keep the ``n``
  channels with the highest criterion J_d = -w0 * s_d + w1 * var_c(W_cd) (s_d: mean product of channel d between features of
  different classes, text and cache together), then a Tip cache on the refined channels whose
  values are weighted by exp(gamma * KL(L || softmax(K' W'^T))).
- Linear probe: scikit-learn multinomial logistic regression (not a residual; the classical
  baseline), logits = f A^T + c.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as nnf

from vidclip.core.errors import ConfigError

LOGIT_SCALE = 100.0
METHODS = ("tip", "tip-f", "gda", "proker", "ape", "linear")


def _fl(x: torch.Tensor) -> torch.Tensor:
    """float64 stays float64 (exact reloads, see VideoClassifier.logits); anything else -> float32."""
    return x if x.dtype == torch.float64 else x.float()


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int [N] -> float32 [N, C]."""
    return nnf.one_hot(labels.long(), num_classes).float()


def zero_shot_logits(features: torch.Tensor, text_weights: torch.Tensor) -> torch.Tensor:
    """100 * f W^T: [M, D] x [C, D] -> [M, C]."""
    return LOGIT_SCALE * _fl(features) @ _fl(text_weights).T


def cache_affinity(features: torch.Tensor, keys: torch.Tensor, beta: float) -> torch.Tensor:
    """exp(-beta (1 - f K^T)): [M, D] x [S, D] -> [M, S] (Tip-Adapter's affinity, ProKeR's kernel)."""
    return torch.exp(-beta * (1.0 - _fl(features) @ _fl(keys).T))


# ----------------------------------------------------------------------------- logits (fitted state -> logits)


def tip_logits(f, W, keys, values, *, alpha: float, beta: float) -> torch.Tensor:
    """Tip-Adapter / Tip-Adapter-F: 100 f W^T + alpha exp(-beta (1 - f K^T)) L. keys [S, D], values [S, C]."""
    return zero_shot_logits(f, W) + alpha * cache_affinity(f, keys, beta) @ _fl(values)


def gda_logits(f, W, weight, bias, *, alpha: float) -> torch.Tensor:
    """GDA: 100 f W^T + alpha (f G^T + b). weight G [C, D], bias b [C]."""
    return zero_shot_logits(f, W) + alpha * (_fl(f) @ _fl(weight).T + _fl(bias))


def proker_logits(f, W, support, coef, *, alpha: float, beta: float) -> torch.Tensor:
    """ProKeR: 100 (f W^T + alpha k(f, S) A). support S [S, D], coef A [S, C]."""
    return zero_shot_logits(f, W) + alpha * LOGIT_SCALE * cache_affinity(f, support, beta) @ _fl(coef)


def ape_logits(f, W, keys, values, channels, *, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """APE: 100 f W^T + alpha exp(-beta (1 - f' K'^T)) (L * exp(gamma * div)).

    channels [n] (int64): the refined channels; keys [S, D] (full width), values [S, C].
    """
    fr, kr, wr = _ape_refine(f, keys, W, channels)
    soft_values = _fl(values) * torch.exp(gamma * _ape_divergence(kr, wr, values))
    return zero_shot_logits(f, W) + alpha * cache_affinity(fr, kr, beta) @ soft_values


def linear_logits(f, weight, bias) -> torch.Tensor:
    """Linear probe: f A^T + c. weight [C, D], bias [C]."""
    return _fl(f) @ _fl(weight).T + _fl(bias)


def _ape_refine(f, keys, W, channels):
    idx = channels.long()
    return (nnf.normalize(_fl(f)[:, idx], dim=-1), nnf.normalize(_fl(keys)[:, idx], dim=-1),
            nnf.normalize(_fl(W)[:, idx], dim=-1))


def _ape_divergence(keys_r, W_r, values) -> torch.Tensor:
    """KL(L || softmax(K' W'^T)) per cache entry, in bits, as APE: [S, 1]."""
    key_probs = (keys_r @ W_r.T).softmax(dim=1)
    v = _fl(values)
    return torch.sum(v * torch.log2((v + 1e-6) / (key_probs + 1e-6)), dim=1, keepdim=True)


#: APE's criterion weights for the training-free method (``w_training_free`` in APE's configs;
#: (0.2, 0.8), ``w_training``, belongs to the trained APE-T).
APE_W = (0.3, 0.7)


def ape_criterion(W: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor, w: tuple[float, float] = APE_W
                  ) -> torch.Tensor:
    """APE's channel criterion J [D] = -w0 * s + w1 * var over classes of W.

    s_d is the mean of x_d * x'_d over all pairs (x, x') of samples of *different* classes, the
    samples of class c being its text weight and its cache features (APE's ``cal_criterion``).
    Vectorised: with T_c = sum of class c's samples, sum_{c != c'} T_c T_c' = (sum_c T_c)^2 - sum_c T_c^2.
    """
    C, D = W.shape
    y = labels.long()
    per_class = torch.zeros(C, D, dtype=torch.float64).index_add_(0, y, keys.double()) + W.double()
    counts = torch.bincount(y, minlength=C).double() + 1.0
    total = per_class.sum(0)
    cross = total**2 - (per_class**2).sum(0)
    pairs = counts.sum() ** 2 - (counts**2).sum()
    sim = cross / pairs
    return (-w[0] * sim + w[1] * W.double().var(dim=0)).float()


# ----------------------------------------------------------------------------- fitting (closed forms)


def gda_fit(F: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GDA parameters (weight [C, D], bias [C]) from features [N, D], labels [N].

    Shared covariance, KS shrinkage: P = D * pinv((N - 1) S + tr(S) I), S the unbiased sample
    covariance of the class-centred features; uniform class prior.
    """
    F = F.double()
    y = y.long()
    counts = torch.bincount(y, minlength=num_classes)
    if (counts == 0).any():
        raise ConfigError(f"GDA: class {int(torch.nonzero(counts == 0)[0])} has no training example")
    mus = torch.zeros(num_classes, F.shape[1], dtype=torch.float64).index_add_(0, y, F) / counts[:, None]
    centred = F - mus[y]
    n, d = centred.shape
    cov = centred.T @ centred / max(n - 1, 1)
    precision = d * torch.linalg.pinv((n - 1) * cov + torch.trace(cov) * torch.eye(d, dtype=torch.float64))
    weight = mus @ precision  # [C, D] (P is symmetric)
    bias = math.log(1.0 / num_classes) - 0.5 * torch.einsum("cd,cd->c", weight, mus)
    return weight.float(), bias.float()


def proker_fit(F: torch.Tensor, y: torch.Tensor, W: torch.Tensor, *, beta: float, lam: float) -> torch.Tensor:
    """ProKeR coefficients A [N, C] = (K / lambda + I)^{-1} (L - F W^T), K = k(F, F)."""
    K = cache_affinity(F, F, beta).double()
    residual = one_hot(y, W.shape[0]).double() - F.double() @ W.double().T
    A = torch.linalg.solve(K / lam + torch.eye(K.shape[0], dtype=torch.float64), residual)
    return A.float()


def tip_f_finetune(F, y, W, *, alpha: float, beta: float, epochs: int = 20, lr: float = 1e-3,
                   seed: int = 0) -> torch.Tensor:
    """Tip-Adapter-F: fine-tune the cache keys [N, D] (init: F) with AdamW on the shots' CE loss."""
    gen = torch.Generator().manual_seed(seed)
    keys = torch.nn.Parameter(F.float().clone())
    values = one_hot(y, W.shape[0])
    opt = torch.optim.AdamW([keys], lr=lr, eps=1e-4)
    batch = 256
    steps = epochs * max(1, math.ceil(F.shape[0] / batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(epochs):
        order = torch.randperm(F.shape[0], generator=gen)
        for i in range(0, F.shape[0], batch):
            idx = order[i:i + batch]
            logits = tip_logits(F[idx], W, keys, values, alpha=alpha, beta=beta)
            loss = nnf.cross_entropy(logits, y[idx].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return keys.detach()


def linear_fit(F, y, num_classes: int, *, C: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn logistic regression (lbfgs, multinomial) -> (weight [C, D], bias [C])."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=1000, random_state=seed)
    clf.fit(F.double().numpy(), y.numpy())
    weight = np.zeros((num_classes, F.shape[1]), np.float32)
    bias = np.full(num_classes, -1e4, np.float32)  # a class absent from the fit is never predicted
    cls = clf.classes_.astype(int)
    if len(cls) == 2:  # sklearn keeps one row for two classes: logit difference split in two
        weight[cls[1]], bias[cls[1]] = clf.coef_[0] / 2, clf.intercept_[0] / 2
        weight[cls[0]], bias[cls[0]] = -clf.coef_[0] / 2, -clf.intercept_[0] / 2
    else:
        weight[cls], bias[cls] = clf.coef_, clf.intercept_
    return torch.from_numpy(weight), torch.from_numpy(bias)


# ----------------------------------------------------------------------------- one method = fit + logits


@dataclass
class Fitted:
    """A fitted method: ``tensors`` and ``params`` are all :func:`method_logits` needs."""

    method: str
    tensors: dict[str, torch.Tensor]
    params: dict
    search: dict = field(default_factory=dict)
    fit_seconds: float = 0.0


def method_logits(method: str, f: torch.Tensor, W: torch.Tensor, tensors: dict, params: dict) -> torch.Tensor:
    """Logits [M, C] of a fitted ``method`` for features f [M, D]."""
    t, p = tensors, params
    if method == "zeroshot":
        return zero_shot_logits(f, W)
    if method in ("tip", "tip-f"):
        return tip_logits(f, W, t["keys"], t["values"], alpha=p["alpha"], beta=p["beta"])
    if method == "gda":
        return gda_logits(f, W, t["weight"], t["bias"], alpha=p["alpha"])
    if method == "proker":
        return proker_logits(f, W, t["support"], t["coef"], alpha=p["alpha"], beta=p["beta"])
    if method == "ape":
        return ape_logits(f, W, t["keys"], t["values"], t["channels"], alpha=p["alpha"], beta=p["beta"],
                          gamma=p["gamma"])
    if method == "linear":
        return linear_logits(f, t["weight"], t["bias"])
    raise ConfigError(f"unknown method {method!r}; one of zeroshot, {', '.join(METHODS)}")


#: The grids searched on the validation split: our coarse grids, each covering the range its
#: paper's code searches (APE's channel grid holds its training-free 700 of 1024).
GRIDS: dict[str, dict[str, list]] = {
    "tip": {"alpha": [0.1, 0.5, 1, 2, 3, 5, 10], "beta": [0.5, 1, 2, 3, 5, 7, 10]},
    "tip-f": {"alpha": [0.1, 0.5, 1, 2, 3, 5, 10], "beta": [0.5, 1, 2, 3, 5, 7, 10]},
    "gda": {"alpha": [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0]},
    "proker": {"beta": [0.5, 1, 2, 4, 8, 16], "lam": [0.01, 0.1, 1, 10, 100], "alpha": [1.0]},
    "ape": {"alpha": [0.1, 0.5, 1, 2, 3, 5], "beta": [0.5, 1, 2, 4, 7], "gamma": [0, 0.5, 1, 1.5],
            "channels": [0.5, 700 / 1024, 1.0]},
    "linear": {"C": [0.01, 0.1, 1, 10, 100]},
}
#: The values used without a validation split (K = 1 without --val: nothing to carve), and where
#: each comes from:
#: - tip, tip-f: alpha 1, beta 5.5, the Tip-Adapter paper's setting (its code's per-dataset
#:   configs start the search from beta 1 and alpha 1.17-10; UCF101's: alpha 3). tip-f also
#:   fine-tunes its keys at these values whether or not alpha and beta are searched afterwards.
#: - gda: alpha 1, our choice (GDA's code always searches alpha, over the grid above, on val).
#: - proker: beta 3, lambda 0.05, the 1-shot row of the values ProKeR's code uses when it does not
#:   search on the target data (selected on ImageNet with RN50, ``configs/RN50/configs_proker/
#:   hyperparameters.json``; 16 shots: beta 1.7, lambda 0.1); alpha stays 1 (the paper's form).
#: - ape: the training-free APE's UCF101 config (``configs/ucf101.yaml``): alpha 2, beta 1,
#:   gamma 0.1 (``init_*``), ``training_free_feat_num`` 700 of RN50's 1024 channels (as a
#:   fraction: 0.684 of the dimension); its criterion weights are APE_W.
#: - linear: C 1, scikit-learn's default.
DEFAULTS: dict[str, dict] = {
    "tip": {"alpha": 1.0, "beta": 5.5}, "tip-f": {"alpha": 1.0, "beta": 5.5}, "gda": {"alpha": 1.0},
    "proker": {"beta": 3.0, "lam": 0.05, "alpha": 1.0},
    "ape": {"alpha": 2.0, "beta": 1.0, "gamma": 0.1, "channels": 700 / 1024}, "linear": {"C": 1.0},
}


def _fit_state(method: str, F, y, W, p: dict, seed: int) -> dict[str, torch.Tensor]:
    C = W.shape[0]
    if method == "tip":
        return {"keys": F.float(), "values": one_hot(y, C)}
    if method == "tip-f":
        # Fine-tuned once at the initial alpha and beta, never at the searched ones: the search
        # tunes the inference alpha and beta of these very keys (Tip-Adapter-F's protocol).
        init = DEFAULTS["tip-f"]
        return {"keys": tip_f_finetune(F, y, W, alpha=init["alpha"], beta=init["beta"], seed=seed),
                "values": one_hot(y, C)}
    if method == "gda":
        weight, bias = gda_fit(F, y, C)
        return {"weight": weight, "bias": bias}
    if method == "proker":
        return {"support": F.float(), "coef": proker_fit(F, y, W, beta=p["beta"], lam=p["lam"])}
    if method == "ape":
        n = max(1, int(round(p["channels"] * F.shape[1])))
        channels = torch.topk(ape_criterion(W, F, y), n).indices.sort().values
        return {"keys": F.float(), "values": one_hot(y, C), "channels": channels}
    if method == "linear":
        weight, bias = linear_fit(F, y, C, C=p["C"], seed=seed)
        return {"weight": weight, "bias": bias}
    raise ConfigError(f"unknown method {method!r}; one of {', '.join(METHODS)}")


# Which grid keys change the fitted state (refit per value); the others only change the logits.
_STATE_KEYS = {"tip": (), "tip-f": (), "gda": (), "proker": ("beta", "lam"), "ape": ("channels",), "linear": ("C",)}


def _grid_points(grid: dict[str, list]) -> list[dict]:
    points = [{}]
    for name, values in grid.items():
        points = [{**pt, name: v} for pt in points for v in values]
    return points


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y.long()).float().mean()) if len(y) else 0.0


def fit(method: str, F: torch.Tensor, y: torch.Tensor, W: torch.Tensor, *,
        val: tuple[torch.Tensor, torch.Tensor] | None = None, final: tuple[torch.Tensor, torch.Tensor] | None = None,
        grid: dict | None = None, seed: int = 0) -> Fitted:
    """Fit ``method`` on features F [N, D] / labels y [N] with text classifier W [C, D].

    Hyper-parameters: searched on ``val`` = (features, labels) when given (the best validation
    accuracy; ties keep the earlier grid point), else :data:`DEFAULTS`. The search is recorded in
    ``Fitted.search``: the grid, the chosen values, their validation accuracy and the zero-shot
    validation accuracy. Without ``final`` the returned state is the very one the search scored,
    so ``val_accuracy`` is the returned classifier's. With ``final`` = (features, labels) (all K
    shots, after searching on a split of them) the state is refitted on those with the chosen
    values, and ``val_accuracy_of`` says that the accuracy is the search fit's. Tip-Adapter-F's
    keys are fine-tuned once, at the initial alpha and beta, as its paper: the search only
    changes the inference alpha and beta.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    start = time.perf_counter()
    F, W = F.float(), W.float()
    grid = dict(grid or GRIDS[method])
    search: dict = {"grid": grid}
    state_keys = _STATE_KEYS[method]
    states: dict[tuple, dict] = {}
    if val is None or len(val[1]) == 0:
        params = dict(DEFAULTS[method])
        search.update(validation="none (defaults)", chosen=params)
    else:
        vf, vy = val[0].float(), val[1]
        best, best_acc = None, -1.0
        base = dict(DEFAULTS[method])
        for pt in _grid_points(grid):
            params = {**base, **pt}
            skey = tuple(params[k] for k in state_keys)
            if skey not in states:
                states[skey] = _fit_state(method, F, y, W, params, seed)
            acc = _accuracy(method_logits(method, vf, W, states[skey], params), vy)
            if acc > best_acc + 1e-12:
                best, best_acc = params, acc
        params = best
        search.update(validation=f"{len(vy)} videos", chosen=params, val_accuracy=best_acc,
                      val_zero_shot_accuracy=_accuracy(zero_shot_logits(vf, W), vy))
    if final is not None:
        tensors = _fit_state(method, final[0].float(), final[1], W, params, seed)
        search["val_accuracy_of"] = (f"the search fit on {len(y)} videos; the classifier returned is refitted "
                                     f"on {len(final[1])} with the chosen values")
    else:
        # The state the search scored (deterministic refits are not relied on: tip-f's is an optimisation).
        skey = tuple(params[k] for k in state_keys)
        tensors = states[skey] if skey in states else _fit_state(method, F, y, W, params, seed)
        if "val_accuracy" in search:
            search["val_accuracy_of"] = "the classifier returned"
    return Fitted(method, tensors, params, search, time.perf_counter() - start)
