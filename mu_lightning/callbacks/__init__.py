"""Callbacks: ``StageMonitor``, the declared contract of a callback that watches a stage, and its implementations.

``StageMonitor`` is loaded on first use: Hydra instantiates ``callbacks.aggregate.AggregateSweep`` before every run,
and importing Lightning there (seconds) would slow down the answer to a config error (docs/design.md, "Start-up and
overhead").
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mu_lightning.callbacks.monitor import StageMonitor

__all__ = ["StageMonitor"]


def __getattr__(name: str):
    if name == "StageMonitor":
        return import_module("mu_lightning.callbacks.monitor").StageMonitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
