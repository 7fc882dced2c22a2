"""Logger factories, one per ``conf/logger/*.yaml`` entry; the pipeline calls each once per stage with its ``StageRun``.

Stages are separate logger runs (CSV/TensorBoard ``version``, a W&B run with ``job_type``) grouped by sweep, because
each stage has its own step axis and a cache hit skips a stage's training entirely: prefixes in one run would
interleave two step counters and leave holes. The ``unlearn`` run also carries the final metrics of all three models
(``log_final``: W&B's run summary, TensorBoard's hparams, a CSV row).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from mu_lightning.metrics.names import CLEAN
from mu_lightning.metrics.names import MODELS as METRIC_MODELS

log = logging.getLogger(__name__)
T = TypeVar("T")
MODELS = (*METRIC_MODELS, CLEAN)  # rows of the final_metrics table (clean: with poison=...)
CHOICES = ("dataset", "model", "forget", "unlearner")  # the config groups that become tags and the W&B name
# the config sections each stage's run records: its own inputs only (original and gold never record the unlearner)
SECTIONS = {"original": ("dataset", "model", "train", "trainer"),
            "gold": ("dataset", "model", "forget", "poison", "train", "trainer"),
            "clean": ("dataset", "model", "poison", "train", "trainer"),
            "unlearn": ("dataset", "model", "forget", "poison", "unlearner", "train", "metric", "trainer",
                        "callbacks")}


@dataclass(frozen=True)
class StageRun:
    """What one stage's logger run is: ``stage`` (``gold``, ``unlearn_request2``, ``gold_seed1``), its display
    ``name``, its own ``config`` (plain values) and ``tags``."""

    stage: str
    name: str
    config: dict
    tags: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``original``, ``gold`` or ``unlearn``: the stage without its request or seed suffix."""
        return self.stage.split("_")[0]


def stage_run(cfg: DictConfig, stage: str, seed: int, key: str | None = None,
              protocol: str | None = None) -> StageRun:
    """The ``StageRun`` of ``stage``: original and gold named by what they are (``original-digits-mlp-s0-314e628f``:
    dataset, model, forget setting for gold, seed, cache key), the unlearning stage by its method and seed
    (``finetune-s0``, plus the ``unlearner.*`` overrides of a sweep job: ``finetune-s0-lr=0.01``). Tags: the config
    choices the stage depends on (``dataset:digits``, ...; ``protocol:<file>`` for the unlearning stage when a
    ``conf/protocol/`` file applied) and ``cfg.tags``."""
    kind = stage.split("_")[0]
    choices = config_choices(cfg)
    used = [c for c in CHOICES if c in SECTIONS[kind]]
    tags = [f"{c}:{choices[c]}" for c in used if choices.get(c)]
    if kind == "unlearn" and protocol:  # the conf/protocol/ file applied over unlearner:, if any
        tags.append(f"protocol:{protocol}")
    config = {"stage": stage, "task_name": cfg.get("task_name"), "seed": seed, "tags": list(cfg.get("tags") or ()),
              "choices": {c: choices.get(c) for c in used},
              **{k: _plain(cfg.get(k)) for k in SECTIONS[kind] if k in cfg}}
    if kind == "unlearn":
        config["unlearn_seed"] = cfg.get("unlearn_seed")
        method = [f"{choices.get('unlearner')}-s{cfg.seed}", *swept_options("unlearner.")]
        name = "-".join(method) + stage[len("unlearn"):]  # + _request2
    else:
        config["cache_key"] = key
        setting = [choices.get("dataset"), choices.get("model"), *([choices.get("forget")] if kind == "gold" else [])]
        name = "-".join(str(part) for part in [stage, *setting, f"s{seed}", (key or "")[:8]] if part)
    return StageRun(stage, name, config, tuple(dict.fromkeys([*tags, *map(str, cfg.get("tags") or ())])))


def config_choices(cfg: DictConfig) -> dict[str, str]:
    """The options chosen for ``CHOICES``: Hydra's record of them; without Hydra, the targets' class names."""
    from hydra.core.hydra_config import HydraConfig

    recorded = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    found = {c: recorded.get(c) or _target_name(cfg.get(c)) for c in CHOICES}
    found["dataset"] = recorded.get("dataset") or OmegaConf.select(cfg, "dataset.name")
    return found


