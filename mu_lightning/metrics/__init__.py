"""Metrics over logits cached once per (model, split)."""

from mu_lightning.metrics.accuracy import accuracy, logits_of
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.evaluate import check_config, evaluate

__all__ = ["EvalContext", "accuracy", "check_config", "evaluate", "logits_of"]
