"""Data as the members of an ensemble see it: random halves of D for shadow models, and their forget requests.

Carlini et al. 2022 (LiRA) train shadow models on random halves of the training data so that every sample is in
about half of them; Hayes et al. 2024 (U-LiRA) let each shadow unlearn part of its half. A member's data is the run's
datamodule with other ids (``view``), so its cache key, batches and unlearning see exactly its samples.
"""

from __future__ import annotations

import copy

import torch

from mu_lightning.data.datamodule import UnlearningDataModule


def view(data: UnlearningDataModule, train: torch.Tensor | None = None, forget: torch.Tensor | None = None
         ) -> UnlearningDataModule:
    """``data`` with D replaced by ``train`` and D_f by ``forget`` (D_r = D \\ D_f); val and test unchanged."""
    out = copy.copy(data)
    ids = dict(data.ids)
    if train is not None:
        ids["train"] = train.sort().values
    if forget is not None:
        ids["forget"] = forget.sort().values
    ids["retain"] = ids["train"][~torch.isin(ids["train"], ids["forget"])]
    out.ids = ids
    return out


def halves(train: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Inclusion masks ``[n, len(train)]`` of ``n`` shadow models: each takes exactly half of D (rounded down), drawn
    with ``seed`` + member; every sample is in about half of the members (Carlini et al. 2022's random halves)."""
    rows = []
    for k in range(n):
        gen = torch.Generator().manual_seed(int(seed) * 100_003 + k)
        mask = torch.zeros(len(train), dtype=torch.bool)
        mask[torch.randperm(len(train), generator=gen)[: len(train) // 2]] = True
        rows.append(mask)
    return torch.stack(rows)


def shadow_forget(train: torch.Tensor, included: torch.Tensor, target: torch.Tensor, size: int, seed: int
                  ) -> torch.Tensor:
    """The forget request of one shadow model: the samples of the target's D_f it trained on, filled up to ``size``
    (the target's |D_f|) with other samples it trained on, drawn with ``seed``. Each target sample is so unlearned by
    every shadow that included it and never seen by the others: the two per-example populations U-LiRA fits."""
    mine = train[included]
    chosen = mine[torch.isin(mine, target)]
    rest = mine[~torch.isin(mine, target)]
    fill = max(0, min(size - len(chosen), len(rest) - 1))
    gen = torch.Generator().manual_seed(int(seed))
    return torch.cat([chosen, rest[torch.randperm(len(rest), generator=gen)[:fill]]]).sort().values
