"""What every training stage shares: optimizer and schedule from config, one guarded step, per-epoch logging."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch import nn

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
        self.steps_taken = 0
        self.diverged_step: int | None = None
        self._loss_sum = torch.zeros(())
        self._epoch_steps = 0
        self._snapshot: dict[str, torch.Tensor] | None = None

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
        if not torch.isfinite(loss):
            self._diverge()
            return
        self._remember_weights()
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()
        self.steps_taken += 1
        self._loss_sum = self._loss_sum.to(loss.device) + loss.detach()
        self._epoch_steps += 1

    def _remember_weights(self) -> None:
        """Copy the weights whose loss was just found finite, in place: the rollback point of the guard.

        One copy of the model per step costs far less than the step itself (which touches every weight for every
        sample of the batch), and it is the only rollback point that cannot itself be poisoned: weights can stay
        finite yet be so large that logits overflow on other inputs.
        """
        with torch.no_grad():
            state = self.model.state_dict()
            if self._snapshot is None:
                self._snapshot = {k: v.detach().clone() for k, v in state.items()}
            else:
                for k, v in state.items():
                    self._snapshot[k].copy_(v)

    def _diverge(self) -> None:
        self.diverged_step = self.steps_taken
        self.trainer.should_stop = True
        if self._snapshot is not None:
            self.model.load_state_dict(self._snapshot)

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._epoch_steps = torch.zeros((), device=self.device), 0

    def on_train_epoch_end(self) -> None:
        if self._epoch_steps:
            self.log("train_loss", self._loss_sum / self._epoch_steps, on_epoch=True, sync_dist=True)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    @property
    def diverged(self) -> bool:
        return self.diverged_step is not None
