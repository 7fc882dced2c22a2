"""Metrics on the validation split for hyperparameter search, added when the objective asks for them.

``<model>/avg_gap_val`` is SalUn's Avg. Gap with D_val in the place of D_test, so a sweep can tune against gold
without reading D_test (``hpo.py``: ``objective=unlearn/avg_gap_val``).
"""

from __future__ import annotations

from mu_lightning.metrics import gold as g
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.fast import gap_parts
from mu_lightning.metrics.memo import CACHE
from mu_lightning.metrics.names import MODELS, VAL_METRIC


def validation(ctx: EvalContext, objective: str | None) -> dict[str, float]:
    """``original/`` and ``unlearn/avg_gap_val`` when ``objective`` names that metric (two more SVC fits), else {}.

    Mean |Δ| to gold, in points, of UA, RA, VA and MIA-Efficacy, the attack fit on the first |D_val| of D_r (member)
    against D_val (non-member), as ``avg_gap`` does with D_test.
    """
    if objective is None or not objective.endswith(f"/{VAL_METRIC}"):
        return {}
    parts = {m: CACHE.get(("validation", *ctx.identity(m)), lambda m=m: gap_parts(ctx, m, "val")) for m in MODELS}
    return {f"{m}/{VAL_METRIC}": g.avg_gap(parts[m], parts["gold"]) for m in ("original", "unlearn")}