def swept_options(prefix: str) -> list[str]:
    """``key=value`` for each command-line override under ``prefix`` (``unlearner.lr=0.01`` gives ``lr=0.01``): the
    hyperparameters a sweep job sets; empty without Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [o.lstrip("+~")[len(prefix):] for o in HydraConfig.get().overrides.task if o.lstrip("+~").startswith(prefix)]


def sweep_group(path: str | Path) -> str:
    """The W&B group of a run or sweep directory: its last two parts (``<date>/<time>``)."""
    return "/".join(Path(path).resolve().parts[-2:])


def default_group(save_dir: str) -> str:
    """The sweep's group for a sweep job (all its jobs and stages side by side), else the run's."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return sweep_group(HydraConfig.get().sweep.dir)
    return sweep_group(save_dir)


def run_title(cfg: DictConfig) -> str:
    """The method, forget setting and seeds of a run, for the title of its result table:
    ``finetune on digits/mlp, forget random(fraction=0.1), seed 0``."""
    choices = config_choices(cfg)
    forget = {k: v for k, v in (_plain(cfg.get("forget")) or {}).items()
              if not str(k).startswith("_") and not str(k).endswith("seed") and v is not None}
    seeds = f"seed {cfg.seed}" + ("" if cfg.get("unlearn_seed", cfg.seed) == cfg.seed else
                                  f", unlearn_seed {cfg.unlearn_seed}")
    given = OmegaConf.select(cfg, "unlearned.checkpoint")  # eval.py: M_u was made elsewhere
    method = f"unlearned.checkpoint={given}" if given else choices.get("unlearner")
    return (f"{method} on {choices.get('dataset')}/{choices.get('model')}, forget "
            f"{choices.get('forget')}({','.join(f'{k}={v}' for k, v in forget.items())}), {seeds}")


