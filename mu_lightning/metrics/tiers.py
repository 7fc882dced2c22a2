"""The ``full`` and ``seeds`` tiers of the evaluation (EVALUATION.md §7): costlier checks and the gold distribution.

The gold distribution is the reference gold (``seed``) plus ``metric.seeds − 1`` more gold seeds (``seed+1, …``),
trained once and kept in the stage cache; the reference gold is never among the others, so the ``gold`` row of a
gold-relative metric is an honest noise floor.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import ks_2samp

from mu_lightning.errors import ConfigError
from mu_lightning.metrics import gold as g
from mu_lightning.metrics import mia, signals
from mu_lightning.metrics.accuracy import accuracy, logits_of
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.evaluate import MODELS, relative, summary
from mu_lightning.metrics.relearn import relearn_steps
from mu_lightning.metrics.seeds import forget_score, t_interval

Memo = dict[str, dict[str, float]]


def other_golds(ctx: EvalContext) -> list[str]:
    """Names of the extra gold seeds, registered in ``ctx`` on first use."""
    base = int(ctx.stages["gold"]["seed"])
    names = []
    for seed in range(base + 1, base + int(ctx.cfg.seeds)):
        name = f"gold_seed{seed}"
        if name not in ctx.models:
            ctx.add_model(name, ctx.gold(seed))
        names.append(name)
    return names


def _phi(ctx: EvalContext, m: str, split: str = "forget") -> torch.Tensor:
    return signals.phi(ctx.logits(m, split), ctx.labels(split))


def full(ctx: EvalContext, memo: Memo) -> dict[str, float]:
    """Retain-set MIA, modified-entropy MIA-Efficacy, KS forget quality, φ z-scores, ZRF and AIN."""
    out: dict[str, float] = {}
    golds = other_golds(ctx)
    gold_phi = torch.stack([_phi(ctx, k) for k in golds])  # [K, |D_f|]
    mean, std = gold_phi.mean(0), gold_phi.std(0).clamp_min(1e-12)
    random_init = "random_init"
    if random_init not in ctx.models:
        ctx.add_model(random_init, ctx.fresh_model(int(ctx.cfg.zrf.seed)))
    y = {s: ctx.labels(s) for s in ("forget", "retain", "test")}
    for m in MODELS:
        z = {s: ctx.logits(m, s) for s in y}
        conf = {s: signals.confidence(z[s], y[s]) for s in y}
        mentr = {s: signals.modified_entropy(z[s], y[s]) for s in y}
        pos, neg = mia.balanced_pairs(len(y["retain"]), len(y["test"]), ctx.cfg.mia_seed)
        loss = {s: signals.loss(z[s], y[s]) for s in ("retain", "test")}
        roc = mia.threshold_attack(-loss["retain"][pos], -loss["test"][neg])
        phi = _phi(ctx, m)
        ks = ks_2samp(phi.numpy(), gold_phi.flatten().numpy())
        out.update({
            f"{m}/mia_retain_privacy": mia.retain_privacy(conf["retain"], conf["test"]),
            f"{m}/mia_retain_auc": roc["auc"],
            f"{m}/mia_efficacy_mentr": mia.mia_efficacy(mentr["retain"], mentr["test"], mentr["forget"]),
            f"{m}/ks_pvalue": float(ks.pvalue), f"{m}/ks_stat": float(ks.statistic),
            f"{m}/phi_zscore": float(((phi - mean).abs() / std).mean()),
            f"{m}/zrf": g.zrf(z["forget"], ctx.logits(random_init, "forget"), bool(ctx.cfg.zrf.compat),
                             ctx.cfg.batch_size),
        })
    out.update(anamnesis(ctx))
    return out


def anamnesis(ctx: EvalContext) -> dict[str, float]:
    """Relearn steps of each model and AIN = steps(model) / steps(gold) (Chundawat et al. 2023; §4.8), ≈1 ideal.

    Relearn set: D_f. The accuracy target, (1 − α)·Acc(M, ·), is measured on the validation samples of the forgotten
    classes under class forgetting, and on D_f itself otherwise (a forgotten class has no other held-out copy).
    """
    cfg = ctx.cfg.ain
    x, y = ctx.data.tensors("forget")
    x_eval, y_eval = x, y
    classes = ctx.data.forgotten_classes()
    xv, yv = ctx.data.tensors("val")
    in_class = torch.isin(yv, torch.tensor(classes, dtype=yv.dtype))
    if classes and in_class.any():
        x_eval, y_eval = xv[in_class], yv[in_class]
    target = (1 - cfg.alpha) * accuracy(logits_of(ctx.models["original"], x_eval), y_eval)
    steps = {m: relearn_steps(ctx.models[m], x, y, x_eval, y_eval, target, cfg.lr, cfg.batch_size, cfg.max_epochs,
                              cfg.seed) for m in MODELS}
    out = {f"{m}/relearn_steps": float(s) for m, s in steps.items()}
    out.update({f"{m}/ain": steps[m] / steps["gold"] for m in ("original", "unlearn")})
    return out


def seeds(ctx: EvalContext, memo: Memo) -> dict[str, float]:
    """Gold noise floor, offline RMIA with gold seeds as references, the challenge score and t-intervals."""
    golds = other_golds(ctx)
    out: dict[str, float] = {}
    floors = [relative(ctx, k, "gold", memo) for k in golds]
    out.update({f"gold/{key}": float(np.mean([f[key] for f in floors])) for key in floors[0]})
    out.update(rmia(ctx, golds))

    base = int(ctx.stages["unlearn"]["seed"])
    unlearned = ["unlearn"]
    for seed in range(base + 1, base + int(ctx.cfg.seeds)):
        name = f"unlearn_seed{seed}"
        if name not in ctx.models:
            ctx.add_model(name, ctx.unlearned(seed))
        unlearned.append(name)
    everyone = ["gold", *golds]
    score, _ = forget_score(torch.stack([_phi(ctx, m) for m in unlearned]).numpy(),
                            torch.stack([_phi(ctx, m) for m in everyone]).numpy())
    ra = {side: np.mean([summary(ctx, m, memo)["retain_acc"] for m in ms]) for side, ms in
          (("u", unlearned), ("g", everyone))}
    ta = {side: np.mean([summary(ctx, m, memo)["test_acc"] for m in ms]) for side, ms in
          (("u", unlearned), ("g", everyone))}
    out["unlearn/forget_score"] = score
    out["unlearn/final_score"] = float(score * ra["u"] / ra["g"] * ta["u"] / ta["g"])
    out["unlearn/forget_score_models"] = float(len(unlearned))

    per_seed: dict[str, list[float]] = {}
    for mu, mg in zip(unlearned, everyone, strict=True):
        su, sg = summary(ctx, mu, memo), summary(ctx, mg, memo)
        for key in ("forget_acc", "retain_acc", "test_acc", "mia_efficacy"):
            per_seed.setdefault(f"unlearn/{key}", []).append(su[key])
            per_seed.setdefault(f"gold/{key}", []).append(sg[key])
        per_seed.setdefault("unlearn/tow", []).append(g.tow(su, sg))
        per_seed.setdefault("unlearn/avg_gap", []).append(g.avg_gap(su, sg))
    for key, values in per_seed.items():
        out[f"{key}_mean"], out[f"{key}_ci95"] = t_interval(values)
    return out


def rmia(ctx: EvalContext, references: list[str]) -> dict[str, float]:
    """Offline RMIA AUC and TPR at 1% FPR of each model: D_f against an equal slice of D_test, population D_val."""
    if len(ctx.data.ids["val"]) == 0:
        raise ConfigError("metric=seeds needs a validation split for the RMIA population: dataset.val_fraction=0")
    pos, neg = mia.balanced_pairs(len(ctx.data.ids["forget"]), len(ctx.data.ids["test"]), ctx.cfg.mia_seed)

    def p_y(m: str) -> dict[str, torch.Tensor]:
        return {s: signals.confidence(ctx.logits(m, s), ctx.labels(s)) for s in ("forget", "test", "val")}

    refs = [p_y(r) for r in references]
    ref_x = torch.stack([torch.cat([r["forget"][pos], r["test"][neg]]) for r in refs])
    ref_z = torch.stack([r["val"] for r in refs])
    out = {}
    for m in MODELS:
        p = p_y(m)
        scores = mia.rmia_scores(torch.cat([p["forget"][pos], p["test"][neg]]), p["val"], ref_x, ref_z,
                                 a=float(ctx.cfg.rmia.a), gamma=float(ctx.cfg.rmia.gamma))
        roc = mia.threshold_attack(scores[: len(pos)], scores[len(pos) :])
        out[f"{m}/rmia_auc"], out[f"{m}/rmia_tpr_at_1fpr"] = roc["auc"], roc["tpr_at_1fpr"]
    return out
