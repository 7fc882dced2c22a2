"""Hyperparameter search against gold: the objective a Hydra sweeper minimises (``hparams_search=<method>_optuna``).

The sweeper needs the task function to return one number; ``objective=<model>/<metric>`` names it. Tuning reads the
gold model, which no real unlearner has, so results tuned this way are oracle-tuned: ``tuning: gold-tuned`` in the
config (and results.json) says so. To keep D_test out of model selection the presets tune ``unlearn/avg_gap_val``,
computed here because the evaluation step's ``avg_gap`` uses the test split.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from mu_lightning.errors import ConfigError
from mu_lightning.metrics import gold as g
from mu_lightning.metrics import mia, signals
from mu_lightning.metrics.accuracy import accuracy
from mu_lightning.metrics.context import EvalContext

MODELS = ("original", "gold", "unlearn")
VAL_METRIC = "avg_gap_val"


def check_objective(cfg: DictConfig) -> None:
    """``objective`` is null or ``<model>/<metric>``; a validation-split objective needs a validation split."""
    name = cfg.get("objective")
    if name is None:
        return
    model = str(name).split("/", 1)[0]
    if not isinstance(name, str) or "/" not in name or model not in MODELS:
        raise ConfigError(f"objective={name!r} is not a metric name: use <model>/<metric> with model in "
                          f"{', '.join(MODELS)}, e.g. unlearn/{VAL_METRIC}")
    if name.endswith(f"/{VAL_METRIC}") and not cfg.dataset.val_fraction:
        raise ConfigError(f"objective={name} needs a validation split, but dataset.val_fraction="
                          f"{cfg.dataset.val_fraction}: set it > 0")


def val_metrics(ctx: EvalContext, objective: str | None) -> dict[str, float]:
    """``original/`` and ``unlearn/avg_gap_val`` when ``objective`` asks for them (they cost two more SVC fits).

    SalUn's Avg. Gap with D_val in the place of D_test: mean |Δ| to gold, in points, of UA, RA, VA and MIA-Efficacy,
    the attack fit on the first |D_val| of D_r (member) against D_val (non-member), as ``avg_gap`` does with D_test.
    """
    if objective is None or not objective.endswith(f"/{VAL_METRIC}"):
        return {}
    parts = {m: _val_parts(ctx, m) for m in MODELS}
    return {f"{m}/{VAL_METRIC}": g.avg_gap(parts[m], parts["gold"]) for m in ("original", "unlearn")}


def _val_parts(ctx: EvalContext, m: str) -> dict[str, float]:
    z = {s: ctx.logits(m, s) for s in ("forget", "retain", "val")}
    conf = {s: signals.confidence(z[s], ctx.labels(s)) for s in z}
    return {"forget_acc": accuracy(z["forget"], ctx.labels("forget")),
            "retain_acc": accuracy(z["retain"], ctx.labels("retain")),
            "test_acc": accuracy(z["val"], ctx.labels("val")),  # VA in TA's place
            "mia_efficacy": mia.mia_efficacy(conf["retain"], conf["val"], conf["forget"])}


def objective_value(cfg: DictConfig, results: dict[str, Any]) -> float | None:
    """The configured objective's value in ``results`` (None without an objective, or on DDP ranks > 0)."""
    name = cfg.get("objective")
    if name is None or not results:
        return None
    if name not in results["metrics"]:
        raise ConfigError(f"objective={name} is not a metric of this run; it has "
                          f"{', '.join(sorted(k for k in results['metrics'] if k.startswith('unlearn/')))}")
    return float(results["metrics"][name])
