"""Tensor-resident batching: slices of in-memory tensors, no per-sample DataLoader collation.

Lightning accepts any sized iterable as a loader; a DataLoader over a TensorDataset collates sample by sample and
costs more than the step itself on small models (docs/design.md, "Start-up and overhead").
"""

from __future__ import annotations

import math
import os
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

    def _order(self) -> tuple[torch.Tensor, bool]:
        """This epoch's sample order (this rank's shard of it) and whether it is anything but 0, 1, 2, …"""
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        rank, world = self._rank_world()
        if world > 1:
            order = order.repeat(2)[: self._shard_size() * world][rank::world]
        return order, self.shuffle or world > 1

    def __iter__(self):
        order, moved = self._order()
        x, y = (self.x[order], self.y[order]) if moved else (self.x, self.y)
        for start in range(0, len(order), self.batch_size):
            xb, yb = x[start : start + self.batch_size], y[start : start + self.batch_size]
            yield (xb if self.augment is None else self.augment(xb, self.generator)), yb


def training_device(trainer: dict) -> torch.device:
    """The device this process trains on under Lightning ``Trainer`` arguments ``trainer`` (``cfg.trainer``): the
    CPU, or the GPU of this rank (``LOCAL_RANK``, counted in ``devices`` when it lists them)."""
    if str(trainer.get("accelerator", "auto")) not in ("gpu", "cuda", "auto") or not torch.cuda.is_available():
        return torch.device("cpu")
    rank, devices = int(os.environ.get("LOCAL_RANK", 0)), trainer.get("devices", 1)
    listed = devices is not None and not isinstance(devices, str | int)  # a list of GPU indices
    return torch.device("cuda", int(list(devices)[rank]) if listed else rank)


class Resident:
    """A dataset held on one device for training: its inputs as uint8 pixels where that is exact (``pixel_stats``:
    the per-channel ``(mean, std)`` the float inputs were standardised with, None for pixels in [0, 1]), else as
    float32; and its labels. Batches are gathered and decoded there (``take``), so no sample crosses from the host
    after this copy; ``channels_last`` lays 4-D batches out channels-last (``TensorBatches`` applies it after
    augmentation).

    Decoding repeats the sources' own float32 arithmetic (``u8 / 255``, then ``(x - mean) / std`` per channel), so a
    decoded batch equals the host's float32 inputs bit for bit; ``uint8`` says whether the pixels were exact.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, device: torch.device | str,
                 pixel_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None, channels_last: bool = False):
        self.device, self.channels_last = torch.device(device), channels_last
        self.stats = pixel_stats if pixel_stats is not None else ((0.0,) * x.shape[1], (1.0,) * x.shape[1])
        codes = self._encode(x) if x.dim() == 4 and x.dtype == torch.float32 else None
        self.uint8 = codes is not None and torch.equal(self._decode(codes), x)
        self.x = (codes if self.uint8 else x).to(self.device)
        self.y = y.to(self.device)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in self.stats)
        return ((x * std + mean) * 255).round_().clamp_(0, 255).to(torch.uint8)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        x = codes.float() / 255.0
        if self.stats[0] != (0.0,) * len(self.stats[0]) or self.stats[1] != (1.0,) * len(self.stats[1]):
            for c, (mean, std) in enumerate(zip(*self.stats, strict=True)):
                x[:, c] = (x[:, c] - mean) / std
        return x

    def take(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the samples ``ids`` (on this device), x as float32."""
        x = self.x[ids]
        return (self._decode(x) if self.uint8 else x), self.y[ids]


class ResidentBatches(TensorBatches):
    """``TensorBatches`` of the samples ``ids`` of a ``Resident`` dataset: the same order, augmentation draws and
    numbers, with each batch gathered, decoded and augmented on the resident's device. Per epoch only the order
    (8 bytes a sample) goes to the device; the draws of the augmentation come from the same host generator, so a
    seed gives the same batches on every device."""

    def __init__(self, resident: Resident, ids: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0,
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None):
        super().__init__(ids, ids, batch_size, shuffle=shuffle, seed=seed, augment=augment)
        self.resident = resident

    def __iter__(self):
        order, _ = self._order()
        ids = self.x[order].to(self.resident.device)
        for start in range(0, len(ids), self.batch_size):
            xb, yb = self.resident.take(ids[start : start + self.batch_size])
            if self.augment is not None:
                xb = self.augment(xb, self.generator)
            if self.resident.channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb


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
