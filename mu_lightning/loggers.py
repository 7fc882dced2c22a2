"""Logger factories, one per ``conf/logger/*.yaml`` entry; the pipeline calls each once per stage.

Stages are separate logger runs (CSV ``version`` / W&B run with ``job_type``) because each has its own step axis
and a cache hit skips a stage's training entirely; the ``unlearn`` run also carries the final metrics of all three
models.
"""

from __future__ import annotations

import logging
import os

from lightning.pytorch.loggers import CSVLogger, Logger

log = logging.getLogger(__name__)


def csv_logger(stage: str, save_dir: str, name: str = "csv") -> CSVLogger:
    """``<save_dir>/<name>/<stage>/metrics.csv``."""
    return CSVLogger(save_dir=save_dir, name=name, version=stage)


def wandb_logger(stage: str, save_dir: str, project: str, group: str, run_name: str, mode: str | None = None,
                 init_timeout: float = 15.0) -> Logger:
    """A W&B run per stage, grouped by job. Offline unless ``mode`` or ``WANDB_MODE`` says otherwise.

    Online mode with an API key and no network makes the client wait ~100 s (PITFALLS.md); here init is bounded by
    ``init_timeout`` and falls back to offline with a warning, so a run never hangs on the network.
    """
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    os.makedirs(save_dir, exist_ok=True)

    def make(m: str) -> WandbLogger:
        return WandbLogger(project=project, group=group, name=f"{run_name}/{stage}", job_type=stage,
                           save_dir=save_dir, mode=m, reinit="finish_previous",
                           settings=wandb.Settings(init_timeout=init_timeout, silent=True))

    logger = make(mode)
    if mode == "online":
        try:
            logger.experiment  # noqa: B018 - starts the run now, so a network failure shows here
        except Exception as err:  # wandb raises several types for "no network"
            log.warning("W&B online init failed (%s); logging offline instead (sync later with `wandb sync`)", err)
            logger = make("offline")
    return logger


def close(loggers: list[Logger], ok: bool) -> None:
    """Flush every logger; a W&B run is marked failed when the stage did not finish."""
    for logger in loggers:
        logger.finalize("success" if ok else "failed")
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish(exit_code=0 if ok else 1)
