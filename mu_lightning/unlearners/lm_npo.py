"""NPO: Negative Preference Optimization (Zhang, Lin, Bai, Mei, "Negative Preference Optimization: From
Catastrophic Collapse to Effective Unlearning", COLM 2024, eq. 3), with a retain NLL term (their NPO+RT;
locuslab/open-unlearning ``trainer/unlearn/npo.py``)."""

import torch.nn.functional as F

from mu_lightning.data.qa import QA
from mu_lightning.unlearners.base import Unlearner
from mu_lightning.unlearners.lm import Preference


class LMNPO(Preference, Unlearner):
    """γ·(2/β)·E[softplus(β·(log π_θ(a|q) − log π_ref(a|q)))] on D_f + α·(NLL on D_r), π_ref the frozen M: DPO's loss
    with D_f's answers as the dispreferred ones and no preferred answer; bounded where GA's is not. Reads: forget
    and retain."""

    def loss(self, batch):
        ratio = self.log_ratio(batch["forget"][0][:, QA])
        forget = 2 / self.beta * F.softplus(self.beta * ratio).mean()  # = −(2/β)·log σ(−β·ratio)
        return self.gamma * forget + self.alpha * self.retain_term(batch, self.retain_loss)
