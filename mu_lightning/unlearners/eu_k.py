"""EU-k: exact unlearning of the last k blocks (Goel et al., "Towards Adversarial Evaluation of Machine Unlearning",
2022, §4; SCRUB's notebooks)."""

import torch

from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import reinitialise
from mu_lightning.unlearners.cf_k import CFk

REINITS = ("fresh", "original_init")


class EUk(CFk):
    """Re-initialise the last ``k`` blocks, then train only them on D_r with the gold model's recipe: what those
    blocks knew of D_f is gone, and D_f never reaches them again. Reads: retain only.

    ``reinit: fresh`` draws new weights (and resets normalisation statistics); ``reinit: original_init`` puts back
    the weights M itself started from (the SCRUB notebook loads M's initial checkpoint), drawn again from the
    original's seed by the pipeline (``initial_weights``), and keeps M's normalisation statistics. That start is
    shared by M and the gold model but holds nothing trained: the gold model stays out of reach. As in CF-k, the
    blocks before the reset ones run without autograd while it trains (``CFk.untrained_frozen``).
    """

    def __init__(self, model, reinit: str = "fresh", **kwargs):
        super().__init__(model, **kwargs)
        if reinit not in REINITS:
            raise ConfigError(f"unlearner.reinit={reinit!r} is not one of {', '.join(REINITS)}")
        self.reinit = reinit
        self.initial_weights: dict[str, torch.Tensor] | None = None  # M's initialisation, for original_init

    @property
    def needs_initial_weights(self) -> bool:
        return self.reinit == "original_init"

    def edit(self, data):
        if self.reinit == "fresh":
            for module in self.tail:
                reinitialise(module)
            return
        if self.initial_weights is None:
            raise TypeError("EUk with reinit=original_init needs initial_weights (M's initialisation) before unlearn")
        tail = {id(p) for m in self.tail for p in m.parameters()}
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if id(p) in tail:
                    p.copy_(self.initial_weights[name].to(p.device))