def to_log_files(text: str) -> None:
    """``text`` as one INFO line in the log files of the root logger (Hydra's ``train.log``) and nowhere else: for
    what the console shows already (the result table is printed)."""
    record = logging.LogRecord(log.name, logging.INFO, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _target_name(node: Any) -> str | None:
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    return target.rsplit(".", 1)[-1] if target else None


def csv_logger(run: StageRun, save_dir: str, name: str = "csv") -> CSVLogger:
    """``<save_dir>/<name>/<stage>/metrics.csv``, and the stage's config in ``hparams.yaml`` beside it."""
    logger = CSVLogger(save_dir=save_dir, name=name, version=run.stage)
    logger.log_hyperparams(run.config)
    return logger


class _StageTensorBoard(TensorBoardLogger):
    """Stays open when the Trainer finalizes it: the unlearn stage's final metrics are written after ``fit``, and
    tensorboardX names a reopened event file by the whole second, so a reopen within the same second truncated the
    stage's training curve. ``close`` below closes it."""

    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self.experiment.flush()
        if status == "success":
            self.save()


def tensorboard_logger(run: StageRun, save_dir: str, name: str = "tensorboard") -> TensorBoardLogger:
    """``<save_dir>/<name>/<stage>/events.out.tfevents.*``, with the stage's config as text (``config``) and as
    hyperparameters (``hparams.yaml``; ``log_final`` adds the final metrics, which fills the HParams tab).

    Lightning writes through tensorboardX when TensorBoard itself is not installed (tensorboardX is the lighter
    dependency: no grpcio, werkzeug or markdown)."""
    logger = _StageTensorBoard(save_dir=save_dir, name=name, version=run.stage, default_hp_metric=False)
    logger.log_hyperparams(run.config)  # no metrics yet: stored for hparams.yaml, nothing written
    text = OmegaConf.to_yaml(OmegaConf.create(run.config))
    logger.experiment.add_text("config", "".join(f"    {line}\n" for line in text.splitlines()), 0)
    return logger


def wandb_logger(run: StageRun, save_dir: str, project: str, group: str | None = None, mode: str | None = None,
                 init_timeout: float = 15.0, log_checkpoints: bool = False) -> Logger:
    """A W&B run per stage: ``job_type`` = the stage, ``group`` = the sweep (or the single run), name, config and
    tags from ``run``. Offline unless ``mode`` or ``WANDB_MODE`` says so.

    ``group`` defaults to ``default_group``. Online mode with an API key and no network makes the client wait
    ~100 s (docs/design.md, "W&B"); here init is bounded by ``init_timeout`` and falls back to offline with a
    warning, so a run never hangs on the network. ``log_checkpoints`` is acted on at the end of the run, by
    ``log_results`` (see ``checkpoint_artifact``).
    """
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    os.makedirs(save_dir, exist_ok=True)
    group = group or default_group(save_dir)

    def make(m: str) -> WandbLogger:
        logger = WandbLogger(project=project, group=group, name=run.name, job_type=run.stage, tags=list(run.tags),
                             save_dir=save_dir, mode=m, reinit="finish_previous", config=run.config,
                             settings=wandb.Settings(init_timeout=init_timeout, silent=True))
        # Lightning passes anonymous=None to wandb.init, and any value, None included, makes wandb warn "The
        # anonymous setting has no effect"; leaving the key out is wandb's own default
        logger._wandb_init.pop("anonymous", None)
        if m == "online":
            logger.experiment  # noqa: B018 - starts the run now, so a network failure shows here
        return logger

    return _bounded(make, mode)


def _bounded(start: Callable[[str], T], mode: str) -> T:
    """``start(mode)``; online, a failure (no network: init gave up after its ``init_timeout``) falls back to
    ``start("offline")`` with a warning."""
    if mode != "online":
        return start(mode)
    try:
        return start(mode)
    except Exception as err:  # wandb raises several types for "no network"
        log.warning("W&B online init failed (%s); logging offline instead (sync later with `wandb sync`)", err)
        return start("offline")


def upload_summary(sweep_dir: str | Path, project: str, group: str | None = None, mode: str | None = None,
                   init_timeout: float = 15.0) -> Path:
    """A sweep's ``summary.csv`` (as a table) and PNG figures (as images) as one W&B run of its own, with those files
    and ``summary.md`` as a ``sweep-summary`` artifact: ``job_type="summary"``, ``group`` = the sweep's
    (``sweep_group``), so it sits beside the sweep's stage runs.
    Offline unless ``mode`` or ``WANDB_MODE`` says online (then bounded by ``init_timeout``, as ``wandb_logger``);
    the run is written under ``<sweep_dir>/wandb/``, whose directory is returned."""
    import wandb

    out, mode = Path(sweep_dir), mode or os.environ.get("WANDB_MODE") or "offline"

    def start(m: str) -> Any:
        return wandb.init(project=project, group=group or sweep_group(out), job_type="summary",
                          name=f"summary-{sweep_group(out)}", dir=str(out), mode=m, reinit="finish_previous",
                          settings=wandb.Settings(init_timeout=init_timeout, silent=True))

    run = _bounded(start, mode)
    try:
        media: dict[str, Any] = {f"figures/{png.stem}": wandb.Image(str(png)) for png in sorted(out.glob("*.png"))}
        if (out / "summary.csv").exists():
            with (out / "summary.csv").open(newline="") as f:
                header, *rows = list(csv.reader(f))
            media["summary"] = wandb.Table(columns=header, data=rows)
        run.log(media)
        files = wandb.Artifact(f"summary-{sweep_group(out).replace('/', '_')}", type="sweep-summary")
        for path in [out / "summary.md", out / "summary.csv", *sorted(out.glob("*.png"))]:
            if path.exists():
                files.add_file(str(path))
        run.log_artifact(files)
    finally:
        run.finish()
    return Path(run.dir).parent


@contextmanager
def opened(loggers: list[Logger]) -> Iterator[list[Logger]]:
    """``loggers`` for the length of a ``with`` block: started on entry (each one's ``experiment``: W&B's init, a
    CSV or TensorBoard writer), so that no stage's timing includes a logger's start-up; closed as failed when the
    block raises, else as done."""
    try:
        for logger in loggers:
            logger.experiment  # noqa: B018 - the property starts the logger's run
        yield loggers
    except BaseException:
        close(loggers, ok=False)
        raise
    close(loggers, ok=True)


def close(loggers: list[Logger], ok: bool) -> None:
    """Flush every logger; a W&B run is marked failed (exit code 1) when the stage did not finish."""
    for logger in loggers:
        logger.finalize("success" if ok else "failed")
        if isinstance(logger, _StageTensorBoard) and logger._experiment is not None:
            logger.experiment.close()
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish(exit_code=0 if ok else 1)


def log_final(loggers: list[Logger], values: dict[str, float], step: int) -> None:
    """A stage's end-of-run numbers (final metrics, seconds), once: W&B's run summary (not its history: one number
    is not a chart), TensorBoard's hparams with these as the metrics (the HParams tab; also scalars at ``step``),
    a CSV row at ``step`` elsewhere."""
    values = {k: v for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.summary.update(values)
        elif isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(dict(logger.hparams), values, step=step)
        else:
            logger.log_metrics(values, step=step)


def log_results(loggers: list[Logger], results: dict[str, Any], run_dir: str | Path) -> None:
    """End-of-run extras on the unlearn-stage loggers, before they are closed.

    W&B: a summary of every second and split size, a ``wandb.Table`` of the final metrics per model with a
    forget-vs-retain scatter, and histograms of the per-sample loss (the score of a loss MIA, Yeom et al. 2018) for
    members (retain), forgotten samples (forget) and non-members (test) under each model. TensorBoard: the same
    histograms and the forget-vs-retain figure as an image, at the stage's last step. Histograms need ``logits.pt``
    in ``run_dir``; without it they are skipped. The extras are optional: a failure is logged as a warning and never
    fails a run whose results are complete.
    """
    try:
        losses = sample_losses(Path(run_dir) / "logits.pt")
        step = int(results.get("stages", {}).get("unlearn", {}).get("steps") or 0)
        for logger in loggers:
            if type(logger).__name__ == "WandbLogger":
                _wandb_extras(logger.experiment, results, losses)
            elif isinstance(logger, TensorBoardLogger):
                for (model, split), loss in losses.items():
                    logger.experiment.add_histogram(f"loss/{model}/{split}", loss.numpy(), step)
                logger.experiment.add_figure("forget_vs_retain", forget_retain_figure(results["metrics"]), step)
    except Exception:
        log.warning("end-of-run logger extras failed; results.json and the logged metrics are unaffected",
                    exc_info=True)


def forget_retain_figure(metrics: dict[str, float]) -> Any:
    """Forget against retain accuracy, one point per model (the scatter W&B draws from ``final_metrics``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3.5), layout="constrained")
    ax = fig.add_subplot()
    for model in MODELS:
        if f"{model}/forget_acc" in metrics and f"{model}/retain_acc" in metrics:
            ax.scatter(metrics[f"{model}/retain_acc"], metrics[f"{model}/forget_acc"], label=model)
    ax.set(xlabel="retain accuracy", ylabel="forget accuracy", title="forget vs retain accuracy per model")
    ax.legend()
    return fig


def sample_losses(path: Path) -> dict[tuple[str, str], torch.Tensor]:
    """Per-sample cross-entropy ``{(model, split): loss}`` from a run's ``logits.pt`` (empty if it is missing)."""
    if not path.exists():
        return {}
    saved = torch.load(path, weights_only=True)
    return {(model, split): torch.nn.functional.cross_entropy(logits.float(), saved["labels"][split],
                                                              reduction="none")
            for model, by_split in saved["logits"].items() for split, logits in by_split.items()}


def metrics_table(metrics: dict[str, float]) -> tuple[list[str], list[list]]:
    """``<model>/<metric>`` keys as rows per model: ``(["model", metric, ...], [[model, value, ...], ...])``."""
    names = sorted({k.split("/", 1)[1] for k in metrics if k.split("/", 1)[0] in MODELS})
    rows = [[m, *(metrics.get(f"{m}/{n}") for n in names)] for m in MODELS if any(f"{m}/{n}" in metrics
                                                                                   for n in names)]
    return ["model", *names], rows


def _wandb_extras(run: Any, results: dict[str, Any], losses: dict[tuple[str, str], torch.Tensor]) -> None:
    import wandb

    run.summary.update({**{f"seconds/{k}": v for k, v in results.get("seconds", {}).items()},
                        **{f"sizes/{k}": v for k, v in results.get("sizes", {}).items()}})
    columns, rows = metrics_table(results.get("metrics", {}))
    table = wandb.Table(columns=columns, data=rows)
    extras: dict[str, Any] = {"final_metrics": table}
    if {"forget_acc", "retain_acc"} <= set(columns):
        extras["forget_vs_retain"] = wandb.plot.scatter(table, "retain_acc", "forget_acc",
                                                        title="forget vs retain accuracy per model")
    for (model, split), loss in losses.items():
        extras[f"loss/{model}/{split}"] = wandb.Histogram(loss.numpy())
    run.log(extras)
    if results.get("config", {}).get("logger", {}).get("wandb", {}).get("log_checkpoints"):
        run.log_artifact(checkpoint_artifact(results))


def checkpoint_artifact(results: dict[str, Any]) -> Any:
    """The three models' weights as one W&B ``model`` artifact: original and gold from the stage cache (the entries
    this run used), the unlearned model from the run directory's ``unlearned.pt``."""
    import wandb

    cfg = results["config"]
    artifact = wandb.Artifact(f"models-{Path(cfg['paths']['output_dir']).name}", type="model",
                              metadata={s: results["stages"][s].get("cache_key") for s in ("original", "gold")})
    for stage in ("original", "gold"):
        entry = Path(cfg["paths"]["cache_dir"]) / f"{stage}-{results['stages'][stage]['cache_key']}.pt"
        if entry.exists():  # absent with cache=false
            artifact.add_file(str(entry), name=f"{stage}.pt")
    artifact.add_file(str(Path(cfg["paths"]["output_dir"]) / "unlearned.pt"), name="unlearn.pt")
    return artifact
