"""What the evaluation step may use: the three models, the data, stage facts, and ways to get more models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mu_lightning.data import UnlearningDataModule
from mu_lightning.metrics.accuracy import logits_of


@dataclass
class EvalContext:
    """Passed to ``evaluate``; logits are computed once per (model, split) and memoised here.

    Attributes:
        models: ``original``, ``gold`` and ``unlearn`` networks (eval-mode forward passes only).
        data: the datamodule; splits forget, retain, val, test, train.
        stages: per-stage facts from the pipeline (cache key and hit, steps, ``fit_seconds`` of trained stages).
        seconds: wall time of each stage in this run.
        cfg: the ``metric`` config group.
        gold: ``seed -> M_g`` trained with that seed (from the stage cache when it holds it).
        unlearned: ``seed -> M_u`` produced from M by the configured unlearner with that unlearning seed.
        fresh_model: ``seed -> a randomly initialised network`` of the configured architecture.
    """

    models: dict[str, nn.Module]
    data: UnlearningDataModule
    stages: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    cfg: Any
    gold: Callable[[int], nn.Module]
    unlearned: Callable[[int], nn.Module]
    fresh_model: Callable[[int], nn.Module]
    _logits: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)

    def logits(self, model: str, split: str) -> torch.Tensor:
        """Eval-mode logits of ``models[model]`` on ``split``, computed on first use."""
        if (model, split) not in self._logits:
            self._logits[model, split] = logits_of(self.models[model], self.data.tensors(split)[0])
        return self._logits[model, split]

    def add_model(self, name: str, model: nn.Module) -> str:
        """Register an extra model (another gold seed, a random-init teacher) so its logits are memoised and saved."""
        self.models[name] = model
        return name

    def labels(self, split: str) -> torch.Tensor:
        """Labels of ``split`` in sample-id order (without copying its inputs, as ``data.tensors`` would)."""
        return self.data.samples.y[self.data.ids[split]]

    def computed_logits(self) -> dict[str, dict[str, torch.Tensor]]:
        """Every logits tensor computed so far, as ``{model: {split: logits}}`` (saved with the run)."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        for (model, split), z in self._logits.items():
            out.setdefault(model, {})[split] = z
        return out
