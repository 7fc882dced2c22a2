"""Hydra callback: when a multirun ends, aggregate its sweep directory into summary.csv, summary.md and plots, and
log them to W&B as a run of their own when the sweep logged to W&B."""

from __future__ import annotations

import atexit
import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
SUMMARY_RUN_KEYS = ("project", "group", "mode", "init_timeout")  # of logger.wandb, for the summary run


class AggregateSweep(Callback):
    """Registered in ``conf/hydra/default.yaml``; a failure here is logged, never raised, so the sweep's own
    results stay intact (``python scripts/report.py <sweep dir>`` redoes it)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A failed job makes Hydra raise once the jobs have run, before ``on_multirun_end``: the summary (with a
        note for each job that left no results.json) is then written at exit, and the sweep still exits non-zero."""
        atexit.register(self.on_multirun_end, config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self.on_multirun_end)
        sweep_dir = config.hydra.sweep.dir
        try:
            from mu_lightning.tracking.report import summarise  # matplotlib: only when a sweep ends

            summary = summarise([sweep_dir], sweep_dir)
        except Exception:
            log.exception("aggregating %s failed; run `python scripts/report.py %s`", sweep_dir, sweep_dir)
            return
        log.info("sweep summary (%d rows) in %s/summary.md", len(summary.rows), sweep_dir)
        for note in summary.notes:
            log.warning("report: %s", note)
        upload_summary(config, sweep_dir)


def upload_summary(config: DictConfig, sweep_dir: str) -> None:
    """When the sweep logged to W&B (a ``logger.wandb`` entry), its summary table and figures as a W&B run of their
    own (``extras.upload_summary``: job_type ``summary``, in the sweep's group; offline-safe). A failure is logged,
    never raised."""
    settings = OmegaConf.select(config, "logger.wandb", default=None, throw_on_resolution_failure=False)
    if not settings:
        return
    from mu_lightning.tracking import extras

    try:
        where = extras.upload_summary(sweep_dir, **{k: OmegaConf.select(settings, k) for k in SUMMARY_RUN_KEYS
                                                     if OmegaConf.select(settings, k) is not None})
        log.info("sweep summary logged to W&B as a run of its own (job_type summary) in %s", where)
    except Exception:
        log.exception("logging the sweep summary to W&B failed; summary.md and the figures are in %s", sweep_dir)
