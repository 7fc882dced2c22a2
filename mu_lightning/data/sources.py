"""Dataset sources: each returns every sample of a dataset as in-memory tensors.

A source is a plain function ``(...) -> Samples``; ``conf/dataset/<name>.yaml`` names it as ``source._target_``.
Sample ids are positions in the returned tensors: they are what forget requests and ``forget_ids.txt`` refer to.
Readers of files live beside this module (``vision.py`` for the official archives, ``tensor_file.py`` for yours).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mu_lightning.configurable import configurable
from mu_lightning.errors import ConfigError


@dataclass(frozen=True)
class Samples:
    """All samples of a dataset. ``x`` is float32 ``[N, C, H, W]``, ``y`` is int64 ``[N]``: the label trained on.

    Optional per-sample int64 fields:

    - ``split`` fixes the official train/test partition (0 = train, 1 = test); without it the datamodule draws one.
    - ``group`` is the entity (user, writer, patient) owning each sample: ``forget=entity`` forgets whole entities.
    - ``fine`` is a finer label inside ``y`` when ``y`` is coarse (CIFAR-100's 100 classes inside its 20
      superclasses): ``forget=subclass`` forgets one fine class while the model keeps predicting coarse labels.
      ``fine_names`` optionally names the fine classes, so a request can say ``rocket`` instead of ``69``.

    ``pixel_stats`` is the per-channel ``(mean, std)`` that ``x`` was standardised with (``standardise``), so that
    ``x·std + mean`` gives the pixel values back; None when ``x`` holds the values as read (digits: pixels in [0, 1]).
    Methods that work in pixel space (Boundary Shrink's clamp and rounding) read it.
    """

    x: torch.Tensor
    y: torch.Tensor
    split: torch.Tensor | None = None
    group: torch.Tensor | None = None
    fine: torch.Tensor | None = None
    fine_names: tuple[str, ...] | None = None
    pixel_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def __post_init__(self):
        n = len(self.y)
        for name in ("x", "split", "group", "fine"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Samples.{name} has {len(value)} entries for {n} labels")


def assign_entities(num_samples: int, num_entities: int | None, seed: int = 0) -> torch.Tensor | None:
    """A seeded, balanced entity id per sample (sizes differ by at most one), or None when ``num_entities`` is null.

    For data that records no owner: it makes entity-level requests ("forget everything user u gave us") runnable on
    any dataset. Entities span the train/test split like real users would; only their training samples are forgotten.
    With more entities than samples, each sample has its own entity and the rest own nothing.
    """
    if num_entities is None:
        return None
    if isinstance(num_entities, bool) or not isinstance(num_entities, int) or num_entities < 1:
        raise ConfigError(f"dataset.num_entities={num_entities!r} is not allowed: it must be a positive integer, or "
                          "null for no entities")
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(int(seed)))
    group = torch.empty(num_samples, dtype=torch.int64)
    group[order] = torch.arange(num_samples) % num_entities
    return group


@configurable
def digits(num_entities: int | None = 100, entity_seed: int = 0) -> Samples:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return Samples(x=x, y=torch.tensor(bunch.target, dtype=torch.int64),
                   group=assign_entities(len(x), num_entities, entity_seed))


@configurable
def synthetic(
    num_samples: int = 2000,
    input_shape: tuple[int, ...] = (1, 8, 8),
    num_classes: int = 10,
    separation: float = 1.0,
    seed: int = 0,
    num_entities: int | None = 100,
    entity_seed: int = 0,
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
    return Samples(x=x.float(), y=y.long(), group=assign_entities(num_samples, num_entities, entity_seed))


def standardise(x: torch.Tensor, split: torch.Tensor | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel zero mean, unit variance, with statistics of the training split only (all samples if none).

    Test samples must not shape the inputs the model is trained on; a constant channel is only centred. Works in
    place (a CIFAR copy is 0.7 GB) and returns the ``(mean, std)`` per channel it used: ``Samples.pixel_stats``.
    """
    rows = slice(None) if split is None else split == 0
    means, stds = [], []
    for c in range(x.shape[1]):  # one channel at a time: a copy of one channel's training values, not of all of x
        values = x[:, c][rows]
        std = float(values.std())
        means.append(float(values.mean()))
        stds.append(std if std > 0 else 1.0)
        x[:, c] = (x[:, c] - means[-1]) / stds[-1]
    return tuple(means), tuple(stds)
