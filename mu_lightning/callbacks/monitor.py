"""The contract between the pipeline and a callback that watches a stage while it trains."""

from __future__ import annotations

import lightning as L


class StageMonitor(L.Callback):
    """A Lightning callback that observes a stage and whose cost is not the stage's.

    The pipeline, for each ``StageMonitor`` among the callbacks of a stage: calls ``attach(data, gold)`` before
    fitting, so the monitor evaluates on the datamodule's splits without reading it off the LightningModule (and, in
    the unlearning stage, can measure the gold model as a reference: never shown to the unlearner); makes the stage
    step once per Lightning batch when any monitor has a ``step_cadence``, so no optimizer step goes unobserved; and
    takes the sum of their ``seconds`` out of the stage's time (RTE).

    Attributes:
        step_cadence: optimizer steps between two observations; None: no per-step cadence.
        seconds: time spent monitoring so far, kept out of the method's time.
        data: the ``UnlearningDataModule`` given to ``attach`` (None before).
        gold: the gold model given to ``attach`` (None before, and outside the unlearning stage).
    """

    step_cadence: int | None = None

    def __init__(self) -> None:
        self.seconds = 0.0
        self.data = None
        self.gold = None

    def attach(self, data, gold=None) -> None:
        """Receive the datamodule the stage trains on and, when there is one, the gold model, before ``fit``."""
        self.data, self.gold = data, gold
