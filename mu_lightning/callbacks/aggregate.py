"""Hydra callback: when a multirun ends, aggregate its sweep directory into summary.csv, summary.md and plots."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mu_lightning import report

log = logging.getLogger(__name__)


class AggregateSweep(Callback):
    """Registered in ``conf/hydra/default.yaml``; a failure here is logged, never raised, so the sweep's own
    results stay intact (``python scripts/report.py <sweep dir>`` redoes it)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        try:
            summary = report.write([sweep_dir], sweep_dir)
        except Exception:
            log.exception("aggregating %s failed; run `python scripts/report.py %s`", sweep_dir, sweep_dir)
            return
        log.info("sweep summary (%d rows) in %s/summary.md", len(summary.rows), sweep_dir)
        for note in summary.notes:
            log.warning("report: %s", note)
