"""Metrics over logits cached once per (model, split)."""

from mu_lightning.metrics.accuracy import accuracy, logits_of

__all__ = ["accuracy", "logits_of"]
