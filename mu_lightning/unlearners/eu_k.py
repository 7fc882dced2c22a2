"""EU-k: exact unlearning of the last k blocks (Goel et al., "Towards Adversarial Evaluation of Machine Unlearning",
2022, §4; SCRUB's notebooks)."""

from mu_lightning.unlearners.base import reinitialise
from mu_lightning.unlearners.cf_k import CFk


class EUk(CFk):
    """Re-initialise the last ``k`` blocks, then train only them on D_r with the gold model's recipe: what those
    blocks knew of D_f is gone, and D_f never reaches them again. Reads: retain only."""

    def edit(self, data):
        for module in self.tail:
            reinitialise(module)
