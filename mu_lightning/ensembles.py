"""Ensembles of one run's recipe: many originals, golds and shadow models, through the stage cache, trained together.

``Ensembles`` is what the ensemble tier (``metrics/ensemble.py``, docs/metrics.md §11) and the difficulty-based
forget requests (``forget=memorized``, ``forget=subpopulation``) ask for models: N originals on D (seeds ``seed``,
``seed+1``, …), N golds on D_r, N shadow originals on random halves of D, and any of them unlearned by the
configured method. Every member is an ordinary stage-cache entry under the key a stage trained alone would have
(``pipeline.stage_key``; a shadow is an ``original`` whose D is its half), so a later run or sweep loads it instead
of training it; the members missing from the cache are trained together (``stages/ensemble.py``) when the recipe
allows it, else one at a time by the pipeline's own stage.

It knows the pipeline only through the callables it is given (``key``, ``train_one``, ``build``, ``unlearn``), so
nothing here imports the pipeline.
"""

from __future__ import annotations

import copy
import csv
import functools
import inspect
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mu_lightning.cache import StageCache
from mu_lightning.callbacks import configured
from mu_lightning.data import UnlearningDataModule
from mu_lightning.data.shadows import halves, view
from mu_lightning.errors import RunFault
from mu_lightning.metrics.memorization import memorization
from mu_lightning.runtime import distributed
from mu_lightning.stages.ensemble import Member, not_vectorisable, train_together

log = logging.getLogger(__name__)

SPLIT = {"original": "train", "gold": "retain"}
Job = tuple[UnlearningDataModule, str, int]  # (data as the member sees it, stage, seed)


