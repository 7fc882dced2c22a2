"""The gold time a speed-up is compared with (docs/metrics.md §5): a gold model from the stage cache was timed when
it was trained, perhaps on another machine or under another load, so its recipe is timed again here."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.utilities.seed import isolate_rng

from mu_lightning.stages.classifier import ClassifierModule

CALIBRATION_STEPS, CALIBRATION_SECONDS = 300, 1.0  # the most a calibration of the gold recipe runs


def gold_timing(facts: dict[str, Any], probe: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Where the gold time of ``unlearn/speedup`` comes from: a gold model trained in this run is its own measure;
    for one from the stage cache, ``probe()`` (a ``calibration`` of its recipe) is run and scaled to the gold's step
    count."""
    if not facts.get("cache_hit") or facts.get("fit_seconds") is None:  # trained here, or made elsewhere
        return {"source": "trained in this run" if facts.get("fit_seconds") is not None else "unknown",
                "comparable_fit_seconds": facts.get("fit_seconds")}
    with isolate_rng():
        measured = probe()
    recorded = facts.get("hardware")
    return {"source": "stage cache (fit_seconds as recorded when it was trained)", "recorded_hardware": recorded,
            "hardware_now": measured["hardware"], "same_hardware": recorded == measured["hardware"],
            "calibration": measured,
            "comparable_fit_seconds": measured["seconds"] / max(measured["steps"], 1) * facts["steps"]}


def calibration(module: ClassifierModule, batches: Iterable, make_trainer: Callable[..., L.Trainer]) -> dict[str, Any]:
    """Time the gold recipe on this machine now: ``module`` (a fresh model with the gold's recipe) fit on D_r's
    ``batches`` for ``CALIBRATION_STEPS`` steps or ``CALIBRATION_SECONDS`` (checked after each Lightning batch),
    whichever is less; ``make_trainer(max_epochs, **limits)`` builds the stage's Trainer."""
    trainer = make_trainer(module.epochs, max_steps=CALIBRATION_STEPS, max_time=timedelta(seconds=CALIBRATION_SECONDS))
    trainer.fit(module, train_dataloaders=module.chunks(batches))
    return {"steps": module.steps_taken, "seconds": module.clock.seconds, "hardware": module.hardware}
