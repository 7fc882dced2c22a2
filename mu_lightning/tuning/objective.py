"""Hyperparameter search: the objective a Hydra sweeper minimises (``hparams_search=optuna``), and how it selects.

The sweeper needs the task function to return one number; ``objective=<model>/<metric>`` names it. Two selections
(docs/methods.md, "Tuning on your data"): **oracle**, by ``unlearn/avg_gap_val``, the Avg. Gap to the gold model,
which no real unlearner has (``tuning: gold-tuned``); **gold-free**, by ``unlearn/gold_free_gap_val``, computed
without the gold model (``tuning: gold-free``). ``selection`` derives which from the objective, so results.json
cannot mislabel it: only the metrics of ``GOLD_FREE_METRICS`` select gold-free, any other objective is oracle. Both
are on the validation split, which the evaluation step adds when the objective names it
(``metrics.evaluate(ctx, objective)``), so D_test stays out of model selection.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mu_lightning.errors import ConfigError
from mu_lightning.metrics.names import MODELS, VAL_METRIC
from mu_lightning.metrics.validation import GOLD_FREE_METRICS, VAL_METRICS
from mu_lightning.tuning.search import check_search

log = logging.getLogger(__name__)
LABELS = {"oracle": "gold-tuned", "gold-free": "gold-free"}  # selection -> the ``tuning`` label its runs carry


def selection(objective: str | None) -> str | None:
    """``"gold-free"`` for an objective in ``GOLD_FREE_METRICS``, ``"oracle"`` for any other, None without one."""
    if objective is None:
        return None
    return "gold-free" if str(objective).split("/", 1)[-1] in GOLD_FREE_METRICS else "oracle"


def check_objective(cfg: DictConfig) -> None:
    """``objective`` is null or ``<model>/<metric>``; a validation-split objective needs a validation split; the
    ``tuning`` label, if it is one of ``LABELS``, is the objective's selection's; the method's search space holds."""
    name = cfg.get("objective")
    if name is None:
        return
    model = str(name).split("/", 1)[0]
    if not isinstance(name, str) or "/" not in name or model not in MODELS:
        raise ConfigError(f"objective={name!r} is not a metric name: use <model>/<metric> with model in "
                          f"{', '.join(MODELS)}, e.g. unlearn/{VAL_METRIC}")
    if name.split("/", 1)[1] in VAL_METRICS and not cfg.dataset.val_fraction:
        raise ConfigError(f"objective={name} needs a validation split, but dataset.val_fraction="
                          f"{cfg.dataset.val_fraction}: set it > 0")
    chosen, tuning = selection(name), cfg.get("tuning")
    if tuning in LABELS.values() and tuning != LABELS[chosen]:
        raise ConfigError(f"tuning={tuning} does not fit objective={name}, whose selection is {chosen} ("
                          f"{'it reads' if chosen == 'oracle' else 'computed without'} the gold model): use "
                          f"tuning={LABELS[chosen]}")
    if "_target_" in (cfg.get("unlearner") or {}):
        check_search(cfg)


def objective_value(cfg: DictConfig, results: dict[str, Any]) -> float | None:
    """The configured objective's value in ``results`` (None without an objective, or on DDP ranks > 0); a null
    value (a metric undefined for this run) is the worst one, so the search goes on and never selects it."""
    name = cfg.get("objective")
    if name is None or not results:
        return None
    if name not in results["metrics"]:
        raise ConfigError(f"objective={name} is not a metric of this run; it has "
                          f"{', '.join(sorted(k for k in results['metrics'] if k.startswith('unlearn/')))}")
    value = results["metrics"][name]
    if value is None:  # e.g. avg_gap_val when an MIA attack is at chance (docs/metrics.md §3.1): rank it last
        worst = -math.inf if _direction() == "maximize" else math.inf
        log.warning("objective=%s is null in this run: the sweeper gets %s, the worst value", name, worst)
        return worst
    return float(value)


def _direction() -> str:
    """The sweeper's direction (``hydra.sweeper.direction``), minimize outside a sweep."""
    from hydra.core.hydra_config import HydraConfig

    return str(OmegaConf.select(HydraConfig.get(), "sweeper.direction", default="minimize")
               if HydraConfig.initialized() else "minimize")

