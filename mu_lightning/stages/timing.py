"""The gold time a speed-up is compared with (docs/metrics.md §5): a gold model from the stage cache was timed when
it was trained, perhaps on another machine or under another load, so its recipe is timed again here."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.seed import isolate_rng

from mu_lightning.stages.classifier import ClassifierModule

# A calibration of the gold recipe: the first WARMUP_BATCHES Lightning batches are not timed (lazy set-up, caches,
# the allocator); after them, consecutive batches are timed together until they last SAMPLE_SECONDS (a sample long
# enough that the scheduler's time slices average out), and the fit goes on until at least MIN_SAMPLES samples have
# been timed and the median of their seconds per step moves by at most SETTLED (relative) over the last
# SETTLE_WINDOW samples; never longer than CALIBRATION_SECONDS nor beyond the gold recipe itself (its epochs).
WARMUP_BATCHES, SAMPLE_SECONDS, MIN_SAMPLES, SETTLE_WINDOW, SETTLED = 1, 0.05, 6, 3, 0.05
CALIBRATION_SECONDS = 5.0


def gold_timing(facts: dict[str, Any], probe: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Where the gold time of ``unlearn/speedup`` comes from: a gold model trained in this run is its own measure;
    for one from the stage cache, ``probe()`` (a ``calibration`` of its recipe) is run and its median seconds per
    step scaled to the gold's step count."""
    if not facts.get("cache_hit") or facts.get("fit_seconds") is None:  # trained here, or made elsewhere
        return {"source": "trained in this run" if facts.get("fit_seconds") is not None else "unknown",
                "comparable_fit_seconds": facts.get("fit_seconds")}
    with isolate_rng():
        measured = probe()
    recorded = facts.get("hardware")
    return {"source": "stage cache (fit_seconds as recorded when it was trained)", "recorded_hardware": recorded,
            "hardware_now": measured["hardware"], "same_hardware": recorded == measured["hardware"],
            "calibration": measured,
            "comparable_fit_seconds": measured["step_seconds"] * facts["steps"]}


class StepTimer(Callback):
    """Seconds per optimizer step of samples of consecutive Lightning batches after the warm-up, each from the end of
    one batch to the end of a later one (so the work between batches, epoch ends included, is in them); stops the
    fit once their median has settled (see the module's constants)."""

    def __init__(self) -> None:
        self.per_step: list[float] = []  # of each sample
        self.medians: list[float] = []  # of per_step, after each sample
        self.seconds, self.steps, self.warmup_steps, self._batches = 0.0, 0, 0, 0
        self._since: tuple[float, int] | None = None  # where the sample being timed started

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now, steps = time.perf_counter(), pl_module.steps_taken
        self._batches += 1
        if self._batches <= WARMUP_BATCHES:
            self.warmup_steps, self._since = steps, (now, steps)
        elif now - self._since[0] >= SAMPLE_SECONDS:
            self._sample(now, steps)
        # under DDP rank 0 decides for all: a rank that stopped alone would leave the others waiting
        if (trainer.strategy.broadcast(self.settled) if trainer.world_size > 1 else self.settled):
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.per_step and self._since is not None:  # a recipe shorter than one sample: what ran after warm-up
            self._sample(time.perf_counter(), pl_module.steps_taken)

    def _sample(self, now: float, steps: int) -> None:
        seconds, done = now - self._since[0], steps - self._since[1]
        if done > 0:
            self.per_step.append(seconds / done)
            self.seconds, self.steps = self.seconds + seconds, self.steps + done
            self.medians.append(statistics.median(self.per_step))
        self._since = (now, steps)

    @property
    def settled(self) -> bool:
        recent = self.medians[-SETTLE_WINDOW:]
        return (len(self.per_step) >= MIN_SAMPLES and len(recent) == SETTLE_WINDOW
                and max(recent) <= (1 + SETTLED) * min(recent))


def calibration(module: ClassifierModule, batches: Iterable, make_trainer: Callable[..., L.Trainer]) -> dict[str, Any]:
    """Time the gold recipe on this machine now: ``module`` (a fresh model with the gold's recipe) fit on D_r's
    ``batches`` as the gold model was, timed by ``StepTimer``; ``make_trainer(max_epochs, **kwargs)`` builds the
    stage's Trainer. ``step_seconds`` is the median seconds per step of the timed samples, ``spread`` their
    interquartile range over that median; a recipe too short for one sample after the warm-up is timed whole."""
    timer = StepTimer()
    trainer = make_trainer(module.epochs, callbacks=[timer], max_time=timedelta(seconds=CALIBRATION_SECONDS))
    trainer.fit(module, train_dataloaders=module.chunks(batches))
    if timer.per_step:
        per = timer.per_step
        q1, _, q3 = statistics.quantiles(per, n=4) if len(per) > 1 else (per[0], None, per[0])
        step_seconds = statistics.median(per)
        timed = {"steps": timer.steps, "seconds": timer.seconds, "samples": len(per), "warmup_steps":
                 timer.warmup_steps, "settled": timer.settled, "spread": (q3 - q1) / step_seconds,
                 "step_seconds_quartiles": [q1, q3]}
    else:  # not one sample after the warm-up: the whole fit, warm-up included
        step_seconds = module.clock.seconds / max(module.steps_taken, 1)
        timed = {"steps": module.steps_taken, "seconds": module.clock.seconds, "samples": 0, "warmup_steps": 0,
                 "settled": False, "spread": None, "step_seconds_quartiles": None}
    return {**timed, "step_seconds": step_seconds, "hardware": module.hardware}
