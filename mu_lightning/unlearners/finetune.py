"""FT: fine-tune M on the retain set only, relying on catastrophic forgetting (Unlearn-Sparse ``FT.py``)."""

import torch.nn.functional as F

from mu_lightning.unlearners.base import Pass, Unlearner


class Finetune(Unlearner):
    """Minimise CE on D_r starting from M. Reads: retain only (no forget-set gradients)."""

    reads = ("retain",)

    def passes(self, epoch):
        return (Pass("retain"),)

    def loss(self, batch):
        x, y = batch["retain"]
        return F.cross_entropy(self.model(x), y)
