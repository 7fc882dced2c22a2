"""RMU: Representation Misdirection for Unlearning (Li et al., "The WMDP Benchmark: Measuring and Reducing Malicious
Use With Unlearning", ICML 2024, §5, eq. 1-2; centerforaisafety/wmdp ``rmu/unlearn.py``; locuslab/open-unlearning
``trainer/unlearn/rmu.py``)."""

import torch

from mu_lightning.data.qa import PAD, QA, SEP
from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import Unlearner
from mu_lightning.unlearners.lm import LMMethod


def answer_positions(tokens: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool: the answer tokens' positions (after ``SEP``, not padding)."""
    return ((tokens == SEP).int().cumsum(1) > 0) & (tokens != SEP) & (tokens != PAD)


class LMRMU(LMMethod, Unlearner):
    """Steer the residual stream after block ``layer`` on D_f's answer tokens to c·u (u a random unit vector drawn
    once from the unlearning seed, c ``steering_coeff``) and keep it at the frozen M's on D_r:
    γ·‖h_θ(f) − c·u‖² + α·‖h_θ(r) − h_ref(r)‖², each the mean over width and answer tokens. Reads: forget and
    retain."""

    reads = ("forget", "retain")
    needs_frozen_original = True

    def __init__(self, model, layer: int = 1, steering_coeff: float = 2.0, gamma: float = 1.0, alpha: float = 1.0,
                 **train):
        super().__init__(model, **train)
        self.layer, self.steering_coeff, self.gamma, self.alpha = layer, steering_coeff, gamma, alpha
        self._control: torch.Tensor | None = None

    @classmethod
    def check_model(cls, model, num_classes, options):
        super().check_model(model, num_classes, options)
        layer = options.get("layer", 1)
        if not 1 <= layer <= model.num_blocks:
            raise ConfigError(f"unlearner.layer={layer} is not a block of model={type(model).__name__} (1 to "
                              f"{model.num_blocks})")

    def control(self, width: int, device) -> torch.Tensor:
        if self._control is None:  # open-unlearning: torch.rand(1, 1, dim), normalised, times the coefficient
            u = torch.rand(width)
            self._control = u / u.norm() * self.steering_coeff
        return self._control.to(device)

    def steered(self, model, tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        h, mask = model.hidden(tokens, self.layer), answer_positions(tokens)
        return ((h - target) ** 2).mean(-1)[mask].mean()

    def loss(self, batch):
        forget, retain = batch["forget"][0][:, QA], batch["retain"][0][:, QA]
        target = self.control(self.model.width, forget.device)
        with torch.no_grad():
            reference = self.frozen_original.hidden(retain, self.layer)
        return self.gamma * self.steered(self.model, forget, target) + self.alpha * self.steered(
            self.model, retain, reference)
