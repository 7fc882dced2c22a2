"""One unlearning experiment, top to bottom: forget request → original → gold → unlearn → evaluate → results."""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from mu_lightning import distributed, hpo
from mu_lightning import loggers as logger_factories
from mu_lightning.cache import StageCache, atomic_write, cache_key
from mu_lightning.checks import check_config, check_data
from mu_lightning.data import UnlearningDataModule
from mu_lightning.errors import ConfigError
from mu_lightning.metrics import EvalContext, evaluate
from mu_lightning.stages import ClassifierModule, Unlearner

log = logging.getLogger(__name__)

STAGE_SPLIT = {"original": "train", "gold": "retain"}  # the set each trained stage learns from
PACKAGES = ("mu_lightning", "torch", "lightning", "hydra-core", "omegaconf", "torchmetrics", "wandb", "scikit-learn")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment and write ``results.json`` into ``cfg.paths.output_dir``; returns the results."""
    started = time.perf_counter()
    _quiet_lightning()
    check_config(cfg)
    if threads := distributed.cpu_threads(cfg):
        torch.set_num_threads(threads)
    distributed.launch(cfg)  # DDP: start the other ranks, which run this function too (see distributed.py)
    out = Path(cfg.paths.output_dir)

    # 1. data and the forget request (or several, served in turn: forget=sequential)
    data = UnlearningDataModule(
        source=_instantiate(cfg.dataset.source), forget=_instantiate(cfg.forget),
        test_fraction=cfg.dataset.test_fraction, val_fraction=cfg.dataset.val_fraction,
        split_seed=cfg.dataset.split_seed, augment=_instantiate(cfg.dataset.get("augment")),
    )
    data.setup()
    check_data(cfg, data)
    cache = StageCache(cfg.paths.cache_dir, enabled=cfg.cache)
    n = len(data.requests)
    if distributed.is_main():
        _write_ids(out / "forget_ids.txt", torch.cat(data.requests).sort().values)
        for k, ids in enumerate(data.requests if n > 1 else ()):
            _write_ids(out / f"forget_ids_{k + 1}.txt", ids)
    log.info("forget request%s: %s of %d training samples (%s); ids in forget_ids%s.txt", "s" if n > 1 else "",
             " then ".join(str(len(ids)) for ids in data.requests), len(data.ids["train"]),
             cfg.forget._target_.rsplit(".", 1)[-1], "*" if n > 1 else "")

    # 2. original M on D, looked up in the stage cache first
    original = trained_model(cfg, data, cache, "original", cfg.seed)

    # 3-5. each request in turn: its gold M_g (same recipe and seed, on what is left), M_u from the model the previous
    # request left (M for the first), evaluation against this request's gold
    served, start = [], original[0]
    for k in range(n):
        label = f"_request{k + 1}" if n > 1 else ""
        request = serve(cfg, data.request(k), cache, original, start, label, last=k == n - 1)
        if request is None:  # DDP rank > 0 with nothing left to train (distributed.py)
            return {}
        start = request["ctx"].models["unlearn"]
        served.append(request if k == n - 1 else _request_record(request))  # earlier ones: numbers only
    final = served[-1]
    if not distributed.is_main():  # DDP rank > 0: it joined the evaluation's fits; rank 0 writes
        logger_factories.close(final["loggers"], ok=True)
        return {}

    # 6. results: one file, written last and atomically, so its presence means the run completed
    ctx, run_loggers = final["ctx"], final["loggers"]
    try:
        results = {
            "metrics": final["metrics"],
            "seconds": {**final["seconds"], "total": time.perf_counter() - started},
            "stages": final["stages"],
            "threads": torch.get_num_threads(),  # CPU threads of this process (the `threads` option)
            "tuning": cfg.get("tuning"),  # "gold-tuned": hyperparameters chosen against gold (hparams_search)
            "sizes": {s: len(ids) for s, ids in ctx.data.ids.items()},
            **({"requests": [_request_record(r) for r in served]} if n > 1 else {}),
            "config": OmegaConf.to_container(cfg, resolve=True),
            "versions": _versions(),
        }
        logits = {"logits": ctx.computed_logits(), "labels": {s: ctx.data.tensors(s)[1] for s in ctx.data.ids},
                  "ids": dict(ctx.data.ids)}
        atomic_write(out / "logits.pt", lambda f: torch.save(logits, f))
        if cfg.save_unlearned:
            state = {k: v.detach().cpu() for k, v in ctx.models["unlearn"].state_dict().items()}
            atomic_write(out / "unlearned.pt", lambda f: torch.save(state, f))
        logger_factories.log_results(run_loggers, results, out)
    except BaseException:
        logger_factories.close(run_loggers, ok=False)
        raise
    logger_factories.close(run_loggers, ok=True)
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    for k, request in enumerate(served):
        if n > 1:
            print(f"request {k + 1} of {n}: forgets {request['sizes']['forget']} samples "
                  f"({request['sizes']['forgotten']} forgotten by earlier requests)")
        print(summary_table(request))
    log.info("results in %s", out / "results.json")
    return results


def serve(cfg: DictConfig, data: UnlearningDataModule, cache: StageCache,
          original: tuple[torch.nn.Module, dict[str, Any], float], start: torch.nn.Module, label: str, last: bool
          ) -> dict[str, Any] | None:
    """One forget request: its gold model, M_u unlearned from ``start``, and the evaluation of the three models.

    Returns ``{metrics, seconds, stages, sizes, ctx, loggers}``; the unlearn-stage ``loggers`` have the metrics and
    stay open on the ``last`` request (the run logs its extras there), closed otherwise. None on a DDP rank that
    left the process group before evaluating.
    """
    models, stages, seconds = {}, {}, {}
    models["original"], stages["original"], seconds["original"] = original
    models["gold"], stages["gold"], seconds["gold"] = trained_model(cfg, data, cache, "gold", cfg.seed, label)
    run_loggers = _loggers(cfg, f"unlearn{label}")
    try:
        # M_u: the method sees D_f and D_r, never M_g
        models["unlearn"], stages["unlearn"], seconds["unlearn"] = unlearned_model(
            cfg, data, start, cfg.unlearn_seed, run_loggers)

        # logits once per (model, split), every metric derived from them
        t0 = time.perf_counter()
        ctx = EvalContext(
            models=models, data=data, stages=stages, seconds=seconds, cfg=cfg.metric,
            gold=lambda seed: trained_model(cfg, data, cache, "gold", seed, label)[0],
            unlearned=lambda seed: unlearned_model(cfg, data, start, seed, [])[0],
            fresh_model=lambda seed: _build_model(cfg, seed),
        )
        if not distributed.join_evaluation(cfg.metric, more_to_train=not last):
            logger_factories.close(run_loggers, ok=True)
            return None
        metrics = evaluate(ctx)
        metrics.update(hpo.val_metrics(ctx, cfg.get("objective")))
        seconds["evaluate"] = time.perf_counter() - t0
        for logger in run_loggers:
            logger.log_metrics({**metrics, **{f"seconds/{k}": v for k, v in seconds.items()}},
                               step=stages["unlearn"]["steps"])
    except BaseException:
        logger_factories.close(run_loggers, ok=False)
        raise
    if not last:
        logger_factories.close(run_loggers, ok=True)
    return {"metrics": metrics, "seconds": seconds, "stages": stages,
            "sizes": {s: len(ids) for s, ids in data.ids.items()}, "ctx": ctx, "loggers": run_loggers}


def trained_model(cfg: DictConfig, data: UnlearningDataModule, cache: StageCache, stage: str, seed: int,
                  label: str = "") -> tuple[torch.nn.Module, dict[str, Any], float]:
    """The original (``stage="original"``, on D) or gold (``"gold"``, on D_r) model for ``seed``.

    Looked up in the stage cache under a key of exactly what determines it; trained and stored on a miss.
    ``label`` tells the request's training logs apart (``_request2``). Returns ``(model, facts, seconds)``.
    """
    split = STAGE_SPLIT[stage]
    key = cache_key({"stage": stage, "data": data.fingerprint(split), "seed": seed,
                     "model": OmegaConf.to_container(cfg.model, resolve=True),
                     "train": OmegaConf.to_container(cfg.train, resolve=True),
                     "augment": OmegaConf.to_container(cfg.dataset, resolve=True).get("augment"),
                     "precision": str(cfg.trainer.precision), **distributed.key_extra()})
    t0 = time.perf_counter()
    state, meta, hit = distributed.get_or_train(cache, stage, key, lambda: _train(cfg, data, stage, seed, label))
    seconds = time.perf_counter() - t0
    model = _build_model(cfg)
    model.load_state_dict(state)
    log.info("%-8s %s (seed %d, key %s) in %.2f s", stage,
             "loaded from the stage cache" if hit else f"trained on {split} ({len(data.ids[split])} samples)",
             seed, key, seconds)
    return model, {"cache_key": key, "cache_hit": hit, "seed": seed, **meta}, seconds


def unlearned_model(cfg: DictConfig, data: UnlearningDataModule, start: torch.nn.Module, seed: int,
                    loggers: list) -> tuple[torch.nn.Module, dict[str, Any], float]:
    """M_u from a copy of ``start`` (M, or the previous request's M_u) by the configured unlearner, with unlearning
    seed ``seed``: ``(model, facts, s)``."""
    L.seed_everything(seed, workers=True, verbose=False)
    net = _build_model(cfg)
    net.load_state_dict(start.state_dict())
    unlearner: Unlearner = instantiate(cfg.unlearner, model=net)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if any(hasattr(c, "every_n_steps") for c in callbacks):
        unlearner.steps_per_batch = 1  # a callback with a step cadence must see every step
    t0 = time.perf_counter()
    unlearner.unlearn(data, lambda epochs: _trainer(cfg, epochs, loggers, callbacks), seed=seed)
    monitoring = sum(getattr(c, "seconds", 0.0) for c in callbacks)  # trajectory logging is not unlearning work
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
    return unlearner.model, facts, seconds


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


def _instantiate(node: Any) -> Any:
    """Hydra's ``instantiate``; a ConfigError raised by the target comes out as itself, not wrapped by Hydra."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise


def _request_record(request: dict[str, Any]) -> dict[str, Any]:
    return {k: request[k] for k in ("sizes", "metrics", "seconds", "stages")}


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
    stage_loggers = _loggers(cfg, stage + label + ("" if seed == cfg.seed else f"_seed{seed}"))  # extra gold seeds
    batches = data.batches(split, module.batch_size, shuffle=True, seed=seed, augment=True)
    t0 = time.perf_counter()
    try:
        _trainer(cfg, module.epochs, stage_loggers).fit(module, train_dataloaders=module.chunks(batches))
    finally:
        logger_factories.close(stage_loggers, ok=not module.diverged)
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


def _loggers(cfg: DictConfig, stage: str) -> list:
    return [instantiate(entry)(stage=stage) for entry in (cfg.logger or {}).values() if entry]


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _quiet_lightning() -> None:
    """Drop Lightning's per-Trainer banners (GPU/TPU availability, tips) and the LeafSpec FutureWarning."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
