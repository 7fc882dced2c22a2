"""Comparisons of a model with the gold model M_g (docs/metrics.md §4): closer to gold is better.

Output-space distances accumulate per batch in torchmetrics ``Metric`` objects, so they give the same value in one
batch or many and sync across ranks. Aggregators (Avg. Gap, ToW) take accuracies and MIA-Efficacy in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.regression import JensenShannonDivergence, KLDivergence


def _accumulate(metric: Metric, a: torch.Tensor, b: torch.Tensor, prepare, batch_size: int) -> float:
    for i in range(0, len(a), batch_size):
        metric.update(*prepare(a[i : i + batch_size], b[i : i + batch_size]))
    return float(metric.compute())


def agreement(logits: torch.Tensor, gold: torch.Tensor, batch_size: int = 1024) -> float:
    """Share of examples where the model's top class equals the gold model's (§4.1), ↑."""
    metric = MulticlassAccuracy(num_classes=logits.shape[1], average="micro")
    return _accumulate(metric, logits, gold, lambda a, b: (a, b.argmax(1)), batch_size)


def js_divergence(logits: torch.Tensor, other: torch.Tensor, batch_size: int = 1024) -> float:
    """Mean per-example JS(p ‖ q) in nats, in [0, ln 2] (§4.2), ↓."""
    metric = JensenShannonDivergence(log_prob=True)
    prepare = lambda a, b: (a.double().log_softmax(1), b.double().log_softmax(1))  # noqa: E731
    return _accumulate(metric, logits, other, prepare, batch_size)


def kl_from_gold(logits: torch.Tensor, gold: torch.Tensor, batch_size: int = 1024) -> float:
    """Mean per-example KL(p_g ‖ p) with gold as the reference distribution (§4.3), ↓; torchmetrics takes (p, q)."""
    metric = KLDivergence(log_prob=True)
    prepare = lambda a, g: (g.double().log_softmax(1), a.double().log_softmax(1))  # noqa: E731
    return _accumulate(metric, logits, gold, prepare, batch_size)


def activation_distance(logits: torch.Tensor, gold: torch.Tensor, batch_size: int = 1024) -> float:
    """Mean row-wise ‖p − p_g‖₂ of softmax outputs, in [0, √2] (§4.4; bad-teaching ``actv_dist``), ↓."""
    metric = MeanMetric()
    prepare = lambda a, b: (torch.linalg.vector_norm(a.double().softmax(1) - b.double().softmax(1), dim=1),)  # noqa: E731
    return _accumulate(metric, logits, gold, prepare, batch_size)


def zrf(logits: torch.Tensor, random_init: torch.Tensor, compat: bool = False, batch_size: int = 1024) -> float:
    """Zero Retrain Forgetting, 1 − mean JS(p ‖ p_Td) against a randomly initialised T_d (Chundawat et al. 2023).

    Textbook JS by default, range [1 − ln 2, 1]. ``compat=True`` reproduces the bad-teaching ``JSDiv`` instead:
    KL(m ‖ p) (reversed) averaged over all N·C entries (1/C scaled), only to match published numbers (§4.2).
    """
    if not compat:
        return 1.0 - js_divergence(logits, random_init, batch_size)

    def reversed_entries(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor]:
        logp, logq = a.double().log_softmax(1), b.double().log_softmax(1)
        m = (logp.exp() + logq.exp()) / 2
        return ((0.5 * m * (m.log() - logp) + 0.5 * m * (m.log() - logq)).flatten(),)

    return 1.0 - _accumulate(MeanMetric(), logits, random_init, reversed_entries, batch_size)


@torch.no_grad()
def weight_distance(a: nn.Module, b: nn.Module) -> float:
    """‖θ_a − θ_b‖₂ over ``parameters()`` (buffers excluded), Thudi et al. 2022's verification error (§4.5), ↓."""
    return math.sqrt(sum(float((p - q.to(p.device)).double().pow(2).sum()) for p, q in
                         zip(a.parameters(), b.parameters(), strict=True)))


def avg_gap(model: dict[str, float | None], gold: dict[str, float | None]) -> float | None:
    """SalUn's Avg. Gap (Fan et al. 2024, Tab. 1): mean |Δ| of UA, RA, TA, MIA-Efficacy to gold, in points, ↓.

    |ΔUA| = |Δ forget_acc|, since UA = 1 − forget_acc. None when an MIA-Efficacy is None (its attack was at chance:
    docs/metrics.md §3.1): a gap to an arbitrary number is no gap.
    """
    keys = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy")
    if any(model[k] is None or gold[k] is None for k in keys):
        return None
    return 100.0 * sum(abs(model[k] - gold[k]) for k in keys) / len(keys)


def tow(model: dict[str, float | None], gold: dict[str, float | None], mia: bool = False) -> float | None:
    """Tug-of-war (Zhao et al. 2024, RUM ``analysis.py``): Π (1 − |Δacc|) over D_f, D_r, D_test, in [0, 1], ↑.

    ``mia=True`` gives ToW-MIA: the D_f factor uses |Δ MIA-Efficacy| instead of |Δ forget_acc|.
    """
    first = "mia_efficacy" if mia else "forget_acc"
    if model[first] is None or gold[first] is None:  # an uninformative attack (docs/metrics.md §3.1)
        return None
    return math.prod(1.0 - abs(model[k] - gold[k]) for k in (first, "retain_acc", "test_acc"))
