"""The ``seeds`` tier (docs/metrics.md §7): metrics over the gold distribution and over unlearning seeds.

On top of ``full``: the gold noise floor of every gold-relative metric, offline RMIA with the other gold seeds as
reference models, the challenge forget score over ``metric.seeds`` unlearned and gold models, and Student-t
intervals over those seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mu_lightning.errors import ConfigError
from mu_lightning.metrics import gold as g
from mu_lightning.metrics import mia, signals
from mu_lightning.metrics.challenge import forget_score, t_interval
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.fast import relative, summary
from mu_lightning.metrics.full import other_golds, phi
from mu_lightning.metrics.names import MODELS

PER_SEED = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy")  # reported as mean ± ci95 over seeds


def seeds(ctx: EvalContext) -> dict[str, float]:
    """Gold noise floor, offline RMIA with gold seeds as references, the challenge score and t-intervals."""
    golds = other_golds(ctx)
    floors = [relative(ctx, k, "gold") for k in golds]
    out = {f"gold/{key}": _mean([f[key] for f in floors]) for key in floors[0]}
    out.update(rmia(ctx, golds))
    unlearned, everyone = ["unlearn", *ctx.other_seeds("unlearn")], ["gold", *golds]
    out.update(challenge(ctx, unlearned, everyone))
    out.update(intervals(ctx, unlearned, everyone))
    return out


def challenge(ctx: EvalContext, unlearned: list[str], golds: list[str]) -> dict[str, float]:
    """The challenge forget score of φ on D_f, and the final score that scales it by retain and test accuracy."""
    score, _ = forget_score(torch.stack([phi(ctx, m) for m in unlearned]).numpy(),
                            torch.stack([phi(ctx, m) for m in golds]).numpy())

    def mean(key: str, models: list[str]) -> float:
        return float(np.mean([summary(ctx, m)[key] for m in models]))

    ra = {"u": mean("retain_acc", unlearned), "g": mean("retain_acc", golds)}
    ta = {"u": mean("test_acc", unlearned), "g": mean("test_acc", golds)}
    return {"unlearn/forget_score": score,
            "unlearn/final_score": float(score * ra["u"] / ra["g"] * ta["u"] / ta["g"]),
            "unlearn/forget_score_models": float(len(unlearned))}


def intervals(ctx: EvalContext, unlearned: list[str], golds: list[str]) -> dict[str, float]:
    """Mean and 95% t-interval half-width over seeds of the accuracies, MIA-Efficacy, ToW and Avg. Gap."""
    per_seed: dict[str, list[float]] = {}
    for mu, mg in zip(unlearned, golds, strict=True):
        su, sg = summary(ctx, mu), summary(ctx, mg)
        for key in PER_SEED:
            per_seed.setdefault(f"unlearn/{key}", []).append(su[key])
            per_seed.setdefault(f"gold/{key}", []).append(sg[key])
        per_seed.setdefault("unlearn/tow", []).append(g.tow(su, sg))
        per_seed.setdefault("unlearn/avg_gap", []).append(g.avg_gap(su, sg))
    out: dict[str, float] = {}
    for key, values in per_seed.items():  # None where a seed's MIA was uninformative (docs/metrics.md §3.1)
        out[f"{key}_mean"], out[f"{key}_ci95"] = (None, None) if None in values else t_interval(values)
    return out


def _mean(values: list[float | None]) -> float | None:
    """The mean, or None when a value is None (an uninformative attack's MIA-Efficacy and what is built on it)."""
    return None if None in values else float(np.mean(values))


def rmia(ctx: EvalContext, references: list[str]) -> dict[str, float]:
    """Offline RMIA AUC and TPR at 1% FPR of each model: D_f against an equal slice of D_test, population D_val."""
    if len(ctx.data.ids["val"]) == 0:
        raise ConfigError("metric=seeds needs a validation split for the RMIA population: dataset.val_fraction=0")

    def p_y(m: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(signals.confidence(ctx.logits(m, s), ctx.labels(s)) for s in ("forget", "test", "val"))

    return rmia_attack(p_y, references, ctx.cfg)


def rmia_attack(p_y: Callable[[str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]], references: list[str],
                cfg: Any) -> dict[str, float]:
    """``<model>/rmia_auc`` and ``<model>/rmia_tpr_at_1fpr`` of each of ``MODELS`` by offline RMIA (§3.5), for any
    scalar signal: ``p_y(m)`` is model m's Pr(x | θ) on the members, on the non-members and on the population Z.

    ``references`` are the OUT reference models; the members are attacked against as many non-members (the larger
    set subsampled with ``metric.mia_seed``: ``mia.balanced_pairs``), with ``metric.rmia.a`` and ``gamma``. The
    classifier tier passes p_y on D_f, D_test and D_val; the language models' (``lm.py``) their length-normalised
    answer probabilities."""
    refs = [p_y(r) for r in references]
    members, nonmembers, _ = refs[0]
    pos, neg = mia.balanced_pairs(len(members), len(nonmembers), cfg.mia_seed)
    ref_x = torch.stack([torch.cat([r[0][pos], r[1][neg]]) for r in refs])
    ref_z = torch.stack([r[2] for r in refs])
    out = {}
    for m in MODELS:
        members, nonmembers, population = p_y(m)
        scores = mia.rmia_scores(torch.cat([members[pos], nonmembers[neg]]), population, ref_x, ref_z,
                                 a=float(cfg.rmia.a), gamma=float(cfg.rmia.gamma))
        roc = mia.threshold_attack(scores[: len(pos)], scores[len(pos) :])
        out[f"{m}/rmia_auc"], out[f"{m}/rmia_tpr_at_1fpr"] = roc["auc"], roc["tpr_at_1fpr"]
    return out
