"""The trajectory a stage logged, kept in its run directory whatever the loggers: ``trajectory/<stage>.csv``; and what
a language model's trajectory measures (``qa_measure``).

The ``forget_retain`` callback (``callbacks/forget_retain.py``) measures classifier accuracies, or on question-answer
data ``qa_measure``'s exact-match recall of greedy answers and loss attack, and hands its points
(``trajectory/<metric>`` and ``trajectory/gold_<metric>``) to every logger of the stage; ``TrajectoryFile`` is one
more logger that keeps those keys alone, one row per step, so the sweep report draws the trajectory figure from the
run directory with ``logger=wandb`` or ``logger=tensorboard`` as well as with the CSV logger. Nothing is written for a
stage that logged no trajectory.
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

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
    (and one over the holdout QAs); greedy decoding token by token, which gives the same recall, took 2.1-2.7 s of
    the demo's unlearning stage (``experiment=lm_demo``, 6 points) and minutes per point at ``experiment=lm_gpu``'s
    size on CPU. The model is measured in eval mode and given
    back in the mode it was in. Each of ``world_size`` ranks passes its share (every ``world_size``-th QA from
    ``rank``); torchmetrics states on the model's device gather every rank's, as for classifiers."""
    from torchmetrics.aggregation import MeanMetric

    from mu_lightning.data.qa import QA
    from mu_lightning.metrics import mia
    from mu_lightning.metrics.lm import answer_logprobs, exact_matches, lm_splits

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
