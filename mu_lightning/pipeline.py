"""One unlearning experiment, top to bottom: forget request → original → gold → unlearn → evaluate → results."""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from mu_lightning import distributed
from mu_lightning import loggers as logger_factories
from mu_lightning.cache import StageCache, cache_key
from mu_lightning.callbacks.monitor import StageMonitor
from mu_lightning.checks import check_config, check_data
from mu_lightning.data import UnlearningDataModule
from mu_lightning.errors import ConfigError
from mu_lightning.files import atomic_write
from mu_lightning.metrics import EvalContext, evaluate
from mu_lightning.stages import ClassifierModule
from mu_lightning.threads import cpu_threads
from mu_lightning.unlearners import Unlearner

log = logging.getLogger(__name__)

STAGE_SPLIT = {"original": "train", "gold": "retain"}  # the set each trained stage learns from
PACKAGES = ("mu_lightning", "torch", "lightning", "hydra-core", "omegaconf", "torchmetrics", "wandb", "scikit-learn")


@dataclass
class StageResult:
    """A stage's model, the facts results.json records for the stage, and its wall-clock seconds."""

    model: torch.nn.Module
    facts: dict[str, Any]
    seconds: float


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

    def record(self) -> dict[str, Any]:
        """The request as results.json lists it under ``requests``."""
        return {"sizes": self.sizes, "metrics": self.metrics, "seconds": self.seconds, "stages": self.stages}

    def numbers_only(self) -> RequestResult:
        return dataclasses.replace(self, ctx=None)


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Run one experiment and write ``results.json`` into ``cfg.paths.output_dir``; returns the results, or None on a
    DDP rank > 0 (it trains, and evaluates where that trains models, with rank 0, which alone writes)."""
    started = time.perf_counter()
    start_up(cfg)

    # 1. data and the forget request (or several, served in turn: forget=sequential)
    data = build_data(cfg)
    write_forget_ids(cfg, data)

    # 2. original M on D, looked up in the stage cache first
    cache = StageCache(cfg.paths.cache_dir, enabled=cfg.cache)
    original = trained_model(cfg, data, cache, "original", cfg.seed)

    # 3-5. each request in turn: its gold M_g (same recipe and seed, on what is left), M_u from the model the previous
    # request left (M for the first), evaluation against this request's gold
    served, start, n = [], original.model, len(data.requests)
    for k in range(n):
        view, label, last = data.request(k), request_label(k, n), k == n - 1
        gold = trained_model(cfg, view, cache, "gold", cfg.seed, label)
        with stage_loggers(cfg, f"unlearn{label}") as loggers:  # M_u's training, then the request's metrics
            unlearned = unlearned_model(cfg, view, start, cfg.unlearn_seed, loggers)  # sees D_f and D_r, never M_g
            stages = {"original": original, "gold": gold, "unlearn": unlearned}
            request = evaluated(cfg, view, cache, label, start, stages, loggers, more_to_train=not last)
            if request is None or (last and not distributed.is_main()):
                return None  # DDP rank > 0: rank 0 alone evaluates (or writes) from here (distributed.py)
            served.append(request if last else request.numbers_only())
            if last:  # 6. the run's files and the loggers' extras, while the last request's loggers are open
                results = collect_results(cfg, served, started)
                save_outputs(cfg, request.ctx, results, loggers)
        start = unlearned.model
    write_results(cfg, results, served)
    return results


def start_up(cfg: DictConfig) -> None:
    """Before any data loads: quiet Lightning, check the config, set the CPU threads, start the DDP ranks (which run
    ``run`` too: distributed.py)."""
    quiet_lightning()
    check_config(cfg)
    if threads := cpu_threads(cfg):
        torch.set_num_threads(threads)
    distributed.launch(cfg)


def build_data(cfg: DictConfig) -> UnlearningDataModule:
    """The dataset split into train / val / test and the forget request(s) drawn from train, checked against the
    config, the unlearner and the model."""
    data = UnlearningDataModule(
        source=_instantiate(cfg.dataset.source), forget=_instantiate(cfg.forget),
        test_fraction=cfg.dataset.test_fraction, val_fraction=cfg.dataset.val_fraction,
        split_seed=cfg.dataset.split_seed, augment=_instantiate(cfg.dataset.get("augment")),
    )
    data.setup()
    check_data(cfg, data)
    return data


def write_forget_ids(cfg: DictConfig, data: UnlearningDataModule) -> None:
    """``forget_ids.txt`` (every request's ids, sorted) and, with several requests, ``forget_ids_<k>.txt``; rank 0."""
    out, n = Path(cfg.paths.output_dir), len(data.requests)
    if distributed.is_main():
        _write_ids(out / "forget_ids.txt", torch.cat(data.requests).sort().values)
        for k, ids in enumerate(data.requests if n > 1 else ()):
            _write_ids(out / f"forget_ids_{k + 1}.txt", ids)
    log.info("forget request%s: %s of %d training samples (%s); ids in forget_ids%s.txt", "s" if n > 1 else "",
             " then ".join(str(len(ids)) for ids in data.requests), len(data.ids["train"]),
             cfg.forget._target_.rsplit(".", 1)[-1], "*" if n > 1 else "")


def request_label(k: int, n: int) -> str:
    """What tells request ``k`` (from 0) of ``n`` apart in stage names: ``_request2``; empty for a single request."""
    return f"_request{k + 1}" if n > 1 else ""


def stage_loggers(cfg: DictConfig, stage: str):
    """The configured loggers for one stage, as a context manager: closed as failed if the block raises."""
    return logger_factories.opened([instantiate(entry)(stage=stage) for entry in (cfg.logger or {}).values() if entry])


def stage_key(cfg: DictConfig, data: UnlearningDataModule, stage: str, seed: int) -> str:
    """The stage-cache key of the original or gold model: a hash of exactly what determines its weights."""
    return cache_key({"stage": stage, "data": data.fingerprint(STAGE_SPLIT[stage]), "seed": seed,
                      "model": OmegaConf.to_container(cfg.model, resolve=True),
                      "train": OmegaConf.to_container(cfg.train, resolve=True),
                      "augment": OmegaConf.to_container(cfg.dataset, resolve=True).get("augment"),
                      "precision": str(cfg.trainer.precision), **distributed.key_extra()})


def trained_model(cfg: DictConfig, data: UnlearningDataModule, cache: StageCache, stage: str, seed: int,
                  label: str = "") -> StageResult:
    """The original (``stage="original"``, on D) or gold (``"gold"``, on D_r) model for ``seed``.

    Looked up in the stage cache under ``stage_key``; trained and stored on a miss. ``label`` tells the request's
    training logs apart (``_request2``)."""
    split, key = STAGE_SPLIT[stage], stage_key(cfg, data, stage, seed)
    t0 = time.perf_counter()
    state, meta, hit = distributed.get_or_train(cache, stage, key, lambda: _train(cfg, data, stage, seed, label))
    seconds = time.perf_counter() - t0
    model = _build_model(cfg)
    model.load_state_dict(state)
    log.info("%-8s %s (seed %d, key %s) in %.2f s", stage,
             "loaded from the stage cache" if hit else f"trained on {split} ({len(data.ids[split])} samples)",
             seed, key, seconds)
    return StageResult(model, {"cache_key": key, "cache_hit": hit, "seed": seed, **meta}, seconds)


def unlearned_model(cfg: DictConfig, data: UnlearningDataModule, start: torch.nn.Module, seed: int,
                    loggers: list) -> StageResult:
    """M_u from a copy of ``start`` (M, or the previous request's M_u) by the configured unlearner, with unlearning
    seed ``seed``; the stage's monitors (``StageMonitor`` callbacks) watch it, and their time is not its time."""
    L.seed_everything(seed, workers=True, verbose=False)
    net = _build_model(cfg)
    net.load_state_dict(start.state_dict())
    unlearner: Unlearner = instantiate(cfg.unlearner, model=net)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    monitors = [c for c in callbacks if isinstance(c, StageMonitor)]
    for monitor in monitors:
        monitor.attach(data)
    if any(m.step_cadence for m in monitors):
        unlearner.steps_per_batch = 1  # a monitor with a step cadence must see every step
    t0 = time.perf_counter()
    unlearner.unlearn(data, lambda epochs: _trainer(cfg, epochs, loggers, callbacks), seed=seed)
    monitoring = sum(m.seconds for m in monitors)  # trajectory logging is not unlearning work
    seconds = time.perf_counter() - t0 - monitoring
    facts = {"method": type(unlearner).__name__, "reads": list(unlearner.reads), "seed": seed,
             "monitoring_seconds": monitoring,
             "steps": unlearner.steps_taken, "diverged": unlearner.diverged,
             "diverged_step": unlearner.diverged_step}
    if unlearner.diverged:
        log.warning("unlearn   diverged at step %d (non-finite loss); reporting the last finite weights",
                    unlearner.diverged_step)
    log.info("%-8s %s (seed %d): %d steps in %.2f s", "unlearn", facts["method"], seed, unlearner.steps_taken,
             seconds)
    return StageResult(unlearner.model, facts, seconds)


def evaluated(cfg: DictConfig, data: UnlearningDataModule, cache: StageCache, label: str, start: torch.nn.Module,
              stages: dict[str, StageResult], loggers: list, more_to_train: bool) -> RequestResult | None:
    """The evaluation of the three ``stages`` of one request, logged to its unlearn-stage ``loggers``.

    Logits once per (model, split), every metric derived from them; tiers that need more gold or unlearned seeds get
    them like the stages did (gold of this request's ``label``, M_u from ``start``). None on a DDP rank that left the
    process group before evaluating (``distributed.join_evaluation``)."""
    t0 = time.perf_counter()
    seconds = {name: stage.seconds for name, stage in stages.items()}
    ctx = EvalContext(
        models={name: stage.model for name, stage in stages.items()}, data=data,
        stages={name: stage.facts for name, stage in stages.items()}, seconds=seconds, cfg=cfg.metric,
        gold=lambda seed: trained_model(cfg, data, cache, "gold", seed, label).model,
        unlearned=lambda seed: unlearned_model(cfg, data, start, seed, []).model,
        fresh_model=lambda seed: _build_model(cfg, seed),
    )
    if not distributed.join_evaluation(cfg.metric, more_to_train=more_to_train):
        return None
    metrics = evaluate(ctx, cfg.get("objective"))
    seconds["evaluate"] = time.perf_counter() - t0
    for logger in loggers:
        logger.log_metrics({**metrics, **{f"seconds/{k}": v for k, v in seconds.items()}},
                           step=ctx.stages["unlearn"]["steps"])
    return RequestResult(metrics, seconds, ctx.stages, {s: len(ids) for s, ids in data.ids.items()}, ctx)


def collect_results(cfg: DictConfig, served: list[RequestResult], started: float) -> dict[str, Any]:
    """results.json's contents: the last request's numbers (and, with several, each request's under ``requests``),
    the run's total seconds, threads, tuning, resolved config and package versions."""
    final = served[-1]
    return {
        "metrics": final.metrics,
        "seconds": {**final.seconds, "total": time.perf_counter() - started},
        "stages": final.stages,
        "threads": torch.get_num_threads(),  # CPU threads of this process (the `threads` option)
        "tuning": cfg.get("tuning"),  # "gold-tuned": hyperparameters chosen against gold (hparams_search)
        "sizes": final.sizes,
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
    logger_factories.log_results(loggers, results, out)


def write_results(cfg: DictConfig, results: dict[str, Any], served: list[RequestResult]) -> None:
    """``results.json``, written last and atomically, so its presence means the run completed; then the tables."""
    out, n = Path(cfg.paths.output_dir), len(served)
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    for k, request in enumerate(served):
        if n > 1:
            print(f"request {k + 1} of {n}: forgets {request.sizes['forget']} samples "
                  f"({request.sizes['forgotten']} forgotten by earlier requests)")
        print(summary_table(request.record()))
    log.info("results in %s", out / "results.json")


def summary_table(results: dict[str, Any]) -> str:
    """Original / gold / unlearned × forget / retain / test accuracy, and seconds per stage (of a run or request)."""
    m, sec, st = results["metrics"], results["seconds"], results["stages"]
    rows = ["| model     | forget acc | retain acc | test acc | seconds |",
            "|-----------|-----------:|-----------:|---------:|--------:|"]
    for name, label in (("original", "original"), ("gold", "gold"), ("unlearn", "unlearned")):
        note = " (cached)" if st[name].get("cache_hit") else ""
        rows.append(f"| {label:<9} | {m[f'{name}/forget_acc']:>10.4f} | {m[f'{name}/retain_acc']:>10.4f} | "
                    f"{m[f'{name}/test_acc']:>8.4f} | {sec[name]:>7.2f} |{note}")
    return "\n".join(rows)


def quiet_lightning() -> None:
    """Drop Lightning's per-Trainer banners (GPU/TPU availability, tips) and the LeafSpec FutureWarning."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)


def _instantiate(node: Any) -> Any:
    """Hydra's ``instantiate``; a ConfigError raised by the target comes out as itself, not wrapped by Hydra."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise


def _write_ids(path: Path, ids: torch.Tensor) -> None:
    atomic_write(path, lambda f: f.write("".join(f"{i}\n" for i in ids.tolist()).encode()))


def _build_model(cfg: DictConfig, seed: int | None = None) -> torch.nn.Module:
    if seed is not None:
        L.seed_everything(seed, workers=True, verbose=False)
    return instantiate(cfg.model)


def _train(cfg: DictConfig, data: UnlearningDataModule, stage: str, seed: int, label: str) -> tuple[dict, dict]:
    """Train the original or gold model from the initialisation drawn with ``seed``."""
    split = STAGE_SPLIT[stage]
    module: ClassifierModule = instantiate(cfg.train, model=_build_model(cfg, seed))
    with stage_loggers(cfg, stage + label + ("" if seed == cfg.seed else f"_seed{seed}")) as loggers:  # gold seeds
        batches = data.batches(split, module.batch_size, shuffle=True, seed=seed, augment=True)
        t0 = time.perf_counter()
        _trainer(cfg, module.epochs, loggers).fit(module, train_dataloaders=module.chunks(batches))
        if module.diverged:
            raise RuntimeError(f"training the {stage} model diverged at step {module.diverged_step}: "
                               "lower train.optimizer.lr")
    meta = {"fit_seconds": time.perf_counter() - t0, "steps": module.steps_taken, "samples": len(data.ids[split])}
    return {k: v.detach().cpu() for k, v in module.model.state_dict().items()}, meta


def _trainer(cfg: DictConfig, max_epochs: int, loggers: list, callbacks: list = ()) -> L.Trainer:
    """A fresh Trainer per stage (re-using one carries state across fits: Lightning #9636)."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    callbacks = list(callbacks)
    if kwargs.get("enable_progress_bar") is None:  # a bar when someone watches; none in logs, sweeps and CI
        kwargs["enable_progress_bar"] = sys.stderr.isatty()
        if kwargs["enable_progress_bar"]:
            callbacks.append(TQDMProgressBar(refresh_rate=10))
    return L.Trainer(**kwargs, max_epochs=max_epochs, logger=loggers or False, callbacks=callbacks,
                     default_root_dir=cfg.paths.output_dir)


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found