class Ensembles:
    """Members of the run's recipe, looked up in the stage cache, the missing ones trained together.

    Args:
        cfg: the run's config (``train``, ``trainer``, ``model``; ``metric.ensemble.vectorise``).
        cache: the run's stage cache.
        key: ``(data, stage, seed) -> key``: the stage-cache key of that stage alone (``pipeline.stage_key``).
        train_one: ``(data, stage, seed, key) -> (state, meta)``: the stage alone (``pipeline._train``).
        build: ``seed -> network`` drawn with that seed (``pipeline._build_model``).
        unlearn: ``(data, start, seed) -> M_u``: the configured unlearner from a copy of ``start``.
    """

    def __init__(self, cfg: DictConfig, cache: StageCache, key: Callable, train_one: Callable, build: Callable,
                 unlearn: Callable | None = None):
        self.cfg, self.cache, self.key, self.train_one, self.build, self.unlearn = (cfg, cache, key, train_one,
                                                                                    build, unlearn)
        self.facts: dict[str, Any] = {"trained_together": 0, "trained_alone": 0, "loaded": 0, "seconds": 0.0}

    def problem(self, stage: str) -> str | None:
        """Why members of ``stage`` are trained one at a time, or None: they are vectorised."""
        if not bool(OmegaConf.select(self.cfg, "metric.ensemble.vectorise", default=True)):
            return "metric.ensemble.vectorise=false"
        trainer = OmegaConf.to_container(self.cfg.trainer, resolve=True)
        if trainer.get("accelerator") != "cpu" or int(trainer.get("devices") or 1) != 1 \
                or trainer.get("strategy", "auto") != "auto" or str(trainer.get("precision")) not in ("32", "32-true"):
            return "the trainer is not one 32-bit CPU process (the vectorised step runs on the CPU in float32)"
        if self.cfg.train.get("checkpoint_every"):
            return "train.checkpoint_every asks for resumable stages"
        if configured.key_part(self.cfg, stage):
            return f"callbacks change the {stage} stage's weights"
        if type(self.cfg.train.get("_target_")) is str and not self.cfg.train._target_.endswith("ClassifierModule"):
            return f"train._target_={self.cfg.train._target_} is not the plain classifier recipe"
        return not_vectorisable(self.build(None), instantiate(self.cfg.train.optimizer))

    def trained(self, jobs: list[Job]) -> list[nn.Module]:
        """The trained network of every job, in order: from the cache, else trained (together where possible)."""
        t0 = time.perf_counter()
        keys = [self.key(data, stage, seed) for data, stage, seed in jobs]
        states: list[dict | None] = [None] * len(jobs)
        for i, ((_, stage, _), key) in enumerate(zip(jobs, keys, strict=True)):
            found = self.cache.load(stage, key) if self.cache.enabled else None
            if found is not None:
                states[i] = found[0]
                self.facts["loaded"] += 1
        missing = [i for i, s in enumerate(states) if s is None]
        by_group: dict[tuple[str, int], list[int]] = {}
        for i in missing:  # members train together when their stage and set size agree
            data, stage, _ = jobs[i]
            by_group.setdefault((stage, len(data.ids[SPLIT[stage]])), []).append(i)
        for (stage, _), group in by_group.items():
            reason = self.problem(stage) if len(group) > 1 else "a single member"
            if reason is None:
                self._together([jobs[i] for i in group], [keys[i] for i in group], states, group)
            else:
                log.info("ensemble %d %s member(s) one at a time: %s", len(group), stage, reason)
                for i in group:
                    data, stage_i, seed = jobs[i]
                    state, _, _ = self.cache.get_or_train(
                        stage_i, keys[i], lambda d=data, s=stage_i, sd=seed, k=keys[i]: self.train_one(d, s, sd, k))
                    states[i] = state
                    self.facts["trained_alone"] += 1
        self.facts["seconds"] += time.perf_counter() - t0
        template, models = self.build(None), []
        for state in states:  # copies of one network: building each anew costs more than a small member's training
            model = copy.deepcopy(template)
            model.load_state_dict(state)
            models.append(model.eval())
        return models

    def _together(self, jobs: list[Job], keys: list[str], states: list, where: list[int]) -> None:
        t = self.cfg.train
        members = [Member(self.build(seed), *data.tensors(SPLIT[stage]), seed) for data, stage, seed in jobs]
        try:
            done = train_together(members, int(t.epochs), int(t.batch_size), instantiate(t.optimizer),
                                  instantiate(t.scheduler) if t.get("scheduler") else None, t.get("grad_clip"),
                                  augment=jobs[0][0].augment)
        except ValueError as err:
            raise RunFault(f"training an ensemble of {len(jobs)} {jobs[0][1]} models: {err}; lower "
                           f"train.optimizer.lr or set train.grad_clip; nothing was stored for them") from None
        wall = done[0].meta["ensemble"]["wall_seconds"]
        log.info("ensemble %d %s models trained together in %.2f s", len(jobs), jobs[0][1], wall)
        for (_, stage, _), key, result, i in zip(jobs, keys, done, where, strict=True):
            if self.cache.enabled:
                self.cache.store(stage, key, result.state, result.meta)
            states[i] = result.state
        self.facts["trained_together"] += len(jobs)

    def plan(self, jobs: list[Job]) -> dict[str, Any]:
        """What ``trained(jobs)`` would do: members found in the cache, members to train, and how."""
        keys = [self.key(data, stage, seed) for data, stage, seed in jobs]
        found = sum(self.cache.enabled and self.cache.paths(stage, k)[1].exists()
                    for (_, stage, _), k in zip(jobs, keys, strict=True))
        stages = sorted({stage for _, stage, _ in jobs})
        return {"members": len(jobs), "cached": int(found), "to_train": len(jobs) - int(found),
                "alone": {stage: reason for stage in stages if (reason := self.problem(stage))}}

    def write(self, name: str, header: list[str], rows: list[list]) -> Path | None:
        """A CSV file ``name`` in the run directory (the main process only); its path, or None."""
        if not distributed.is_main():
            return None
        path = Path(self.cfg.paths.output_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(header)
            out.writerows(rows)
        return path

    def originals(self, data: UnlearningDataModule, seeds: list[int]) -> list[nn.Module]:
        return self.trained([(data, "original", s) for s in seeds])

    def golds(self, data: UnlearningDataModule, seeds: list[int]) -> list[nn.Module]:
        return self.trained([(data, "gold", s) for s in seeds])

    def shadows(self, data: UnlearningDataModule, n: int, seed: int, first_seed: int
                ) -> tuple[torch.Tensor, list[nn.Module]]:
        """Inclusion masks over D (``halves``) and the ``n`` shadow originals trained on them (seeds
        ``first_seed + k``)."""
        train = data.ids["train"]
        masks = halves(train, n, seed)
        views = [view(data, train=train[m], forget=train[m][:0]) for m in masks]
        return masks, self.trained([(v, "original", first_seed + k) for k, v in enumerate(views)])


def with_scores(forget: Callable | list[Callable], scores: Scores) -> Callable | list[Callable]:
    """``forget`` (a selector, or several: ``forget=sequential``) with ``scores`` bound where a selector declares it
    (``forget=memorized``, ``forget=subpopulation``); the others as they are."""
    selectors = forget if isinstance(forget, list) else [forget]
    bound = [functools.partial(s, scores=scores) if "scores" in inspect.signature(s).parameters else s
             for s in selectors]
    return bound if isinstance(forget, list) else bound[0]


class Scores:
    """What a difficulty-based forget request reads about D, computed on first use (``scores(kind, train_ids)``):
    ``memorization`` from ``members`` shadow models on halves drawn with ``seed``, or ``features``, the input of the
    original model's last linear layer. Both come from stage-cache entries: the shadows ``metric=ensemble`` trains
    (same draw, same keys) and the run's own original M (seed ``seed``, on D). D is split as the run splits it
    (``make``: the run's datamodule for a given selector), the request itself not yet drawn."""

    def __init__(self, cfg: DictConfig, make: Callable[[Callable], UnlearningDataModule],
                 ensembles: Callable[[], Ensembles]):
        self.cfg, self.make, self.ensembles = cfg, make, ensembles
        self._data: UnlearningDataModule | None = None

    def data(self) -> UnlearningDataModule:
        if self._data is None:
            self._data = self.make(lambda ids, labels: ids[:1])  # any request: only D's split is read
            self._data.setup()
        return self._data

    def __call__(self, kind: str, train_ids: torch.Tensor, members: int = 16, seed: int = 0) -> torch.Tensor:
        data, ens = self.data(), self.ensembles()
        x, y = data.tensors("train")
        if kind == "memorization":
            masks, models = ens.shadows(data, members, seed, int(self.cfg.seed))
            correct = np.stack([(_outputs(m, x)[0].argmax(1) == y).numpy() for m in models])
            values = torch.as_tensor(memorization(correct, masks.numpy()))
            log.info("forget   memorisation of D from %d shadow models (mean %.4f)", members,
                     float(np.nanmean(values.numpy())))
        elif kind == "features":
            values = _outputs(ens.originals(data, [int(self.cfg.seed)])[0], x)[1]
        else:
            raise ValueError(f"no score {kind!r}: memorization or features")
        return values[torch.searchsorted(data.ids["train"], train_ids)]


def _outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of ``model`` on ``x`` (eval mode) and the input of its last linear layer (its features)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            logits = model.eval()(x)
    finally:
        handle.remove()
    return logits, seen[0].flatten(1)
