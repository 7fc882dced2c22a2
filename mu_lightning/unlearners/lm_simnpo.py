"""SimNPO (Fan, Liu, Lin, Jia, Zhang, Chang, Liu, "Simplicity Prevails: Rethinking Negative Preference Optimization
for LLM Unlearning", 2024, eq. 4): NPO without the reference model, on the length-normalised answer NLL
(OPTML-Group/Unlearn-Simple; locuslab/open-unlearning ``trainer/unlearn/simnpo.py``)."""

import torch.nn.functional as F

from mu_lightning.data.qa import QA
from mu_lightning.stages.lm import answer_nll
from mu_lightning.unlearners.base import Unlearner
from mu_lightning.unlearners.lm import LMMethod


class LMSimNPO(LMMethod, Unlearner):
    """γ·(2/β)·E[softplus(−β·(NLL(a|q)/|a| − δ))] on D_f + α·(NLL on D_r): the loss falls as D_f's per-token NLL
    rises past the margin δ. Reads: forget and retain."""

    reads = ("forget", "retain")

    def __init__(self, model, beta: float = 4.5, delta: float = 0.0, gamma: float = 0.125, alpha: float = 1.0,
                 retain_loss: str = "NLL", **train):
        self.needs_frozen_original = retain_loss == "KL"  # before the base copies M
        super().__init__(model, **train)
        self.beta, self.delta, self.gamma, self.alpha = beta, delta, gamma, alpha
        self.retain_loss = self.check_retain_loss(retain_loss)

    def loss(self, batch):
        nll, count = answer_nll(self.model, batch["forget"][0][:, QA])
        per_token = nll / count.clamp(min=1) - self.delta
        forget = 2 / self.beta * F.softplus(-self.beta * per_token).mean()  # = −(2/β)·log σ(β·per_token)
        return self.gamma * forget + self.alpha * self.retain_term(batch, self.retain_loss)
