"""What every training stage shares: optimizer and schedule from config, one guarded step, per-epoch logging."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn

from mu_lightning.data.batches import Chunks
from mu_lightning.errors import ConfigError
from mu_lightning.stages.flops import PassTally, flops_of, hardware, signature

OptimizerFactory = Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
# What Lightning's step path calls around ``backward`` and ``optimizer.step`` besides torch itself
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def flop_limit(fraction: float, gold_flops: int | None) -> int:
    """The most FLOPs an unlearning stage may spend under ``budget.flops=fraction``: that fraction of the gold model's
    training FLOPs, rounded down (a ``Stage``'s ``flop_limit``)."""
    if not gold_flops:
        raise ConfigError(f"budget.flops={fraction} is a fraction of the gold model's training FLOPs, and this gold "
                          "model has no FLOP count: retrain it (cache=false) or run without a budget")
    return math.floor(fraction * gold_flops)


class Clock:
    """Seconds of a stage's own work: started and stopped around it, paused around what is not its work.

    ``exclude(watchers)``: objects with a ``seconds`` counter (``StageMonitor`` callbacks) whose time spent while the
    clock runs is not the stage's either.
    """

    def __init__(self) -> None:
        self.seconds, self._since, self._watchers, self._watched = 0.0, None, [], 0.0

    def exclude(self, watchers) -> None:
        self._watchers = list(watchers)

    def start(self) -> None:
        self._watched = sum(w.seconds for w in self._watchers)
        self._since = time.perf_counter()

    def stop(self) -> None:
        if self._since is not None:
            watching = sum(w.seconds for w in self._watchers) - self._watched
            self.seconds += time.perf_counter() - self._since - watching
            self._since = None

    @contextmanager
    def running(self) -> Iterator[None]:
        self.start()
        try:
            yield
        finally:
            self.stop()

    @contextmanager
    def paused(self) -> Iterator[None]:
        was_running = self._since is not None
        self.stop()
        try:
            yield
        finally:
            if was_running:
                self.start()


class Stage(L.LightningModule):
    """A LightningModule that trains ``model`` with manual optimization.

    Manual optimization keeps a step to one ``zero_grad/backward/clip/step`` with no per-step logging: on small
    models Lightning's per-step machinery costs more than the step itself (docs/design.md, "Start-up and overhead").
    The running loss is summed on the host (the guard reads every loss anyway) and logged once per epoch as
    ``train_loss``.

    Direct step: ``LightningOptimizer.step`` and ``manual_backward`` take each step through the strategy and the
    precision plugin: six hook dispatches, a profiler action and a closure, about a fifth of a digits-MLP step. When
    all of that can only be a no-op (one device, 32-bit precision, no profiler, none of ``STEP_HOOKS`` overridden
    below Stage or in a callback), the stage makes torch's calls itself, runs its own ``on_before_optimizer_step``
    (the clipping) and counts the step where Lightning does, so ``trainer.global_step`` is unchanged. DDP, AMP's
    grad scaler or a hook that reads the gradients (SalUn's mask) take Lightning's path: the same torch calls in the
    same order, hence the same numbers.

    Divergence guard: a non-finite loss stops the stage instead of crashing a sweep; ``diverged_step`` records the
    optimizer step, and the weights are rolled back to those of the last step whose loss was finite.

    Cost: ``clock`` times the fit itself, from ``on_train_start`` to ``on_train_end`` (Trainer construction, loggers
    and Lightning's set-up and teardown stay outside: docs/performance.md, "What is timed"); ``tally`` records each
    step's batch shapes, and ``on_train_end`` counts the FLOPs of one step per shape (``mu_lightning.stages.flops``): a
    counted step is ``loss(batch)`` and its backward. ``hardware`` is where the fit ran.

    Budget: with ``flop_limit`` set (FLOPs; ``budget.flops`` of the unlearning stage, docs/metrics.md §5), a step is
    taken only if the FLOPs spent so far (the fit's steps and whatever the stage counted before it) plus that step's
    own stay at most the limit; its cost is known before it runs, its shape being counted the first time it is seen.
    The first step that would cross the limit is not taken and ends the fit, even if a later, smaller batch would
    still fit: ``budget_stop`` is the number of steps taken. The counting draws no random number and leaves the
    weights alone, so a stopped fit is the unlimited fit's first ``budget_stop`` steps, bit for bit.

    Args:
        model: the network being trained (its weights are the stage's result).
        epochs: training epochs; 0 means no training loop.
        batch_size: samples per step.
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``).
        scheduler: ``optimizer -> LRScheduler`` stepped once per epoch, or None.
        grad_clip: clip the gradient norm to this value, or None.
    """

    def __init__(self, model: nn.Module, epochs: int, batch_size: int, optimizer: OptimizerFactory,
                 scheduler: SchedulerFactory | None = None, grad_clip: float | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.epochs, self.batch_size, self.grad_clip = int(epochs), int(batch_size), grad_clip
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # Per-step bookkeeping lives in one plain dict: assigning attributes of an nn.Module runs Module.__setattr__,
        # whose type checks cost more than a tiny model's step.
        self._tally = {"steps": 0, "epoch_steps": 0, "epoch_loss": 0.0, "diverged_step": None, "budget_stop": None,
                       "spent": 0}
        self._snapshot: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # (copies, live tensors)
        self._direct = None  # (optimizer, step progress) while a fit takes the direct step, see the class doc
        self.clock, self.tally, self.hardware = Clock(), PassTally(), None
        self.flop_limit: int | None = None  # see "Budget" in the class doc
        self._step_flops: dict = {}  # FLOPs of one step per batch signature, while a budget is set

    planned_steps: int = 0  # optimizer steps the fit is to take, where the stage knows them (Unlearner.unlearn)
    # Optimizer steps per Lightning batch (see data.batches.Chunks): the same steps on the same batches in the same
    # order whatever its value; larger values pay Lightning's per-batch cost less often, callbacks see fewer batches.
    steps_per_batch: int = 8

    def chunks(self, batches) -> Chunks:
        """The loader to ``fit`` this stage on: ``batches`` grouped ``steps_per_batch`` at a time."""
        return Chunks(batches, self.steps_per_batch)

    def training_step(self, chunk: list, batch_idx: int) -> None:
        record, limited = self.tally.record, self.flop_limit is not None
        for batch in chunk:
            if limited and not self.affordable(batch):
                break
            record(self.counted_step, (batch,))
            self._last_batch = batch
            self.train_step(batch)
            if self.diverged:
                break

    def affordable(self, batch) -> bool:
        """Whether the step on ``batch`` fits in what ``flop_limit`` leaves; if not, the fit stops here for good
        (``budget_stop``). A new batch shape is counted off the clock, as ``on_train_end`` counts it."""
        tally = self._tally
        if tally["budget_stop"] is not None:
            return False
        shape = signature((batch,))
        if shape not in self._step_flops:
            with self.clock.paused():
                self._step_flops[shape] = flops_of(self, self.counted_step, batch)
        cost = self._step_flops[shape]
        if tally["spent"] + cost <= self.flop_limit:
            tally["spent"] += cost
            return True
        tally["budget_stop"] = tally["steps"]
        self.trainer.should_stop = True
        return False

    def loss(self, batch) -> torch.Tensor:
        """One optimizer step's loss on ``batch``."""
        raise NotImplementedError

    def train_step(self, batch) -> None:
        """One optimizer step on one batch: ``self.step(self.loss(batch))``."""
        self.step(self.loss(batch))

    def counted_step(self, batch) -> None:
        """The work of a step whose FLOPs are counted: the loss and its backward (the optimizer's update is
        element-wise, which the counter does not count)."""
        self.loss(batch).backward()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the optimizer updates; subclasses that freeze part of the model override this."""
        return (p for p in self.model.parameters() if p.requires_grad)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    def step(self, loss: torch.Tensor) -> None:
        """One optimizer step on ``loss``, unless it is non-finite (then the stage stops: see the class doc)."""
        value = loss.item()
        if not math.isfinite(value):
            self._diverge()
            return
        self._remember_weights()
        if self._direct is None:
            optimizer = self.optimizers()
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()  # runs on_before_optimizer_step, hence the clipping, after AMP's unscale
        else:
            optimizer, progress = self._direct
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.on_before_optimizer_step(optimizer)
            optimizer.step()
            progress.increment_ready()
            progress.increment_completed()
        tally = self._tally
        tally["steps"] += 1
        tally["epoch_steps"] += 1
        tally["epoch_loss"] += value

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Clipping here rather than right after backward: AMP's scaler unscales the gradients just before this hook.
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")

    def on_train_start(self) -> None:
        # torch's optimizer, and the progress whose completed count is ``trainer.global_step`` under manual optimization
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        self._direct = (self.optimizers().optimizer, progress) if self._step_hooks_are_no_ops() else None
        self.hardware = hardware(self.device, self.trainer.precision)
        if self.flop_limit is not None:  # what the stage counted before its fit (one-shot passes) is spent already
            self._tally.update(spent=self.tally.flops, budget_stop=None)
        self.clock.start()  # last: the fit's own set-up is not the stage's work

    def _step_hooks_are_no_ops(self) -> bool:
        trainer = self.trainer
        return (type(trainer.strategy) is SingleDeviceStrategy and type(trainer.precision_plugin) is Precision
                and type(trainer.profiler) is PassThroughProfiler
                and not any(is_overridden(h, self, Stage) for h in (*STEP_HOOKS, "backward"))
                and not any(is_overridden(h, c, Callback) for h in STEP_HOOKS for c in trainer.callbacks))

    def on_train_end(self) -> None:
        self.clock.stop()
        self._direct = None
        self._guard_last_step()
        self.tally.count(self)  # before Lightning's teardown moves the model off the device the batches are on
        if self.trainer.world_size > 1:  # DDP: each rank stepped on its shard; the stage's cost is the sum over ranks
            mine = torch.tensor([self.tally.flops, self.tally.grad_evals], dtype=torch.int64, device=self.device)
            self.tally.summed = tuple(self.trainer.strategy.reduce(mine, reduce_op="sum").tolist())

    def _remember_weights(self) -> None:
        """Copy the weights whose loss was just found finite, in place: the rollback point of the guard.

        One copy of the model per step costs far less than the step itself (which touches every weight for every
        sample of the batch), and it is the only rollback point that cannot itself be poisoned: weights can stay
        finite yet be so large that logits overflow on other inputs.
        """
        with torch.no_grad():
            if self._snapshot is None:
                live = list(self.model.state_dict(keep_vars=True).values())
                self._snapshot = ([v.detach().clone() for v in live], live)
            else:
                torch._foreach_copy_(*self._snapshot)

    def _guard_last_step(self) -> None:
        """The guard for the last step, whose update no later loss checks: weights it left non-finite are rolled
        back and the step counts as the divergence (a one-step stage with a learning rate that overflows)."""
        if self.diverged or self._snapshot is None or self._finite_after_last_step():
            return
        self._tally["steps"] -= 1
        self._tally["diverged_step"] = self._tally["steps"]
        copies, live = self._snapshot
        with torch.no_grad():
            torch._foreach_copy_(live, copies)

    def _finite_after_last_step(self) -> bool:
        """Finite weights, and finite outputs on the last batch's inputs (weights can stay finite yet overflow)."""
        if not all(torch.isfinite(v).all() for v in self.model.state_dict().values() if v.is_floating_point()):
            return False
        batch = getattr(self, "_last_batch", None)
        while isinstance(batch, dict | list | tuple) and batch:
            batch = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
        if not isinstance(batch, torch.Tensor):
            return True
        was_training = self.model.training
        with torch.no_grad():
            out = self.model.eval()(batch)
        self.model.train(was_training)
        return bool(torch.isfinite(out).all())

    def _diverge(self) -> None:
        self._tally["diverged_step"] = self._tally["steps"]
        self.trainer.should_stop = True
        if self._snapshot is not None:
            copies, live = self._snapshot
            with torch.no_grad():
                torch._foreach_copy_(live, copies)

    def on_train_epoch_start(self) -> None:
        self._tally.update(epoch_steps=0, epoch_loss=0.0)

    def on_train_epoch_end(self) -> None:
        if self._tally["epoch_steps"]:
            self.log("train_loss", self._tally["epoch_loss"] / self._tally["epoch_steps"], on_epoch=True,
                     sync_dist=True)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    @property
    def running_loss(self) -> float | None:
        """The mean loss of the current epoch's steps so far (None before its first step): the progress bar's."""
        tally = self._tally
        return tally["epoch_loss"] / tally["epoch_steps"] if tally["epoch_steps"] else None

    def cost(self) -> dict[str, Any]:
        """What the stage's work cost: ``flops`` and ``grad_evals`` (``stages/flops.py``), and the ``hardware`` its
        clock ran on (None for a stage with no fit)."""
        return {"flops": self.tally.flops, "grad_evals": self.tally.grad_evals, "hardware": self.hardware}

    @property
    def steps_taken(self) -> int:
        """Optimizer steps taken so far (skipped non-finite steps not counted)."""
        return self._tally["steps"]

    def budget_facts(self, fraction: float | None, gold_flops: int | None) -> dict[str, Any]:
        """What ``flop_limit``, ``fraction`` of ``gold_flops`` (the gold model's training FLOPs), did: the FLOPs spent
        and their fraction; the steps taken when it stopped the fit (``stopped_at_step``; None: it never did) and
        those planned; whether work counted outside the fit (one-shot passes, which run whole) went past it
        (``over_budget``); whether either happened (``exhausted``). results.json's ``stages.unlearn.budget``; the
        Python API's, with a limit in FLOPs and no gold model: fraction and gold None."""
        spent, stop = self.tally.flops, self.budget_stop
        over = spent > self.flop_limit
        return {"flops_fraction": fraction, "gold_flops": gold_flops, "flops_limit": self.flop_limit,
                "flops_spent": spent, "spent_fraction": spent / gold_flops if gold_flops else None,
                "stopped_at_step": stop,
                "planned_steps": self.planned_steps, "over_budget": over, "exhausted": over or stop is not None}

    @property
    def budget_stop(self) -> int | None:
        """The steps taken when the next one would have crossed ``flop_limit`` (the fit stopped there), or None."""
        return self._tally["budget_stop"]

    @property
    def diverged_step(self) -> int | None:
        """The step at which the loss went non-finite, or None."""
        return self._tally["diverged_step"]

    @property
    def diverged(self) -> bool:
        return self.diverged_step is not None
