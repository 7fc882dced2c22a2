"""Memorisation of each training sample, from models that trained on it and models that did not.

Feldman & Zhang, "What Neural Networks Memorize and Why" (NeurIPS 2020, arXiv 2008.03703), Eq. 1: mem(x) =
Pr[h(x) = y | x ∈ S] − Pr[h(x) = y | x ∉ S] over models h trained on random subsets S of D, estimated, as there,
by the accuracy on x of the models whose subset held it minus that of the models whose subset did not. Here the
subsets are the shadow models' random halves (``data/shadows.py``; docs/metrics.md §13).
"""

from __future__ import annotations

import numpy as np


def memorization(correct: np.ndarray, included: np.ndarray) -> np.ndarray:
    """mem(x) per sample from ``correct`` and ``included`` (both ``[models, samples]``, bool): the accuracy of the
    models that trained on x minus that of the others; NaN where either group is empty."""
    correct, included = np.asarray(correct, bool), np.asarray(included, bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc_in = (correct & included).sum(0) / included.sum(0)
        acc_out = (correct & ~included).sum(0) / (~included).sum(0)
    return acc_in - acc_out
