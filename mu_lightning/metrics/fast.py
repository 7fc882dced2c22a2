"""The ``fast`` tier, computed on every run: accuracies, the cheap MIAs, gold-relative metrics and efficiency.

Every name is ``<model>/<metric>`` with model ∈ original, gold, unlearn. A model's own metrics (``summary``) and its
comparison with a reference gold (``relative``) are kept in the package's ``CACHE`` under their identity, so the
costlier tiers and the next job of a sweep reuse them.
"""

from __future__ import annotations

from mu_lightning.metrics import gold as g
from mu_lightning.metrics import mia, signals
from mu_lightning.metrics.accuracy import accuracy
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.margins import Margins
from mu_lightning.metrics.memo import CACHE
from mu_lightning.metrics.names import MODELS, SPLITS

GAP_SPLITS = ("forget", "retain", "test")  # the splits of a model's summary, Avg. Gap and ToW


def fast(ctx: EvalContext) -> dict[str, float]:
    """Accuracy on every non-empty split, the cheap MIAs, gold-relative metrics of M and M_u, and efficiency."""
    out: dict[str, float] = {}
    splits = [s for s in SPLITS if len(ctx.data.ids.get(s, ()))]
    for m in MODELS:
        out.update({f"{m}/{s}_acc": accuracy(ctx.logits(m, s), ctx.labels(s)) for s in splits})
        out.update({f"{m}/{k}": v for k, v in summary(ctx, m).items() if k.startswith("mia_")})
    for m in ("original", "unlearn"):
        out.update({f"{m}/{k}": v for k, v in relative(ctx, m, "gold").items()})
    out["unlearn/weight_dist_original"] = g.weight_distance(ctx.models["unlearn"], ctx.models["original"])
    out.update(efficiency(ctx))
    return out


def summary(ctx: EvalContext, m: str) -> dict[str, float]:
    """Accuracies on D_f, D_r, D_test and the cheap MIAs of model ``m`` (docs/metrics.md §3.1, §3.2), cached."""
    return CACHE.get(("summary", *ctx.identity(m)), lambda: _summary(ctx, m))


def _summary(ctx: EvalContext, m: str) -> dict[str, float]:
    z = {s: ctx.logits(m, s) for s in GAP_SPLITS}
    y = {s: ctx.labels(s) for s in z}
    ent = {s: signals.entropy(z[s]) for s in z}
    roc = mia.loss_attack(z["forget"], y["forget"], z["test"], y["test"])  # all of both sets: no balancing draw
    entropy = mia.entropy_attack(ent["retain"], ent["test"], ent["forget"])
    return {
        **gap_parts(ctx, m),
        "mia_entropy_member_rate": mia.reported(entropy, Margins.of(ctx.cfg).attack_margin),
        "mia_entropy_fit_bacc": entropy["fit_bacc"],
        "mia_loss_auc": roc["auc"], "mia_loss_tpr_at_1fpr": roc["tpr_at_1fpr"],
    }


def gap_parts(ctx: EvalContext, m: str, held_out: str = "test") -> dict[str, float]:
    """What Avg. Gap and ToW compare: ``forget_acc``, ``retain_acc``, ``test_acc`` and ``mia_efficacy`` of ``m``.

    ``held_out`` plays D_test: its accuracy is reported as ``test_acc``, and the MIA-Efficacy attack is fit on the
    first |held_out| of D_r (member) against it (non-member). ``mia_efficacy`` is None when that fit is at chance
    (``mia_efficacy_fit_bacc`` within ``metric.warnings.attack_margin`` of 0.5: docs/metrics.md §3.1).
    """
    z = {s: ctx.logits(m, s) for s in ("forget", "retain", held_out)}
    y = {s: ctx.labels(s) for s in z}
    conf = {s: signals.confidence(z[s], y[s]) for s in z}
    svc = mia.svc_attack(conf["retain"], conf[held_out], conf["forget"])
    return {"forget_acc": accuracy(z["forget"], y["forget"]), "retain_acc": accuracy(z["retain"], y["retain"]),
            "test_acc": accuracy(z[held_out], y[held_out]),
            "mia_efficacy": mia.reported(svc, Margins.of(ctx.cfg).attack_margin),
            "mia_efficacy_fit_bacc": svc["fit_bacc"]}


