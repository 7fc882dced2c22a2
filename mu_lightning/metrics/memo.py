"""Metrics kept per process under the identity of what they measure, so a sweep computes each only once.

The jobs of a sweep evaluate the same M and M_g again and again (only the unlearner differs), and their MIAs' SVC
and regression fits cost more than the forward passes. A model's metrics are a function of ``EvalContext.identity``
(its weights, the samples, the metric config), so each is computed once per process under exactly that key.
"""

from __future__ import annotations

from collections.abc import Callable


class MetricCache:
    """``{key: metrics}`` for this process; ``clear()`` forgets everything (tests start from an empty one)."""

    def __init__(self) -> None:
        self._values: dict[tuple, dict[str, float]] = {}

    def get(self, key: tuple, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
        """A copy of the metrics stored under ``key``, computed by ``compute()`` and stored on first use."""
        if key not in self._values:
            self._values[key] = compute()
        return dict(self._values[key])

    def clear(self) -> None:
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


CACHE = MetricCache()  # the package's one instance: every tier reads and fills it
