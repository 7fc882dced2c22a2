"""Corrective-unlearning metrics: has a model kept the effect of a training-set manipulation (``poison=...``)?

Pure functions of logits and true labels, and ``corrective_metrics`` that computes the ones a manipulation calls for
on a model and clean held-out data (the test split: never manipulated). Names are the ``<metric>`` half of
``<model>/<metric>``.

BadNets (``poison=badnets``), on the held-out samples whose true class is not the target class:

- ``backdoor_asr``: attack success rate, the share predicted as the target class once the trigger is stamped on
  (high: the backdoor works; a clean model's is about its error rate into the target class, near 0).
- ``backdoor_clean_acc``: accuracy on the same samples without the trigger.
- ``backdoor_triggered_acc``: accuracy with the true labels on the triggered samples: the benchmark's corrected
  accuracy on poisoned inputs (Goel et al. 2024, ``adv_test``: they triggered every test sample, target class
  included; here the target class is left out so that the three numbers share their samples).

Interclass confusion (``poison=interclass``, classes a and b):

- ``interclass_acc``: accuracy on the held-out samples of a and b (the benchmark's corrected accuracy on the
  affected classes, ``unseen_forget``).
- ``interclass_confusion``: the share of those samples predicted as the other class of the pair (a as b, b as a).
- ``interclass_other_acc``: accuracy on the samples of every other class (the benchmark's ``test_retain_acc``).

What the task cares about is these values relative to a clean model (trained without any manipulated sample).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mu_lightning.metrics.accuracy import logits_of

NAN = float("nan")


def _share(mask: torch.Tensor) -> float:
    return float(mask.float().mean()) if len(mask) else NAN


def attack_success_rate(triggered_logits: torch.Tensor, y: torch.Tensor, target_class: int) -> float:
    """Share of the samples whose true label is not ``target_class`` that are predicted as ``target_class``, from
    the logits on their triggered inputs (NaN if no such sample)."""
    keep = y != target_class
    return _share(triggered_logits[keep].argmax(1) == target_class)


def accuracy_outside(logits: torch.Tensor, y: torch.Tensor, target_class: int) -> float:
    """Accuracy on the samples whose true label is not ``target_class`` (NaN if none)."""
    keep = y != target_class
    return _share(logits[keep].argmax(1) == y[keep])


def interclass_accuracy(logits: torch.Tensor, y: torch.Tensor, classes: Sequence[int]) -> float:
    """Accuracy on the samples of the two classes (NaN if none)."""
    keep = torch.isin(y, torch.as_tensor(list(classes)))
    return _share(logits[keep].argmax(1) == y[keep])


def confusion_rate(logits: torch.Tensor, y: torch.Tensor, classes: Sequence[int]) -> float:
    """Share of the samples of the two classes ``(a, b)`` predicted as the other one: a as b, or b as a."""
    a, b = (int(c) for c in classes)
    pred = logits.argmax(1)
    keep = (y == a) | (y == b)
    swapped = ((y == a) & (pred == b)) | ((y == b) & (pred == a))
    return _share(swapped[keep])


def other_classes_accuracy(logits: torch.Tensor, y: torch.Tensor, classes: Sequence[int]) -> float:
    """Accuracy on the samples of every class but the two (NaN if none)."""
    keep = ~torch.isin(y, torch.as_tensor(list(classes)))
    return _share(logits[keep].argmax(1) == y[keep])


def badnets_metrics(clean_logits: torch.Tensor, triggered_logits: torch.Tensor, y: torch.Tensor,
                    target_class: int) -> dict[str, float]:
    """The BadNets metrics from the logits of the same samples without and with the trigger, and their true labels."""
    keep = y != target_class
    return {
        "backdoor_asr": attack_success_rate(triggered_logits, y, target_class),
        "backdoor_clean_acc": accuracy_outside(clean_logits, y, target_class),
        "backdoor_triggered_acc": _share(triggered_logits[keep].argmax(1) == y[keep]),
    }


def interclass_metrics(logits: torch.Tensor, y: torch.Tensor, classes: Sequence[int]) -> dict[str, float]:
    """The interclass-confusion metrics from logits and true labels."""
    return {
        "interclass_acc": interclass_accuracy(logits, y, classes),
        "interclass_confusion": confusion_rate(logits, y, classes),
        "interclass_other_acc": other_classes_accuracy(logits, y, classes),
    }


def corrective_metrics(model: nn.Module, poison, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024,
                       clean_logits: torch.Tensor | None = None) -> dict[str, float]:
    """The metrics ``poison`` calls for (``mu_lightning.data.poison``), of ``model`` on clean held-out data
    ``(x, y)`` with true labels; ``{}`` for ``poison=none``. ``clean_logits``: the model's logits on ``x`` if already
    computed (the pipeline's test logits), so only the triggered inputs are evaluated again.

    For BadNets, ``poison`` must have been applied already when its ``value`` is null (the trigger value comes from
    the training inputs).
    """
    name = getattr(poison, "name", "none")
    if name == "none":
        return {}
    z = logits_of(model, x, batch_size) if clean_logits is None else clean_logits
    if name == "badnets":
        keep = y != poison.target_class
        xs, ys, zs = x[keep], y[keep], z[keep]
        return badnets_metrics(zs, logits_of(model, poison.trigger(xs), batch_size), ys, poison.target_class)
    if name == "interclass":
        return interclass_metrics(z, y, poison.classes)
    raise ValueError(f"corrective_metrics: no metrics for the manipulation {name!r}")
