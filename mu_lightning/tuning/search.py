"""A method's search space: the ``search:`` block of ``conf/unlearner/<name>.yaml``, beside its options.

``hparams_search=optuna`` hands the block to Optuna's sweeper as its ``params`` (``hydra.sweeper.params:
${oc.select:unlearner.search,null}``, resolved by the sweeper against the composed config), so each key is the
override a trial applies (``unlearner.optimizer.lr``) and each value one of the sweeper's ranges:
``interval(low, high)`` (a float), ``int(interval(low, high))``, ``range(low, high[, step])`` (integers, ``high``
included: Optuna's integer distribution), ``tag(log, interval(...))`` (a log scale) or ``choice(a, b, ...)``. A
plain value fixes the key during the search. ``check_search`` refuses a block a trial could not apply, before the
first trial trains; the Unlearner base calls a method's class without the block (``unlearners.base.SEARCH``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import SEARCH

FORMS = "interval(low, high), tag(log, interval(low, high)), range(low, high) or choice(a, b, ...)"


@dataclass(frozen=True)
class Searched:
    """One searched key: ``kind`` interval, range, choice or fixed; ``values`` (low, high) of an interval or a range
    (both reachable), the choices, or the one fixed value; ``log`` for a log-scale interval."""

    key: str
    text: str  # as written: interval(0.001, 0.1)
    kind: str
    values: tuple
    log: bool = False

    def contains(self, value: Any) -> bool:
        if self.kind in ("interval", "range"):
            return self.values[0] <= value <= self.values[1]
        return value in self.values


def search_space(unlearner: DictConfig) -> dict[str, Searched]:
    """The parsed ``search:`` block of an unlearner config ({} without one); ConfigError for what a sweep cannot be."""
    block = unlearner.get(SEARCH)
    if block is None:
        return {}
    if not isinstance(block, DictConfig):
        raise ConfigError(f"unlearner.{SEARCH}={block!r} is not a mapping: give each searched key (unlearner.<option>)"
                          f" one of {FORMS}")
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    return {str(key): _parse(parser, str(key), str(value)) for key, value in block.items()}


def _parse(parser: Any, key: str, value: str) -> Searched:
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    where = f"unlearner.{SEARCH}: {key}={value}"
    try:
        override = parser.parse_override(f"{key}={value}")
    except Exception:  # noqa: BLE001 - Hydra's grammar errors
        raise ConfigError(f"{where} is not a search range: use {FORMS}") from None
    sweep = override.value()
    if not override.is_sweep_override():
        return Searched(key, value, "fixed", (sweep,))
    tags = getattr(sweep, "tags", set())
    if "log" in tags and not isinstance(sweep, IntervalSweep):
        raise ConfigError(f"{where}: tag(log, ...) applies to interval() only (Optuna's log-uniform distribution)")
    if isinstance(sweep, IntervalSweep):
        found = Searched(key, value, "interval", (sweep.start, sweep.end), "log" in tags)
    elif isinstance(sweep, RangeSweep) and not sweep.shuffle:
        step = sweep.step or 1
        found = Searched(key, value, "range", (sweep.start, sweep.start + (sweep.stop - sweep.start) // step * step))
    elif isinstance(sweep, ChoiceSweep) and not sweep.shuffle:
        return Searched(key, value, "choice", tuple(sweep.list))
    else:
        raise ConfigError(f"{where} is not a range Optuna's sweeper takes: use {FORMS}")
    low, high = found.values
    if not low < high or (found.log and low <= 0):
        raise ConfigError(f"{where} is empty or not on a log scale: it needs low < high{' and low > 0' * found.log}")
    return found


def check_search(cfg: DictConfig) -> dict[str, Searched]:
    """The unlearner's search space, each key an option of the method that a trial can override, each extreme value
    of the option's type (``Unlearner.check_option_values``); ConfigError naming the key otherwise."""
    space = search_space(cfg.unlearner)
    method = get_class(cfg.unlearner._target_)
    for key, searched in space.items():
        option = _option_of(cfg, key, method)
        if key == f"unlearner.{option}":
            for value in searched.values:
                try:
                    method.check_option_values({option: value})
                except ConfigError as err:
                    raise ConfigError(f"unlearner.{SEARCH}: {key}={searched.text} reaches {value!r}: {err}") from None
    return space


def _option_of(cfg: DictConfig, key: str, method: type) -> str:
    """The option a searched key sets (``unlearner.optimizer.lr``: optimizer), checked to be one a trial can set."""
    parts = key.split(".")
    where = f"unlearner.{SEARCH}: {key}"
    if parts[0] != "unlearner" or len(parts) < 2 or parts[1] not in method.options():
        raise ConfigError(f"{where} is not an option of {method.__name__}: search unlearner.<option> with option one "
                          f"of {', '.join(method.options()) or 'none'}")
    node: Any = cfg
    for depth, part in enumerate(parts):
        path = ".".join(parts[:depth + 1])
        if not isinstance(node, DictConfig) or part not in node:
            raise ConfigError(f"{where} is not in the config: {method.__name__}'s config has no {path}")
        if OmegaConf.is_interpolation(node, part) and depth < len(parts) - 1:
            raise ConfigError(f"{where} cannot be searched: {path} is {OmegaConf.to_container(node)[part]}, an "
                              "interpolation a trial cannot override below; search the option itself or leave it out")
        node = node[part]
    return parts[1]
