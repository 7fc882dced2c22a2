"""Tensor-resident batching: slices of in-memory tensors, no per-sample DataLoader collation.

Lightning accepts any sized iterable as a loader; a DataLoader over a TensorDataset collates sample by sample and
costs more than the step itself on small models (docs/design.md, "Start-up and overhead").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


class TensorBatches:
    """Batches of ``(x, y)`` from tensors, reshuffled each epoch by a seeded generator.

    ``augment`` (``(x, generator) -> x``, see ``augment.py``) transforms each batch's inputs with draws from the same
    generator, so shuffling and augmentation together are reproducible from ``seed``.

    Under ``torch.distributed`` each rank takes an interleaved shard of every epoch's permutation (padded by
    wrapping round so all ranks run the same number of steps), like ``DistributedSampler``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0,
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None):
        if len(x) == 0:
            raise ValueError("TensorBatches over an empty set")
        self.x, self.y, self.batch_size, self.shuffle, self.augment = x, y, int(batch_size), shuffle, augment
        self.generator = torch.Generator().manual_seed(int(seed))

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _shard_size(self) -> int:
        return math.ceil(len(self.x) / self._rank_world()[1])

    def __len__(self) -> int:
        return math.ceil(self._shard_size() / self.batch_size)

    def __iter__(self):
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        rank, world = self._rank_world()
        if world > 1:
            order = order.repeat(2)[: self._shard_size() * world][rank::world]
        x, y = (self.x[order], self.y[order]) if self.shuffle or world > 1 else (self.x, self.y)
        for start in range(0, len(order), self.batch_size):
            xb, yb = x[start : start + self.batch_size], y[start : start + self.batch_size]
            yield (xb if self.augment is None else self.augment(xb, self.generator)), yb


class Cycle:
    """Endless batches from ``batches``, starting a new (reshuffled) epoch of it whenever it runs out."""

    def __init__(self, batches: TensorBatches):
        self.batches, self._it = batches, iter(batches)

    def next(self):
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.batches)
            return next(self._it)


class PairedBatches:
    """One epoch = one pass over the ``anchor`` set; every other named set is cycled alongside it.

    Yields ``{name: (x, y)}`` with one batch per named set. Anchoring matters: with a retain set 9× the forget set,
    anchoring on forget runs 9× fewer steps than anchoring on retain (Lightning's CombinedLoader modes differ on
    this by default, so the unlearner states it instead).
    """

    def __init__(self, sets: dict[str, TensorBatches], anchor: str):
        if anchor not in sets:
            raise ValueError(f"anchor {anchor!r} is not one of the sets {sorted(sets)}")
        self.sets, self.anchor = sets, anchor

    def __len__(self) -> int:
        return len(self.sets[self.anchor])

    def __iter__(self):
        others = {name: Cycle(b) for name, b in self.sets.items() if name != self.anchor}
        for batch in self.sets[self.anchor]:
            yield {self.anchor: batch, **{name: c.next() for name, c in others.items()}}


class Chunks:
    """Groups of ``size`` consecutive items of ``batches``: one Lightning batch = several optimizer steps.

    Lightning's per-batch loop (about 16 hook calls) costs more than a step of a tiny model; a stage that takes a
    chunk per Lightning batch runs the same steps on the same batches in the same order, with that cost paid once
    per chunk instead of once per step.
    """

    def __init__(self, batches, size: int):
        self.batches, self.size = batches, max(int(size), 1)

    def __len__(self) -> int:
        return math.ceil(len(self.batches) / self.size)

    def __iter__(self):
        chunk = []
        for batch in self.batches:
            chunk.append(batch)
            if len(chunk) == self.size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
