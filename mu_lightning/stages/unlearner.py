"""The Unlearner base: turns M into M_u from the forget and retain sets, never seeing the gold model."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import ClassVar

import lightning as L
import torch
from torch import nn

from mu_lightning.data.batches import PairedBatches
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
        self.data = data
        self.edit(data)
        if self.epochs > 0:
            make_trainer(self.epochs).fit(self, train_dataloaders=self.loader(data, seed))

    def edit(self, data: UnlearningDataModule) -> None:
        """One-shot weight edit before any training loop; the default does nothing."""

    def loader(self, data: UnlearningDataModule, seed: int) -> PairedBatches:
        sets = {name: data.batches(name, self.batch_size, shuffle=True, seed=seed + i)
                for i, name in enumerate(self.reads)}
        return PairedBatches(sets, anchor=self.anchor)

    def loss(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} trains for {self.epochs} epochs but defines no loss()")

    def training_step(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]], batch_idx: int) -> None:
        self.step(self.loss(batch))
