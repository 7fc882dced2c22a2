"""KL minimisation for language models: −NLL on D_f + KL(M ‖ M_u) on D_r (TOFU §3, "KL Minimization"; GradDiff
with open-unlearning's ``retain_loss_type: KL``)."""

from mu_lightning.unlearners.base import Unlearner
from mu_lightning.unlearners.lm import LMMethod


class LMKL(LMMethod, Unlearner):
    """Ascend on D_f while keeping M_u's next-token distributions on D_r close to the frozen M's. Reads: forget and
    retain."""

    reads = ("forget", "retain")
    needs_frozen_original = True

    def __init__(self, model, gamma: float = 1.0, alpha: float = 1.0, **train):
        super().__init__(model, **train)
        self.gamma, self.alpha = gamma, alpha

    def loss(self, batch):
        return -self.gamma * self.nll(batch) + self.alpha * self.retain_term(batch, "KL")
