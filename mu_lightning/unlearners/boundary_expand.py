"""Boundary Expand: push D_f into an extra shadow class, then drop it (Chen et al., CVPR 2023, §3.3)."""

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from mu_lightning.unlearners.base import Pass, Unlearner


class BoundaryExpand(Unlearner):
    """Widen the head to C + 1 outputs, fine-tune on D_f with CE towards the shadow class C, prune the shadow neuron
    (SalUn ``boundary_ex.py``). The forget samples' region is left to the old classes' boundaries.

    Reads: forget only. The widening is done without touching the model: a separate ``shadow`` neuron reads the
    head's input through a forward hook, so pruning is simply dropping it after training.
    """

    reads = ("forget",)

    @classmethod
    def check_model(cls, model, num_classes, options):
        cls.check_head(model, num_classes)

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.shadow = nn.Linear(self.last_linear().in_features, 1)  # a new row of the widened head, default init
        self._features: torch.Tensor | None = None

    def trainable_parameters(self):
        return itertools.chain(super().trainable_parameters(), self.shadow.parameters())

    def _keep_head_input(self, module, inputs):
        self._features = inputs[0]

    def unlearn(self, data, make_trainer, seed):
        hook = self.last_linear().register_forward_pre_hook(self._keep_head_input)
        try:
            super().unlearn(data, make_trainer, seed)
        finally:
            hook.remove()
            self._features = None

    def passes(self, epoch):
        return (Pass("forget"),)

    def loss(self, batch):
        x, _ = batch["forget"]
        logits = torch.cat([self.model(x), self.shadow(self._features)], dim=1)
        return F.cross_entropy(logits, torch.full((len(x),), logits.shape[1] - 1, device=x.device))
