"""One unlearning experiment, top to bottom: forget request → original → gold → unlearn → evaluate → results."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.seed import isolate_rng
from omegaconf import DictConfig, OmegaConf

from mu_lightning.cache import StageCache, cache_key
from mu_lightning.callbacks import configured
from mu_lightning.callbacks.monitor import StageMonitor
from mu_lightning.callbacks.progress import StageProgressBar
from mu_lightning.data import UnlearningDataModule
from mu_lightning.data.batches import training_device
from mu_lightning.ensembles import Ensembles, Scores, with_scores
from mu_lightning.errors import ConfigError, RunFault
from mu_lightning.files import set_aside_previous
from mu_lightning.metrics import EvalContext, evaluate
from mu_lightning.metrics.warnings import run_warnings, unchanged_warning
from mu_lightning.outputs import (
    RequestResult,
    StageResult,
    collect_results,
    log_budget,
    protocol_choice,
    save_outputs,
    write_forget_ids,
    write_results,
)
from mu_lightning.runtime import debug, distributed
from mu_lightning.runtime.checks import check_config, check_data, check_poison
from mu_lightning.runtime.threads import apply_threads
from mu_lightning.stages import ClassifierModule
from mu_lightning.stages.base import flop_limit
from mu_lightning.stages.classifier import resumable
from mu_lightning.stages.timing import calibration, gold_timing
from mu_lightning.tracking import loggers as logger_factories
from mu_lightning.tracking.naming import stage_run
from mu_lightning.tracking.trajectory import with_trajectory
from mu_lightning.unlearners import Unlearner
from mu_lightning.weights import load_weights, model_key

log = logging.getLogger(__name__)

STAGE_SPLIT = {"original": "train", "gold": "retain", "clean": "clean"}  # the set each trained stage learns from
# trainer settings that only change what is shown or where files go, never the weights: left out of cache keys
TRAINER_NOT_IN_KEY = ("enable_progress_bar", "enable_model_summary", "enable_checkpointing", "log_every_n_steps",
                      "logger", "default_root_dir", "profiler", "barebones")


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Run one experiment and write ``results.json`` into ``cfg.paths.output_dir``; returns the results, or None on a
    DDP rank > 0 (it trains, and evaluates where that trains models, with rank 0, which alone writes)."""
    started = time.perf_counter()
    start_up(cfg)

    # 1. data and the forget request (or several, served in turn: forget=sequential)
    data = build_data(cfg)
    write_forget_ids(cfg, data)

    # 2. original M on D, looked up in the stage cache first
    cache = StageCache(cfg.paths.cache_dir, enabled=cfg.cache, shapes=_shapes(cfg))
    original = trained_model(cfg, data, cache, "original", cfg.seed)
    references = {"original": original, **clean_model(cfg, data, cache)}  # + the clean model when poison=...

    # 3-5. each request in turn: its gold M_g (same recipe and seed, on what is left), M_u from the model the previous
    # request left (M for the first), evaluation against this request's gold
    served, start, n = [], original.model, len(data.requests)
    for k in range(n):
        view, label, last = data.request(k), request_label(k, n), k == n - 1
        gold = trained_model(cfg, view, cache, "gold", cfg.seed, label)
        gold.facts["timing"] = gold_timing(gold.facts, lambda v=view: time_gold_recipe(cfg, v, cfg.seed))
        with stage_loggers(cfg, f"unlearn{label}", cfg.seed) as loggers:  # M_u's training, the request's metrics
            # the unlearner sees D_f and D_r, never M_g; the stage's monitors get M_g as a reference line
            unlearned = unlearned_model(cfg, view, start, cfg.unlearn_seed, loggers, f"unlearn{label}", gold.model,
                                        gold.facts.get("flops"))
            stages = {**references, "gold": gold, "unlearn": unlearned}
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
    debug.apply_epochs(cfg)  # debug.epochs: before the checks, so they see the epochs that will run
    check_config(cfg)
    apply_threads(cfg)  # one thread for small training steps, else the cores shared (threads.py)
    distributed.launch(cfg)
    if distributed.is_main() and (moved := set_aside_previous(cfg.paths.output_dir)):
        log.warning("%s held an earlier run's outputs: moved them to %s", cfg.paths.output_dir, moved)


