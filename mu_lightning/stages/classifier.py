"""The original model M (trained on D) and the gold model M_g (retrained from scratch on D_r): one recipe, two sets."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Checkpoint

from mu_lightning.stages.base import Stage
from mu_lightning.weights import state_problem

log = logging.getLogger(__name__)

RESUME_FILE = "last.ckpt"  # the resumable checkpoint in a cache entry's work area (docs/checkpoints.md)


class ClassifierModule(Stage):
    """Plain supervised training with cross-entropy; the pipeline feeds it D for M and D_r for M_g.

    Using one class and one recipe for both is what makes M_g a fair reference (docs/metrics.md §0).
    """

    # Nothing watches these stages between steps (the pipeline gives them no callbacks, only a progress bar when a
    # terminal is attached), so a chunk can be longer than an unlearner's: 32 steps per Lightning batch. The cost is
    # holding 32 batches at once, on the host and (after Lightning's transfer) on the device: ~100 MB for CIFAR at
    # batch 256.
    steps_per_batch = 32

    def __init__(self, *args, checkpoint_every: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.checkpoint_every = checkpoint_every  # epochs between resumable checkpoints (train.checkpoint_every)
        self._batches: list = []
        self.bound: str | None = None  # "<stage>-<key>" of the cache entry a resumable checkpoint belongs to
        self._before = {"flops": 0, "grad_evals": 0}  # the cost of the part of a resumed fit done before it stopped

    def chunks(self, batches):
        self._batches = [batches]  # whose shuffling generator a resumable checkpoint saves
        return super().chunks(batches)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """What Lightning's checkpoint lacks for an exact resume: the step tally, the batch order's generator and
        torch's global generator (dropout); the entry it belongs to (``bound``); the cost so far (FLOPs, gradient
        evaluations and seconds, summed over DDP ranks), so a resumed fit reports the whole fit's."""
        with self.clock.paused():  # counting the new shapes is not the stage's work
            self.tally.count(self)
            done = [self._before["flops"] + self.tally.flops, self._before["grad_evals"] + self.tally.grad_evals]
            if self.trainer.world_size > 1:  # every rank saves (Lightning writes rank 0's): the cost of all ranks
                mine = torch.tensor([self.tally.flops, self.tally.grad_evals], dtype=torch.int64, device=self.device)
                summed = self.trainer.strategy.reduce(mine, reduce_op="sum").tolist()
                done = [self._before["flops"] + summed[0], self._before["grad_evals"] + summed[1]]
            seconds = self.clock.seconds
        checkpoint["mu_lightning"] = {"tally": dict(self._tally), "torch_rng": torch.get_rng_state(),
                                      "batch_rng": [b.generator.get_state() for b in self._batches],
                                      "bound": self.bound, "cost": {"flops": int(done[0]), "grad_evals": int(done[1]),
                                                                    "seconds": float(seconds)}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint["mu_lightning"]
        self._tally.update(saved["tally"])
        torch.set_rng_state(saved["torch_rng"])
        for batches, state in zip(self._batches, saved["batch_rng"], strict=True):
            batches.generator.set_state(state)
        cost = saved["cost"]
        self._before = {"flops": int(cost["flops"]), "grad_evals": int(cost["grad_evals"])}
        self.clock.seconds = float(cost["seconds"])  # the clock goes on from there

    def cost(self) -> dict:
        """The whole fit's cost: a resumed fit's own and that of the part before the interruption."""
        cost = super().cost()
        return {**cost, "flops": cost["flops"] + self._before["flops"],
                "grad_evals": cost["grad_evals"] + self._before["grad_evals"]}

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.model(x), y)


class ResumeCheckpoint(Checkpoint):
    """Every ``every`` epochs (not after the last), the whole state of the fit to ``path``: weights, optimizer and
    schedule, Lightning's loops and ``ClassifierModule.on_save_checkpoint``'s extras. Written to a temporary file and
    renamed, so a kill leaves the previous checkpoint whole. A ``Checkpoint`` subclass, so Lightning calls it after
    the module's own ``on_train_epoch_end`` (which steps the schedule), as it does ``ModelCheckpoint``."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = Path(path), int(every)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        done = trainer.current_epoch + 1
        if done % self.every or done >= trainer.max_epochs or trainer.should_stop:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=False)  # optimizer and loops too; said, so Lightning does not log it
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


def resumable(module: ClassifierModule, work: Path | None) -> tuple[list[Checkpoint], str | None]:
    """The callbacks that make ``module``'s fit resumable, and the checkpoint it resumes from (None: from the start):
    none without ``checkpoint_every`` or a work area (``cache=false``). The work area is named after its entry,
    ``<stage>-<key>``, and its checkpoint must say it belongs there; one that does not, or cannot be read, is removed
    with a warning naming it, and the fit starts from the beginning."""
    if not module.checkpoint_every or work is None:
        return [], None
    path = Path(work) / RESUME_FILE
    module.bound = Path(work).name
    if path.exists() and (problem := resume_problem(path, module.bound)):
        log.warning("resume checkpoint %s is not used (%s): removing it and training from the start", path, problem)
        path.unlink(missing_ok=True)
    return [ResumeCheckpoint(path, module.checkpoint_every)], (str(path) if path.exists() else None)


def resume_problem(path: Path, bound: str) -> str | None:
    """What makes the checkpoint at ``path`` unfit to resume the fit of entry ``bound``, or None."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle, zip and torch errors alike: the file is damaged
        return f"it could not be read: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:160]}"
    ours = saved.get("mu_lightning") if isinstance(saved, dict) else None
    if not isinstance(ours, dict) or not isinstance(ours.get("cost"), dict):
        return "it is not a resumable checkpoint of this version"
    if ours.get("bound") != bound:
        return f"it belongs to {ours.get('bound')}, not {bound}"
    return state_problem(saved.get("state_dict"), None)
