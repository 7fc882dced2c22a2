"""Forget requests: which training samples an entity asks to have forgotten.

Each selector takes the training-set sample ids and their labels and returns the sorted forget ids.
``conf/forget/<name>.yaml`` names one (``_partial_: true``); its other keys are the selector's options.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mu_lightning.errors import ConfigError


def random_sample(
    train_ids: torch.Tensor, labels: torch.Tensor, fraction: float | None = 0.1, count: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """A uniform random sample of the training set: ``count`` samples if given, else ``fraction`` of them."""
    n = len(train_ids)
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count < n:
            raise ConfigError(
                f"forget.count={count!r} is out of range: it must be an integer with 0 < count < {n} "
                f"(the training set has {n} samples)"
            )
        k = count
    else:
        if fraction is None or not 0 < float(fraction) < 1:
            raise ConfigError(f"forget.fraction={fraction!r} is out of range: it must be > 0 and < 1")
        k = round(float(fraction) * n)
        if not 0 < k < n:
            raise ConfigError(f"forget.fraction={fraction} selects {k} of {n} training samples: choose a larger "
                              "fraction or set forget.count")
    gen = torch.Generator().manual_seed(int(seed))
    return train_ids[torch.randperm(n, generator=gen)[:k]].sort().values


def by_class(train_ids: torch.Tensor, labels: torch.Tensor, classes: list[int] | int = 0) -> torch.Tensor:
    """Every training sample whose label is in ``classes`` (class-wise forgetting)."""
    wanted = [classes] if isinstance(classes, int) else list(classes)
    present = sorted(int(c) for c in labels.unique())
    if not wanted:
        raise ConfigError(f"forget.classes is empty: name one or more of the labels {present}")
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ConfigError(f"forget.classes={wanted}: {missing} not among the training labels {present}")
    if len(set(wanted)) == len(present):
        raise ConfigError(f"forget.classes={wanted} names every class: the retain set would be empty")
    return train_ids[torch.isin(labels, torch.tensor(wanted))].sort().values


def from_file(train_ids: torch.Tensor, labels: torch.Tensor, path: str | None = None) -> torch.Tensor:
    """Sample ids read from a text file, one integer per line (the format of a run's ``forget_ids.txt``)."""
    if not path:
        raise ConfigError("forget=indices needs forget.path=<file of sample ids, one per line>")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"forget.path={path}: no such file")
    lines = [s.strip() for s in file.read_text().splitlines() if s.strip() and not s.lstrip().startswith("#")]
    if not lines:
        raise ConfigError(f"forget.path={path}: the file holds no sample ids")
    try:
        ids = [int(s) for s in lines]
    except ValueError as err:
        raise ConfigError(f"forget.path={path}: every line must be one integer sample id ({err})") from None
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ConfigError(f"forget.path={path}: duplicate sample ids {dup}")
    ids_t = torch.tensor(ids, dtype=torch.int64)
    outside = ids_t[~torch.isin(ids_t, train_ids)]
    if len(outside):
        raise ConfigError(f"forget.path={path}: ids {outside[:5].tolist()} are not in the training split "
                          f"({len(train_ids)} samples; see a run's forget_ids.txt for valid ids)")
    if len(ids_t) >= len(train_ids):
        raise ConfigError(f"forget.path={path}: it names the whole training set; the retain set would be empty")
    return ids_t.sort().values