def build_data(cfg: DictConfig) -> UnlearningDataModule:
    """The dataset split into train / val / test, the training-set manipulation (``poison``) applied, and the forget
    request(s) drawn from train, checked against the config, the unlearner and the model."""
    poison = _instantiate(cfg.get("poison"))
    check_poison(cfg, poison)
    source = debug.limited(_instantiate(cfg.dataset.source), cfg)
    make = lambda forget: UnlearningDataModule(  # noqa: E731 - forget=memorized scores D split as this run splits it
        source=source, forget=forget,
        test_fraction=cfg.dataset.test_fraction, val_fraction=cfg.dataset.val_fraction,
        split_seed=cfg.dataset.split_seed, augment=_instantiate(cfg.dataset.get("augment")), poison=poison,
        classwise_test=cfg.metric.get("classwise_test", "keep"),
    )
    data = make(with_scores(_instantiate(cfg.forget), Scores(cfg, make, lambda: run_ensembles(cfg, StageCache(
        cfg.paths.cache_dir, enabled=cfg.cache, shapes=_shapes(cfg))))))
    data.setup()
    check_data(cfg, data)
    if OmegaConf.select(cfg, "data_path.on_device", default=False):  # trainer=gpu: held on the device once
        data.hold_on(training_device(cfg.trainer), OmegaConf.select(cfg, "data_path.channels_last", default=False))
    return data


def request_label(k: int, n: int) -> str:
    """What tells request ``k`` (from 0) of ``n`` apart in stage names: ``_request2``; empty for a single request."""
    return f"_request{k + 1}" if n > 1 else ""


def stage_loggers(cfg: DictConfig, stage: str, seed: int, key: str | None = None):
    """The configured loggers for one stage (named, configured and tagged by ``naming.stage_run``), as a context
    manager: closed as failed if the block raises."""
    run = stage_run(cfg, stage, seed, key, protocol_choice())  # + the trajectory file, whatever the loggers
    return logger_factories.opened(with_trajectory([instantiate(entry)(run=run) for entry in (cfg.logger or {}).values()
                                                    if entry], cfg.paths.output_dir, stage))


def stage_key(cfg: DictConfig, data: UnlearningDataModule, stage: str, seed: int) -> str:
    """The stage-cache key of the original or gold model: a hash of exactly what determines its weights."""
    poison = data.poison.fingerprint() if data.poison is not None else {}  # {} for poison=none: the key it had
    return cache_key({"stage": stage, "data": data.fingerprint(STAGE_SPLIT[stage]), "seed": seed,
                      **({"poison": poison} if poison else {}),
                      "model": model_key(OmegaConf.to_container(cfg.model, resolve=True)),
                      "train": {k: v for k, v in OmegaConf.to_container(cfg.train, resolve=True).items()
                                if k != "checkpoint_every"},  # when to checkpoint never changes the weights
                      "augment": OmegaConf.to_container(cfg.dataset, resolve=True).get("augment"),
                      "trainer": trainer_key(cfg), **distributed.key_extra(),
                      **({"callbacks": part} if (part := configured.key_part(cfg, stage)) else {})})


