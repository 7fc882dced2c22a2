"""Amnesiac unlearning, relabelling variant (Graves et al., "Amnesiac Machine Learning", AAAI 2021, §4.2), as the
Bad Teacher and SSD codebases implement it."""

import torch
import torch.nn.functional as F

from mu_lightning.data.batches import TensorBatches
from mu_lightning.unlearners.base import Pass, Unlearner


class Amnesiac(Unlearner):
    """Give every forget sample a random wrong label, then train CE on those together with D_r, shuffled as one set.

    A new label is drawn uniformly, once, among the classes that are neither the sample's own nor forgotten as a
    whole (for a class-wise request: any retained class). The paper's other variant, which undoes the recorded
    updates of batches that held D_f, needs hooks into the original training run and is not implemented.
    Reads: forget and retain.
    """

    def sets(self, data, seed):
        xf, yf = data.tensors("forget")
        xr, yr = data.tensors("retain")
        allowed = torch.ones(len(yf), data.num_classes)
        allowed[:, data.forgotten_classes()] = 0
        allowed[torch.arange(len(yf)), yf] = 0
        relabelled = torch.multinomial(allowed, 1, generator=torch.Generator().manual_seed(seed)).squeeze(1)
        return {"mixed": TensorBatches(torch.cat([xf, xr]), torch.cat([relabelled, yr]), self.batch_size, True, seed)}

    def passes(self, epoch):
        return (Pass("mixed"),)

    def loss(self, batch):
        x, y = batch["mixed"]
        return F.cross_entropy(self.model(x), y)
