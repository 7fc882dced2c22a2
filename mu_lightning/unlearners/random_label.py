"""RL: train on D_f with random labels and on D_r with true ones (Golatkar et al. 2020; SalUn ``RL.py``)."""

import torch
import torch.nn.functional as F

from mu_lightning.unlearners.base import Pass, Unlearner


class RandomLabel(Unlearner):
    """Each epoch: one pass over D_f, each batch relabelled uniformly over all C classes, then one pass over D_r.

    Reads: forget and retain. As in SalUn's CIFAR-10 code, a fresh label is drawn every time a sample is seen and
    may hit the true one; the retain pass after it is what keeps utility (SalUn issue #14).
    """

    reads = ("forget", "retain")

    def passes(self, epoch):
        return (Pass("forget"), Pass("retain"))

    def loss(self, batch):
        if "forget" in batch:
            x, y = batch["forget"]
            y = torch.randint(0, self.data.num_classes, y.shape, device=y.device)
        else:
            x, y = batch["retain"]
        return F.cross_entropy(self.model(x), y)
