"""Dataset sources: each returns every sample of a dataset as in-memory tensors.

A source is a plain function ``(...) -> Samples``; ``conf/dataset/<name>.yaml`` names it as ``source._target_``.
Sample ids are positions in the returned tensors: they are what forget requests and ``forget_ids.txt`` refer to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Samples:
    """All samples of a dataset. ``x`` is float32 ``[N, C, H, W]``, ``y`` is int64 ``[N]``.

    ``split`` optionally fixes the official train/test partition (0 = train, 1 = test, per sample); sources
    without one let the datamodule draw a seeded split.
    """

    x: torch.Tensor
    y: torch.Tensor
    split: torch.Tensor | None = None


def digits() -> Samples:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return Samples(x=x, y=torch.tensor(bunch.target, dtype=torch.int64))


def synthetic(
    num_samples: int = 2000,
    input_shape: tuple[int, ...] = (1, 8, 8),
    num_classes: int = 10,
    separation: float = 1.0,
    seed: int = 0,
) -> Samples:
    """A seeded Gaussian mixture: one mean per class drawn from N(0, separation²), unit-variance noise.

    Small and fast, for tests and smoke runs; ``separation`` sets how hard the task is.
    """
    gen = torch.Generator().manual_seed(seed)
    shape = tuple(int(s) for s in input_shape)
    means = torch.randn((num_classes, *shape), generator=gen) * separation
    y = torch.arange(num_samples) % num_classes
    y = y[torch.randperm(num_samples, generator=gen)]
    x = means[y] + torch.randn((num_samples, *shape), generator=gen)
    return Samples(x=x.float(), y=y.long())
