"""Boundary Shrink: relabel each forget sample with its nearest wrong class (Chen et al., CVPR 2023, §3.2)."""

import torch
import torch.nn.functional as F

from mu_lightning.unlearners.base import Pass, Unlearner


class BoundaryShrink(Unlearner):
    """Fine-tune on D_f towards y* = argmax f_o(x'), where x' is an FGSM step of size ``eps`` on the frozen M
    (SalUn ``boundary_sh.py``): the neighbour class across the nearest decision boundary.

    The step is taken in pixel space, as both references do: on standardised data (``Samples.pixel_stats``) x is
    mapped back to pixels with the dataset's mean and std, stepped by ``eps`` pixel units, clamped to
    ``input_range`` and rounded to 1/255 steps, then standardised again (the Boundary Unlearning code's
    ``adv_generator.py`` clamper). Data without ``pixel_stats`` are taken as pixels already. ``input_range: null``
    skips the clamp and the rounding (inputs that are not images). Reads: forget only.
    """

    reads = ("forget",)
    needs_frozen_original = True

    def __init__(self, model, eps: float = 0.1, input_range: tuple[float, float] | None = (0.0, 1.0), **kwargs):
        super().__init__(model, **kwargs)
        self.eps, self.input_range = float(eps), input_range

    def pixel_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The dataset's per-channel (mean, std) shaped to broadcast over ``like`` ([N, C, ...]), or None."""
        data = getattr(self, "data", None)  # set by ``unlearn``
        stats = None if data is None else data.samples.pixel_stats
        if stats is None:
            return None
        shape = (1, -1) + (1,) * (like.dim() - 2)
        return tuple(torch.tensor(s, dtype=like.dtype, device=like.device).view(shape) for s in stats)

    def neighbour(self, x: torch.Tensor, grad_sign: torch.Tensor) -> torch.Tensor:
        """x' = x + eps·sign(∇ₓ CE) in pixel space, clamped and rounded there, in the inputs' own space."""
        stats = self.pixel_stats(x)
        pixels = x if stats is None else x * stats[1] + stats[0]
        adv = pixels + self.eps * grad_sign  # std > 0: the sign of the pixel gradient is that of the input gradient
        if self.input_range is not None:
            adv = torch.round(adv.clamp(*self.input_range) * 255) / 255
        return adv if stats is None else (adv - stats[0]) / stats[1]

    def neighbour_labels(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(self.frozen_original(x), y), x)
        with torch.no_grad():
            return self.frozen_original(self.neighbour(x.detach(), g.sign())).argmax(dim=1)

    def passes(self, epoch):
        return (Pass("forget"),)

    def loss(self, batch):
        x, y = batch["forget"]
        return F.cross_entropy(self.model(x), self.neighbour_labels(x, y))
