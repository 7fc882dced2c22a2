"""NegGrad+: descend on D_r, ascend on D_f, held near M by an L2-to-init term (Kurmanji et al. 2023, SCRUB §5)."""

import torch.nn.functional as F

from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import Pass, Unlearner


class NegGradPlus(Unlearner):
    """L = α·[CE(D_r) + (λ/2)·‖θ − θ_o‖²] − (1 − α)·CE(D_f) per step (SCRUB notebook ``run_neggrad_epoch``).

    Reads: forget and retain. An epoch is a pass over D_r with D_f batches cycled alongside; θ_o is the frozen
    copy of M. ``l2_to_init`` is λ; the paper uses the optimizer's weight decay for it.
    """

    reads = ("forget", "retain")
    needs_frozen_original = True

    def __init__(self, model, alpha: float = 0.95, l2_to_init: float = 5e-4, **kwargs):
        super().__init__(model, **kwargs)
        if not 0 <= alpha <= 1:
            raise ConfigError(f"unlearner.alpha={alpha} must be in [0, 1]: the retain term's weight")
        self.alpha, self.l2_to_init = float(alpha), float(l2_to_init)

    def passes(self, epoch):
        return (Pass("retain", alongside=("forget",)),)

    def loss(self, batch):
        (xf, yf), (xr, yr) = batch["forget"], batch["retain"]
        pairs = zip(self.model.parameters(), self.frozen_original.parameters(), strict=True)
        drift = sum(((p - p0) ** 2).sum() for p, p0 in pairs)
        retain = F.cross_entropy(self.model(xr), yr) + self.l2_to_init / 2 * drift
        return self.alpha * retain - (1 - self.alpha) * F.cross_entropy(self.model(xf), yf)
