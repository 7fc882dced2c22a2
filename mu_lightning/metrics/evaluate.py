"""The evaluation step of the pipeline: every metric of M, M_g and M_u from logits computed once per (model, split).

Tiers (``conf/metric/``): ``fast`` on every run, ``full`` adds the costlier checks, ``seeds`` adds the ones that need
a gold distribution. Every name is ``<model>/<metric>`` with model ∈ original, gold, unlearn; in the ``gold`` row a
gold-relative metric compares other gold seeds with the reference gold: the noise floor (EVALUATION.md §4).
"""

from __future__ import annotations

from typing import Any

from mu_lightning.errors import ConfigError
from mu_lightning.metrics import gold as g
from mu_lightning.metrics import mia, signals
from mu_lightning.metrics.accuracy import accuracy
from mu_lightning.metrics.context import EvalContext

SPLITS = ("forget", "retain", "val", "test", "forgotten")  # forgotten: earlier requests (forget=sequential)
MODELS = ("original", "gold", "unlearn")
TIERS = ("fast", "full", "seeds")


def evaluate(ctx: EvalContext) -> dict[str, float]:
    """Metrics named ``<model>/<metric>`` (model: original, gold, unlearn), e.g. ``unlearn/forget_acc``."""
    tier = TIERS.index(check_config(ctx.cfg))
    out: dict[str, float] = {}
    splits = [s for s in SPLITS if len(ctx.data.ids.get(s, ()))]
    memo: dict[str, dict[str, float]] = {}
    for m in MODELS:
        out.update({f"{m}/{s}_acc": accuracy(ctx.logits(m, s), ctx.labels(s)) for s in splits})
        out.update({f"{m}/{k}": v for k, v in summary(ctx, m, memo).items() if k.startswith("mia_")})
    for m in ("original", "unlearn"):
        out.update({f"{m}/{k}": v for k, v in relative(ctx, m, "gold", memo).items()})
    out["unlearn/weight_dist_original"] = g.weight_distance(ctx.models["unlearn"], ctx.models["original"])
    out.update(efficiency(ctx))
    if tier >= 1:
        from mu_lightning.metrics.tiers import full

        out.update(full(ctx, memo))
    if tier >= 2:
        from mu_lightning.metrics.tiers import seeds

        out.update(seeds(ctx, memo))
    return out


def attacks(ctx: EvalContext, m: str) -> dict[str, float]:
    """The cheap MIAs on model ``m``'s own outputs (§3.1, §3.2)."""
    z = {s: ctx.logits(m, s) for s in ("forget", "retain", "test")}
    y = {s: ctx.labels(s) for s in z}
    conf = {s: signals.confidence(z[s], y[s]) for s in z}
    ent = {s: signals.entropy(z[s]) for s in z}
    pos, neg = mia.balanced_pairs(len(y["forget"]), len(y["test"]), ctx.cfg.mia_seed)
    loss_f, loss_t = signals.loss(z["forget"], y["forget"]), signals.loss(z["test"], y["test"])
    roc = mia.threshold_attack(-loss_f[pos], -loss_t[neg])
    return {
        "mia_efficacy": mia.mia_efficacy(conf["retain"], conf["test"], conf["forget"]),
        "mia_entropy_member_rate": mia.entropy_member_rate(ent["retain"], ent["test"], ent["forget"]),
        "mia_loss_auc": roc["auc"], "mia_loss_tpr_at_1fpr": roc["tpr_at_1fpr"],
    }


def summary(ctx: EvalContext, m: str, memo: dict[str, dict[str, float]]) -> dict[str, float]:
    """Accuracies on D_f, D_r, D_test and the cheap MIAs of model ``m``, computed once per model into ``memo``."""
    if m not in memo:
        memo[m] = _seen(("summary", *ctx.identity(m)), lambda: {
            **{f"{s}_acc": accuracy(ctx.logits(m, s), ctx.labels(s)) for s in ("forget", "retain", "test")},
            **attacks(ctx, m)})
    return memo[m]


