"""Batched train-time augmentation on in-memory tensors: one call per batch, no per-sample PIL transforms.

``conf/dataset/<name>.yaml: augment`` names an augmentation (``_target_``) or is null. It runs on the training
batches of every stage (the original and gold models, and each unlearner's training loop), never on evaluation,
on the statistics some unlearners compute once (importances, Fisher, per-sample gradients) or on MIA features
(docs/metrics.md §6.6: evaluate without augmentation). Its random draws come from the batch iterator's seeded
generator, so a run is reproducible. Its settings are part of the stage-cache key of the original and gold models.

Any callable ``(x, generator) -> x`` on a batch ``x`` of shape ``[B, C, H, W]`` can take its place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mu_lightning.errors import ConfigError


class CropFlip:
    """Random crop after zero padding, and random horizontal flip: the standard CIFAR recipe
    (``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``), drawn independently per sample.

    The inputs are already normalised, so the padding value 0 is the per-channel mean colour; torchvision pads with
    black before normalising. The difference is a border colour and does not change what is learned.

    Args:
        padding: pixels of zero padding on each side before a crop of the original size; 0 turns cropping off.
        flip: flip each sample left-right with probability 1/2 (turn off for digits and text: SVHN, MNIST).
    """

    def __init__(self, padding: int = 4, flip: bool = True):
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ConfigError(f"dataset.augment.padding={padding!r} is not allowed: it must be an integer >= 0")
        if not isinstance(flip, bool):
            raise ConfigError(f"dataset.augment.flip={flip!r} is not allowed: it must be true or false")
        self.padding, self.flip = padding, flip

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batch ``x`` cropped and flipped on its own device; the draws (two offsets and a coin per sample) come
        from ``generator`` on the host, so the same seed gives the same batch on any device."""
        n, c, h, w = x.shape
        device = x.device
        if self.padding:
            p = self.padding
            padded = F.pad(x, (p, p, p, p))
            top = torch.randint(0, 2 * p + 1, (n, 1), generator=generator).to(device)
            left = torch.randint(0, 2 * p + 1, (n, 1), generator=generator).to(device)
            rows = (top + torch.arange(h, device=device))[:, None, :, None]  # [n, 1, h, 1]
            cols = (left + torch.arange(w, device=device))[:, None, None, :]  # [n, 1, 1, w]
            x = padded[torch.arange(n, device=device)[:, None, None, None],
                       torch.arange(c, device=device)[None, :, None, None], rows, cols]
        if self.flip:
            flipped = (torch.rand(n, generator=generator) < 0.5).to(device)
            x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
        return x

    def __repr__(self) -> str:
        return f"CropFlip(padding={self.padding}, flip={self.flip})"
