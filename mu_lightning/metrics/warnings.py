"""What a run warns about in results.json, the log and the sweep summary (docs/metrics.md §9): an original model with
little to forget, an unlearner that changed nothing retraining changes, a model the unlearner damaged, and a
membership attack that learned nothing. Every message is one sentence that starts with its kind (``KINDS``), a
stable tag the sweep report counts: ``"no effect: M_u's predictions on D_f agree ..."``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mu_lightning.data.qa import is_qa
from mu_lightning.metrics.accuracy import accuracy
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.lm import model_metrics
from mu_lightning.metrics.margins import Margins

CHANCE_MARGIN = 0.05  # an accuracy within this of 1/num_classes is "at chance"
MEMORISATION, NO_EFFECT, DAMAGED, UNINFORMATIVE, UNLEARNER = (
    "original does not memorise", "no effect", "damaged", "uninformative attack", "unlearner")
KINDS = (MEMORISATION, NO_EFFECT, DAMAGED, UNINFORMATIVE, UNLEARNER)  # UNLEARNER: the unlearning stage's own finding
# the attacks whose score is null when they learned nothing: (name, reported metric, its fit's balanced accuracy)
ATTACKS = (("entropy attack", "mia_entropy_member_rate", "mia_entropy_fit_bacc"),
           ("SVC attack", "mia_efficacy", "mia_efficacy_fit_bacc"))
SYMBOLS = {"original": "M", "gold": "M_g", "unlearn": "M_u"}


def kind(message: str) -> str | None:
    """The kind a message starts with (after a ``request2: `` label), or None for an untagged one."""
    head = message.split(": ", 1)[1] if message.startswith("request") and ": " in message else message
    return next((k for k in KINDS if head.startswith(f"{k}: ")), None)


def run_warnings(ctx: EvalContext, metrics: dict[str, Any]) -> list[str]:
    """Every finding of one evaluated request, the original's first: it holds for every method of the setting."""
    margins, stage = Margins.of(ctx.cfg), ctx.stages["unlearn"]
    found = memorisation_warning(metrics, margins.memorisation_margin, bool(ctx.data.forgotten_classes()))
    found += [w if kind(w) else f"{UNLEARNER}: {w}" for w in stage.get("warnings", [])]
    qa = is_qa(ctx.data.samples)  # a language model: greedy answers in place of top classes (docs/metrics.md §15)
    if stage.get("reads") != [] and not any(kind(w) == NO_EFFECT for w in found):  # unlearner=none reads nothing
        found += no_effect_warning(forget_agreements(ctx), metrics, gold_floor(ctx), margins.no_effect_agreement,
                                   "greedy answers" if qa else "predictions")
    found += accuracy_warnings(metrics, None if qa else ctx.data.num_classes, margins.damage_margin)
    return found + attack_warnings(metrics, margins.attack_margin)


def unchanged_warning(method: str, start: nn.Module, unlearned: nn.Module) -> list[str]:
    """``[message]`` when M_u's weights equal M's bit for bit (the method did nothing), else ``[]``."""
    if all(torch.equal(a.cpu(), b.cpu()) for a, b in
           zip(start.state_dict().values(), unlearned.state_dict().values(), strict=True)):
        return [f"{NO_EFFECT}: {method} changed no weight: M_u equals M, the same as no unlearning (a one-shot edit "
                "that selected nothing, e.g. SSD with a selection_weighting too high for the data)"]
    return []


def memorisation_warning(metrics: dict[str, Any], margin: float, classes_forgotten: bool) -> list[str]:
    """M's retain accuracy less than ``margin`` above its test accuracy, unless whole classes are forgotten (then
    retraining removes the classes, memorised or not)."""
    retain, test = metrics.get("original/retain_acc"), metrics.get("original/test_acc")
    if classes_forgotten or retain is None or test is None or retain - test >= margin:
        return []
    return [f"{MEMORISATION}: M's retain accuracy {retain:.4f} is within {margin:g} of its test accuracy {test:.4f} "
            f"(rule: retain − test < metric.warnings.memorisation_margin = {margin:g}), so M treats its training "
            "samples like unseen ones and forgetting random samples has little to remove: gold stays close to M on "
            "D_f, and differences between methods there are mostly noise"]


def forget_agreements(ctx: EvalContext) -> dict[str, float]:
    """Share of D_f on which M_u's and M_g's top class (a language model's greedy answer) equals M's:
    ``{"unlearn": …, "gold": …, "n": |D_f|}``."""
    if is_qa(ctx.data.samples):
        answers = {m: model_metrics(ctx, m).get("_forget_answers", []) for m in SYMBOLS}
        n = len(answers["original"])
        return {"n": n, **{m: sum(a == b for a, b in zip(answers[m], answers["original"], strict=True)) / n
                           if n else 1.0 for m in ("unlearn", "gold")}}
    top = {m: ctx.logits(m, "forget").argmax(1) for m in ("original", "gold", "unlearn")}
    n = len(top["original"])
    return {"n": n, **{m: float((top[m] == top["original"]).double().mean()) if n else 1.0
                       for m in ("unlearn", "gold")}}