def trainer_key(cfg: DictConfig) -> dict[str, Any]:
    """The trainer settings that can change the weights: all of ``cfg.trainer`` but ``TRAINER_NOT_IN_KEY``."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    return {k: v for k, v in kwargs.items() if k not in TRAINER_NOT_IN_KEY}


def clean_model(cfg: DictConfig, data: UnlearningDataModule, cache: StageCache) -> dict[str, StageResult]:
    """``{"clean": M_clean}`` when a manipulation changed the training set (``poison=...``): the reference of
    corrective unlearning, trained like M on D without any manipulated sample (split ``clean``); ``{}`` otherwise."""
    return {"clean": trained_model(cfg, data, cache, "clean", cfg.seed)} if "clean" in data.ids else {}


def trained_model(cfg: DictConfig, data: UnlearningDataModule, cache: StageCache, stage: str, seed: int,
                  label: str = "") -> StageResult:
    """The original (``stage="original"``, on D), gold (``"gold"``, on D_r) or clean (``"clean"``, on D without the
    manipulated samples) model for ``seed``.

    Looked up in the stage cache under ``stage_key``; trained and stored on a miss. ``label`` tells the request's
    training logs apart (``_request2``). ``original.checkpoint`` or ``gold.checkpoint`` replaces the stage of seed
    ``cfg.seed`` by the given weights (``checkpoint_stage``)."""
    if seed == cfg.seed and OmegaConf.select(cfg, f"{stage}.checkpoint"):
        return checkpoint_stage(cfg, stage)
    split, key = STAGE_SPLIT[stage], stage_key(cfg, data, stage, seed)
    t0 = time.perf_counter()
    state, meta, hit = distributed.get_or_train(cache, stage, key, lambda: _train(cfg, data, stage, seed, label, key,
                                                                                  cache.work_dir(stage, key)))
    seconds = time.perf_counter() - t0
    model = _build_model(cfg)
    model.load_state_dict(state)
    log.info("%-8s %s (seed %d, key %s) in %.2f s", stage,
             "loaded from the stage cache" if hit else f"trained on {split} ({len(data.ids[split])} samples)",
             seed, key, seconds)
    overhead = seconds - (0.0 if hit else meta.get("fit_seconds") or 0.0)  # loading, or loggers, Trainer, counting
    return StageResult(model, {"cache_key": key, "cache_hit": hit, "seed": seed, **meta,
                               "overhead_seconds": overhead}, seconds)


def time_gold_recipe(cfg: DictConfig, data: UnlearningDataModule, seed: int) -> dict[str, Any]:
    """``calibration`` of the gold recipe of ``seed`` on this request's D_r, on this machine now."""
    module: ClassifierModule = instantiate(cfg.train, model=_build_model(cfg, seed))
    batches = data.batches("retain", module.batch_size, shuffle=True, seed=seed, augment=True)
    return calibration(module, batches, lambda epochs, **limits: _trainer(cfg, epochs, [], **limits))


def checkpoint_stage(cfg: DictConfig, stage: str) -> StageResult:
    """The ``original``, ``gold`` or ``unlearn`` stage as weights made elsewhere (``<stage>.checkpoint``, for
    ``unlearn`` ``unlearned.checkpoint``): nothing trained, its training time and steps unknown (None). Its key is a
    hash of the file's SHA-256; results.json records the path and digest (docs/checkpoints.md)."""
    option = f"{'unlearned' if stage == 'unlearn' else stage}.checkpoint"
    path, t0 = OmegaConf.select(cfg, option), time.perf_counter()
    model = _build_model(cfg)
    digest = load_weights(model, path, option)
    key = cache_key({"stage": stage, "checkpoint_sha256": digest})
    facts = {"source": "checkpoint", "checkpoint": str(path), "sha256": digest, "cache_key": key, "cache_hit": False,
             "seed": cfg.unlearn_seed if stage == "unlearn" else cfg.seed, "fit_seconds": None, "steps": None,
             "note": "made elsewhere: its training seconds and steps are unknown (null), and so are the metrics "
                     "derived from them"}
    if stage == "gold":
        facts["trained_on"] = "retain only, as declared by whoever gives gold.checkpoint (the run cannot check it)"
    log.info("%-8s loaded from %s (sha256 %s)", stage, path, digest[:20])
    return StageResult(model, facts, None if stage == "unlearn" else time.perf_counter() - t0)


def unlearned_model(cfg: DictConfig, data: UnlearningDataModule, start: torch.nn.Module, seed: int,
                    loggers: list, stage: str = "unlearn", gold: torch.nn.Module | None = None,
                    gold_flops: int | None = None) -> StageResult:
    """M_u from a copy of ``start`` (M, or the previous request's M_u) by the configured unlearner, with unlearning
    seed ``seed``; the stage's monitors (``StageMonitor`` callbacks) watch it, measuring ``gold`` as their reference,
    and their time is not its time. ``budget.flops`` limits its FLOPs to that fraction of ``gold_flops``, the gold
    model's training FLOPs (``Stage``, "Budget"; its ``budget`` fact).
    ``unlearned.checkpoint`` replaces it by the given weights (eval.py: ``checkpoint_stage``)."""
    if OmegaConf.select(cfg, "unlearned.checkpoint"):
        return checkpoint_stage(cfg, "unlearn")
    L.seed_everything(seed, workers=True, verbose=False)
    net = _build_model(cfg)
    net.load_state_dict(start.state_dict())
    unlearner: Unlearner = instantiate(cfg.unlearner, model=net)
    if unlearner.needs_initial_weights:  # M's own start, drawn again from its seed (EU-k); the RNG left as it was
        with isolate_rng():
            unlearner.initial_weights = _build_model(cfg, cfg.seed).state_dict()
    callbacks, monitors = stage_callbacks(cfg, stage, unlearner, data, gold)
    fraction = OmegaConf.select(cfg, "budget.flops")  # None: no budget (or a config from before budgets)
    limit = None if fraction is None else flop_limit(fraction, gold_flops)
    facts, seconds = unlearner.run(data, lambda epochs: _trainer(cfg, epochs, loggers, callbacks, stage), seed,
                                   monitors, limit)
    facts["warnings"] = [*unlearner.warnings,
                         *(unchanged_warning(facts["method"], start, unlearner.model) if unlearner.reads else [])]
    if limit is not None:
        facts["budget"] = unlearner.budget_facts(fraction, gold_flops)
        log_budget(facts)
    teacher = getattr(unlearner, "incompetent_teacher", None)  # Bad Teacher's: ZRF's random model in compat mode
    return StageResult(unlearner.model, facts, seconds, {"incompetent_teacher": teacher} if teacher is not None else {})


