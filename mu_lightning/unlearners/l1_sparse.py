"""ℓ1-sparse: fine-tune on D_r with a linearly decaying ℓ1 penalty (Jia et al. 2023, Unlearn-Sparse ``FT_l1``)."""

import torch.nn.functional as F

from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import Pass, Unlearner


class L1Sparse(Unlearner):
    """Minimise CE(D_r) + γ_t·‖θ‖₁, γ_t = γ·(1 − t / (E − no_l1_epochs)) in epoch t, and 0 in the last
    ``no_l1_epochs`` epochs. Sparsity is what lets a fine-tune forget (the paper's "model sparsity" thesis).

    Reads: retain only.
    """

    reads = ("retain",)

    def __init__(self, model, gamma: float = 5e-5, no_l1_epochs: int = 0, **kwargs):
        super().__init__(model, **kwargs)
        if not 0 <= no_l1_epochs < max(self.epochs, 1):
            raise ConfigError(f"unlearner.no_l1_epochs={no_l1_epochs} must be >= 0 and below "
                              f"unlearner.epochs={self.epochs}")
        self.gamma, self.no_l1_epochs = float(gamma), int(no_l1_epochs)

    def l1_coefficient(self, epoch: int) -> float:
        l1_epochs = self.epochs - self.no_l1_epochs
        return self.gamma * (1 - epoch / l1_epochs) if epoch < l1_epochs else 0.0

    def passes(self, epoch):
        return (Pass("retain"),)

    def loss(self, batch):
        x, y = batch["retain"]
        l1 = sum(p.abs().sum() for p in self.model.parameters())
        return F.cross_entropy(self.model(x), y) + self.l1_coefficient(self.current_epoch) * l1
