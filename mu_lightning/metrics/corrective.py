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

What the task cares about is these values relative to a clean model (trained without any manipulated sample): the
pipeline trains one (stage ``clean``) whenever a manipulation is set, and ``corrective`` adds its metrics as
``clean/<metric>`` and every model's distance to it as ``<model>/clean_<...>`` (``clean_relative``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mu_lightning.metrics import gold as g
from mu_lightning.metrics.accuracy import accuracy, logits_of
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.memo import CACHE
from mu_lightning.metrics.names import CLEAN, MODELS, SPLITS

NAN = float("nan")
CORRECTED = {"badnets": "backdoor_triggered_acc", "interclass": "interclass_acc"}  # accuracy on the affected inputs
TABLE_COLUMNS = {"backdoor_asr": "ASR", "backdoor_triggered_acc": "trig. acc", "interclass_acc": "pair acc",
                 "interclass_confusion": "confusion"}  # what the printed summary table adds when present


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


def poison_metrics(poison, logits: torch.Tensor, y: torch.Tensor,
                   triggered_logits: Callable[[], torch.Tensor] | None = None) -> dict[str, float]:
    """The metrics ``poison`` (``mu_lightning.data.poison``) calls for, from a model's ``logits`` on clean held-out
    samples with true labels ``y``; ``{}`` for ``poison=none``. For BadNets, ``triggered_logits()`` returns the
    model's logits on the same samples of classes other than the target, with the trigger stamped on."""
    name = getattr(poison, "name", "none")
    if name == "none":
        return {}
    if name == "badnets":
        keep = y != poison.target_class
        return badnets_metrics(logits[keep], triggered_logits(), y[keep], poison.target_class)
    if name == "interclass":
        return interclass_metrics(logits, y, poison.classes)
    raise ValueError(f"corrective metrics: none for the manipulation {name!r}")


def corrective_metrics(model: nn.Module, poison, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024,
                       clean_logits: torch.Tensor | None = None) -> dict[str, float]:
    """The metrics ``poison`` calls for, of ``model`` on clean held-out data ``(x, y)`` with true labels; ``{}`` for
    ``poison=none``. ``clean_logits``: the model's logits on ``x`` if already computed.

    For BadNets, ``poison`` must have been applied already when its ``value`` is null (the trigger value comes from
    the training inputs).
    """
    if getattr(poison, "name", "none") == "none":
        return {}
    z = logits_of(model, x, batch_size) if clean_logits is None else clean_logits
    triggered = lambda: logits_of(model, poison.trigger(x[y != poison.target_class]), batch_size)  # noqa: E731
    return poison_metrics(poison, z, y, triggered)


def corrective(ctx: EvalContext) -> dict[str, float]:
    """The evaluation's corrective metrics when a manipulation was applied (``ctx.data.poison``); ``{}`` otherwise.

    On the test split (never manipulated): each model's ``poison_metrics`` as ``<model>/<metric>`` for original,
    gold, unlearn and the clean reference; the clean model's accuracy on every split (``clean/<split>_acc``); and for
    original, gold and unlearn their distance to the clean model (``clean_relative``). Kept in ``CACHE`` under the
    models' identity, so a sweep computes those of M, M_g and the clean model once.
    """
    poison = getattr(ctx.data, "poison", None)
    if getattr(poison, "name", "none") == "none":
        return {}
    bs, y = ctx.cfg.batch_size, ctx.labels("test")
    key = (repr(poison), getattr(poison, "value_used", None))
    memo: dict[str, torch.Tensor] = {}

    def triggered(m: str) -> torch.Tensor:  # logits on the triggered non-target test samples, once per model
        if m not in memo:
            x = ctx.data.tensors("test")[0][y != poison.target_class]
            memo[m] = logits_of(ctx.models[m], poison.trigger(x), bs)
        return memo[m]

    own = {m: CACHE.get(("corrective", key, *ctx.identity(m)),
                        lambda m=m: poison_metrics(poison, ctx.logits(m, "test"), y, lambda: triggered(m)))
           for m in (*MODELS, CLEAN) if m in ctx.models}
    out = {f"{m}/{k}": v for m, metrics in own.items() for k, v in metrics.items()}
    if CLEAN not in ctx.models:
        return out
    splits = [s for s in SPLITS if len(ctx.data.ids.get(s, ()))]
    out.update({f"{CLEAN}/{s}_acc": accuracy(ctx.logits(CLEAN, s), ctx.labels(s)) for s in splits})
    for m in MODELS:
        rel = CACHE.get(("clean_relative", key, *ctx.identity(m, CLEAN)),
                        lambda m=m: clean_relative(ctx, poison, m, own, triggered))
        out.update({f"{m}/{k}": v for k, v in rel.items()})
    return out


def clean_relative(ctx: EvalContext, poison, m: str, own: dict[str, dict[str, float]],
                   triggered: Callable[[str], torch.Tensor]) -> dict[str, float]:
    """Model ``m`` against the clean reference (the goal of corrective unlearning), on the test split:
    ``clean_agreement_test`` (share of equal top-1 predictions), ``clean_agreement_triggered`` (BadNets: the same on
    the triggered non-target samples), ``clean_test_acc_gap`` and ``clean_<metric>_gap`` for each corrective metric
    (absolute differences), and ``clean_avg_gap``: the mean of the test-accuracy gap and the gap in accuracy on the
    affected inputs (Goel et al. 2024 report these two, clean accuracy and corrected accuracy)."""
    bs, y = ctx.cfg.batch_size, ctx.labels("test")
    z, zc = ctx.logits(m, "test"), ctx.logits(CLEAN, "test")
    out = {"clean_agreement_test": g.agreement(z, zc, bs),
           "clean_test_acc_gap": abs(accuracy(z, y) - accuracy(zc, y))}
    if poison.name == "badnets":
        out["clean_agreement_triggered"] = g.agreement(triggered(m), triggered(CLEAN), bs)
    out.update({f"clean_{k}_gap": abs(v - own[CLEAN][k]) for k, v in own[m].items()})
    out["clean_avg_gap"] = (out["clean_test_acc_gap"] + out[f"clean_{CORRECTED[poison.name]}_gap"]) / 2
    return out
