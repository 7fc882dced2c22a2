"""Logger factories, one per ``conf/logger/*.yaml`` entry; the pipeline calls each once per stage with its ``StageRun``.

Stages are separate logger runs (CSV/TensorBoard ``version``, a W&B run with ``job_type``) grouped by sweep, because
each stage has its own step axis and a cache hit skips a stage's training entirely: prefixes in one run would
interleave two step counters and leave holes. The ``unlearn`` run also carries the final metrics of all three models
(``log_final``: W&B's run summary, TensorBoard's hparams, a CSV row).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from omegaconf import OmegaConf

from mu_lightning.configurable import configurable
from mu_lightning.tracking.naming import StageRun, default_group

log = logging.getLogger(__name__)
T = TypeVar("T")
# the end-of-run numbers TensorBoard's HParams tab compares runs by (as one-point scalars); the rest: text only
HEADLINE = tuple(f"unlearn/{m}" for m in ("forget_acc", "retain_acc", "test_acc", "avg_gap", "mia_efficacy",
                                          "flop_speedup", "speedup"))


@configurable
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


@configurable
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


@configurable
def wandb_logger(run: StageRun, save_dir: str, project: str, group: str | None = None, mode: str | None = None,
                 init_timeout: float = 15.0, log_checkpoints: bool = False, entity: str | None = None,
                 notes: str | None = None, tags: list[str] | None = None, config: dict | None = None) -> Logger:
    """A W&B run per stage: ``job_type`` = the stage's kind (``original``, ``gold``, ``unlearn``: every gold seed and
    every request under one), ``group`` = the sweep (or the single run), name, config and
    tags from ``run``. Offline unless ``mode`` or ``WANDB_MODE`` says so.

    ``entity`` (your team or user name), ``notes``, more ``tags`` and more ``config`` are passed to ``wandb.init``;
    the host and the API key come only from your own environment (``wandb login``, ``WANDB_BASE_URL``), never from
    a config. ``group`` defaults to ``default_group``. Each stage's W&B run is its own (``reinit="create_new"``): a
    stage trained while another is open (the extra gold seeds of ``metric=full``) never finishes that one or logs
    into it. Online mode with an API key and no network makes the client wait ~100 s (docs/design.md, "W&B"); here
    init is bounded by ``init_timeout`` and falls back to offline with a warning, so a run never hangs on the
    network. ``log_checkpoints`` is acted on at the end of the run, by ``log_results`` (see ``checkpoint_artifact``).
    """
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    os.makedirs(save_dir, exist_ok=True)
    group = group or default_group(save_dir)

    def make(m: str) -> WandbLogger:
        experiment = wandb.init(project=project, entity=entity, group=group, name=run.name, job_type=run.kind,
                                tags=[*run.tags, *(tags or [])], notes=notes, dir=save_dir, mode=m,
                                reinit="create_new", config={**run.config, **(config or {})},
                                settings=wandb.Settings(init_timeout=init_timeout, silent=True))
        return WandbLogger(experiment=experiment, project=project, save_dir=save_dir)

    return bounded(make, mode)


def bounded(start: Callable[[str], T], mode: str) -> T:
    """``start(mode)``; online, a failure (no network: init gave up after its ``init_timeout``) falls back to
    ``start("offline")`` with a warning."""
    if mode != "online":
        return start(mode)
    try:
        return start(mode)
    except Exception as err:  # wandb raises several types for "no network"
        log.warning("W&B online init failed (%s); logging offline instead (sync later with `wandb sync`)", err)
        return start("offline")


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
        if isinstance(logger, WandbLogger):
            logger.experiment.finish(exit_code=0 if ok else 1)


def log_final(loggers: list[Logger], values: dict[str, float], step: int) -> None:
    """A stage's end-of-run numbers (final metrics, seconds), once: W&B's run summary (not its history: one number
    is not a chart), TensorBoard's Text tab (``final_metrics``, a table of all) and HParams tab (the stage's config
    with the ``HEADLINE`` metrics, which TensorBoard reads from scalars at ``step``: a handful of one-point charts
    rather than one per number), a CSV row at ``step`` elsewhere."""
    values = {k: v for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(values)
        elif isinstance(logger, TensorBoardLogger):  # all of them as a text table; the headline ones in HParams
            logger.experiment.add_text("final_metrics", "| key | value |\n|---|---:|\n" + "".join(
                f"| {k} | {v:.6g} |\n" for k, v in sorted(values.items())), step)
            logger.log_hyperparams(dict(logger.hparams), {k: v for k, v in values.items() if k in HEADLINE} or values,
                                   step=step)  # the HParams tab reads its metrics from scalars: a few, not all
        else:
            logger.log_metrics(values, step=step)


