"""What a run writes into its directory (forget_ids.txt, logits.pt, unlearned.pt, results.json) and prints (the
result table), and the records of its stages and requests that results.json is made of."""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mu_lightning.data import UnlearningDataModule
from mu_lightning.files import atomic_write, run_digests
from mu_lightning.metrics import EvalContext
from mu_lightning.metrics.corrective import TABLE_COLUMNS
from mu_lightning.metrics.lm import TABLE_COLUMNS as LM_COLUMNS
from mu_lightning.runtime import distributed
from mu_lightning.runtime.threads import threads_record
from mu_lightning.tracking import console, extras
from mu_lightning.tracking.naming import run_title
from mu_lightning.tuning.objective import selection

log = logging.getLogger(__name__)
PACKAGES = ("mu_lightning", "torch", "lightning", "hydra-core", "omegaconf", "torchmetrics", "wandb", "scikit-learn")


@dataclass
class StageResult:
    """A stage's model, the facts results.json records for the stage, and its wall-clock seconds."""

    model: torch.nn.Module
    facts: dict[str, Any]
    seconds: float
    references: dict[str, torch.nn.Module] = dataclasses.field(default_factory=dict)  # more models to evaluate with


@dataclass
class RequestResult:
    """One forget request served: the metrics, the seconds and facts of each stage, and the split sizes.

    ``ctx`` holds the three models and their logits; the run keeps it for the last request only (``numbers_only``),
    whose logits it saves."""

    metrics: dict[str, float]
    seconds: dict[str, float]
    stages: dict[str, dict[str, Any]]
    sizes: dict[str, int]
    ctx: EvalContext | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The request as results.json lists it under ``requests``."""
        return {"sizes": self.sizes, "metrics": self.metrics, "seconds": self.seconds, "stages": self.stages,
                "warnings": self.warnings}

    def numbers_only(self) -> RequestResult:
        return dataclasses.replace(self, ctx=None)


def write_forget_ids(cfg: DictConfig, data: UnlearningDataModule) -> None:
    """``forget_ids.txt`` (every request's ids, sorted) and, with several requests, ``forget_ids_<k>.txt``; with a
    training-set manipulation, ``poison_ids.txt`` (the manipulated sample ids); ``split_ids.json`` (the train, val
    and test ids: docs/checkpoints.md); rank 0."""
    out, n = Path(cfg.paths.output_dir), len(data.requests)
    if len(data.poison_ids):
        log.info("poison: %s manipulated %d of %d training samples; ids in poison_ids.txt", data.poison.name,
                 len(data.poison_ids), len(data.ids["train"]))
    if distributed.is_main():
        if len(data.poison_ids):
            _write_ids(out / "poison_ids.txt", data.poison_ids)
        _write_ids(out / "forget_ids.txt", torch.cat(data.requests).sort().values)
        split = {s: data.ids[s].tolist() for s in ("train", "val", "test")}  # to train a model of your own on
        atomic_write(out / "split_ids.json", lambda f: f.write(json.dumps(split).encode()))
        for k, ids in enumerate(data.requests if n > 1 else ()):
            _write_ids(out / f"forget_ids_{k + 1}.txt", ids)
    log.info("forget request%s: %s of %d training samples (%s); ids in forget_ids%s.txt", "s" if n > 1 else "",
             " then ".join(str(len(ids)) for ids in data.requests), len(data.ids["train"]),
             cfg.forget._target_.rsplit(".", 1)[-1], "*" if n > 1 else "")


def collect_results(cfg: DictConfig, served: list[RequestResult], started: float) -> dict[str, Any]:
    """results.json's contents: the last request's numbers (and, with several, each request's under ``requests``),
    the run's total seconds, threads, tuning, resolved config and package versions."""
    final = served[-1]
    return {
        "metrics": final.metrics,
        "seconds": {**final.seconds, "total": time.perf_counter() - started},
        "stages": final.stages,
        **threads_record(),  # CPU threads of this process and why that many (`threads`, runtime/threads.py)
        "tuning": cfg.get("tuning"),  # "gold-tuned": hyperparameters chosen against gold (hparams_search)
        "selection": selection(cfg.get("objective")),  # a search's: "oracle" (reads gold), "gold-free", or None
        "objective": cfg.get("objective"),  # the metric it selects by
        **protocol_record(cfg),  # "<protocol>/<unlearner>" applied over unlearner:, or "general"; the files
        "sizes": final.sizes,
        "dropped_test_classes": final.ctx.data.dropped_test_classes(),  # metric.classwise_test=drop
        "warnings": [w for r in served for w in r.warnings],  # also in the log (docs/metrics.md §9)
        **({"requests": [r.record() for r in served]} if len(served) > 1 else {}),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": _versions(),
    }


def save_outputs(cfg: DictConfig, ctx: EvalContext, results: dict[str, Any], loggers: list) -> None:
    """``logits.pt`` (every logits tensor the evaluation computed, with labels and ids), ``unlearned.pt`` when
    ``save_unlearned``, and the loggers' end-of-run extras."""
    out = Path(cfg.paths.output_dir)
    logits = {"logits": ctx.computed_logits(), "labels": {s: ctx.data.tensors(s)[1] for s in ctx.data.ids},
              "ids": dict(ctx.data.ids)}
    atomic_write(out / "logits.pt", lambda f: torch.save(logits, f))
    if cfg.save_unlearned:
        state = {k: v.detach().cpu() for k, v in ctx.models["unlearn"].state_dict().items()}
        atomic_write(out / "unlearned.pt", lambda f: torch.save(state, f))
    extras.log_results(loggers, results, out)


def write_results(cfg: DictConfig, results: dict[str, Any], served: list[RequestResult]) -> None:
    """``results.json``, written last and atomically, so its presence means the run completed; then the tables."""
    out, n = Path(cfg.paths.output_dir), len(served)
    results["files"] = run_digests(out)  # the run's own files, by SHA-256: eval.py run_dir= checks them
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    for k, request in enumerate(served):
        if n > 1:
            print(f"request {k + 1} of {n}: forgets {request.sizes['forget']} samples "
                  f"({request.sizes['forgotten']} forgotten by earlier requests)")
        table = f"{run_title(cfg)}\n{summary_table(request.record())}"
        print(table)
        console.to_log_files(f"result table{f' of request {k + 1}' if n > 1 else ''}:\n{table}")
    log.info("results in %s", out / "results.json")


def summary_table(results: dict[str, Any]) -> str:
    """Original / clean (with a ``poison``) / gold / unlearned × forget / retain / test accuracy, the corrective
    metrics of ``TABLE_COLUMNS`` and the language-model ones (``metrics/lm.py``) when present, and seconds per stage
    (of a run or request)."""
    m, sec, st = results["metrics"], results["seconds"], results["stages"]
    columns = {f"{s}_acc": f"{s} acc" for s in ("forget", "retain", "test")}
    columns.update({k: label for k, label in {**TABLE_COLUMNS, **LM_COLUMNS}.items() if f"original/{k}" in m})
    width = {k: max(len(label), 6) for k, label in columns.items()}
    head = ["model    ", *(f"{label:<{width[k]}}" for k, label in columns.items()), "seconds"]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join(["-" * 11, *("-" * (len(h) + 1) + ":" for h in head[1:])])
            + "|"]
    for name, label in (("original", "original"), ("clean", "clean"), ("gold", "gold"), ("unlearn", "unlearned")):
        if name in st:
            note = " (cached)" if st[name].get("cache_hit") else " (checkpoint)" if st[name].get("checkpoint") else ""
            took = "unknown" if sec[name] is None else f"{sec[name]:>7.2f}"
            cells = [f"{label:<9}", *(f"{m[f'{name}/{k}']:>{width[k]}.4f}" for k in columns), took]
            rows.append("| " + " | ".join(cells) + f" |{note}")
    return "\n".join(rows)


def protocol_choice() -> str | None:
    """The ``conf/protocol/<protocol>/<unlearner>.yaml`` that Hydra applied over ``unlearner:``, as
    ``"<protocol>/<unlearner>"``; None when there is no such file (the defaults of ``conf/unlearner/`` alone: the
    ``optional`` defaults entry skips a missing file silently) or the config was not composed by Hydra."""
    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get("protocol@unlearner")
    applied = choice and (resources.files("mu_lightning.conf") / "protocol" / f"{choice}.yaml").is_file()
    return choice if applied else None


def protocol_record(cfg: DictConfig) -> dict[str, Any]:
    """Where the unlearner's values came from, for results.json: ``protocol`` is the applied
    ``"<protocol>/<unlearner>"`` or ``"general"`` (the method's own defaults, ``conf/unlearner/<name>.yaml``, as for
    data of your own), ``values_from`` the files in the order they were merged, ``command_line`` the ``unlearner.*``
    overrides given on top. A protocol folder without a file for the method (a preset whose paper has no values for
    it) falls back to the general values, and says so in the log."""
    applied = protocol_choice()
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    method, requested = choices.get("unlearner"), choices.get("protocol@unlearner")
    folder = str(requested).split("/", 1)[0] if requested else None
    if not applied and folder and (resources.files("mu_lightning.conf") / "protocol" / folder).is_dir():
        log.info("protocol %s has no values for unlearner=%s (no conf/protocol/%s.yaml): using its general values "
                 "from conf/unlearner/%s.yaml", folder, method, requested, method)
    files = [f"conf/unlearner/{method}.yaml"] if method else [f"_target_: {cfg.unlearner.get('_target_')}"]
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return {"protocol": applied or "general",
            "values_from": files + ([f"conf/protocol/{applied}.yaml"] if applied else []),
            "command_line": [o for o in overrides if o.lstrip("+~").startswith("unlearner.")]}


def _write_ids(path: Path, ids: torch.Tensor) -> None:
    atomic_write(path, lambda f: f.write("".join(f"{i}\n" for i in ids.tolist()).encode()))


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def log_budget(facts: dict[str, Any]) -> None:
    """What the budget did (``facts["budget"]``, ``Stage.budget_facts``) in the log, and a warning in
    ``facts["warnings"]`` when the method's one-shot work alone went over it."""
    budget, stop = facts["budget"], facts["budget"]["stopped_at_step"]
    if budget["over_budget"]:
        facts["warnings"].append(f"{facts['method']}'s one-shot work spent {budget['spent_fraction']:.4g}× the gold "
                                 f"model's training FLOPs, over budget.flops={budget['flops_fraction']:g}: it runs "
                                 "whole (docs/metrics.md §5)")
    log.info("%-8s %g × gold FLOPs: %s; spent %.4g × gold", "budget", budget["flops_fraction"], "not reached"
             if stop is None else f"stopped after {stop} of {budget['planned_steps']} steps", budget["spent_fraction"])
