"""Boundary Shrink: relabel each forget sample with its nearest wrong class (Chen et al., CVPR 2023, §3.2)."""

import torch
import torch.nn.functional as F

from mu_lightning.unlearners.base import Pass, Unlearner


class BoundaryShrink(Unlearner):
    """Fine-tune on D_f towards y* = argmax f_o(x'), where x' is an FGSM step of size ``eps`` on the frozen M
    (SalUn ``boundary_sh.py``): the neighbour class across the nearest decision boundary.

    Reads: forget only. ``input_range`` clamps x' and rounds it to 1/255 steps as the paper does for images in
    [0, 1]; null leaves x' as is (for standardised inputs).
    """

    reads = ("forget",)
    needs_frozen_original = True

    def __init__(self, model, eps: float = 0.1, input_range: tuple[float, float] | None = (0.0, 1.0), **kwargs):
        super().__init__(model, **kwargs)
        self.eps, self.input_range = float(eps), input_range

    def neighbour_labels(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(self.frozen_original(x), y), x)
        x_adv = x.detach() + self.eps * g.sign()
        if self.input_range is not None:
            x_adv = torch.round(x_adv.clamp(*self.input_range) * 255) / 255
        with torch.no_grad():
            return self.frozen_original(x_adv).argmax(dim=1)

    def passes(self, epoch):
        return (Pass("forget"),)

    def loss(self, batch):
        x, y = batch["forget"]
        return F.cross_entropy(self.model(x), self.neighbour_labels(x, y))
