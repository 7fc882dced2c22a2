"""The thresholds of the warning rules (``metric.warnings``), apart from the rules themselves (``warnings.py``) so
that the metrics that apply one of them (``fast.py``: an attack at chance) need not import the rules, which read
every metric."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from mu_lightning.errors import ConfigError


@dataclass(frozen=True)
class Margins:
    """The thresholds of the rules, ``metric.warnings.<name>`` (conf/metric/fast.yaml; docs/metrics.md §9)."""

    no_effect_agreement: float = 0.99  # M_u agrees with M on at least this share of D_f: no effect
    damage_margin: float = 0.10  # M_u's retain or test accuracy more than this below gold's: damaged
    attack_margin: float = 0.01  # an attack's balanced accuracy on its training data at most 0.5 + this: uninformative
    memorisation_margin: float = 0.02  # M's retain accuracy less than this above its test accuracy: no memorisation

    @classmethod
    def of(cls, metric_cfg: Any) -> Margins:
        """The margins of the ``metric`` config group; a ConfigError names an unknown key or a value outside [0, 1]."""
        get = getattr(metric_cfg, "get", None)  # a DictConfig or dict; any other object: its attribute
        given = dict((get("warnings") if callable(get) else getattr(metric_cfg, "warnings", None)) or {})
        names = [f.name for f in fields(cls)]
        for key, value in given.items():
            if key not in names:
                raise ConfigError(f"metric.warnings.{key} is not a setting: use {', '.join(names)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"metric.warnings.{key}={value!r} is not allowed: use a number in [0, 1]")
        return cls(**{k: float(v) for k, v in given.items()})
