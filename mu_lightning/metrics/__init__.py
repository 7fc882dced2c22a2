"""Metrics over logits cached once per (model, split).

Layout: ``names`` (MODELS, SPLITS, TIERS), one module per tier (``fast``, ``full``, ``seeds``) and ``validation``
(the hyperparameter-search metric), ``evaluate`` dispatching to them; ``memo.CACHE`` keeps a model's metrics per
process (``CACHE.clear()`` starts afresh). The building blocks (``signals``, ``mia``, ``gold``, ``challenge``,
``relearn``, ``accuracy``) import nothing of the tiers.
"""

from mu_lightning.metrics.accuracy import accuracy, logits_of
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.evaluate import check_config, evaluate
from mu_lightning.metrics.memo import CACHE, MetricCache
from mu_lightning.metrics.names import MODELS, SPLITS, TIERS

__all__ = ["CACHE", "MODELS", "SPLITS", "TIERS", "EvalContext", "MetricCache", "accuracy", "check_config",
           "evaluate", "logits_of"]