def gold_floor(ctx: EvalContext) -> float | None:
    """The gold noise floor of the forget accuracy: mean |forget_acc(M_g^k) − forget_acc(M_g)| over the other gold
    seeds the tier trained (``metric=full`` or ``seeds``); None when there are none."""
    seeds = [name for name in ctx.models if name.startswith("gold_seed")]
    if not seeds or not len(ctx.data.ids["forget"]):
        return None
    if is_qa(ctx.data.samples):  # forget_acc: exact-match recall of greedy answers
        ref = model_metrics(ctx, "gold")["forget_acc"]
        return sum(abs(model_metrics(ctx, s)["forget_acc"] - ref) for s in seeds) / len(seeds)
    y, ref = ctx.labels("forget"), accuracy(ctx.logits("gold", "forget"), ctx.labels("forget"))
    return sum(abs(accuracy(ctx.logits(s, "forget"), y) - ref) for s in seeds) / len(seeds)


def no_effect_warning(agree: dict[str, float], metrics: dict[str, Any], floor: float | None,
                      threshold: float, what: str = "predictions") -> list[str]:
    """M_u left D_f as M had it where gold did not: its ``what`` (predictions, or a language model's greedy answers)
    agree with M's on ≥ ``threshold`` of D_f while gold's agree on less, or (with a gold ``floor``) its forget
    accuracy moved less than the floor while gold's moved more."""
    if agree["unlearn"] >= threshold > agree["gold"]:
        return [f"{NO_EFFECT}: M_u's {what} on D_f agree with M's on {agree['unlearn']:.2%} of its {agree['n']} "
                f"samples (rule: ≥ metric.warnings.no_effect_agreement = {threshold:.2%}) while gold's agree on only "
                f"{agree['gold']:.2%}, so the unlearner left D_f as M had it where retraining changed it"]
    fa = {m: metrics.get(f"{m}/forget_acc") for m in SYMBOLS}
    if floor is None or None in fa.values():
        return []
    moved, gold_moved = abs(fa["unlearn"] - fa["original"]), abs(fa["gold"] - fa["original"])
    if moved < floor < gold_moved:
        return [f"{NO_EFFECT}: M_u's forget accuracy moved by {moved:.4f} from M's {fa['original']:.4f}, less than "
                f"the gold noise floor {floor:.4f} (mean |Δ forget accuracy| between gold seeds), while gold's moved "
                f"by {gold_moved:.4f}, so the unlearner left D_f as M had it where retraining changed it"]
    return []


def accuracy_warnings(metrics: dict[str, Any], num_classes: int | None,
                      margin: float = Margins.damage_margin) -> list[str]:
    """M_u's retain or test accuracy at chance (within ``CHANCE_MARGIN`` of 1/num_classes) where M's was above, or
    more than ``margin`` below gold's: one ``damaged`` finding per split. ``num_classes`` None (a language model,
    whose recall has no chance level): the second rule only."""
    chance, found = (1 / num_classes if num_classes else None), []
    for split in ("retain", "test"):
        acc, before, gold = (metrics.get(f"{m}/{split}_acc") for m in ("unlearn", "original", "gold"))
        if acc is None:
            continue
        if chance is not None and before is not None and acc <= chance + CHANCE_MARGIN < before:
            found.append(f"{DAMAGED}: M_u's {split} accuracy {acc:.4f} is at chance (1/{num_classes} = {chance:.4f}, "
                         f"margin {CHANCE_MARGIN}) where M's was {before:.4f}: the unlearner destroyed the model")
        elif gold is not None and acc < gold - margin:
            found.append(f"{DAMAGED}: M_u's {split} accuracy {acc:.4f} is {gold - acc:.4f} below gold's {gold:.4f} "
                         f"(rule: more than metric.warnings.damage_margin = {margin:g} below), so the unlearner "
                         "broke what retraining keeps")
    return found


def attack_warnings(metrics: dict[str, Any], margin: float) -> list[str]:
    """One finding per attack whose score is null for some model because its fit was at chance (``mia.informative``)."""
    found = []
    for name, metric, fit in ATTACKS:
        at_chance = [f"{SYMBOLS[m]} ({metrics[f'{m}/{fit}']:.4f})" for m in SYMBOLS
                     if metrics.get(f"{m}/{fit}") is not None and metrics.get(f"{m}/{metric}", 0) is None]
        if at_chance:
            found.append(f"{UNINFORMATIVE}: the {name} ({metric}) tells its own training data (D_r member, D_test "
                         f"non-member) apart no better than chance for {', '.join(at_chance)}: balanced accuracy "
                         f"≤ 0.5 + metric.warnings.attack_margin = {0.5 + margin:g}, so {metric} is null for "
                         f"{'it' if len(at_chance) == 1 else 'them'}, not a number")
    return found
