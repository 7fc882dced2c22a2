"""The trajectory a stage logged, kept in its run directory whatever the loggers: ``trajectory/<stage>.csv``.

The ``forget_retain`` callback (``callbacks/forget_retain.py``) measures classifier accuracies, or a language model's
exact-match recall of greedy answers and loss attack, and hands its points
(``trajectory/<metric>`` and ``trajectory/gold_<metric>``) to every logger of the stage; ``TrajectoryFile`` is one
more logger that keeps those keys alone, one row per step, so the sweep report draws the trajectory figure from the
run directory with ``logger=wandb`` or ``logger=tensorboard`` as well as with the CSV logger. Nothing is written for a
stage that logged no trajectory.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

PREFIX = "trajectory/"  # the callback's keys (callbacks/forget_retain.py)


class TrajectoryFile(Logger):
    """A logger that writes the ``trajectory/`` keys it receives to ``<run_dir>/trajectory/<stage>.csv`` (``step``,
    then one column per key; the whole file rewritten at each point: a few dozen rows), and ignores the rest."""

    def __init__(self, run_dir: str | Path, stage: str):
        super().__init__()
        self.path = Path(run_dir) / "trajectory" / f"{stage}.csv"
        self.rows: list[dict[str, Any]] = []

    @property
    def name(self) -> str:
        return "trajectory"

    @property
    def version(self) -> str:
        return self.path.stem

    @property
    def experiment(self) -> TrajectoryFile:
        return self

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        point = {k: float(v) for k, v in metrics.items() if k.startswith(PREFIX)}
        if not point:
            return
        self.rows.append({"step": step, **point})
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, keys)
            writer.writeheader()
            writer.writerows(self.rows)


def with_trajectory(loggers: list[Logger], run_dir: str | Path, stage: str) -> list[Logger]:
    """``loggers`` and a ``TrajectoryFile`` for ``stage`` when there is any logger (``logger=none`` logs nothing)."""
    return [*loggers, TrajectoryFile(run_dir, stage)] if loggers else loggers
