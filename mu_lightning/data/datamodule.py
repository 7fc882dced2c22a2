"""UnlearningDataModule: one dataset in memory, and the index sets D (train), D_f, D_r, val and test over it."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable

import lightning as L
import torch

from mu_lightning.data.batches import TensorBatches
from mu_lightning.data.sources import Samples
from mu_lightning.errors import ConfigError

SPLITS = ("train", "forget", "retain", "val", "test")


class UnlearningDataModule(L.LightningDataModule):
    """Holds every sample as tensors; splits are sorted sample-id tensors, so they are cheap and easy to save.

    Args:
        source: returns the dataset's samples (``conf/dataset/*.yaml: source``).
        forget: ``(train_ids, train_labels) -> forget_ids`` (``conf/forget/*.yaml``); keyword-only ``groups``,
            ``fine_labels`` and ``fine_names`` are passed when it declares them (``forget.py``).
        test_fraction, val_fraction: held-out shares drawn with ``split_seed`` when the source has no official
            test split; val is always drawn from the non-test part.
        split_seed: the seed of that draw; part of the dataset's identity, not of a run.
    """

    def __init__(
        self, source: Callable[[], Samples], forget: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        test_fraction: float = 0.2, val_fraction: float = 0.1, split_seed: int = 0,
    ):
        super().__init__()
        for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
            if not 0 <= value < 1:
                raise ConfigError(f"dataset.{name}={value} is out of range: it must be >= 0 and < 1")
        self.source, self.forget_selector = source, forget
        self.test_fraction, self.val_fraction, self.split_seed = test_fraction, val_fraction, split_seed
        self.samples: Samples | None = None
        self.ids: dict[str, torch.Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.samples is not None:
            return
        samples = self.source()
        n = len(samples.y)
        gen = torch.Generator().manual_seed(int(self.split_seed))
        if samples.split is not None:
            test = torch.nonzero(samples.split == 1).flatten()
            pool = torch.nonzero(samples.split == 0).flatten()
        else:
            perm = torch.randperm(n, generator=gen)
            n_test = round(self.test_fraction * n)
            test, pool = perm[:n_test], perm[n_test:]
        pool = pool[torch.randperm(len(pool), generator=gen)]
        n_val = round(self.val_fraction * len(pool))
        val, train = pool[:n_val], pool[n_val:]
        train = train.sort().values
        forget = self.forget_selector(train, samples.y[train], **self._request_context(samples, train))
        retain = train[~torch.isin(train, forget)]
        if len(retain) == 0:
            raise ConfigError("the forget request covers the whole training set: the retain set would be empty")
        self.samples = samples
        self.ids = {"train": train, "forget": forget, "retain": retain, "val": val.sort().values,
                    "test": test.sort().values}

    def _request_context(self, samples: Samples, train: torch.Tensor) -> dict:
        """What a selector needs beyond labels, for the training samples; passed only where it declares it."""
        params = inspect.signature(self.forget_selector).parameters
        per_sample = {"groups": samples.group, "fine_labels": samples.fine}
        context = {k: (None if v is None else v[train]) for k, v in per_sample.items()}
        context["fine_names"] = samples.fine_names
        return {k: v for k, v in context.items() if k in params}

    @property
    def num_classes(self) -> int:
        return int(self.samples.y.max()) + 1

    def forgotten_classes(self) -> list[int]:
        """Classes whose every training sample is in D_f: non-empty exactly for class-wise forgetting."""
        y = self.samples.y
        forget_y, train_y = y[self.ids["forget"]], y[self.ids["train"]]
        return [int(c) for c in forget_y.unique() if (forget_y == c).sum() == (train_y == c).sum()]

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of one split, in sample-id order."""
        ids = self.ids[split]
        return self.samples.x[ids], self.samples.y[ids]

    def batches(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0) -> TensorBatches:
        return TensorBatches(*self.tensors(split), batch_size=batch_size, shuffle=shuffle, seed=seed)

    def fingerprint(self, split: str) -> str:
        """A digest of exactly the samples (inputs, labels, order) of one split: the data part of a cache key."""
        x, y = self.tensors(split)
        digest = hashlib.blake2b(digest_size=16)
        for t in (x, y):
            digest.update(str((t.dtype, tuple(t.shape))).encode())
            digest.update(t.contiguous().numpy().tobytes())
        return digest.hexdigest()