def stage_callbacks(cfg: DictConfig, stage: str, module, data: UnlearningDataModule,
                    gold: torch.nn.Module | None = None) -> tuple[list, list[StageMonitor]]:
    """The callbacks of ``stage`` (``callbacks.<name>.stages``) and the monitors among them, attached to ``data`` and
    ``gold``; a monitor with a step cadence makes ``module`` step once per Lightning batch, so it sees every step."""
    callbacks = configured.for_stage(cfg, stage)
    monitors = [c for c in callbacks if isinstance(c, StageMonitor)]
    for monitor in monitors:
        monitor.attach(data, gold)
    if any(m.step_cadence for m in monitors):
        module.steps_per_batch = 1
    return callbacks, monitors


def evaluated(cfg: DictConfig, data: UnlearningDataModule, cache: StageCache, label: str, start: torch.nn.Module,
              stages: dict[str, StageResult], loggers: list, more_to_train: bool) -> RequestResult | None:
    """The evaluation of the three ``stages`` of one request, logged to its unlearn-stage ``loggers``.

    Logits once per (model, split), every metric derived from them; tiers that need more gold or unlearned seeds get
    them like the stages did (gold of this request's ``label``, M_u from ``start``). None on a DDP rank that left the
    process group before evaluating (``distributed.join_evaluation``)."""
    t0 = time.perf_counter()
    seconds = {name: stage.seconds for name, stage in stages.items()}
    ctx = EvalContext(
        models={**{k: m for stage in stages.values() for k, m in stage.references.items()},
                **{name: stage.model for name, stage in stages.items()}}, data=data,
        stages={name: stage.facts for name, stage in stages.items()}, seconds=seconds, cfg=cfg.metric,
        gold=lambda seed: trained_model(cfg, data, cache, "gold", seed, label).model,
        unlearned=lambda seed: unlearned_model(cfg, data, start, seed, [],
                                               gold_flops=stages["gold"].facts.get("flops")).model,
        fresh_model=lambda seed: _build_model(cfg, seed),
        ensembles=run_ensembles(cfg, cache, stages["gold"].facts.get("flops")),
    )
    if not distributed.join_evaluation(cfg.metric, more_to_train=more_to_train):
        return None
    metrics = evaluate(ctx, cfg.get("objective"))
    seconds["evaluate"] = time.perf_counter() - t0
    logged = {**metrics, **{f"seconds/{k}": v for k, v in seconds.items()}}
    # an unknown (None) number is not logged: a model made elsewhere
    logger_factories.log_final(loggers, {k: v for k, v in logged.items() if v is not None},
                               step=ctx.stages["unlearn"]["steps"] or 0)
    warned = [f"{label.lstrip('_')}: {w}" if label else w for w in run_warnings(ctx, metrics)]
    for warning in warned:
        log.warning("warning  %s", warning)
    return RequestResult(metrics, seconds, ctx.stages, {s: len(ids) for s, ids in data.ids.items()}, ctx, warned)


