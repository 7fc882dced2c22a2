"""SalUn: random labels on the most forget-salient weights only (Fan et al., ICLR 2024, §4; SalUn code)."""

import torch
import torch.nn.functional as F

from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import eval_mode
from mu_lightning.unlearners.random_label import RandomLabel


class SalUn(RandomLabel):
    """RL (one relabelled D_f pass, then one D_r pass, per epoch) restricted to a weight saliency mask.

    Hard (default, ``generate_mask.py`` + ``RL.py``): m = 1 on the top ``mask_ratio`` fraction of
    |Σ_batches ∇θ(−CE(θ_o; D_f))| over all weights; gradients are multiplied by m, and after every step the other
    weights are put back to θ_o with their momentum zeroed, so θ_u = m⊙(θ_o + Δ) + (1 − m)⊙θ_o.

    Soft (``soft: true``, SalUn-soft, ``RL_pro.py``): no mask; after every step θ − θ_o is soft-thresholded
    towards θ_o at the magnitude below which a fraction ``mask_ratio·(1 − t/T)`` of all weights lies (t steps of T).
    The reference anchors at each epoch's start and shuffles D_f with D_r; we anchor at θ_o and keep RL's two passes.

    Reads: forget and retain.
    """

    needs_frozen_original = True

    def __init__(self, model, mask_ratio: float = 0.5, soft: bool = False, **kwargs):
        super().__init__(model, **kwargs)
        if not 0 < mask_ratio <= 1:
            raise ConfigError(f"unlearner.mask_ratio={mask_ratio} must be in (0, 1]")
        self.mask_ratio, self.soft = float(mask_ratio), bool(soft)
        self.masks: list[torch.Tensor] = []

    def edit(self, data):
        if self.soft:
            return
        saliency = [torch.zeros_like(p) for p in self.model.parameters()]
        with eval_mode(self.model):  # as generate_mask.py: BatchNorm on M's running statistics, which stay M's
            device = next(self.model.parameters()).device  # the trainer's (Unlearner.on_device)
            for x, y in data.batches("forget", self.batch_size):
                x, y = x.to(device), y.to(device)
                grads = self.counted(self.forget_grads, x, y, samples=len(x))
                for s, g in zip(saliency, grads, strict=True):
                    s += g
        flat = torch.cat([s.abs().flatten() for s in saliency])
        threshold = flat.kthvalue(max(1, flat.numel() - round(self.mask_ratio * flat.numel()) + 1)).values
        self.masks = [(s.abs() >= threshold).float() for s in saliency]

    def forget_grads(self, x, y) -> tuple[torch.Tensor, ...]:
        """∇θ(−CE(θ; x, y)) of one forget batch, for every parameter: the saliency's summand."""
        return torch.autograd.grad(-F.cross_entropy(self.model(x), y), list(self.model.parameters()))

    def on_after_backward(self):
        if self.soft:
            return
        for p, m in zip(self.model.parameters(), self.masks, strict=True):
            p.grad.mul_(m.to(p.device))

    def train_step(self, batch):
        super().train_step(batch)
        self.after_step()  # after every optimizer step, not every Lightning batch (a chunk of steps: Stage.chunks)

    @torch.no_grad()
    def after_step(self):
        params, originals = list(self.model.parameters()), list(self.frozen_original.parameters())
        if self.soft:
            return self.soft_threshold(params, originals)
        state = self.optimizers().optimizer.state
        for p, p0, m in zip(params, originals, self.masks, strict=True):
            m = m.to(p.device)
            p.copy_(m * p + (1 - m) * p0)
            if "momentum_buffer" in state.get(p, {}):
                state[p]["momentum_buffer"].mul_(m)

    def soft_threshold(self, params, originals):
        k = int(self.mask_ratio * (1 - self.steps_taken / self.planned_steps) * sum(p.numel() for p in params))
        if k < 1:
            return
        diffs = [p - p0 for p, p0 in zip(params, originals, strict=True)]
        threshold = torch.cat([d.abs().flatten() for d in diffs]).kthvalue(k).values
        for p, p0, d in zip(params, originals, diffs, strict=True):
            p.copy_(p0 + d.sign() * (d.abs() - threshold).clamp(min=0))
