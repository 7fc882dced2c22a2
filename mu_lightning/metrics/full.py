"""The ``full`` tier (docs/metrics.md §7): the costlier checks, against a gold distribution of other gold seeds.

The gold distribution is the reference gold (``seed``) plus ``metric.seeds − 1`` more gold seeds (``seed+1, …``),
trained once and kept in the stage cache; the reference gold is never among the others, so the ``gold`` row of a
gold-relative metric is an honest noise floor.
"""

from __future__ import annotations

import torch
from scipy.stats import ks_2samp

from mu_lightning.metrics import gold as g
from mu_lightning.metrics import mia, signals
from mu_lightning.metrics.accuracy import accuracy, logits_of
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.names import MODELS
from mu_lightning.metrics.relearn import relearn_steps

RANDOM_INIT = "random_init"  # the randomly initialised network ZRF compares with
INCOMPETENT = "incompetent_teacher"  # Bad Teacher's own random teacher, when the pipeline registers it


def other_golds(ctx: EvalContext) -> list[str]:
    """Names of the extra gold seeds (``gold_seed<s>``), registered in ``ctx`` on first use."""
    return ctx.other_seeds("gold")


def phi(ctx: EvalContext, m: str, split: str = "forget") -> torch.Tensor:
    """φ = log p_y − log(1 − p_y) of model ``m`` on each example of ``split``."""
    return signals.phi(ctx.logits(m, split), ctx.labels(split))


def full(ctx: EvalContext) -> dict[str, float]:
    """Retain-set MIA, modified-entropy MIA-Efficacy, KS forget quality, φ z-scores, ZRF and AIN."""
    out: dict[str, float] = {}
    gold_phi = torch.stack([phi(ctx, k) for k in other_golds(ctx)])  # [K, |D_f|]
    mean, std = gold_phi.mean(0), gold_phi.std(0).clamp_min(1e-12)
    random_model = zrf_reference(ctx)
    zrf_split, zrf_rows = zrf_samples(ctx)
    y = {s: ctx.labels(s) for s in ("forget", "retain", "test")}
    for m in MODELS:
        z = {s: ctx.logits(m, s) for s in y}
        conf = {s: signals.confidence(z[s], y[s]) for s in y}
        mentr = {s: signals.modified_entropy(z[s], y[s]) for s in y}
        roc = mia.loss_attack(z["retain"], y["retain"], z["test"], y["test"])
        phi_m = phi(ctx, m)
        ks = ks_2samp(phi_m.numpy(), gold_phi.flatten().numpy())
        out.update({
            f"{m}/mia_retain_privacy": mia.retain_privacy(conf["retain"], conf["test"]),
            f"{m}/mia_retain_auc": roc["auc"],
            f"{m}/mia_efficacy_mentr": mia.mia_efficacy(mentr["retain"], mentr["test"], mentr["forget"]),
            f"{m}/ks_pvalue": float(ks.pvalue), f"{m}/ks_stat": float(ks.statistic),
            f"{m}/phi_zscore": float(((phi_m - mean).abs() / std).mean()),
            f"{m}/zrf": g.zrf(ctx.logits(m, zrf_split)[zrf_rows], ctx.logits(random_model, zrf_split)[zrf_rows],
                             bool(ctx.cfg.zrf.compat), ctx.cfg.batch_size),
        })
    out.update(anamnesis(ctx))
    return out


def zrf_reference(ctx: EvalContext) -> str:
    """The random network of ZRF: Bad Teacher's own incompetent teacher in ``zrf.compat`` mode when the method is
    Bad Teacher (the bad-teaching code scores against it), else a fresh network drawn with ``zrf.seed``."""
    if bool(ctx.cfg.zrf.compat) and INCOMPETENT in ctx.models:
        return INCOMPETENT
    if RANDOM_INIT not in ctx.models:
        ctx.add_model(RANDOM_INIT, ctx.fresh_model(int(ctx.cfg.zrf.seed)))
    return RANDOM_INIT


def zrf_samples(ctx: EvalContext) -> tuple[str, torch.Tensor | slice]:
    """The split and rows ZRF is measured on: D_f (``zrf.on: forget``), or for a class-wise request with
    ``zrf.on: heldout`` the validation samples of the forgotten classes, which no model trained on (the references
    score ZRF on held-out samples of the forgotten class). A request that empties no class has none: D_f then."""
    if ctx.cfg.zrf.get("on", "forget") == "heldout" and (classes := ctx.data.forgotten_classes()):
        yv = ctx.labels("val")
        rows = torch.isin(yv, torch.tensor(classes, dtype=yv.dtype))
        if rows.any():
            return "val", rows
    return "forget", slice(None)


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