def relative(ctx: EvalContext, m: str, ref: str) -> dict[str, float]:
    """Gold-relative metrics of model ``m`` against reference gold ``ref`` (§4.1–4.7): closer to gold is better."""
    return CACHE.get(("relative", *ctx.identity(m, ref)), lambda: _relative(ctx, m, ref))


def _relative(ctx: EvalContext, m: str, ref: str) -> dict[str, float]:
    bs = ctx.cfg.batch_size
    out: dict[str, float] = {}
    for s in ("forget", "test"):
        z, zg = ctx.logits(m, s), ctx.logits(ref, s)
        out[f"gold_agreement_{s}"] = g.agreement(z, zg, bs)
        out[f"gold_js_{s}"] = g.js_divergence(z, zg, bs)
        out[f"gold_kl_{s}"] = g.kl_from_gold(z, zg, bs)
        out[f"gold_actdist_{s}"] = g.activation_distance(z, zg, bs)
    mine, theirs = summary(ctx, m), summary(ctx, ref)
    out["mia_loss_auc_gap"] = abs(mine["mia_loss_auc"] - theirs["mia_loss_auc"])
    out["weight_dist_gold"] = g.weight_distance(ctx.models[m], ctx.models[ref])
    out["avg_gap"] = g.avg_gap(mine, theirs)
    out["tow"] = g.tow(mine, theirs)
    out["tow_mia"] = g.tow(mine, theirs, mia=True)
    return out


def efficiency(ctx: EvalContext) -> dict[str, float]:
    """The cost of unlearning against retraining (§5): FLOPs and gradient evaluations, then seconds.

    ``flop_speedup`` = gold FLOPs / unlearning FLOPs (the same on any machine). ``speedup`` = gold's comparable fit
    seconds (trained in this run, or its recipe calibrated in this process: gold's ``timing`` fact) / unlearning
    seconds; ``speedup_recorded`` = the fit seconds stored with the gold model, perhaps on another machine or under
    another load / unlearning seconds. Never this run's load time. A value that is None (a model made elsewhere:
    docs/checkpoints.md) makes what it enters None.
    """
    st, rte = ctx.stages, ctx.seconds["unlearn"]
    gold, unlearn = st["gold"], st["unlearn"]
    idle = unlearn.get("flops") == 0  # unlearner=none did no work: no speed-up is defined, only timer noise
    out = {f"{m}/train_seconds": _known(st[m].get("fit_seconds")) for m in ("original", "gold")}
    out.update({f"{m}/{k}": _known(st[m].get(k)) for m in MODELS for k in ("flops", "grad_evals")})
    out.update({
        "unlearn/train_seconds": _known(rte),
        "unlearn/flop_speedup": _ratio(gold.get("flops"), unlearn.get("flops")),
        "unlearn/speedup": None if idle else _ratio((gold.get("timing") or {}).get("comparable_fit_seconds"), rte),
        "unlearn/speedup_recorded": None if idle else _ratio(gold.get("fit_seconds"), rte),
        "unlearn/grad_step_ratio": _ratio(unlearn.get("steps"), gold.get("steps")),
        "unlearn/grad_eval_ratio": _ratio(unlearn.get("grad_evals"), gold.get("grad_evals")),
    })
    return out


def _ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``; None if either is None, and when the denominator did nothing (``unlearner=none`` spends no
    FLOPs): no speed-up is defined, and results.json stays strict JSON (no Infinity)."""
    if num is None or not den:
        return None
    return float(num) / den


def _known(value: float | None) -> float | None:
    return None if value is None else float(value)
