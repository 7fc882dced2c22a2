"""The evaluation step of the pipeline: every metric of M, M_g and M_u from logits computed once per split."""

from __future__ import annotations

from typing import Any

from torch import nn

from mu_lightning.data import UnlearningDataModule
from mu_lightning.metrics.accuracy import accuracy, logits_of


def evaluate(models: dict[str, nn.Module], data: UnlearningDataModule, stages: dict[str, dict[str, Any]],
             seconds: dict[str, float], cfg: Any = None) -> dict[str, float]:
    """Metrics named ``<model>/<metric>`` (model: original, gold, unlearn), e.g. ``unlearn/forget_acc``.

    Args:
        models: the three trained networks.
        data: the datamodule; its splits are forget, retain, val, test (and train).
        stages: per-stage facts from the pipeline (cache hits, steps, fit seconds of the trained stages).
        seconds: wall time of each stage in this run.
        cfg: the ``metric`` config group (which metrics to compute).
    """
    splits = [s for s in ("forget", "retain", "val", "test") if len(data.ids[s])]
    tensors = {s: data.tensors(s) for s in splits}
    logits = {m: {s: logits_of(net, tensors[s][0]) for s in splits} for m, net in models.items()}
    return {f"{m}/{s}_acc": accuracy(z, tensors[s][1]) for m in models for s, z in logits[m].items()}
