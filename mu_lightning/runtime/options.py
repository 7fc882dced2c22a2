"""Options a config gives but nothing reads: a misspelt key (``+forget.fration=0.2``), an option of a logger that is
not selected, a group switched off with ``false``. Each is one line naming the key and, where one is close, the
option meant (as Hydra suggests a group's options), before any data loads; called from ``checks.check_config`` after
``check_targets``, so every ``_target_`` it imports is one a config may name."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from omegaconf import DictConfig, ListConfig

from mu_lightning.errors import ConfigError

# groups a config must hold as a group of options, with what to do instead of switching one off
GROUPS = {"train": "it is the recipe of the original and gold models, not a switch; to use models trained elsewhere "
                   "give original.checkpoint=PATH and gold.checkpoint=PATH (or python eval.py, docs/checkpoints.md)",
          "model": "choose one with model=...", "dataset": "choose one with dataset=...",
          "forget": "choose one with forget=...", "unlearner": "unlearner=none runs no unlearner"}

# keys the pipeline reads beside a target's own parameters, by top-level group
ALSO = {"callbacks": ("stages",)}


def check_options(cfg: DictConfig) -> None:
    """The groups of ``GROUPS`` are groups; every ``logger.<name>`` names a factory; every key beside a
    ``_target_`` is a parameter of what it names (unless that takes ``**kwargs``)."""
    for group, instead in GROUPS.items():
        if group in cfg and not isinstance(cfg._get_node(group), DictConfig):
            raise ConfigError(f"{group}={cfg._get_node(group)._value()} is not allowed: {instead}")
    for name in (cfg.get("logger") or {}):
        entry = cfg.logger._get_node(name)
        if isinstance(entry, DictConfig) and not entry._is_none() and "_target_" not in entry:
            raise ConfigError(f"logger.{name} sets options of a logger that is not selected "
                              f"({', '.join(map(str, entry.keys()))}): choose it with logger={name} (or "
                              f"logger=csv_{name}), then set logger.{name}.<option>")
    _walk(cfg, "")


def _walk(node: Any, path: str) -> None:
    if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
        if "_target_" in node:
            _check_keys(node, path)
        for key in node.keys():
            if key != "hydra" and isinstance(child := node._get_node(key), DictConfig | ListConfig):
                _walk(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig) and not node._is_none() and not node._is_missing():
        for i in range(len(node)):
            _walk(node._get_node(i), f"{path}[{i}]")


def _check_keys(node: DictConfig, path: str) -> None:
    from hydra._internal.utils import _locate

    target = node.get("_target_")
    try:
        params = inspect.signature(_locate(target)).parameters
    except Exception:  # noqa: BLE001 - no signature to read (a builtin): its own error says what is wrong
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [p for p in params if p != "self"]
    also = ALSO.get(path.split(".", 1)[0], ())
    for key in node.keys():
        if not str(key).startswith("_") and key not in params and key not in also:
            close = difflib.get_close_matches(str(key), known, n=1)
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"{where} is not an option of {str(target).rsplit('.', 1)[-1]}"
                              f"{f' (did you mean {path}.{close[0]}?)' if close else ''}: its options are "
                              f"{', '.join(known) or 'none'}")
