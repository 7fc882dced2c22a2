"""IU: influence unlearning, one WoodFisher Newton step (Izzo et al. 2021; Jia et al. 2023, Unlearn-Sparse)."""

import torch

from mu_lightning.unlearners.base import OneShotUnlearner


class Influence(OneShotUnlearner):
    """One-shot edit θ ← θ_o + α·k, k ≈ H⁻¹v, with v = n_f/(n_f + n_r)·(ḡ_f − ḡ_r) the mean-gradient gap
    between D_f and D_r (the influence of removing D_f on the empirical risk minimiser).

    H⁻¹ is the WoodFisher rank-1 recursion of the reference over the per-sample gradients g of the first
    ``num_samples`` retain samples with damping N: k ← k − (k·g / (N + o·g))·o, o ← o − (o·g / (N + o·g))·o,
    where o starts as the first g. Reads: forget and retain.
    """

    reads = ("forget", "retain")

    def __init__(self, model, alpha: float = 10.0, damping: float = 1000.0, num_samples: int = 1000, **kwargs):
        super().__init__(model, **kwargs)
        self.alpha, self.damping, self.num_samples = float(alpha), float(damping), int(num_samples)

    def flat_grads(self, x, y) -> torch.Tensor:
        device = next(self.model.parameters()).device  # the trainer's (Unlearner.on_device)
        return torch.cat([g.flatten(1) for g in self.per_sample_grads(x.to(device), y.to(device)).values()], dim=1)

    def grad_sum(self, data, split: str) -> tuple[torch.Tensor, int]:
        x, y = data.tensors(split)
        chunks = zip(x.split(self.batch_size), y.split(self.batch_size), strict=True)
        total = sum(self.flat_grads(xs, ys).sum(0) for xs, ys in chunks)
        return total, len(x)

    def inverse_hvp(self, data, v: torch.Tensor) -> torch.Tensor:
        x, y = data.tensors("retain")
        x, y = x[: self.num_samples], y[: self.num_samples]
        k, o = v.clone(), None
        for xs, ys in zip(x.split(self.batch_size), y.split(self.batch_size), strict=True):
            for g in self.flat_grads(xs, ys):
                if o is None:
                    o = g.clone()
                    continue
                og = o @ g
                k -= (k @ g) / (self.damping + og) * o
                o -= og / (self.damping + og) * o
        return k

    @torch.no_grad()
    def edit(self, data):
        (g_f, n_f), (g_r, n_r) = self.grad_sum(data, "forget"), self.grad_sum(data, "retain")
        v = g_f / (n_f + n_r) - g_r * n_f / ((n_f + n_r) * n_r)
        step = self.alpha * self.inverse_hvp(data, v)
        params = [p for p in self.model.parameters() if p.requires_grad]
        for p, d in zip(params, step.split([p.numel() for p in params]), strict=True):
            p.add_(d.view_as(p))
