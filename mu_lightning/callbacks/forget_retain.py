"""Forget/retain trajectory of the unlearning stage: the accuracies and the cheap MIA every N optimizer steps."""

from __future__ import annotations

import time

import lightning as L
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from mu_lightning.callbacks.monitor import StageMonitor
from mu_lightning.errors import ConfigError
from mu_lightning.metrics import mia
from mu_lightning.metrics.accuracy import logits_of


class ForgetRetainCallback(StageMonitor):
    """Logs ``unlearn/forget_acc``, ``unlearn/retain_acc`` and ``unlearn/mia_loss_auc`` during unlearning.

    Values are logged at step 0 (M itself), every ``every_n_steps`` optimizer steps, and at the end of the stage,
    under the same names and definitions as the final evaluation (the loss AUC is ``metrics.mia.loss_attack``, as
    there), so a dashboard shows the forget-vs-retain trade-off as it happens (the curves SCRUB, Kurmanji et al.
    2023, uses to pick a stopping point; docs/metrics.md §8). The splits are those of the datamodule given to
    ``attach``. Under DDP each rank evaluates its share of every split into torchmetrics ``Metric`` objects, whose
    ``compute`` syncs the ranks; rank 0 logs. Its time is kept apart (``seconds``) and not counted as unlearning
    time; with no logger (extra unlearning seeds of ``metric=seeds``) nothing is measured.

    Args:
        every_n_steps: optimizer steps between two evaluations (>= 1): the monitor's ``step_cadence``.
        mia_seed: the seed that balances D_test against D_f for the loss-threshold AUC (``metric.mia_seed``).
    """

    def __init__(self, every_n_steps: int = 25, mia_seed: int = 0):
        super().__init__()
        if int(every_n_steps) < 1:
            raise ConfigError(f"callbacks.forget_retain.every_n_steps={every_n_steps} must be an integer >= 1")
        self.every_n_steps, self.mia_seed = int(every_n_steps), int(mia_seed)
        self._last_step = -1

    @property
    def step_cadence(self) -> int:
        return self.every_n_steps

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = -1
        self._log(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step // self.every_n_steps > max(self._last_step, 0) // self.every_n_steps:
            self._log(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module)

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == self._last_step or not trainer.loggers:
            return
        self._last_step = trainer.global_step
        t0 = time.perf_counter()
        values = {f"unlearn/{k}": float(v) for k, v in self.measure(pl_module.model, trainer.global_rank,
                                                                      trainer.world_size).items()}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)
        self.seconds += time.perf_counter() - t0

    def measure(self, model: nn.Module, rank: int = 0, world_size: int = 1) -> dict[str, float]:
        """Forget and retain accuracy and the loss-threshold MIA AUC of ``model`` on the attached data.

        Each of ``world_size`` ranks passes its share (every ``world_size``-th sample from ``rank``); the metric
        states live on the model's device, where ``compute`` gathers the shares of every rank.
        """
        data, device = self.data, next(model.parameters()).device
        out: dict[str, float] = {}
        for split in ("forget", "retain"):
            x, y = data.tensors(split)
            z = logits_of(model, x[rank::world_size]).to(device)
            metric = MulticlassAccuracy(num_classes=z.shape[1], average="micro").to(device)
            metric.update(z, y[rank::world_size].to(device))
            out[f"{split}_acc"] = float(metric.compute())
        (xf, yf), (xt, yt) = data.tensors("forget"), data.tensors("test")
        pos, neg = mia.balanced_pairs(len(yf), len(yt), self.mia_seed)
        pos, neg = pos[rank::world_size], neg[rank::world_size]
        roc = mia.loss_attack(logits_of(model, xf[pos]), yf[pos], logits_of(model, xt[neg]), yt[neg], device)
        out["mia_loss_auc"] = roc["auc"]
        return out
