"""Relearn time and Anamnesis Index (Chundawat et al. 2023, "Zero-Shot Machine Unlearning"; docs/metrics.md §4.8)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mu_lightning.metrics.accuracy import accuracy, logits_of


def relearn_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_eval: torch.Tensor, y_eval: torch.Tensor,
                  target: float, lr: float, batch_size: int, max_epochs: int, seed: int) -> int:
    """Adam steps of fine-tuning a copy of ``model`` on (x, y) until its accuracy on the eval set reaches ``target``.

    As in the reference ``relearn_time``: at least one step, accuracy checked after every step, at most
    ``max_epochs`` passes (then that cap is returned). The copy keeps the caller's model untouched (the reference
    mutates it), and a fixed ``seed`` gives every model the same batch order.
    """
    net = copy.deepcopy(model)
    device = next(net.parameters()).device
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    steps = 0
    for _ in range(max_epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            idx = order[i : i + batch_size]
            net.train()
            loss = F.cross_entropy(net(x[idx].to(device)), y[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if accuracy(logits_of(net, x_eval), y_eval) >= target:
                return steps
    return steps
