"""``forget=poisoned``: the forget request of corrective unlearning, the manipulated samples found so far.

A training-set manipulation (``poison=badnets`` or ``poison=interclass``, ``mu_lightning.data.poison``) changed some
training samples; their ids are ``poison_ids``. In practice only part of them is ever identified: this request
forgets a seeded share ``identified`` of them, and the rest stays, unknown, in the retain set D_r (Goel et al.,
"Corrective Machine Unlearning", TMLR 2024: ``--deletion_size`` of ``--forget_set_size`` in their benchmark).

It is a selector like those of ``forget.py``: ``(train_ids, labels, *, poison_ids, ...) -> forget_ids``. The
datamodule passes ``poison_ids`` (the sorted sample ids the manipulation returned) because the selector declares it
as a keyword-only parameter; None (not passed) or empty means no manipulation was applied, a ConfigError.
"""

from __future__ import annotations

import torch

from mu_lightning.configurable import configurable
from mu_lightning.errors import ConfigError


@configurable
def identified_poison(
    train_ids: torch.Tensor, labels: torch.Tensor, *, poison_ids: torch.Tensor | None = None,
    identified: float | None = 1.0, count: int | None = None, seed: int = 0,
) -> torch.Tensor:
    """A seeded share ``identified`` (0 < identified <= 1) of the manipulated training samples, or ``count`` of them.

    Only manipulated samples still in ``train_ids`` count (in a sequence of requests, those earlier requests did not
    take). ``identified=1.0`` forgets every manipulated sample: its gold model is then the clean model's equal.
    """
    if poison_ids is None or len(poison_ids) == 0:
        raise ConfigError("forget=poisoned needs a poison=... manipulation of the training set (poison=badnets or "
                          "poison=interclass); with poison=none there is nothing to identify")
    pool = torch.as_tensor(poison_ids, dtype=torch.int64)
    pool = pool[torch.isin(pool, train_ids)].unique()  # sorted
    m = len(pool)
    if m == 0:
        raise ConfigError("forget=poisoned: no manipulated sample is left in the training set (earlier requests took "
                          "them all)")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= m:
            raise ConfigError(f"forget.count={count!r} is out of range: it must be an integer with 0 < count <= {m} "
                              f"(the manipulated training samples)")
        k = count
    else:
        if isinstance(identified, bool) or not isinstance(identified, int | float) or not 0 < identified <= 1:
            raise ConfigError(f"forget.identified={identified!r} is out of range: it must be > 0 and <= 1 (the share "
                              "of the manipulated samples that has been identified)")
        k = round(float(identified) * m)
        if k < 1:
            raise ConfigError(f"forget.identified={identified} identifies {k} of the {m} manipulated samples: choose "
                              "a larger share or set forget.count")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"forget.seed={seed!r} is not allowed: it must be an integer")
    if k >= len(train_ids):
        raise ConfigError("forget=poisoned would forget the whole training set: the retain set would be empty")
    gen = torch.Generator().manual_seed(int(seed))
    return pool[torch.randperm(m, generator=gen)[:k]].sort().values
