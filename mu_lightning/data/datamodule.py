"""UnlearningDataModule: one dataset in memory, and the index sets D (train), D_f, D_r, val and test over it."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
from collections.abc import Callable

import lightning as L
import torch

from mu_lightning.data.batches import Resident, ResidentBatches, TensorBatches
from mu_lightning.data.sources import Samples
from mu_lightning.errors import ConfigError

SPLITS = ("train", "forget", "retain", "val", "test", "forgotten")


class UnlearningDataModule(L.LightningDataModule):
    """Holds every sample as tensors; splits are sorted sample-id tensors, so they are cheap and easy to save.

    Splits: ``train`` (D), ``forget`` (D_f), ``retain`` (D_r), ``val``, ``test``, and ``forgotten``: the samples of
    earlier requests when several are served in turn (empty otherwise).

    Args:
        source: returns the dataset's samples (``conf/dataset/*.yaml: source``).
        forget: ``(train_ids, train_labels) -> forget_ids`` (``conf/forget/*.yaml``); keyword-only ``groups``,
            ``fine_labels`` and ``fine_names`` are passed when it declares them (``forget.py``). A list of them is a
            sequence of requests (``forget=sequential``): each selects from what the earlier ones left, and
            ``request(k)`` is the data as the k-th request sees it.
        test_fraction, val_fraction: held-out shares drawn with ``split_seed`` when the source has no official
            test split; val is always drawn from the non-test part.
        split_seed: the seed of that draw; part of the dataset's identity, not of a run.
        augment: ``(x, generator) -> x`` applied to training batches (``batches(..., augment=True)``), or None.
        poison: a manipulation of the training samples (``conf/poison/*.yaml``, ``data/poison.py``) applied after the
            split and before the forget requests, or None. The ids it manipulated are ``poison_ids`` (passed to a
            selector that declares ``poison_ids``: ``forget=poisoned``), and the split ``clean`` (D without them,
            what the clean reference model learns) exists exactly when it manipulated any.
        classwise_test: ``keep`` (every test sample) or ``drop``: the test split leaves out the classes with no
            sample left in D_r, i.e. the classes a class-wise request forgets, as Unlearn-Sparse and SalUn evaluate
            (``metric.classwise_test``; ``dropped_test_classes`` names them). Random requests drop nothing.
    """

    def __init__(
        self, source: Callable[[], Samples], forget: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        test_fraction: float = 0.2, val_fraction: float = 0.1, split_seed: int = 0,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None, poison: Callable | None = None,
        classwise_test: str = "keep",
    ):
        super().__init__()
        for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
            if not 0 <= value < 1:
                raise ConfigError(f"dataset.{name}={value} is out of range: it must be >= 0 and < 1")
        if classwise_test not in ("keep", "drop"):
            raise ConfigError(f"metric.classwise_test={classwise_test!r} is not allowed: use keep (every test sample) "
                              "or drop (leave out the classes a class-wise request forgets)")
        self.source, self.augment, self.poison, self.classwise_test = source, augment, poison, classwise_test
        self.poison_ids = torch.empty(0, dtype=torch.int64)  # sample ids the poison manipulated (sorted)
        self.selectors = list(forget) if isinstance(forget, list | tuple) else [forget]
        if not self.selectors:
            raise ConfigError("forget.requests is empty: give one or more requests")
        self.test_fraction, self.val_fraction, self.split_seed = test_fraction, val_fraction, split_seed
        self.samples: Samples | None = None
        self.resident: Resident | None = None  # the samples held on the training device (``hold_on``), or None
        self.requests: list[torch.Tensor] = []  # forget ids of each request, in order
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
        if self.poison is not None:
            manipulated = self.poison(samples.x, samples.y, train)
            samples = dataclasses.replace(samples, x=manipulated.x, y=manipulated.y)
            self.poison_ids = manipulated.ids
        remaining = train
        for k, selector in enumerate(self.selectors):
            context = self._request_context(selector, samples, remaining, self.poison_ids)
            forget = selector(remaining, samples.y[remaining], **context)
            remaining = remaining[~torch.isin(remaining, forget)]
            if len(remaining) == 0:
                which = f"forget request {k + 1} of {len(self.selectors)}" if len(self.selectors) > 1 else \
                    "the forget request"
                raise ConfigError(f"{which} leaves no training sample: the retain set would be empty")
            self.requests.append(forget)
        self.samples = samples
        self._fixed = {"train": train, "val": val.sort().values, "test": test.sort().values}
        if len(self.poison_ids):
            self._fixed["clean"] = train[~torch.isin(train, self.poison_ids)]
        self.ids = self._ids_at(0)

    def _ids_at(self, k: int) -> dict[str, torch.Tensor]:
        earlier = torch.cat([torch.empty(0, dtype=torch.int64), *self.requests[:k]]).sort().values
        retain = self._fixed["train"][~torch.isin(self._fixed["train"], torch.cat([earlier, self.requests[k]]))]
        test = self._fixed["test"]
        if self.classwise_test == "drop":
            test = test[torch.isin(self.samples.y[test], self.samples.y[retain])]
        return {"train": self._fixed["train"], "forget": self.requests[k], "retain": retain,
                "val": self._fixed["val"], "test": test, "forgotten": earlier,
                **({"clean": self._fixed["clean"]} if "clean" in self._fixed else {})}

    def request(self, k: int) -> UnlearningDataModule:
        """The data as request ``k`` (from 0) sees it: D_f is its samples, D_r what no request up to it has taken,
        ``forgotten`` what earlier requests took. D (``train``), val and test stay the same for every request."""
        view = copy.copy(self)
        view.ids = self._ids_at(k)
        return view

    @staticmethod
    def _request_context(selector: Callable, samples: Samples, train: torch.Tensor, poison_ids: torch.Tensor
                         ) -> dict:
        """What a selector needs beyond labels, for the training samples; passed only where it declares it."""
        params = inspect.signature(selector).parameters
        per_sample = {"groups": samples.group, "fine_labels": samples.fine}
        context = {k: (None if v is None else v[train]) for k, v in per_sample.items()}
        context["fine_names"] = samples.fine_names
        context["poison_ids"] = poison_ids
        return {k: v for k, v in context.items() if k in params}

    def dropped_test_classes(self) -> list[int]:
        """Classes of the dataset's test split that ``classwise_test: drop`` leaves out of ``test`` (sorted)."""
        y = self.samples.y
        return sorted(set(y[self._fixed["test"]].tolist()) - set(y[self.ids["test"]].tolist()))

    @property
    def num_classes(self) -> int:
        return int(self.samples.y.max()) + 1

    def forgotten_classes(self) -> list[int]:
        """Classes whose every training sample still known (not taken by an earlier request) is in D_f: non-empty
        exactly for class-wise forgetting."""
        y = self.samples.y
        forget_y, known_y = y[self.ids["forget"]], y[torch.cat([self.ids["forget"], self.ids["retain"]])]
        return [int(c) for c in forget_y.unique() if (forget_y == c).sum() == (known_y == c).sum()]

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of one split, in sample-id order."""
        ids = self.ids[split]
        return self.samples.x[ids], self.samples.y[ids]

    def batches(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0, augment: bool = False
                ) -> TensorBatches:
        """Batches of one split; ``augment=True`` for training passes (the dataset's ``augment``, if it has one).
        After ``hold_on(device)`` they are gathered, decoded and augmented on that device: the same numbers."""
        augment_fn = self.augment if augment else None
        if self.resident is not None:
            return ResidentBatches(self.resident, self.ids[split], batch_size, shuffle=shuffle, seed=seed,
                                   augment=augment_fn)
        return TensorBatches(*self.tensors(split), batch_size=batch_size, shuffle=shuffle, seed=seed,
                             augment=augment_fn)

    def hold_on(self, device: torch.device | str, channels_last: bool = False) -> Resident:
        """Copy every sample to ``device`` once (uint8 pixels where exact: ``batches.Resident``), so that training
        batches are made there from now on; evaluation reads the host tensors (``tensors``) as before."""
        self.resident = Resident(self.samples.x, self.samples.y, device, self.samples.pixel_stats, channels_last)
        return self.resident

    def fingerprint(self, split: str) -> str:
        """A digest of exactly the samples (inputs, labels, order) of one split: the data part of a cache key."""
        x, y = self.tensors(split)
        digest = hashlib.blake2b(digest_size=16)
        for t in (x, y):
            digest.update(str((t.dtype, tuple(t.shape))).encode())
            digest.update(t.contiguous().numpy().tobytes())
        return digest.hexdigest()
