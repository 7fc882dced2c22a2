"""The progress bar of a stage: its name, epochs done out of the stage's epochs, and the running loss."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class StageProgressBar(TQDMProgressBar):
    """One bar per stage that counts epochs (``gold  3/20 [..., loss=0.0412]``).

    Lightning's bar counts the batches of each epoch and shows the logger's version (``v_num``); here a batch is a
    chunk of several optimizer steps (``data.batches.Chunks``), so that count is ``1/1`` on small data, and the
    version is the stage's name cut to its last four letters. The loss is the stage's mean loss over the current
    epoch's steps so far (``Stage.running_loss``), refreshed every ``refresh_rate`` batches and at each epoch's end.
    """

    def __init__(self, stage: str, refresh_rate: int = 10):
        super().__init__(refresh_rate=refresh_rate)
        self.stage = stage

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        loss = getattr(pl_module, "running_loss", None)
        if loss is not None:
            items["loss"] = f"{loss:.4f}"
        return items

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        bar = self.train_progress_bar
        if trainer.current_epoch == 0 or bar.total != trainer.max_epochs:
            bar.reset(total=trainer.max_epochs)
            bar.set_description(self.stage)
        bar.n = trainer.current_epoch
        bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self._should_update(batch_idx + 1, self.total_train_batches):
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_progress_bar.n = trainer.current_epoch + 1
        self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