def relative(ctx: EvalContext, m: str, ref: str, memo: dict[str, dict[str, float]]) -> dict[str, float]:
    """Gold-relative metrics of model ``m`` against reference gold ``ref`` (§4.1–4.7): closer to gold is better."""
    return _seen(("relative", *ctx.identity(m, ref)), lambda: _relative(ctx, m, ref, memo))


# The jobs of a sweep evaluate the same M and M_g again and again (only the unlearner differs), and their MIAs'
# SVC and regression fits cost more than the forward passes. A model's metrics are a function of ctx.identity (its
# weights, the samples, the metric config), so each is computed once per process under exactly that key.
_SEEN: dict[tuple, dict[str, float]] = {}


def _seen(key: tuple, compute) -> dict[str, float]:
    if key not in _SEEN:
        _SEEN[key] = compute()
    return dict(_SEEN[key])


def _relative(ctx: EvalContext, m: str, ref: str, memo: dict[str, dict[str, float]]) -> dict[str, float]:
    bs = ctx.cfg.batch_size
    out: dict[str, float] = {}
    for s in ("forget", "test"):
        z, zg = ctx.logits(m, s), ctx.logits(ref, s)
        out[f"gold_agreement_{s}"] = g.agreement(z, zg, bs)
        out[f"gold_js_{s}"] = g.js_divergence(z, zg, bs)
        out[f"gold_kl_{s}"] = g.kl_from_gold(z, zg, bs)
        out[f"gold_actdist_{s}"] = g.activation_distance(z, zg, bs)
    mine, theirs = summary(ctx, m, memo), summary(ctx, ref, memo)
    out["mia_loss_auc_gap"] = abs(mine["mia_loss_auc"] - theirs["mia_loss_auc"])
    out["weight_dist_gold"] = g.weight_distance(ctx.models[m], ctx.models[ref])
    out["avg_gap"] = g.avg_gap(mine, theirs)
    out["tow"] = g.tow(mine, theirs)
    out["tow_mia"] = g.tow(mine, theirs, mia=True)
    return out


def efficiency(ctx: EvalContext) -> dict[str, float]:
    """RTE, speed-up over retraining and gradient-step ratio (§5).

    Retraining time is the gold model's recorded ``fit_seconds`` (kept in the stage cache), never this run's load time.
    """
    rte = ctx.seconds["unlearn"]
    gold = ctx.stages["gold"]
    return {
        "original/train_seconds": float(ctx.stages["original"]["fit_seconds"]),
        "gold/train_seconds": float(gold["fit_seconds"]),
        "unlearn/train_seconds": float(rte),
        "unlearn/speedup": float(gold["fit_seconds"]) / max(rte, 1e-9),
        "unlearn/grad_step_ratio": ctx.stages["unlearn"]["steps"] / max(gold["steps"], 1),
    }


def check_config(cfg: Any) -> str:
    """Validate the ``metric`` config group and return its tier; the message names the option and what is allowed."""
    tier = cfg.tier
    if tier not in TIERS:
        raise ConfigError(f"metric.tier={tier!r} is not a tier: use one of {', '.join(TIERS)}")
    if tier == "fast":
        return tier
    if int(cfg.seeds) < 3:
        raise ConfigError(f"metric.seeds={cfg.seeds} is too few: metric={tier} needs at least 3 gold seeds "
                          "(the reference gold and two more, for a per-example spread)")
    if not 0 <= cfg.ain.alpha < 1:
        raise ConfigError(f"metric.ain.alpha={cfg.ain.alpha} is out of range: it must be >= 0 and < 1")
    if tier == "seeds" and not 0 <= cfg.rmia.a <= 1:
        raise ConfigError(f"metric.rmia.a={cfg.rmia.a} is out of range: it must be in [0, 1]")
    return tier
