"""The original model M (trained on D) and the gold model M_g (retrained from scratch on D_r): one recipe, two sets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mu_lightning.stages.base import Stage


class ClassifierModule(Stage):
    """Plain supervised training with cross-entropy; the pipeline feeds it D for M and D_r for M_g.

    Using one class and one recipe for both is what makes M_g a fair reference (docs/metrics.md §0).
    """

    # Nothing watches these stages between steps (the pipeline gives them no callbacks, only a progress bar when a
    # terminal is attached), so a chunk can be longer than an unlearner's: 32 steps per Lightning batch. The cost is
    # holding 32 batches at once, on the host and (after Lightning's transfer) on the device: ~100 MB for CIFAR at
    # batch 256.
    steps_per_batch = 32

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        self.step(F.cross_entropy(self.model(x), y))
