"""The original model M (trained on D) and the gold model M_g (retrained from scratch on D_r): one recipe, two sets."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Checkpoint

from mu_lightning.stages.base import Stage

RESUME_FILE = "last.ckpt"  # the resumable checkpoint in a cache entry's work area (docs/checkpoints.md)


class ClassifierModule(Stage):
    """Plain supervised training with cross-entropy; the pipeline feeds it D for M and D_r for M_g.

    Using one class and one recipe for both is what makes M_g a fair reference (docs/metrics.md §0).
    """

    # Nothing watches these stages between steps (the pipeline gives them no callbacks, only a progress bar when a
    # terminal is attached), so a chunk can be longer than an unlearner's: 32 steps per Lightning batch. The cost is
    # holding 32 batches at once, on the host and (after Lightning's transfer) on the device: ~100 MB for CIFAR at
    # batch 256.
    steps_per_batch = 32

    def __init__(self, *args, checkpoint_every: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.checkpoint_every = checkpoint_every  # epochs between resumable checkpoints (train.checkpoint_every)
        self._batches: list = []

    def chunks(self, batches):
        self._batches = [batches]  # whose shuffling generator a resumable checkpoint saves
        return super().chunks(batches)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """What Lightning's checkpoint lacks for an exact resume: the step tally, the batch order's generator and
        torch's global generator (dropout)."""
        checkpoint["mu_lightning"] = {"tally": dict(self._tally), "torch_rng": torch.get_rng_state(),
                                      "batch_rng": [b.generator.get_state() for b in self._batches]}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint["mu_lightning"]
        self._tally.update(saved["tally"])
        torch.set_rng_state(saved["torch_rng"])
        for batches, state in zip(self._batches, saved["batch_rng"], strict=True):
            batches.generator.set_state(state)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.model(x), y)


class ResumeCheckpoint(Checkpoint):
    """Every ``every`` epochs (not after the last), the whole state of the fit to ``path``: weights, optimizer and
    schedule, Lightning's loops and ``ClassifierModule.on_save_checkpoint``'s extras. Written to a temporary file and
    renamed, so a kill leaves the previous checkpoint whole. A ``Checkpoint`` subclass, so Lightning calls it after
    the module's own ``on_train_epoch_end`` (which steps the schedule), as it does ``ModelCheckpoint``."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = Path(path), int(every)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        done = trainer.current_epoch + 1
        if done % self.every or done >= trainer.max_epochs or trainer.should_stop:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


def resumable(module: ClassifierModule, work: Path | None) -> tuple[list[Checkpoint], str | None]:
    """The callbacks that make ``module``'s fit resumable, and the checkpoint it resumes from (None: from the start):
    none without ``checkpoint_every`` or a work area (``cache=false``)."""
    if not module.checkpoint_every or work is None:
        return [], None
    path = Path(work) / RESUME_FILE
    return [ResumeCheckpoint(path, module.checkpoint_every)], (str(path) if path.exists() else None)
