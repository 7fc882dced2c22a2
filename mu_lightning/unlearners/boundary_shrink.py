"""Boundary Shrink: relabel each forget sample with its nearest wrong class (Chen et al., CVPR 2023, §3.2)."""

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import Pass, Unlearner


def check_range(input_range) -> tuple[float, float] | None:
    """``input_range`` as ``(low, high)`` with low < high, or None; ConfigError otherwise."""
    if input_range is None:
        return None
    values = list(input_range) if isinstance(input_range, Iterable) and not isinstance(input_range, str) else [
        input_range]
    try:
        low, high = (float(v) for v in values)
    except (TypeError, ValueError):  # not two numbers
        low = high = math.nan
    if not low < high:  # NaN compares false too
        raise ConfigError(f"unlearner.input_range={values} must be [low, high] with low < high, or null for no clamp")
    return low, high


class BoundaryShrink(Unlearner):
    """Fine-tune on D_f towards y* = argmax f_o(x'), where x' is an FGSM step of size ``eps`` on the frozen M
    (SalUn ``boundary_sh.py``): the neighbour class across the nearest decision boundary.

    The step is taken in the space the dataset's values were read in, pixels for images, as both references do: on
    standardised data (``Samples.pixel_stats``) x is mapped back with the dataset's mean and std, stepped by ``eps``,
    clamped to ``input_range`` and rounded to multiples of 1/``pixel_levels``, then standardised again (the Boundary
    Unlearning code's ``adv_generator.py`` clamper: [0, 1] and 1/255 for 8-bit images). Both default to what the
    dataset declares (``dataset.input_range``, ``dataset.pixel_levels``); ``null`` skips the clamp or the rounding,
    so inputs that are not pixels (a tensor file, the synthetic mixture) are stepped and nothing else. Reads: forget
    only.
    """

    reads = ("forget",)
    needs_frozen_original = True

    def __init__(self, model, eps: float = 0.1, input_range: list[float] | None = None, pixel_levels: int | None = None,
                 **kwargs):
        super().__init__(model, **kwargs)
        self.eps, self.input_range, self.pixel_levels = float(eps), check_range(input_range), pixel_levels
        if pixel_levels is not None and not pixel_levels > 0:
            raise ConfigError(f"unlearner.pixel_levels={pixel_levels} must be a positive integer (8-bit images: 255) "
                              "or null for no rounding")

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
            adv = adv.clamp(*self.input_range)
        if self.pixel_levels is not None:
            adv = torch.round(adv * self.pixel_levels) / self.pixel_levels
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
