"""The ``ensemble`` tier (docs/metrics.md §7, §11–§14): per-example evidence over ensembles of the run's recipe.

On top of ``fast``, with N = ``metric.ensemble.size``:

- **KLoM** (§11) on D_f, D_r and D_val: N originals (seeds ``seed … seed+N−1``) each unlearned by the configured
  method (unlearning seeds ``unlearn_seed …``) against N golds; beside it the originals themselves (what doing
  nothing scores) and gold against gold: 2N golds are trained, and the floor is KLoM between their two halves, so
  every row compares N models with N;
- **U-LiRA** (§12) on D_f: N shadow originals on random halves of D, each unlearning its part of D_f (filled up to
  |D_f| with other samples of its half); the shadow originals give the same attack on models that did not unlearn;
- **memorisation** (§13) of D_f from the shadow originals;
- the **worst-off samples** (§14): a per-example file per metric in the run directory and the worst
  ``metric.ensemble.worst`` share of D_f logged.

Every model comes from ``ctx.ensembles`` (``mu_lightning/ensembles.py``): through the stage cache, trained together.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from mu_lightning.data.shadows import halves, shadow_forget, view
from mu_lightning.errors import ConfigError
from mu_lightning.metrics import klom as k
from mu_lightning.metrics import ulira as u
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.memorization import memorization
from mu_lightning.stages.ensemble import margins

log = logging.getLogger(__name__)

KLOM_SPLITS = ("forget", "retain", "val")


def ensemble(ctx: EvalContext) -> dict[str, float | None]:
    """KLoM per split with its two references, U-LiRA with its shadow count, memorisation, per-example files."""
    ens, cfg = ctx.ensembles, ctx.cfg.ensemble
    if ens is None:
        raise ConfigError("metric=ensemble needs the pipeline's ensembles: run it through train.py or eval.py (the "
                          "Python API evaluates given models only)")
    n, seed, useed = int(cfg.size), int(ctx.stages["original"]["seed"]), int(ctx.stages["unlearn"]["seed"])
    data, seeds = ctx.data, [seed + i for i in range(n)]  # member 0 is the run's own M (and M_g, M_u)
    announce(ctx, n, seed)
    originals, golds = ens.originals(data, seeds), ens.golds(data, [*seeds, *(s + n for s in seeds)])
    unlearned = [ens.unlearn(data, m, useed + i) for i, m in enumerate(originals)]
    out: dict[str, float | None] = {"unlearn/klom_models": float(n)}
    per_example: dict[str, np.ndarray] = {}
    for split in KLOM_SPLITS:
        x, y = data.tensors(split)
        g, o, un = (margins(ms, x, y).numpy() for ms in (golds, originals, unlearned))
        rows = {"unlearn": k.klom(g[:n], un), "original": k.klom(g[:n], o), "gold": k.gold_halves(g)}
        for model, values in rows.items():
            out.update({f"{model}/klom_{split}{suffix}": v for suffix, v in k.tail(values).items()})
        per_example[split] = np.stack([rows["unlearn"], rows["original"], rows["gold"]])
    attack, mem = shadows(ctx, n, int(cfg.seed), seed, useed)
    out.update(attack.pop("metrics"))
    out["original/forget_memorization"] = _nanmean(mem[np.isin(data.ids["train"].numpy(),
                                                               data.ids["forget"].numpy())])
    worst_off(ctx, per_example, attack["per_example"], mem, float(cfg.worst))
    return {key: (None if v is None or math.isnan(v) else v) for key, v in out.items()}


def announce(ctx: EvalContext, n: int, seed: int) -> None:
    """Log what the tier is about to train and run, before it starts (its cost)."""
    ens, data = ctx.ensembles, ctx.data
    train = data.ids["train"]
    jobs = [*((data, "original", seed + i) for i in range(n)), *((data, "gold", seed + i) for i in range(2 * n)),
            *((view(data, train=train[m], forget=train[:0]), "original", seed + i)
              for i, m in enumerate(halves(train, n, int(ctx.cfg.ensemble.seed))))]
    plan = ens.plan(jobs)
    unlearn_s = ctx.seconds.get("unlearn") or 0.0
    how = "; ".join(f"{s} one at a time: {r}" for s, r in plan["alone"].items()) or "trained together"
    log.info("ensemble N=%d: %d originals, %d golds, %d shadow originals (%d in the stage cache, %d to train, %s) "
             "and %d unlearning runs (about %.0f s at this run's %.2f s each)", n, n, 2 * n, n, plan["cached"],
             plan["to_train"], how, 2 * n, 2 * n * unlearn_s, unlearn_s)


def shadows(ctx: EvalContext, n: int, mask_seed: int, seed: int, useed: int) -> tuple[dict, np.ndarray]:
    """U-LiRA on D_f against the shadow models unlearned by the method, and against the shadow originals; the
    memorisation of every sample of D from the shadow originals."""
    ens, data = ctx.ensembles, ctx.data
    train, target = data.ids["train"], data.ids["forget"]
    masks, originals = ens.shadows(data, n, mask_seed, seed)
    forgets = [shadow_forget(train, m, target, len(target), mask_seed * 100_003 + i) for i, m in enumerate(masks)]
    unlearned = [ens.unlearn(view(data, train=train[m], forget=f), model, useed + i)
                 for i, (m, f, model) in enumerate(zip(masks, forgets, originals, strict=True))]
    x, y = data.tensors("forget")
    included = np.stack([np.isin(target.numpy(), train[m].numpy()) for m in masks])
    unlearned_here = np.stack([np.isin(target.numpy(), f.numpy()) for f in forgets])
    out, per = {}, {}
    for model, members, positive in (("unlearn", unlearned, unlearned_here), ("original", originals, included)):
        llr, _ = u.scores(margins(members, x, y).numpy(), positive, ~included)
        per[model] = u.per_example(llr, positive, ~included)
        roc = u.pooled(llr, positive, ~included)
        out.update({f"{model}/ulira_accuracy": _nanmean(per[model]), f"{model}/ulira_auc": roc["auc"],
                    f"{model}/ulira_tpr_at_1fpr": roc["tpr_0.01"], f"{model}/ulira_tpr_at_01fpr": roc["tpr_0.001"]})
    out["unlearn/ulira_shadows"] = float(n)
    xt, yt = data.tensors("train")
    correct = np.stack([(_predict(m, xt) == yt).numpy() for m in originals])
    return {"metrics": out, "per_example": per["unlearn"]}, memorization(correct, masks.numpy())


def worst_off(ctx: EvalContext, klom: dict[str, np.ndarray], ulira: np.ndarray, mem: np.ndarray,
              share: float) -> None:
    """One CSV per metric (sample id, score, label; KLoM also the split and, per example, its two references:
    ``klom`` rows are M_u's, the original's and gold-vs-gold) and the worst ``share`` of D_f by each,
    logged and written to ``worst_forget.csv`` (highest KLoM, U-LiRA accuracy and memorisation first)."""
    ens, data = ctx.ensembles, ctx.data
    ids = {s: data.ids[s].tolist() for s in (*KLOM_SPLITS, "train")}
    labels = {s: ctx.labels(s).tolist() for s in ids}
    ens.write("per_example_klom.csv", ["sample_id", "split", "klom", "klom_original", "klom_gold", "label"],
              [[i, s, *map(_num, v), lab] for s in KLOM_SPLITS for i, v, lab in zip(ids[s], klom[s].T, labels[s],
                                                                                     strict=True)])
    ens.write("per_example_ulira.csv", ["sample_id", "ulira_accuracy", "label"],
              [[i, _num(v), lab] for i, v, lab in zip(ids["forget"], ulira, labels["forget"], strict=True)])
    ens.write("per_example_memorization.csv", ["sample_id", "memorization", "label", "in_forget"],
              [[i, _num(v), lab, int(i in set(ids["forget"]))] for i, v, lab in zip(ids["train"], mem,
                                                                                     labels["train"], strict=True)])
    forget_mem = mem[np.isin(np.asarray(ids["train"]), np.asarray(ids["forget"]))]
    how_many = max(1, math.ceil(share * len(ids["forget"])))
    rows = []
    for metric, scores in (("klom", klom["forget"][0]), ("ulira_accuracy", ulira), ("memorization", forget_mem)):
        order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[:how_many]
        worst = [(ids["forget"][j], float(scores[j]), labels["forget"][j]) for j in order]
        rows += [[metric, i, _num(v), lab] for i, v, lab in worst]
        log.info("worst    %.0f%% of D_f by %s: %s", 100 * share, metric,
                 ", ".join(f"{i} ({v:.3g}, label {lab})" for i, v, lab in worst))
    ens.write("worst_forget.csv", ["metric", "sample_id", "score", "label"], rows)


def _predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x).argmax(1)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def _num(v: float) -> str:
    return "" if v is None or math.isnan(float(v)) else f"{float(v):.6g}"
