"""What a run warns about in results.json, the log and the summary (docs/metrics.md §9): an unlearner that changed
nothing, and a model the unlearner destroyed."""

from __future__ import annotations

import torch
from torch import nn

CHANCE_MARGIN = 0.05  # an accuracy within this of 1/num_classes is "at chance"


def unchanged_warning(method: str, start: nn.Module, unlearned: nn.Module) -> list[str]:
    """``[message]`` when M_u's weights equal M's bit for bit (the method did nothing), else ``[]``."""
    if all(torch.equal(a.cpu(), b.cpu()) for a, b in
           zip(start.state_dict().values(), unlearned.state_dict().values(), strict=True)):
        return [f"{method} changed no weight: M_u equals M, the same as no unlearning (a one-shot edit that selected "
                "nothing, e.g. SSD with a selection_weighting too high for the data)"]
    return []


def accuracy_warnings(metrics: dict[str, float], num_classes: int) -> list[str]:
    """Retain or test accuracy of M_u at chance (within ``CHANCE_MARGIN`` of 1/num_classes) where M's was above."""
    chance, found = 1 / num_classes, []
    for split in ("retain", "test"):
        acc, before = metrics.get(f"unlearn/{split}_acc"), metrics.get(f"original/{split}_acc")
        if acc is not None and before is not None and acc <= chance + CHANCE_MARGIN < before:
            found.append(f"M_u's {split} accuracy {acc:.4f} is at chance (1/{num_classes} = {chance:.4f}, margin "
                         f"{CHANCE_MARGIN}) where M's was {before:.4f}: the unlearner destroyed the model")
    return found
