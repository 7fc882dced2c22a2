"""The ``debug`` config group's two knobs that no existing option expresses (``conf/debug/``).

``debug.max_samples``: a seeded subset of the dataset's samples, every per-sample field kept aligned, taken before
the train/val/test split. ``debug.epochs``: one epoch count for the original and gold training and, when the method
trains at all, the unlearner. Both are applied to the config before anything else reads it, so results.json records
what ran.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import torch
from omegaconf import DictConfig, open_dict

from mu_lightning.data.sources import Samples
from mu_lightning.errors import ConfigError

log = logging.getLogger(__name__)
SUBSET_SEED = 0


def check(cfg: DictConfig) -> None:
    """``debug.max_samples`` and ``debug.epochs`` are null or integers >= 1."""
    for key in ("max_samples", "epochs"):
        value = (cfg.get("debug") or {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"debug.{key}={value!r} must be null or an integer >= 1")


def apply_epochs(cfg: DictConfig) -> None:
    """Set ``train.epochs`` and a training unlearner's ``unlearner.epochs`` to ``debug.epochs`` (when set)."""
    check(cfg)
    epochs = (cfg.get("debug") or {}).get("epochs")
    if epochs is None or (cfg.train.epochs == epochs and cfg.unlearner.get("epochs") in (None, 0, epochs)):
        return  # unset, or applied already
    with open_dict(cfg):
        cfg.train.epochs = epochs
        if cfg.unlearner.get("epochs"):  # one-shot methods take no epochs
            cfg.unlearner.epochs = epochs
    log.debug("debug.epochs=%d: train.epochs=%d, unlearner.epochs=%s", epochs, epochs, cfg.unlearner.get("epochs"))


def limited(source: Callable[[], Samples], cfg: DictConfig) -> Callable[[], Samples]:
    """``source``, or, with ``debug.max_samples`` set, a source of that many of its samples (seeded, in order)."""
    n = (cfg.get("debug") or {}).get("max_samples")
    return source if n is None else lambda: subset(source(), n)


def subset(samples: Samples, n: int, seed: int = SUBSET_SEED) -> Samples:
    """``n`` samples drawn without replacement with ``seed`` (all of them if there are fewer), in their order."""
    if n >= len(samples.y):
        log.debug("debug.max_samples=%d: all %d samples kept", n, len(samples.y))
        return samples
    log.debug("debug.max_samples=%d: %d of %d samples kept (seed %d), before the split", n, n, len(samples.y), seed)
    keep = torch.randperm(len(samples.y), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    fields = {f.name: getattr(samples, f.name) for f in dataclasses.fields(samples)}
    return type(samples)(**{k: v[keep] if isinstance(v, torch.Tensor) else v for k, v in fields.items()})
