"""GA: gradient ascent on the forget set (Unlearn-Sparse ``GA.py``; Thudi et al. 2022)."""

import torch.nn.functional as F

from mu_lightning.unlearners.base import Pass, Unlearner


class GradientAscent(Unlearner):
    """Minimise −CE on D_f starting from M. Reads: forget only. Very lr-sensitive; the divergence guard stops it."""

    reads = ("forget",)

    def passes(self, epoch):
        return (Pass("forget"),)

    def loss(self, batch):
        x, y = batch["forget"]
        return -F.cross_entropy(self.model(x), y)
