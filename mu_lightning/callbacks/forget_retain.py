"""Forget/retain trajectory of the unlearning stage: the accuracies and the cheap MIA every N optimizer steps."""

from __future__ import annotations

import time
from types import SimpleNamespace

import lightning as L
import torch
from torch import nn
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mu_lightning.callbacks.monitor import StageMonitor
from mu_lightning.data.qa import QA, is_qa
from mu_lightning.errors import ConfigError
from mu_lightning.metrics import mia
from mu_lightning.metrics.accuracy import logits_of
from mu_lightning.metrics.lm import answer_logprobs, exact_matches, lm_splits

PREFIX = "trajectory/"  # the trajectory's keys: trajectory/forget_acc, ..., and the gold's trajectory/gold_forget_acc
METRICS = ("forget_acc", "retain_acc", "mia_loss_auc", "mia_loss_tpr_at_1fpr")  # what ``measure`` returns


class ForgetRetainCallback(StageMonitor):
    """Logs ``trajectory/forget_acc``, ``trajectory/retain_acc``, ``trajectory/mia_loss_auc`` and
    ``trajectory/mia_loss_tpr_at_1fpr`` while a stage trains, with the gold model's values beside them.

    Values are logged at step 0 (M itself), every ``every_n_steps`` optimizer steps, and once at the end of the stage,
    by the same definitions as the final evaluation's ``unlearn/<metric>`` (the loss ROC is ``metrics.mia.loss_attack``,
    as there), so a dashboard shows the forget-vs-retain trade-off as it happens (the curves SCRUB, Kurmanji et al.
    2023, uses to pick a stopping point; docs/metrics.md §8). The gold model given to ``attach`` is measured once
    and logged at every point as ``trajectory/gold_<metric>``: a constant line to read the curve against. The values
    When another callback monitors ``trajectory/<metric>`` (Lightning's ``EarlyStopping`` or ``ModelCheckpoint``), a
    point is also taken at the end of every epoch and given to ``trainer.callback_metrics`` (``pl_module.log``,
    logger off), where they look.

    The splits are those of the datamodule given to ``attach``. Under DDP each rank evaluates its share of every split
    into torchmetrics ``Metric`` objects, whose ``compute`` syncs the ranks; rank 0 logs. Its time is kept apart
    (``seconds``) and not counted as unlearning time. With no logger (extra unlearning seeds of ``metric=seeds``)
    nothing is measured, unless another callback of the Trainer monitors a ``trajectory/`` key.

    On question-answer data (``data.qa.is_qa``: a language model) the same keys hold the LM metrics' values
    (``qa_measure``): ``forget_acc`` and ``retain_acc`` are the exact-match recall of greedy
    answers, ``mia_loss_*`` the loss attack on the length-normalised answer log-probability against never-seen people.

    Args:
        every_n_steps: optimizer steps between two evaluations (>= 1): the monitor's ``step_cadence``.
    """

    def __init__(self, every_n_steps: int = 25):
        super().__init__()
        if int(every_n_steps) < 1:
            raise ConfigError(f"callbacks.forget_retain.every_n_steps={every_n_steps} must be an integer >= 1")
        self.every_n_steps = int(every_n_steps)
        self._last_step = -1
        self._gold_values: dict[str, float] | None = None
        self._latest: dict[str, float] = {}  # the last point measured

    @property
    def step_cadence(self) -> int:
        return self.every_n_steps

    def attach(self, data, gold: nn.Module | None = None) -> None:
        super().attach(data, gold)
        self._gold_values = None  # measured at the next fit's start, on the fit's device and ranks

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = -1
        self._log(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step // self.every_n_steps > max(self._last_step, 0) // self.every_n_steps:
            self._log(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """When another callback monitors a ``trajectory/`` key (EarlyStopping and ModelCheckpoint check at the end
        of an epoch when there is no validation loop), a point at the epoch's last step, given to Lightning."""
        if self._monitored(trainer):
            self._log(trainer, pl_module)
            for key, value in self._latest.items():
                pl_module.log(key, value, on_step=False, on_epoch=True, logger=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module)

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Measure and log the current point unless this step was logged already; returns its values (or {})."""
        if trainer.global_step == self._last_step or not (trainer.loggers or self._monitored(trainer)):
            return {}
        self._last_step = trainer.global_step
        t0 = time.perf_counter()
        where = (trainer.global_rank, trainer.world_size)
        values = self._latest = {PREFIX + k: v for k, v in self.measure(pl_module.model, *where).items()}
        if self.gold is not None and self._gold_values is None:
            home = next(self.gold.parameters()).device  # measured on the fit's device, then put back
            self._gold_values = {f"{PREFIX}gold_{k}": v
                                 for k, v in self.measure(self.gold.to(pl_module.device), *where).items()}
            self.gold.to(home)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({**values, **(self._gold_values or {})}, step=trainer.global_step)
        self.seconds += time.perf_counter() - t0
        return values

    @staticmethod
    def _monitored(trainer: L.Trainer) -> bool:
        """Another callback of the Trainer monitors one of the trajectory's keys."""
        return any(str(getattr(c, "monitor", None)).startswith(PREFIX) for c in trainer.callbacks)

    def measure(self, model: nn.Module, rank: int = 0, world_size: int = 1) -> dict[str, float]:
        """Forget and retain accuracy and the loss-threshold MIA (AUC, TPR at 1% FPR) of ``model`` on the attached data.

        Each of ``world_size`` ranks passes its share (every ``world_size``-th sample from ``rank``); the metric
        states live on the model's device, where ``compute`` gathers the shares of every rank.
        """
        if is_qa(getattr(self.data, "samples", None)):  # a language model (stand-ins may have only tensors)
            return qa_measure(model, self.data, rank, world_size)
        data, device = self.data, next(model.parameters()).device
        out: dict[str, float] = {}
        for split in ("forget", "retain"):
            x, y = data.tensors(split)
            z = logits_of(model, x[rank::world_size]).to(device)
            metric = MulticlassAccuracy(num_classes=z.shape[1], average="micro").to(device)
            metric.update(z, y[rank::world_size].to(device))
            out[f"{split}_acc"] = float(metric.compute())
        (xf, yf), (xt, yt) = data.tensors("forget"), data.tensors("test")
        xf, yf, xt, yt = xf[rank::world_size], yf[rank::world_size], xt[rank::world_size], yt[rank::world_size]
        roc = mia.loss_attack(logits_of(model, xf), yf, logits_of(model, xt), yt, device)
        out["mia_loss_auc"], out["mia_loss_tpr_at_1fpr"] = roc["auc"], roc["tpr_at_1fpr"]
        return out


def qa_measure(model: nn.Module, data, rank: int = 0, world_size: int = 1) -> dict[str, float]:
    """A language model's point of the forget/retain trajectory on the question-answer data of ``data``: the
    ``forget_retain`` callback's ``measure`` on data that ``data.qa.is_qa``, by the LM metrics' definitions
    (``metrics/lm.py``), so the last point is the final ``unlearn/<metric>``:

    - ``forget_acc``, ``retain_acc``: **exact-match recall of greedy answers**, the share of D_f's (D_r's) questions
      whose greedy answer is the answer token for token ("forget recall" in docs/language-models.md), not a
      classifier's accuracy nor a per-token one, from one teacher-forced pass (``metrics.lm.exact_matches``);
    - ``mia_loss_auc``, ``mia_loss_tpr_at_1fpr``: the loss attack on the length-normalised answer log-probability
      (``metrics.lm.answer_logprobs``), D_f against the QAs of the holdout people (no model trained on them); left
      out when the data has none.

    Kept out of the method's time like every trajectory, a point costs two teacher-forced passes over D_f and D_r
    and one over the holdout QAs: 0.34-0.37 s for the demo's 7 points (``experiment=lm_demo``; decoding greedily
    token by token, which gives the same recall, took 2.1-2.7 s). The model is measured in eval mode and given back
    in the mode it was in. Each of ``world_size`` ranks passes its share (every ``world_size``-th QA from ``rank``);
    torchmetrics states on the model's device gather every rank's, as for classifiers."""
    device, x = next(model.parameters()).device, data.samples.x
    splits = lm_splits(SimpleNamespace(data=data))  # reads ``ctx.data`` alone: the datamodule's ids and groups
    share = {s: x[ids[rank::world_size]][:, QA] for s, ids in splits.items()}
    was_training = model.training
    model.eval()
    try:
        out: dict[str, float] = {}
        for split in ("forget", "retain"):
            hits = exact_matches(model, share[split]).double()
            recall = MeanMetric(nan_strategy="ignore").to(device).set_dtype(torch.float64)  # .to after would reset it
            recall.update(hits.to(device))
            out[f"{split}_acc"] = float(recall.compute())
        if len(splits["holdout"]):
            members, nonmembers = (answer_logprobs(model, share[s])[1].double() for s in ("forget", "holdout"))
            roc = mia.threshold_attack(members, nonmembers, device)
            out["mia_loss_auc"], out["mia_loss_tpr_at_1fpr"] = roc["auc"], roc["tpr_at_1fpr"]
        return out
    finally:
        model.train(was_training)
