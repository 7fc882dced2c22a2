"""IdkDPO: DPO (Rafailov et al. 2023) with an "I don't know" answer preferred over D_f's true answer (TOFU §3,
"Preference Optimization"; Zhang et al. 2024 §5, IDK+DPO; locuslab/open-unlearning ``trainer/unlearn/dpo.py`` with
``QAwithIdkDataset``)."""

import torch.nn.functional as F

from mu_lightning.data.qa import IDK, QA
from mu_lightning.unlearners.base import Unlearner
from mu_lightning.unlearners.lm import Preference


class LMIdkDPO(Preference, Unlearner):
    """γ·(−2/β)·E[log σ(β·(r(idk) − r(a)))] on D_f + α·(NLL on D_r), r = log π_θ − log π_ref (π_ref the frozen M),
    idk each QA's answer from the "I don't know" pool. Reads: forget and retain."""

    def loss(self, batch):
        x = batch["forget"][0]
        margin = self.log_ratio(x[:, IDK]) - self.log_ratio(x[:, QA])
        forget = -2 / self.beta * F.logsigmoid(self.beta * margin).mean()
        return self.gamma * forget + self.alpha * self.retain_term(batch, self.retain_loss)
