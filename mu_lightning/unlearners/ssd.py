"""SSD (Foster et al., "Fast Machine Unlearning without Retraining through Selective Synaptic Dampening", AAAI 2024,
§3) and its label-free variant LFSSD (Foster et al., "Loss-Free Machine Unlearning", ICLR 2024 Tiny Papers)."""

import torch
import torch.nn.functional as F

from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import OneShotUnlearner, eval_mode


class SSD(OneShotUnlearner):
    """One-shot: dampen the weights far more important to D_f than to D, with no training loop.

    Importance is a diagonal Fisher, the mean over batches of (∇_θ CE)². Where []_Df > α·[]_D, θ ← θ·min(λ·[]_D/[]_Df,
    1), α = ``selection_weighting``, λ = ``dampening_constant``. ``label_free`` (LFSSD) takes ∇_θ‖f(x)‖₂² instead of
    the CE gradient and |grad| instead of grad², so no labels are read. Reads: forget and retain (D = D_f ∪ D_r).
    """

    def __init__(self, model, selection_weighting: float = 10.0, dampening_constant: float = 1.0,
                 label_free: bool = False, **kwargs):
        super().__init__(model, **kwargs)
        for name, value in (("selection_weighting", selection_weighting), ("dampening_constant", dampening_constant)):
            if not value > 0:
                raise ConfigError(f"unlearner.{name}={value} is out of range: it must be > 0")
        self.alpha, self.dampening, self.label_free = selection_weighting, dampening_constant, label_free

    def importance(self, batches) -> dict[str, torch.Tensor]:
        params = dict(self.model.named_parameters())
        total = {name: torch.zeros_like(p) for name, p in params.items()}
        device = next(self.model.parameters()).device  # the trainer's (Unlearner.on_device)
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            grads = self.counted(self.batch_grads, x, y, samples=len(x))
            for (name, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    total[name] += g.abs() if self.label_free else g.pow(2)
        return {name: t / len(batches) for name, t in total.items()}

    def batch_grads(self, x, y) -> tuple[torch.Tensor | None, ...]:
        """The gradient of one batch's loss (CE, or LFSSD's ‖f(x)‖₂²) for every parameter (None if unused)."""
        out = self.model(x)
        loss = out.pow(2).sum(1).mean() if self.label_free else F.cross_entropy(out, y)
        return torch.autograd.grad(loss, list(self.model.parameters()), allow_unused=True)

    def edit(self, data):
        with eval_mode(self.model):
            forget = self.importance(data.batches("forget", self.batch_size))
            full = self.importance(data.batches("train", self.batch_size))
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                selected = forget[name] > self.alpha * full[name]
                factor = (self.dampening * full[name] / forget[name]).clamp(max=1.0)
                p[selected] *= factor[selected]
