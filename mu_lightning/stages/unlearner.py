"""The Unlearner base: turns M into M_u from the forget and retain sets, never seeing the gold model."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from mu_lightning.data.batches import PairedBatches, PhasedBatches, SequentialBatches
from mu_lightning.data.datamodule import UnlearningDataModule
from mu_lightning.stages.base import Stage


class Unlearner(Stage):
    """Base class of every unlearning method (``conf/unlearner/<name>.yaml`` names a subclass).

    A method declares which sets it reads (``reads``: a subset of ``("forget", "retain")``) and which one an epoch
    is a pass over (``anchor``); the others are cycled alongside, so each training step receives
    ``{"forget": (x, y), "retain": (x, y)}`` with the sets it reads. It implements ``loss(batch)`` for a
    training loop, or overrides ``edit(data)`` for a one-shot weight edit (with ``epochs: 0``), or both.

    ``model`` already holds M's weights when the method receives it; ``teacher`` is a frozen copy of M for methods
    that set ``needs_teacher``.
    """

    reads: ClassVar[tuple[str, ...]] = ("forget", "retain")
    anchor: ClassVar[str] = "retain"
    needs_teacher: ClassVar[bool] = False
    # True: an epoch is a full pass over each set of ``reads`` in turn, one set per step (RL's D_f pass then D_r pass)
    sequential: ClassVar[bool] = False

    def __init__(self, model: nn.Module, epochs: int = 1, batch_size: int = 64, optimizer=None, scheduler=None,
                 grad_clip: float | None = None):
        if epochs > 0 and optimizer is None:
            raise ValueError(f"{type(self).__name__} trains for {epochs} epochs and needs an optimizer")
        super().__init__(model, epochs, batch_size, optimizer, scheduler, grad_clip)
        # kept out of the module tree: not trained, not saved, not counted as the model's parameters
        self._teacher = [copy.deepcopy(model).eval().requires_grad_(False)] if self.needs_teacher else []

    @property
    def teacher(self) -> nn.Module:
        if not self._teacher:
            raise AttributeError(f"{type(self).__name__} does not set needs_teacher")
        return self._teacher[0]

    def on_fit_start(self) -> None:
        if self._teacher:
            self._teacher[0].to(self.device)

    def unlearn(self, data: UnlearningDataModule, make_trainer: Callable[[int], L.Trainer], seed: int) -> None:
        """Run the method: the one-shot ``edit`` first, then ``epochs`` passes of the training loop.

        ``self.data`` holds the datamodule meanwhile, so callbacks can evaluate on its splits.
        """
        self.check_request(data)
        self.data = data
        self.edit(data)
        if self.epochs > 0:
            make_trainer(self.epochs).fit(self, train_dataloaders=self.chunks(self.loader(data, seed)))

    @classmethod
    def check_request(cls, data: UnlearningDataModule) -> None:
        """Raise ConfigError if the method cannot serve this forget request; called before any training."""

    def edit(self, data: UnlearningDataModule) -> None:
        """One-shot weight edit before any training loop; the default does nothing."""

    def loader(self, data: UnlearningDataModule, seed: int) -> PairedBatches:
        sets = {name: data.batches(name, self.batch_size, shuffle=True, seed=seed + i, augment=True)
                for i, name in enumerate(self.reads)}
        if self.phases(0) is not None:
            return PhasedBatches(sets, self.phases, self.epochs, epoch=lambda: self.current_epoch)
        return SequentialBatches(sets) if self.sequential else PairedBatches(sets, anchor=self.anchor)

    def phases(self, epoch: int) -> tuple[str, ...] | None:
        """The sets epoch ``epoch`` passes over in turn, one set per step, when that changes from epoch to epoch
        (SCRUB: D_f then D_r for the first ``msteps`` epochs, D_r alone after); None leaves it to ``sequential``."""
        return None

    def loss(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} trains for {self.epochs} epochs but defines no loss()")

    def train_step(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.step(self.loss(batch))

    def last_linear(self) -> nn.Linear:
        """The model's classifier head: its last ``nn.Linear`` (Fisher's last-layer rule, Boundary Expand's head)."""
        linears = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise TypeError(f"{type(self).__name__} needs a model whose classifier head is an nn.Linear")
        return linears[-1]

    def per_sample_grads(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: [n, *shape]}``: the gradient of CE(f(x_i), y_i) for each sample, in eval mode (torch.func vmap).

        One vectorised call instead of n backward passes: Fisher forgetting and IU need per-sample gradients.
        """
        params = {k: p.detach() for k, p in self.model.named_parameters() if p.requires_grad}
        buffers = dict(self.model.named_buffers())

        def sample_loss(p, xi, yi):
            return F.cross_entropy(functional_call(self.model, (p, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0))

        was_training = self.model.training
        self.model.eval()
        try:
            return vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, x, y)
        finally:
            self.model.train(was_training)


def reinitialise(module: nn.Module) -> nn.Module:
    """Draw fresh weights for every layer of ``module`` that knows how (``reset_parameters``), in place.

    Bad Teacher's incompetent teacher and EU-k's re-initialised blocks both need a random init of a given shape.
    """
    for layer in module.modules():
        if callable(getattr(layer, "reset_parameters", None)):
            layer.reset_parameters()
    return module
