"""What every training stage shares: optimizer and schedule from config, one guarded step, per-epoch logging."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch import nn

from mu_lightning.data.batches import Chunks

OptimizerFactory = Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class Stage(L.LightningModule):
    """A LightningModule that trains ``model`` with manual optimization.

    Manual optimization keeps a step to one ``zero_grad/backward/clip/step`` with no per-step logging: on small
    models Lightning's per-step machinery costs more than the step itself (PITFALLS.md). The running loss is summed
    on the device and logged once per epoch as ``train_loss``.

    Divergence guard: a non-finite loss stops the stage instead of crashing a sweep; ``diverged_step`` records the
    optimizer step, and the weights are rolled back to those of the last step whose loss was finite.

    Args:
        model: the network being trained (its weights are the stage's result).
        epochs: passes over the stage's anchor set; 0 means no training loop.
        batch_size: samples per step.
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``).
        scheduler: ``optimizer -> LRScheduler`` stepped once per epoch, or None.
        grad_clip: clip the gradient norm to this value, or None.
    """

    def __init__(self, model: nn.Module, epochs: int, batch_size: int, optimizer: OptimizerFactory,
                 scheduler: SchedulerFactory | None = None, grad_clip: float | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.epochs, self.batch_size, self.grad_clip = int(epochs), int(batch_size), grad_clip
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # Per-step bookkeeping lives in one plain dict: assigning attributes of an nn.Module runs Module.__setattr__,
        # whose type checks cost more than a tiny model's step.
        self._tally = {"steps": 0, "epoch_steps": 0, "epoch_loss": 0.0, "diverged_step": None}
        self._snapshot: list[tuple[torch.Tensor, torch.Tensor]] = []  # (copy, live tensor) pairs

    # Optimizer steps per Lightning batch (see data.batches.Chunks): the same steps on the same batches in the same
    # order whatever its value; larger values pay Lightning's per-batch cost less often, callbacks see fewer batches.
    steps_per_batch: int = 8

    def chunks(self, batches) -> Chunks:
        """The loader to ``fit`` this stage on: ``batches`` grouped ``steps_per_batch`` at a time."""
        return Chunks(batches, self.steps_per_batch)

    def training_step(self, chunk: list, batch_idx: int) -> None:
        for batch in chunk:
            self.train_step(batch)
            if self.diverged:
                break

    def train_step(self, batch) -> None:
        """One optimizer step on one batch: compute the loss and call ``self.step(loss)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the optimizer updates; subclasses that freeze part of the model override this."""
        return (p for p in self.model.parameters() if p.requires_grad)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    def step(self, loss: torch.Tensor) -> None:
        """One optimizer step on ``loss``, unless it is non-finite (then the stage stops: see the class doc)."""
        value = loss.item()
        if not math.isfinite(value):
            self._diverge()
            return
        self._remember_weights()
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()
        tally = self._tally
        tally["steps"] += 1
        tally["epoch_steps"] += 1
        tally["epoch_loss"] += value

    def _remember_weights(self) -> None:
        """Copy the weights whose loss was just found finite, in place: the rollback point of the guard.

        One copy of the model per step costs far less than the step itself (which touches every weight for every
        sample of the batch), and it is the only rollback point that cannot itself be poisoned: weights can stay
        finite yet be so large that logits overflow on other inputs.
        """
        with torch.no_grad():
            if not self._snapshot:
                self._snapshot = [(v.detach().clone(), v) for v in self.model.state_dict(keep_vars=True).values()]
            else:
                torch._foreach_copy_([c for c, _ in self._snapshot], [v for _, v in self._snapshot])

    def _diverge(self) -> None:
        self._tally["diverged_step"] = self._tally["steps"]
        self.trainer.should_stop = True
        with torch.no_grad():
            for copy, live in self._snapshot:
                live.copy_(copy)

    def on_train_epoch_start(self) -> None:
        self._tally.update(epoch_steps=0, epoch_loss=0.0)

    def on_train_epoch_end(self) -> None:
        if self._tally["epoch_steps"]:
            self.log("train_loss", self._tally["epoch_loss"] / self._tally["epoch_steps"], on_epoch=True,
                     sync_dist=True)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    @property
    def steps_taken(self) -> int:
        """Optimizer steps taken so far (skipped non-finite steps not counted)."""
        return self._tally["steps"]

    @property
    def diverged_step(self) -> int | None:
        """The step at which the loss went non-finite, or None."""
        return self._tally["diverged_step"]

    @property
    def diverged(self) -> bool:
        return self.diverged_step is not None
