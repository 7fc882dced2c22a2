"""Forget/retain trajectory of the unlearning stage: the accuracies and the cheap MIA every N optimizer steps."""

from __future__ import annotations

import time

import lightning as L
import torch
from torchmetrics import Metric
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy

from mu_lightning.errors import ConfigError
from mu_lightning.metrics import mia, signals
from mu_lightning.metrics.accuracy import logits_of


class ForgetRetainCallback(L.Callback):
    """Logs ``unlearn/forget_acc``, ``unlearn/retain_acc`` and ``unlearn/mia_loss_auc`` during unlearning.

    Values are logged at step 0 (M itself), every ``every_n_steps`` optimizer steps, and at the end of the stage,
    under the same names and definitions as the final evaluation, so a dashboard shows the forget-vs-retain
    trade-off as it happens (the curves SCRUB, Kurmanji et al. 2023, uses to pick a stopping point). Under DDP each
    rank evaluates its share of every split into torchmetrics ``Metric`` objects, whose ``compute`` syncs the ranks;
    rank 0 logs. Its time is kept apart (``seconds``) and not counted as unlearning time; with no
    logger (extra unlearning seeds of ``metric=seeds``) nothing is measured.

    Args:
        every_n_steps: optimizer steps between two evaluations (>= 1).
        mia_seed: the seed that balances D_test against D_f for the loss-threshold AUC (``metric.mia_seed``).
    """

    def __init__(self, every_n_steps: int = 25, mia_seed: int = 0):
        if int(every_n_steps) < 1:
            raise ConfigError(f"callbacks.forget_retain.every_n_steps={every_n_steps} must be an integer >= 1")
        self.every_n_steps, self.mia_seed = int(every_n_steps), int(mia_seed)
        self._last_step = -1
        self.seconds = 0.0  # time spent measuring; the pipeline takes it out of the unlearning time (RTE)

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
        values = {f"unlearn/{k}": float(v) for k, v in self.measure(pl_module, trainer.global_rank,
                                                                      trainer.world_size).items()}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)
        self.seconds += time.perf_counter() - t0

    def measure(self, pl_module: L.LightningModule, rank: int = 0, world_size: int = 1) -> dict[str, torch.Tensor]:
        """Forget and retain accuracy and the loss-threshold MIA AUC of ``pl_module.model`` on ``pl_module.data``."""
        data, model, device = pl_module.data, pl_module.model, pl_module.device
        out: dict[str, torch.Tensor] = {}
        for split in ("forget", "retain"):
            x, y = data.tensors(split)
            x, y = x[rank::world_size], y[rank::world_size]
            z = logits_of(model, x).to(device)
            metric = MulticlassAccuracy(num_classes=z.shape[1], average="micro").to(device)
            out[f"{split}_acc"] = _synced(metric, z, y.to(device))
        (xf, yf), (xt, yt) = data.tensors("forget"), data.tensors("test")
        pos, neg = mia.balanced_pairs(len(yf), len(yt), self.mia_seed)
        pos, neg = pos[rank::world_size], neg[rank::world_size]
        scores = torch.cat([-signals.loss(logits_of(model, xf[pos]), yf[pos]),
                            -signals.loss(logits_of(model, xt[neg]), yt[neg])]).float().to(device)
        target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long().to(device)
        out["mia_loss_auc"] = _synced(BinaryAUROC().to(device), scores, target)
        return out


def _synced(metric: Metric, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``update`` with this rank's share, then ``compute``, which gathers every rank's state first."""
    metric.update(preds, target)
    return metric.compute()
