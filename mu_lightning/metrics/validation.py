"""Metrics on the validation split for hyperparameter search, added when the objective asks for them.

Two ways to select (docs/methods.md, "Tuning on your data"):

- **oracle**, ``<model>/avg_gap_val``: SalUn's Avg. Gap to gold with D_val in the place of D_test, so a sweep tunes
  against gold without reading D_test; what benchmarks report.
- **gold-free**, ``<model>/gold_free_gap_val``: the mean |Δ|, in points, of the forget, retain and validation
  accuracies to targets estimated from the original model M alone, for a practitioner who has no retrained model.
  It never reads the gold model.
"""

from __future__ import annotations

import torch

from mu_lightning.errors import ConfigError
from mu_lightning.metrics import gold as g
from mu_lightning.metrics.accuracy import accuracy
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.fast import gap_parts
from mu_lightning.metrics.memo import CACHE
from mu_lightning.metrics.names import MODELS, VAL_METRIC

GOLD_FREE_METRIC = "gold_free_gap_val"
VAL_METRICS = (VAL_METRIC, GOLD_FREE_METRIC)  # what an objective may select by without reading D_test
GOLD_FREE_METRICS = (GOLD_FREE_METRIC,)  # computed without the gold model: a selection by them is gold-free


def validation(ctx: EvalContext, objective: str | None) -> dict[str, float]:
    """``original/`` and ``unlearn/`` values of the validation metric ``objective`` names, else {}.

    ``avg_gap_val``: mean |Δ| to gold, in points, of UA, RA, VA and MIA-Efficacy, the attack fit on the first |D_val|
    of D_r (member) against D_val (non-member), as ``avg_gap`` does with D_test (two more SVC fits).
    ``gold_free_gap_val``: ``gold_free_gap``.
    """
    metric = None if objective is None else objective.split("/", 1)[-1]
    if metric == GOLD_FREE_METRIC:
        return {f"{m}/{GOLD_FREE_METRIC}": gold_free_gap(ctx, m) for m in ("original", "unlearn")}
    if metric != VAL_METRIC:
        return {}
    parts = {m: CACHE.get(("validation", *ctx.identity(m)), lambda m=m: gap_parts(ctx, m, "val")) for m in MODELS}
    return {f"{m}/{VAL_METRIC}": g.avg_gap(parts[m], parts["gold"]) for m in ("original", "unlearn")}


def gold_free_targets(ctx: EvalContext) -> dict[str, float]:
    """The accuracies a model retrained without D_f should reach, estimated from M (``original``) and labels alone.

    A class that D_r no longer holds is one the retrained model never saw and never predicts: its samples' target is
    0. Every other sample is taken to be like an unseen sample of its class, whose accuracy is M's on the validation
    samples of the classes D_r holds (``held_out``). So: ``forget`` = held_out × the share of D_f whose class D_r
    holds (random request: M's validation accuracy; whole classes: 0); ``retain`` = M's retain accuracy;
    ``val`` = held_out × the share of D_val whose class D_r holds (M's validation accuracy on a random request).
    """
    y = {s: ctx.labels(s) for s in ("forget", "retain", "val")}
    held = y["retain"].unique()
    kept = torch.isin(y["val"], held)
    if not kept.any():
        raise ConfigError("gold_free_gap_val needs validation samples of a class the retain set holds, and D_val has "
                          "none: raise dataset.val_fraction")
    correct = ctx.logits("original", "val").argmax(dim=1) == y["val"]
    held_out = float(correct[kept].float().mean())
    return {"forget": held_out * float(torch.isin(y["forget"], held).float().mean()),
            "retain": accuracy(ctx.logits("original", "retain"), y["retain"]),
            "val": held_out * float(kept.float().mean())}


def gold_free_gap(ctx: EvalContext, m: str) -> float:
    """Mean |accuracy − target| of model ``m`` on D_f, D_r and D_val (``gold_free_targets``), in points, ↓."""
    targets = gold_free_targets(ctx)
    gaps = [abs(accuracy(ctx.logits(m, s), ctx.labels(s)) - t) for s, t in targets.items()]
    return 100 * sum(gaps) / len(gaps)
