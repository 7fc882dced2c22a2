"""Logits once per (model, split), and the accuracies derived from them."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

Logits = dict[str, dict[str, torch.Tensor]]  # model name -> split name -> logits [N, C]


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Eval-mode logits of ``model`` on ``x``, batched, on the model's device, returned on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Micro-averaged (per-sample) accuracy, as the papers report it; torchmetrics' class default is macro."""
    return float(multiclass_accuracy(logits, y, num_classes=logits.shape[1], average="micro"))