def run_ensembles(cfg: DictConfig, cache: StageCache, gold_flops: int | None = None) -> Ensembles:
    """Ensembles of this recipe (``ensembles.py``): members keyed and trained as stages alone are, unlearned as M is."""
    return Ensembles(cfg, cache, lambda d, stage, seed: stage_key(cfg, d, stage, seed),
                     lambda d, stage, seed, key: _train(cfg, d, stage, seed, "", key, cache.work_dir(stage, key)),
                     lambda seed: _build_model(cfg, seed),
                     lambda d, start, seed: unlearned_model(cfg, d, start, seed, [], gold_flops=gold_flops).model)


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


def _shapes(cfg: DictConfig) -> dict[str, tuple]:
    """The configured model's parameter names and shapes (what a cached state dict must have), from a model built on
    the meta device (no memory, no random draw, no checkpoint read), or on the CPU when its code cannot run there."""
    try:
        with torch.device("meta"):
            model = instantiate(cfg.model)
    except Exception:  # noqa: BLE001 - a model of your own whose __init__ computes with its tensors
        model = instantiate(cfg.model)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _build_model(cfg: DictConfig, seed: int | None = None) -> torch.nn.Module:
    if seed is not None:
        L.seed_everything(seed, workers=True, verbose=False)
    model = instantiate(cfg.model)  # channels-last: trainer=gpu (conf/trainer/gpu.yaml, data_path)
    return model.to(memory_format=torch.channels_last) if OmegaConf.select(cfg, "data_path.channels_last") else model


def _train(cfg: DictConfig, data: UnlearningDataModule, stage: str, seed: int, label: str, key: str,
           work: Path | None = None) -> tuple[dict, dict]:
    """Train the original or gold model from the initialisation drawn with ``seed``; with ``train.checkpoint_every``
    it checkpoints into ``work`` (the cache entry's work area) and resumes from the checkpoint a killed run left."""
    split = STAGE_SPLIT[stage]
    module: ClassifierModule = instantiate(cfg.train, model=_build_model(cfg, seed))
    name = stage + label + ("" if seed == cfg.seed else f"_seed{seed}")  # gold seeds
    with stage_loggers(cfg, name, seed, key) as loggers:
        batches = data.batches(split, module.batch_size, shuffle=True, seed=seed, augment=True)
        callbacks, resume_from = resumable(module, work)
        watching, monitors = stage_callbacks(cfg, name, module, data)
        callbacks = [*callbacks, *watching]
        module.clock.exclude(monitors)
        if resume_from:
            log.info("%-8s resuming from %s", stage, resume_from)
        _trainer(cfg, module.epochs, loggers, callbacks, name).fit(module, train_dataloaders=module.chunks(batches),
                                                                   ckpt_path=resume_from, weights_only=True)
        if module.diverged:
            raise RunFault(f"training the {stage} model diverged at step {module.diverged_step} (a non-finite "
                           f"loss): lower train.optimizer.lr (now {cfg.train.optimizer.get('lr')}) or set "
                           "train.grad_clip; nothing was stored for it")
    meta = {"fit_seconds": module.clock.seconds, "steps": module.steps_taken, "samples": len(data.ids[split])}
    meta.update(module.cost())  # FLOPs, gradient evaluations and the hardware fit_seconds was measured on
    return {k: v.detach().cpu() for k, v in module.model.state_dict().items()}, meta


def _trainer(cfg: DictConfig, max_epochs: int, loggers: list, callbacks: list = (), stage: str = "",
             **limits) -> L.Trainer:
    """A fresh Trainer per stage (re-using one carries state across fits: Lightning #9636); its progress bar names
    ``stage``; ``limits``: more Trainer arguments (``max_steps``, ``max_time``)."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    callbacks = list(callbacks)
    if any(isinstance(c, Checkpoint) for c in callbacks):  # Lightning refuses a Checkpoint callback otherwise
        kwargs["enable_checkpointing"] = True
    if kwargs.get("enable_progress_bar") is None:  # a bar when someone watches; none in logs, sweeps and CI
        kwargs["enable_progress_bar"] = sys.stderr.isatty()
        if kwargs["enable_progress_bar"]:
            callbacks.append(StageProgressBar(stage, refresh_rate=10))
    log.debug("%-8s Trainer(%s, max_epochs=%d, callbacks=%s, %s)", stage or "timing", kwargs, max_epochs,
              [type(c).__name__ for c in callbacks], limits or "no limits")
    return L.Trainer(**kwargs, max_epochs=max_epochs, logger=loggers or False, callbacks=callbacks,
                     default_root_dir=cfg.paths.output_dir, **limits)


