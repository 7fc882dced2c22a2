"""Python API: run a registered unlearner on your own model and tensors, score models, load checkpoints, no Hydra.

``unlearn(model, forget=(x_f, y_f), retain=(x_r, y_r), method="scrub", **hyperparameters)`` returns the unlearned
copy of ``model`` and facts about the run; ``evaluate(original=..., unlearned=..., gold=..., data=...)`` returns the
metrics under the names results.json uses; ``load_weights`` reads a checkpoint into a model; ``run(cfg)`` is the
whole experiment of ``python train.py`` for a composed config. The command line is built on the same cores
(``Unlearner.run``, the timed unlearning stage, and ``metrics.evaluate``). docs/api.md has an example.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mu_lightning.data import Samples, UnlearningDataModule
from mu_lightning.errors import ConfigError, RunFault
from mu_lightning.metrics import EvalContext
from mu_lightning.metrics import evaluate as evaluate_tiers
from mu_lightning.pipeline import quiet_lightning, run
from mu_lightning.runtime.checks import check_numbers
from mu_lightning.runtime.targets import check_targets
from mu_lightning.unlearners import Unlearner
from mu_lightning.weights import load_weights, state_problem

__all__ = ["evaluate", "load_weights", "run", "unlearn"]

log = logging.getLogger(__name__)

Part = tuple[torch.Tensor, torch.Tensor] | Iterable  # (x, y), or a DataLoader of (x, y) batches
PARTS = ("forget", "retain", "val", "test")
# What an API call's Trainer does by default: one device, no files, no logger, no progress bar
TRAINER = {"accelerator": "auto", "devices": 1, "logger": False, "enable_checkpointing": False,
           "enable_model_summary": False, "enable_progress_bar": False}


# ------------------------------------------------------------------------------------------------------- the API


def unlearn(model: nn.Module, forget: Part, retain: Part, method: str = "finetune", *, val: Part | None = None,
            seed: int = 0, trainer: dict[str, Any] | None = None, flop_limit: int | None = None,
            **hyperparameters: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Unlearn ``forget`` from a copy of ``model`` with the registered unlearner ``method`` (``conf/unlearner/``).

    The method's config defaults are loaded and ``hyperparameters`` merged over them (nested: ``optimizer={"lr":
    0.01}`` changes only the learning rate); they go through the checks of the command line. ``forget``, ``retain``
    and ``val`` (SCRUB+R's rewind) are ``(x, y)`` tensors or loaders of such batches. ``trainer`` adds Lightning
    Trainer arguments. ``flop_limit``: the most FLOPs the method may spend (the command line's ``budget.flops``
    is a fraction of the gold model's training FLOPs, which a call does not know: give the count, e.g. that fraction
    of your gold model's ``flops``): no step past it, one-shot work runs whole; the facts' ``budget`` says what it
    did (docs/metrics.md §5). Returns the unlearned model (``model`` is left as it was) and the stage's facts, with
    ``seconds``."""
    if flop_limit is not None and (isinstance(flop_limit, bool) or not isinstance(flop_limit, int) or flop_limit < 1):
        raise ConfigError(f"flop_limit={flop_limit!r} is not allowed: give a whole number of FLOPs, at least 1")
    node = unlearner_config(method, hyperparameters)
    _check_finite(model, "model")
    data = TensorData(forget=forget, retain=retain, val=val)
    data.setup()
    quiet_lightning()  # no GPU/TPU/tip banners, as train.py
    L.seed_everything(seed, workers=True, verbose=False)
    unlearner: Unlearner = instantiate(node, model=copy.deepcopy(model))
    facts, seconds = unlearner.run(data, lambda epochs: L.Trainer(**{**TRAINER, **(trainer or {})}, max_epochs=epochs),
                                   seed, flop_limit=flop_limit)
    if flop_limit is not None:
        facts["budget"] = unlearner.budget_facts(None, None)
    if state_problem(unlearner.model.state_dict(), None):  # what the guard did not see: non-finite weights
        raise RunFault(f"method={method!r} made a model with NaN or infinite weights: lower its learning rate")
    return unlearner.model, {**facts, "seconds": seconds}


def _check_finite(model: nn.Module, name: str) -> None:
    if (problem := state_problem(model.state_dict(), None)) is not None:
        raise ConfigError(f"{name}: {problem.removeprefix('its ')}; give a model with finite weights")


