"""RL: train on D_f with random labels and on D_r with true ones (Golatkar et al. 2020; SalUn ``RL.py``)."""

import torch
import torch.nn.functional as F

from mu_lightning.data.batches import TensorBatches
from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import Pass, Unlearner

EPOCHS = ("passes", "mixed")


class RandomLabel(Unlearner):
    """Each epoch: one pass over D_f, each batch relabelled uniformly over all C classes, then one pass over D_r.

    Reads: forget and retain. As in SalUn's CIFAR-10 code, a fresh label is drawn every time a sample is seen and
    may hit the true one; the retain pass after it is what keeps utility (SalUn issue #14).

    ``epoch: mixed`` is SalUn's CIFAR-100 epoch (``RL.py``): D_f, relabelled, and D_r concatenated and shuffled into
    one pass. Each sample is seen once per epoch, so a label drawn when the sample is seen has the distribution of
    the reference's label drawn once per epoch.
    """

    reads = ("forget", "retain")

    def __init__(self, model, epoch: str = "passes", **kwargs):
        super().__init__(model, **kwargs)
        if epoch not in EPOCHS:
            raise ConfigError(f"unlearner.epoch={epoch!r} is not one of {', '.join(EPOCHS)}")
        self.epoch = epoch

    def passes(self, epoch):
        return (Pass("mixed"),) if self.epoch == "mixed" else (Pass("forget"), Pass("retain"))

    def sets(self, data, seed):
        if self.epoch == "passes":
            return super().sets(data, seed)
        (xf, yf), (xr, yr) = data.tensors("forget"), data.tensors("retain")
        # forget samples carry label y + C, which loss() replaces by a random label
        return {"mixed": TensorBatches(torch.cat([xf, xr]), torch.cat([yf + data.num_classes, yr]), self.batch_size,
                                       shuffle=True, seed=seed, augment=data.augment if self.augment else None)}

    def loss(self, batch):
        ((name, (x, y)),) = batch.items()
        classes = self.data.num_classes
        if name == "forget":
            y = torch.randint(0, classes, y.shape, device=y.device)
        elif name == "mixed":
            y = torch.where(y >= classes, torch.randint(0, classes, y.shape, device=y.device), y)
        return F.cross_entropy(self.model(x), y)
