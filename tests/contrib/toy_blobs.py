"""Toy blobs: a seeded 3-class Gaussian mixture of 4 features (the toy dataset of tests/test_contributing.py)."""

import torch

from mu_lightning.configurable import configurable
from mu_lightning.data.sources import Samples


@configurable
def toy_blobs(num_samples: int = 600, seed: int = 0) -> Samples:
    """``num_samples`` points around three class centres in 4 dimensions, labels 0-2."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(num_samples) % 3
    centres = torch.randn(3, 4, generator=g) * 3
    return Samples(x=centres[y] + torch.randn(num_samples, 4, generator=g), y=y)
