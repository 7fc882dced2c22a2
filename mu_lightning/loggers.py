"""Logger factories, one per ``conf/logger/*.yaml`` entry; the pipeline calls each once per stage.

Stages are separate logger runs (CSV/TensorBoard ``version``, a W&B run with ``job_type``) grouped by job, because
each stage has its own step axis and a cache hit skips a stage's training entirely: prefixes in one run would
interleave two step counters and leave holes. The ``unlearn`` run also carries the final metrics of all three models.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

log = logging.getLogger(__name__)
MODELS = ("original", "gold", "unlearn")


def csv_logger(stage: str, save_dir: str, name: str = "csv") -> CSVLogger:
    """``<save_dir>/<name>/<stage>/metrics.csv``."""
    return CSVLogger(save_dir=save_dir, name=name, version=stage)


class _StageTensorBoard(TensorBoardLogger):
    """Stays open when the Trainer finalizes it: the unlearn stage's final metrics are written after ``fit``, and
    tensorboardX names a reopened event file by the whole second, so a reopen within the same second truncated the
    stage's training curve. ``close`` below closes it."""

    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self.experiment.flush()
        if status == "success":
            self.save()


def tensorboard_logger(stage: str, save_dir: str, name: str = "tensorboard") -> TensorBoardLogger:
    """``<save_dir>/<name>/<stage>/events.out.tfevents.*``; Lightning writes through tensorboardX when TensorBoard
    itself is not installed (tensorboardX is the lighter dependency: no grpcio, werkzeug or markdown)."""
    return _StageTensorBoard(save_dir=save_dir, name=name, version=stage, default_hp_metric=False)


def wandb_logger(stage: str, save_dir: str, project: str, run_name: str, group: str | None = None,
                 config: Any = None, mode: str | None = None, init_timeout: float = 15.0,
                 log_checkpoints: bool = False) -> Logger:
    """A W&B run per stage (``job_type=stage``), grouped by job. Offline unless ``mode`` or ``WANDB_MODE`` says so.

    ``group`` defaults to the last two parts of the run directory (``<date>/<time>`` for a run, ``<time>/<job>`` for
    a sweep job), which is unique per job and the same for all its stages. ``config`` is stored resolved, as plain
    values. Online mode with an API key and no network makes the client wait ~100 s (docs/design.md, "W&B"); here
    init is bounded by ``init_timeout`` and falls back to offline with a warning, so a run never hangs on the network.
    ``log_checkpoints`` is acted on at the end of the run, by ``log_results`` (see ``checkpoint_artifact``).
    """
    import wandb
    from lightning.pytorch.loggers import WandbLogger
    from omegaconf import OmegaConf

    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    os.makedirs(save_dir, exist_ok=True)
    group = group or "/".join(Path(save_dir).resolve().parts[-2:])
    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=True)

    def make(m: str) -> WandbLogger:
        return WandbLogger(project=project, group=group, name=f"{run_name}/{stage}", job_type=stage,
                           save_dir=save_dir, mode=m, reinit="finish_previous", config=config,
                           settings=wandb.Settings(init_timeout=init_timeout, silent=True))

    logger = make(mode)
    if mode == "online":
        try:
            logger.experiment  # noqa: B018 - starts the run now, so a network failure shows here
        except Exception as err:  # wandb raises several types for "no network"
            log.warning("W&B online init failed (%s); logging offline instead (sync later with `wandb sync`)", err)
            logger = make("offline")
    return logger


@contextmanager
def opened(loggers: list[Logger]) -> Iterator[list[Logger]]:
    """``loggers`` for the length of a ``with`` block: closed as failed when the block raises, else as done."""
    try:
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


def log_results(loggers: list[Logger], results: dict[str, Any], run_dir: str | Path) -> None:
    """End-of-run extras on the unlearn-stage loggers, before they are closed.

    W&B: the resolved config, a summary of every metric, second and split size, a ``wandb.Table`` of the final
    metrics per model with a forget-vs-retain scatter, and histograms of the per-sample loss (the score of a loss
    MIA, Yeom et al. 2018) for members (retain), forgotten samples (forget) and non-members (test) under each model.
    TensorBoard: the same histograms. Histograms need ``logits.pt`` in ``run_dir``; without it they are skipped.
    The extras are optional: a failure is logged as a warning and never fails a run whose results are complete.
    """
    try:
        losses = sample_losses(Path(run_dir) / "logits.pt")
        for logger in loggers:
            kind = type(logger).__name__
            if kind == "WandbLogger":
                _wandb_extras(logger.experiment, results, losses)
            elif isinstance(logger, TensorBoardLogger):
                for (model, split), loss in losses.items():
                    logger.experiment.add_histogram(f"loss/{model}/{split}", loss.numpy())
    except Exception:
        log.warning("end-of-run logger extras failed; results.json and the logged metrics are unaffected",
                    exc_info=True)


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

    run.config.update(results.get("config", {}), allow_val_change=True)
    summary = {**results.get("metrics", {}), **{f"seconds/{k}": v for k, v in results.get("seconds", {}).items()},
               **{f"sizes/{k}": v for k, v in results.get("sizes", {}).items()}}
    run.summary.update(summary)
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
