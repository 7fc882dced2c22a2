"""Unlearning methods, one short file each; ``conf/unlearner/<name>.yaml`` selects one by ``_target_``.

``base.py`` holds what they build on (``Unlearner``, ``OneShotUnlearner``, ``Pass``); docs/methods.md, "Adding a
method", says how to add one. Every ``Unlearner`` subclass defined in a module of this package is exported here by
its class name, found by walking the package: a new method file needs no line in this one.
"""

import importlib
import pkgutil

from mu_lightning.unlearners.base import OneShotUnlearner as OneShotUnlearner
from mu_lightning.unlearners.base import Pass as Pass
from mu_lightning.unlearners.base import Unlearner


def _methods() -> dict[str, type]:
    found = {}
    for module in pkgutil.iter_modules(__path__):
        loaded = importlib.import_module(f"{__name__}.{module.name}")
        found.update({name: obj for name, obj in vars(loaded).items() if isinstance(obj, type)
                      and issubclass(obj, Unlearner) and obj.__module__ == loaded.__name__})
    return found


globals().update(_methods())
__all__ = sorted({"OneShotUnlearner", "Pass", "Unlearner", *_methods()})
