"""What a config may make Python run: every ``_target_`` is checked by the object it resolves to, not by its spelling.

Policy: every ``_target_`` (in a config file, a preset, a ``--config-dir``, a command-line override or Hydra's own
``hydra.*`` settings) is resolved the way Hydra resolves it and must be, under its own module path, one of the classes
and functions the project's configs are meant to name (mu_lightning's unlearners, models, stage modules, callbacks,
augmentations, poison manipulations, data sources, forget requests and logger factories; torch.optim optimizers and
schedulers, torch.nn modules, Lightning callbacks, Hydra's launchers, sweepers and callbacks, Optuna samplers), and keys
that switch off a safety (``weights_only: false``, ``allow_pickle: true``) or private keys other than Hydra's
``_target_``, ``_partial_``, ``_args_``, ``_recursive_`` and ``_convert_`` are refused before anything runs. To name
your own class or function, list it in the environment variable ``MU_LIGHTNING_ALLOW`` (``my_pkg.nets.MyNet`` allows
exactly that object, ``my_pkg.*`` the models, Lightning modules and callbacks that ``my_pkg`` defines), which no
config can set.

How a target is checked (``check_targets``):

1. it must be a dotted name without ``__dunder__`` parts, inside a package on the list (or in ``MU_LIGHTNING_ALLOW``);
   anything else is refused before it is imported, so a config never imports a module outside those packages;
2. it is resolved exactly as Hydra resolves it (``hydra._internal.utils._locate``);
3. the object must be a class or a function, and ``obj.__module__ + "." + obj.__qualname__`` must be on the list
   (``KINDS``: a class defined in one of the kind's packages that subclasses one of its bases; a function of the
   data or logger packages that carries the ``@configurable`` mark, ``mu_lightning/configurable.py``);
4. the path must name the object canonically: ``module.qualname`` itself, or a re-export by a package above that
   module (``torch.optim.SGD``, ``mu_lightning.unlearners.SCRUB``); ``mu_lightning.unlearners.base.torch.optim.SGD``
   is refused with the canonical name to use.

Interpolations may use only the resolvers of ``settings.RESOLVERS`` (none builds nodes out of text or reads the
environment), checked on every node before anything resolves; then they are resolved and checked like plain values,
and a node a resolver made is walked like any other. ``_recursive_`` and
``_convert_`` are harmless because every node is checked whatever they say; ``_partial_`` and ``_args_`` only pass
arguments to an object that is itself checked.

Hydra acts on its own settings before the task function runs; ``command_line.py`` checks them, with this module's
walker, before ``hydra.main`` starts.

The task config (everything outside ``hydra``) is checked by ``check_targets`` from ``checks.check_config``, before
anything in it is instantiated; each job of a sweep checks its own.
Files a config names (a run directory, a log file) are written where it says: the policy is about code, not paths.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import FunctionType
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from mu_lightning.configurable import PACKAGES as FUNCTION_PACKAGES
from mu_lightning.configurable import is_configurable
from mu_lightning.errors import ConfigError
from mu_lightning.runtime.settings import check_env_set, check_launcher, check_resolvers

ENV = "MU_LIGHTNING_ALLOW"

# Hydra's instantiate keys; any other key that starts with "_" is refused (a future Hydra key, or a typo that would
# silently do nothing).
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_args_", "_recursive_", "_convert_"})


@dataclass(frozen=True)
class Kind:
    """Classes a config may name: defined in one of ``packages`` (or below), subclassing one of ``bases``.

    A base is ``"module:attribute"``, looked up only once its module is imported: a class that subclasses it has
    imported it, so the check never imports anything (Lightning, Optuna) on its own.
    """

    what: str
    packages: tuple[str, ...]
    bases: tuple[str, ...] = ()  # empty: any class defined there

    def admits(self, obj: Any) -> bool:
        if not isinstance(obj, type) or not _under(obj.__module__, self.packages):
            return False
        return not self.bases or any(b is not None and issubclass(obj, b) for b in map(_loaded, self.bases))


KINDS: tuple[Kind, ...] = (
    Kind("unlearners", ("mu_lightning.unlearners",), ("mu_lightning.unlearners:Unlearner",)),
    Kind("models", ("mu_lightning.models",), ("torch.nn:Module",)),
    Kind("stage modules", ("mu_lightning.stages",), ("lightning.pytorch:LightningModule",)),
    Kind("callbacks", ("mu_lightning.callbacks",),
         ("lightning.pytorch:Callback", "hydra.experimental.callback:Callback")),
    Kind("augmentations", ("mu_lightning.data.augment",)),
    Kind("poison manipulations", ("mu_lightning.data.poison",)),
    Kind("torch.optim optimizers", ("torch.optim",), ("torch.optim:Optimizer",)),
    Kind("torch.optim schedulers", ("torch.optim",),
         ("torch.optim.lr_scheduler:LRScheduler", "torch.optim.lr_scheduler:ReduceLROnPlateau")),
    Kind("torch.nn modules", ("torch.nn",), ("torch.nn:Module",)),
    Kind("Lightning callbacks", ("lightning.pytorch.callbacks",), ("lightning.pytorch.callbacks:Callback",)),
    Kind("Hydra launchers and sweepers", ("hydra._internal.core_plugins", "hydra_plugins"),
         ("hydra.plugins.launcher:Launcher", "hydra.plugins.sweeper:Sweeper")),
    Kind("Hydra callbacks", ("hydra.experimental.callbacks",), ("hydra.experimental.callback:Callback",)),
    Kind("Optuna samplers", ("optuna.samplers",), ("optuna.samplers:BaseSampler",)),
)

FUNCTION_KINDS = "data sources, forget requests and logger factories"

# `class` and `()` in Hydra's logging configs: logging.config.dictConfig calls what they name
# (and, from Python 3.12, `queue` and `listener` of a QueueHandler).
LOGGING_KINDS: tuple[Kind, ...] = (
    Kind("logging handlers, formatters and filters", ("logging", "colorlog"),
         ("logging:Handler", "logging:Formatter", "logging:Filter")),
    Kind("queues and queue listeners", ("queue", "logging.handlers"),
         ("queue:Queue", "logging.handlers:QueueListener")),
)
LOGGING_NAMES = ("class", "()", "queue", "listener")
LOGGING_EXT = frozenset({"ext://sys.stdout", "ext://sys.stderr"})

# What a user's `my_pkg.*` entry admits: classes of these bases defined in my_pkg (a function, or a class of another
# kind, is named exactly instead).
USER_BASES = ("torch.nn:Module", "lightning.pytorch:LightningModule", "lightning.pytorch:Callback",
              "hydra.experimental.callback:Callback")

# Keys that switch off a safety: key -> the only values allowed.
SAFE_VALUES: dict[str, tuple[Any, ...]] = {
    "weights_only": (True,),
    "allow_pickle": (False, None),
    "trust_remote_code": (False, None),
}

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def allowed_summary() -> str:
    kinds = [k.what for k in KINDS]
    return f"mu_lightning's {', '.join(kinds[:6])}, {FUNCTION_KINDS}; " + "; ".join(kinds[6:])


def _hint() -> str:
    return (f"(allowed: {allowed_summary()}; to name your own class or function, add it to the environment variable "
            f"{ENV}, e.g. {ENV}=my_package.MyNet)")


# --------------------------------------------------------------------------------------------------------- the check


def check_targets(cfg: DictConfig | ListConfig) -> None:
    """Every node of ``cfg`` (a composed config, with or without its ``hydra`` node): each ``_target_`` names an
    allowed object canonically, no key switches off a safety, no unknown private key; under ``hydra``, also its
    logging configs, ``job.env_set``, ``launcher.*`` and ``sweeper.custom_search_space``; everywhere, only allowed
    resolvers (``settings.py``). Raises ConfigError
    naming the first offending key, the value and what is allowed."""
    _Walker(UserAllow.from_env()).run(cfg, "")


def check_target(path: Any, where: str = "_target_") -> Any:
    """One ``_target_`` value: returns the object it names, or raises ConfigError (``where`` names it in the
    message)."""
    return _Walker(UserAllow.from_env()).target(where, path, KINDS, functions=True)


# ------------------------------------------------------------------------------------------------ user's allowlist


@dataclass(frozen=True)
class UserAllow:
    """``MU_LIGHTNING_ALLOW``: exact objects (``pkg.mod.Name``) and packages (``pkg.*``)."""

    exact: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, value: str | None = None) -> UserAllow:
        raw = os.environ.get(ENV, "") if value is None else value
        exact, packages = [], []
        for entry in filter(None, re.split(r"[,\s]+", raw.strip())):
            name = entry[:-2] if entry.endswith(".*") else entry
            if not _DOTTED.match(name) or any(_dunder(p) for p in name.split(".")):
                raise ConfigError(f"{ENV}={raw!r}: {entry!r} is not a dotted name (my_pkg.nets.MyNet) or a package "
                                  "followed by .* (my_pkg.*)")
            (packages if entry.endswith(".*") else exact).append(name)
        return cls(tuple(exact), tuple(packages))

    @property
    def roots(self) -> tuple[str, ...]:
        return self.exact + self.packages

    def admits(self, path: str, obj: Any) -> bool:
        if path in self.exact:
            return isinstance(obj, type | FunctionType)
        return isinstance(obj, type) and _under(obj.__module__, self.packages) and any(
            b is not None and issubclass(obj, b) for b in map(_loaded, USER_BASES))


# ------------------------------------------------------------------------------------------------------- internals


class _Unresolved:
    def __init__(self, err: Exception, raw: str) -> None:
        self.err, self.raw = err, raw


class _Walker:
    """Checks a config tree; interpolations are resolved and checked after the plain nodes, so that a node reached
    both directly and through ``${...}`` is reported under its own path."""

    def __init__(self, allow: UserAllow) -> None:
        self.allow = allow
        self.seen: set[int] = set()
        self.pending: list[tuple[Any, Any, str]] = []

    def run(self, node: Any, path: str) -> None:
        self.walk(node, path)
        while self.pending:
            parent, key, where = self.pending.pop(0)
            raw = str(parent._get_node(key)._value())
            try:
                value = parent[key]
            except MissingMandatoryValue:
                continue
            except (OmegaConfBaseException, ValueError, KeyError, TypeError) as err:
                value = _Unresolved(err, raw)
            self.visit(key, where, value)

    def walk(self, node: Any, path: str) -> None:
        if not isinstance(node, DictConfig | ListConfig) or id(node) in self.seen:
            return
        self.seen.add(id(node))
        if node._is_none() or node._is_missing() or node._is_interpolation():
            return
        keys: Iterable[Any] = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for key in keys:
            where = f"{path}[{key}]" if isinstance(node, ListConfig) else f"{path}.{key}" if path else str(key)
            child = node._get_node(key)
            if child is not None and child._is_interpolation():
                check_resolvers(where, str(child._value()))  # before anything resolves (settings.py)
                self.pending.append((node, key, where))
                continue
            try:
                value = node[key]
            except MissingMandatoryValue:
                value = None
            self.visit(key, where, value)

    def visit(self, key: Any, where: str, value: Any) -> None:
        if isinstance(key, str) and key.startswith("_") and key not in HYDRA_KEYS:
            raise ConfigError(f"{where} is not allowed: keys starting with '_' are reserved for Hydra's "
                              f"{', '.join(sorted(HYDRA_KEYS))}")
        if isinstance(value, _Unresolved):
            if self.sensitive(key, where):
                raise ConfigError(f"{where}={value.raw!r} is not allowed: it must be checked before the run, and its "
                                  f"interpolation does not resolve then ({_first_line(value.err)})")
            return
        if isinstance(value, dict | list):  # a node a resolver made: checked like any other
            value = OmegaConf.create(value)
        if key == "_target_":
            if value is not None:
                self.target(where, value, KINDS, functions=True)
        elif key in SAFE_VALUES:
            if value not in SAFE_VALUES[key]:
                allowed = " or ".join(str(v).lower() if v is not None else "null" for v in SAFE_VALUES[key])
                raise ConfigError(f"{where}={value!r} is not allowed: it switches off a safety that the project relies "
                                  f"on (files are never unpickled); remove it or set {allowed}")
        if where.startswith(("hydra.hydra_logging.", "hydra.job_logging.")):
            if key in LOGGING_NAMES and (isinstance(value, str) or key in ("class", "()")):
                self.target(where, value, LOGGING_KINDS, functions=False)
            elif isinstance(value, str) and value.startswith("ext://") and value not in LOGGING_EXT:
                raise ConfigError(f"{where}={value!r} is not allowed: a logging config may name only "
                                  f"{' or '.join(sorted(LOGGING_EXT))} with ext://")
        elif where.startswith("hydra.job.env_set."):
            check_env_set(where, key, value)
        elif where == "hydra.launcher.setup" and value:
            raise ConfigError(f"{where} is not allowed: its shell lines would run in every SLURM job; prepare the "
                              "job's environment outside the config (your shell profile, or a module file)")
        elif where.startswith("hydra.launcher."):
            check_launcher(where, key, value)
        elif where == "hydra.sweeper.custom_search_space" and value is not None:
            self.target(where, value, (), functions=False)
        self.walk(value, where)

    @staticmethod
    def sensitive(key: Any, where: str) -> bool:
        return (key == "_target_" or key in SAFE_VALUES or where.startswith("hydra.job.env_set.")
                or where.startswith("hydra.launcher.") or where == "hydra.sweeper.custom_search_space"
                or (key in LOGGING_NAMES and where.startswith(("hydra.hydra_logging.", "hydra.job_logging."))))

    def target(self, where: str, path: Any, kinds: Sequence[Kind], functions: bool) -> Any:
        """The object ``path`` names, if it is allowed; ConfigError otherwise."""
        shown = f"{where}={path!r}"
        if not isinstance(path, str) or not _DOTTED.match(path):
            raise ConfigError(f"{shown} is not allowed: it must be the dotted name of a class or function "
                              f"{_hint()}")
        if any(_dunder(part) for part in path.split(".")):
            raise ConfigError(f"{shown} is not allowed: it reaches a __dunder__ attribute {_hint()}")
        roots = tuple(p for k in kinds for p in k.packages) + (FUNCTION_PACKAGES if functions else ()) + \
            self.allow.roots
        if not _under(path, roots):
            raise ConfigError(f"{shown} is not allowed: it lies outside the modules configs may import from "
                              f"{_hint()}")
        obj = _resolve(shown, path)
        if not (isinstance(obj, type) or callable(obj)) or not isinstance(getattr(obj, "__qualname__", None), str) \
                or not isinstance(getattr(obj, "__module__", None), str):
            raise ConfigError(f"{shown} is not allowed: it names {_describe(obj)}, not a class or function {_hint()}")
        canonical = f"{obj.__module__}.{obj.__qualname__}"
        listed = (any(k.admits(obj) for k in kinds) or (functions and _under(canonical, FUNCTION_PACKAGES)
                                                        and is_configurable(obj) and isinstance(obj, FunctionType)))
        if not listed and not self.allow.admits(path, obj):
            what = "class" if isinstance(obj, type) else "function"
            raise ConfigError(f"{shown} is not allowed: it names {canonical}, which is not a {what} configs may name "
                              f"{_hint()}")
        if path != canonical and path not in self.allow.exact and not _reexport(path, obj):
            raise ConfigError(f"{shown} is not allowed: it reaches {canonical} through another module's attributes; "
                              f"name it {_spelling(obj)}")
        return obj


def _resolve(shown: str, path: str) -> Any:
    from hydra._internal.utils import _locate

    try:
        return _locate(path)
    except Exception as err:  # noqa: BLE001 - an import error of an allowed module, or a missing attribute
        raise ConfigError(f"{shown} cannot be imported: {_first_line(err.__cause__ or err)}") from None


def _reexport(path: str, obj: Any) -> bool:
    """``path`` is ``<package>.<name>`` where the package lies above ``obj.__module__`` and exports it under its own
    name (``torch.optim.SGD`` for ``torch.optim.sgd.SGD``)."""
    parent, _, name = path.rpartition(".")
    return (name == obj.__qualname__ and obj.__module__.startswith(parent + ".")
            and getattr(sys.modules.get(parent), name, None) is obj)


def _spelling(obj: Any) -> str:
    """The shortest canonical name of ``obj``: its module's highest package that exports it, or module.qualname."""
    parts = obj.__module__.split(".")
    for i in range(1, len(parts)):
        package = ".".join(parts[:i])
        if "." not in obj.__qualname__ and getattr(sys.modules.get(package), obj.__qualname__, None) is obj:
            return f"{package}.{obj.__qualname__}"
    return f"{obj.__module__}.{obj.__qualname__}"


def _under(name: str, packages: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _loaded(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(sys.modules.get(module), attr, None)


def _dunder(part: str) -> bool:
    return part.startswith("__") and part.endswith("__")


def _describe(obj: Any) -> str:
    name = getattr(obj, "__name__", None)
    return f"the {type(obj).__name__} {name}" if isinstance(name, str) else f"a {type(obj).__name__} object"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
