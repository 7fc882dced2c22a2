"""The ``callbacks`` config group (``conf/callbacks/``): which Lightning callbacks each stage gets.

Each entry is a ``_target_`` with its arguments and ``stages``, the stages it applies to (``original``, ``gold``,
``clean``, ``unlearn``; ``[unlearn]`` when left out). ``check`` runs before any training: every entry resolves to a
Lightning ``Callback``, names known stages, and monitors (``monitor:`` of EarlyStopping and ModelCheckpoint) a value
the stage logs: ``train_loss``, or ``trajectory/<metric>`` where the forget/retain trajectory runs in that stage.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from mu_lightning.errors import ConfigError

STAGES = ("original", "gold", "clean", "unlearn")  # clean: the reference of corrective unlearning (poison=...)
DEFAULT_STAGES = ("unlearn",)


def entries(cfg: DictConfig) -> dict[str, DictConfig]:
    """The configured entries by name (switched-off ``null`` ones left out); ``callbacks=none`` gives none."""
    node = cfg.get("callbacks")
    if node is None:
        return {}
    if not isinstance(node, DictConfig):
        raise ConfigError(f"callbacks={node!r} is not a set of named callbacks: choose callbacks=default, none or "
                          "early_stopping (conf/callbacks/), or set callbacks.<name>={_target_: ..., stages: [...]}")
    return {str(name): entry for name, entry in node.items() if entry is not None}


def stages_of(name: str, entry: Any) -> tuple[str, ...]:
    """The stages entry ``name`` applies to, checked."""
    if not isinstance(entry, DictConfig) or "_target_" not in entry:
        raise ConfigError(f"callbacks.{name}={entry!r} must be a mapping with a _target_ (and stages: [...])")
    stages = tuple(entry.get("stages") or DEFAULT_STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"callbacks.{name}.stages={list(stages)} names {unknown}: the stages are {', '.join(STAGES)}")
    return stages


def check(cfg: DictConfig) -> None:
    """Every entry is a Lightning callback for known stages, and what it monitors is logged there (see the module)."""
    from lightning.pytorch.callbacks import Callback

    from mu_lightning.callbacks.forget_retain import METRICS, ForgetRetainCallback

    found = {name: (stages_of(name, entry), _class(name, entry)) for name, entry in entries(cfg).items()}
    for name, (stages, cls) in found.items():
        if not (isinstance(cls, type) and issubclass(cls, Callback)):  # a function or constant is not either
            raise ConfigError(f"callbacks.{name}._target_={entries(cfg)[name]._target_} is not a Lightning Callback")
        monitor = entries(cfg)[name].get("monitor")
        for stage in stages if monitor is not None else ():
            traced = any(stage in s and _is_monitor(c, ForgetRetainCallback) for s, c in found.values())
            allowed = ["train_loss", *(f"trajectory/{m}" for m in METRICS if traced)]
            if monitor not in allowed:
                raise ConfigError(f"callbacks.{name}.monitor={monitor!r} is not logged in the {stage} stage: it logs "
                                  f"{', '.join(allowed)}" + ("" if traced else " (trajectory/* needs forget_retain "
                                                             f"with {stage} among its stages)"))


def _class(name: str, entry: DictConfig) -> Any:
    """What ``_target_`` names (a class, or whatever else it is: ``check`` says it is no callback)."""
    try:
        return get_object(entry._target_)
    except Exception as err:  # Hydra raises ImportError or ValueError, wrapped in its own types by version
        raise ConfigError(f"callbacks.{name}._target_={entry._target_} cannot be imported ({err})") from None


def for_stage(cfg: DictConfig, stage: str) -> list:
    """New instances of the callbacks whose ``stages`` include ``stage`` (a request's ``unlearn_request2`` counts
    as ``unlearn``, a gold seed's ``gold_seed1`` as ``gold``)."""
    base = stage.split("_")[0]
    return [instantiate(_arguments(entry)) for name, entry in entries(cfg).items() if base in stages_of(name, entry)]


def key_part(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The entries of ``stage`` that can change its weights (all but the ``StageMonitor`` observers), resolved: what
    the stage cache key of an original or gold model must include."""
    from mu_lightning.callbacks.monitor import StageMonitor

    return {name: _arguments(entry) for name, entry in entries(cfg).items()
            if stage in stages_of(name, entry) and not _is_monitor(_class(name, entry), StageMonitor)}


def _is_monitor(cls: Any, monitor: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, monitor)


def _arguments(entry: DictConfig) -> dict[str, Any]:
    """The entry as ``instantiate`` takes it: resolved, without ``stages``."""
    node = OmegaConf.to_container(entry, resolve=True)
    node.pop("stages", None)
    return node
