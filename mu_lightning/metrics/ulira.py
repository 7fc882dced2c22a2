"""U-LiRA: a per-example likelihood-ratio attack that tells unlearned examples from never-seen ones.

Hayes, Shumailov, Triantafillou, Khalifa, Papernot, "Inexact Unlearning Needs More Careful Evaluations to Avoid a
False Sense of Privacy" (SaTML 2025, arXiv 2403.01218): LiRA (Carlini et al. 2022) moved to unlearning. Shadow
models are trained on random halves of D and each unlearns part of what it trained on; for a target example x the
attacker fits one Gaussian to the logit-scaled confidence φ(x) of the shadows that trained on x and unlearned it
("unlearned") and one to that of the shadows that never saw x ("held out"), and calls a model's x unlearned when
the first density is the larger. An unlearner that matches retraining leaves the two Gaussians equal: accuracy 0.5.

Evaluation here is leave-one-out over the shadows (docs/metrics.md §12): each shadow in turn is the target, the
Gaussians are fitted on the others, and the attack is scored on the examples the target unlearned (positives) or
never saw (negatives). ``per_example`` gives each example's balanced accuracy; ``pooled`` the TPR at a low FPR of
the one threshold over every (shadow, example) score, as LiRA reports it.
"""

from __future__ import annotations

import math

import numpy as np

from mu_lightning.metrics.mia import exact_roc

MIN_FIT = 2  # models per Gaussian: fewer, and the example is not attacked on that target
SD_FLOOR = 1e-3  # a spread of 0 (identical φ) would make the density a spike


def scores(phi: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out log-likelihood ratios ``[shadows, examples]`` and where they are defined.

    ``phi``: φ of every shadow on every example; ``positive``: the shadow unlearned the example; ``negative``: it
    never trained on it. The ratio of (shadow k, example x) uses Gaussians fitted on the other shadows (mean and
    population standard deviation, as LiRA's code), defined where both get at least ``MIN_FIT`` models."""
    phi = np.asarray(phi, dtype=np.float64)
    out = {}
    for name, mask in (("pos", np.asarray(positive, bool)), ("neg", np.asarray(negative, bool))):
        w = mask.astype(np.float64)
        n, s, ss = w.sum(0), (w * phi).sum(0), (w * phi ** 2).sum(0)
        n_k, s_k, ss_k = n[None] - w, s[None] - w * phi, ss[None] - w * phi ** 2  # without shadow k
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = s_k / n_k
            sd = np.sqrt(np.maximum(ss_k / n_k - mu ** 2, 0.0))
        out[name] = (mu, np.maximum(sd, SD_FLOOR), n_k)
    (mu_p, sd_p, n_p), (mu_n, sd_n, n_n) = out["pos"], out["neg"]
    defined = (n_p >= MIN_FIT) & (n_n >= MIN_FIT) & (np.asarray(positive, bool) | np.asarray(negative, bool))
    with np.errstate(divide="ignore", invalid="ignore"):
        llr = log_normal(phi, mu_p, sd_p) - log_normal(phi, mu_n, sd_n)
    return np.where(defined, llr, np.nan), defined


def log_normal(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)


def per_example(llr: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Each example's balanced accuracy of the rule "log ratio > 0 ⇒ unlearned" over the shadows it was attacked on:
    the mean of its hit rates on the positives and the negatives; NaN where it lacks either."""
    defined = ~np.isnan(llr)
    pos, neg = np.asarray(positive, bool) & defined, np.asarray(negative, bool) & defined
    said = np.nan_to_num(llr) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = (said & pos).sum(0) / pos.sum(0)
        tnr = (~said & neg).sum(0) / neg.sum(0)
    return (tpr + tnr) / 2


def pooled(llr: np.ndarray, positive: np.ndarray, negative: np.ndarray, fprs: tuple[float, ...] = (0.01, 0.001)
           ) -> dict[str, float]:
    """AUC and the TPR at each FPR in ``fprs`` of one threshold over every defined (shadow, example) score."""
    defined = ~np.isnan(llr)
    pos = llr[np.asarray(positive, bool) & defined]
    neg = llr[np.asarray(negative, bool) & defined]
    if not len(pos) or not len(neg):
        return {"auc": float("nan"), **{f"tpr_{f:g}": float("nan") for f in fprs}}
    out = {"auc": exact_roc(pos, neg)["auc"]}
    for f in fprs:
        out[f"tpr_{f:g}"] = exact_roc(pos, neg, max_fpr=f)["tpr_at_1fpr"]
    return out
