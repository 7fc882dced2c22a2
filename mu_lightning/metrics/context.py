"""What the evaluation step may use: the three models, the data, stage facts, and ways to get more models."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import OmegaConf
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
        ensembles: the run's ensembles of originals, golds and shadow models (``mu_lightning/ensembles.py``), for
            ``metric=ensemble``; None where the run offers none.
    """

    models: dict[str, nn.Module]
    data: UnlearningDataModule
    stages: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    cfg: Any
    gold: Callable[[int], nn.Module]
    unlearned: Callable[[int], nn.Module]
    fresh_model: Callable[[int], nn.Module]
    ensembles: Any = None
    _logits: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    _identity: dict[str, Any] = field(default_factory=dict)

    def logits(self, model: str, split: str) -> torch.Tensor:
        """Eval-mode logits of ``models[model]`` on ``split``, computed on first use."""
        if (model, split) not in self._logits:
            self._logits[model, split] = logits_of(self.models[model], self.data.tensors(split)[0])
        return self._logits[model, split]

    def identity(self, *models: str) -> tuple:
        """Everything a metric of ``models`` depends on: their weights, the evaluated samples and the metric config.

        Two runs of a sweep that evaluate the same M or M_g on the same splits get the same identity, whatever else
        differs (``metrics.CACHE`` keeps such metrics per process under it)."""
        ident = self._identity
        if "data" not in ident:
            ident["data"] = tuple(self.data.fingerprint(s) for s in ("forget", "retain", "test", "val"))
            ident["cfg"] = repr(OmegaConf.to_container(self.cfg) if OmegaConf.is_config(self.cfg) else self.cfg)
        for m in models:
            if m not in ident:
                ident[m] = _weights_digest(self.models[m])
        return (ident["data"], ident["cfg"], *(ident[m] for m in models))

    def add_model(self, name: str, model: nn.Module) -> str:
        """Register an extra model (another gold seed, a random-init teacher) so its logits are memoised and saved."""
        self.models[name] = model
        return name

    def other_seeds(self, stage: str) -> list[str]:
        """Names ``<stage>_seed<s>`` of the ``metric.seeds − 1`` seeds after the stage's own, registered on first use.

        ``stage="gold"``: more gold retrains (``gold``); ``"unlearn"``: more unlearning runs from M (``unlearned``).
        """
        make = {"gold": self.gold, "unlearn": self.unlearned}[stage]
        base = int(self.stages[stage]["seed"])
        names = []
        for seed in range(base + 1, base + int(self.cfg.seeds)):
            name = f"{stage}_seed{seed}"
            if name not in self.models:
                self.add_model(name, make(seed))
            names.append(name)
        return names

    def labels(self, split: str) -> torch.Tensor:
        """Labels of ``split`` in sample-id order (without copying its inputs, as ``data.tensors`` would)."""
        return self.data.samples.y[self.data.ids[split]]

    def computed_logits(self) -> dict[str, dict[str, torch.Tensor]]:
        """Every logits tensor computed so far, as ``{model: {split: logits}}`` (saved with the run)."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        for (model, split), z in self._logits.items():
            out.setdefault(model, {})[split] = z
        return out


def _weights_digest(model: nn.Module) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        digest.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
