"""The mark of a project function that configs may name by ``_target_`` (a data source, a forget request, a logger
factory): the function declares it where it is defined, so adding one needs no list elsewhere. Classes need no mark:
configs may name the project's unlearners, models, stage modules, callbacks, augmentations and poisons by their kind
(``runtime/targets.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)
MARK = "__mu_lightning_configurable__"
PACKAGES = ("mu_lightning.data", "mu_lightning.tracking.loggers")  # where marked functions may live


def configurable(fn: F) -> F:
    """Mark ``fn`` as a function a config may name (``_target_: mu_lightning.data.sources.digits``)."""
    setattr(fn, MARK, True)
    return fn


def is_configurable(obj: object) -> bool:
    return getattr(obj, MARK, False) is True