def unlearner_config(method: str, hyperparameters: dict[str, Any]) -> DictConfig:
    """``conf/unlearner/<method>.yaml`` (interpolations of the train recipe resolved) with ``hyperparameters``
    merged over it, checked like the command line checks it: its targets, then its option names."""
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        try:
            # the paper's values; the caller's tensors are no dataset's pixels: nothing declares a pixel range
            cfg = compose("config", overrides=[f"unlearner={method}", "~protocol@unlearner", "dataset=tensor_file"])
        except Exception as err:  # noqa: BLE001 - Hydra's MissingConfigException and its relatives
            raise ConfigError(f"method={method!r} is not a registered unlearner ({type(err).__name__}: "
                              f"{str(err).splitlines()[0]})") from None
    node = OmegaConf.create(OmegaConf.to_container(cfg.unlearner, resolve=True))
    node = OmegaConf.merge(node, OmegaConf.create(hyperparameters))
    check_targets(node)
    check_numbers(node, "unlearner")  # finite numbers, integers where the command line wants them (checks.py)
    method_class = get_class(node._target_)
    method_class.check_options([k for k in node if not str(k).startswith("_")])
    method_class.check_option_values({k: v for k, v in OmegaConf.to_container(node).items()
                                      if not str(k).startswith("_")})
    return node


def evaluate(original: nn.Module, unlearned: nn.Module, gold: nn.Module, data: dict[str, Part],
             seconds: dict[str, float] | None = None, **metric: Any) -> dict[str, float | None]:
    """The fast-tier metrics of results.json (``<model>/<metric>``, model ∈ original, gold, unlearn) for three models
    on ``data = {"forget": ..., "retain": ..., "test": ...}`` (``"val"`` optional), each ``(x, y)`` or a loader.

    ``seconds`` may give ``original``, ``gold`` and ``unlearn`` training seconds (the efficiency metrics; None where
    not given). ``metric`` overrides ``conf/metric/fast.yaml`` (``mia_seed=1``)."""
    if "test" not in data:
        raise ConfigError("data has no 'test' part: the metrics compare with held-out samples (data['test'])")
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=["metric=fast"]).metric
    cfg = OmegaConf.merge(cfg, OmegaConf.create(metric))
    split = TensorData(**{name: data.get(name) for name in PARTS})
    split.setup()
    known = {**{"original": None, "gold": None, "unlearn": None}, **(seconds or {})}
    stages = {name: {"seed": 0, "fit_seconds": known[name], "steps": None} for name in known}

    def unavailable(seed: int) -> nn.Module:
        raise ConfigError("the API evaluates the fast tier only: more gold or unlearned seeds need the pipeline")

    ctx = EvalContext(models={"original": original, "gold": gold, "unlearn": unlearned}, data=split, stages=stages,
                      seconds={"unlearn": known["unlearn"]}, cfg=cfg, gold=unavailable, unlearned=unavailable,
                      fresh_model=unavailable)
    return evaluate_tiers(ctx)


class TensorData(UnlearningDataModule):
    """The datamodule over given parts: D_f, D_r and optional val and test, each ``(x, y)`` or a loader of batches.

    Sample ids are positions in forget, retain, val, test concatenated; D (``train``) is D_f and D_r."""

    def __init__(self, forget: Part, retain: Part, val: Part | None = None, test: Part | None = None):
        super().__init__(source=self._samples, forget=self._forget_ids)
        self.parts = {"forget": _tensors(forget, "forget"), "retain": _tensors(retain, "retain")}
        self.parts.update({name: _tensors(part, name) for name, part in (("val", val), ("test", test)) if part})

    def _samples(self) -> Samples:
        xs, ys = zip(*self.parts.values(), strict=True)
        return Samples(x=torch.cat(xs), y=torch.cat(ys))

    def _forget_ids(self, train: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return train[: len(self.parts["forget"][1])]  # D_f comes first

    def setup(self, stage: str | None = None) -> None:
        if self.samples is not None:
            return
        self.samples, bounds, start = self.source(), {}, 0
        for name, (_, y) in self.parts.items():
            bounds[name], start = torch.arange(start, start + len(y)), start + len(y)
        empty, train = torch.empty(0, dtype=torch.int64), torch.cat([bounds["forget"], bounds["retain"]])
        self.requests = [self.selectors[0](train, self.samples.y[train])]
        self._fixed = {"train": train, "val": bounds.get("val", empty), "test": bounds.get("test", empty)}
        self.ids = self._ids_at(0)


def _tensors(part: Part, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a part given as a pair of tensors or as an iterable of ``(x, y)`` batches (a DataLoader)."""
    if isinstance(part, tuple | list) and len(part) == 2 and all(isinstance(t, torch.Tensor) for t in part):
        x, y = part
    else:
        try:
            batches = [(xb, yb) for xb, yb, *_ in part]
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be (x, y) tensors or a loader of (x, y) batches, not "
                              f"{type(part).__name__}") from None
        x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    if len(x) != len(y) or len(y) == 0:
        raise ConfigError(f"{name} has {len(x)} inputs and {len(y)} labels: give one label per input, at least one")
    if y.is_floating_point() and not bool((y == y.round()).all()) or bool((y < 0).any()):
        raise ConfigError(f"{name}'s labels must be class indices (integers >= 0), not values such as "
                          f"{y[(y != y.round()) | (y < 0)][0].item()}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ConfigError(f"{name}'s inputs hold NaN or infinite values")
    return x, y.long()
