"""Toy ascent: gradient ascent on D_f, scaled (the toy method of tests/test_contributing.py). Reads: forget only."""

import torch.nn.functional as F

from mu_lightning.unlearners.base import Pass, Unlearner


class ToyAscent(Unlearner):
    """Maximise the cross-entropy on D_f, times ``scale``. Reads: forget only."""

    reads = ("forget",)

    def __init__(self, model, scale: float = 1.0, **kwargs):
        super().__init__(model, **kwargs)
        self.scale = scale

    def passes(self, epoch):
        return (Pass("forget"),)

    def loss(self, batch):
        x, y = batch["forget"]
        return -self.scale * F.cross_entropy(self.model(x), y)
