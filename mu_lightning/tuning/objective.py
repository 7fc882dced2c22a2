"""Hyperparameter search against gold: the objective a Hydra sweeper minimises (``hparams_search=<method>_optuna``).

The sweeper needs the task function to return one number; ``objective=<model>/<metric>`` names it. Tuning reads the
gold model, which no real unlearner has, so results tuned this way are oracle-tuned: ``tuning: gold-tuned`` in the
config (and results.json) says so. To keep D_test out of model selection the presets tune ``unlearn/avg_gap_val``,
which the evaluation step adds when the objective names it (``metrics.evaluate(ctx, objective)``), because its
``avg_gap`` uses the test split.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from mu_lightning.errors import ConfigError
from mu_lightning.metrics.names import MODELS, VAL_METRIC


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


def objective_value(cfg: DictConfig, results: dict[str, Any]) -> float | None:
    """The configured objective's value in ``results`` (None without an objective, or on DDP ranks > 0)."""
    name = cfg.get("objective")
    if name is None or not results:
        return None
    if name not in results["metrics"]:
        raise ConfigError(f"objective={name} is not a metric of this run; it has "
                          f"{', '.join(sorted(k for k in results['metrics'] if k.startswith('unlearn/')))}")
    return float(results["metrics"][name])

