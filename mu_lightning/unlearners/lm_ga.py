"""GA for language models: gradient ascent on the answer tokens of D_f (Maini et al. 2024, TOFU §3;
locuslab/open-unlearning ``trainer/unlearn/grad_ascent.py``)."""

from mu_lightning.unlearners.base import Unlearner
from mu_lightning.unlearners.lm import LMMethod


class LMGA(LMMethod, Unlearner):
    """Minimise −NLL of D_f's answers. Reads: forget only."""

    reads = ("forget",)

    def loss(self, batch):
        return -self.nll(batch)
