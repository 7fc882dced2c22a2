"""GradDiff for language models: γ·(−NLL on D_f) + α·(NLL on D_r) (Liu et al. 2022, "Continual Learning and
Private Unlearning"; TOFU's "Gradient Difference"; locuslab/open-unlearning ``trainer/unlearn/grad_diff.py``)."""

from mu_lightning.unlearners.base import Unlearner
from mu_lightning.unlearners.lm import LMMethod


class LMGradDiff(LMMethod, Unlearner):
    """Ascend on D_f, descend on D_r, a D_r batch alongside each D_f batch. Reads: forget and retain.

    ``retain_loss``: ``NLL`` (the answer loss) or ``KL`` (the divergence from the frozen M on D_r).
    """

    reads = ("forget", "retain")

    def __init__(self, model, gamma: float = 1.0, alpha: float = 1.0, retain_loss: str = "NLL", **train):
        self.needs_frozen_original = retain_loss == "KL"  # before the base copies M
        super().__init__(model, **train)
        self.gamma, self.alpha, self.retain_loss = gamma, alpha, self.check_retain_loss(retain_loss)

    def loss(self, batch):
        return -self.gamma * self.nll(batch) + self.alpha * self.retain_term(batch, self.retain_loss)
