"""The evaluation step of the pipeline: every metric of M, M_g and M_u from logits computed once per split."""

from __future__ import annotations

from mu_lightning.metrics.accuracy import accuracy
from mu_lightning.metrics.context import EvalContext

SPLITS = ("forget", "retain", "val", "test")


def evaluate(ctx: EvalContext) -> dict[str, float]:
    """Metrics named ``<model>/<metric>`` (model: original, gold, unlearn), e.g. ``unlearn/forget_acc``."""
    splits = [s for s in SPLITS if len(ctx.data.ids[s])]
    return {f"{m}/{s}_acc": accuracy(ctx.logits(m, s), ctx.labels(s)) for m in ctx.models for s in splits}
