"""Metrics over seeds: the NeurIPS 2023 challenge forget score and Student-t intervals (docs/metrics.md §3.6, §6.5).

The forget score compares, for each forget example, the distribution of φ under N unlearned runs with that under N
gold retrains (Triantafillou et al. 2024, google-deepmind/unlearning_evaluation ``metric.py``). It depends on N, so
the number is only comparable between runs with the same N, which is reported beside it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
BUFFER = 2.0  # how far the interval rules reach beyond the narrower distribution


def _epsilon(rates_fpr: np.ndarray, rates_fnr: np.ndarray) -> float:
    """Best ε over decision rules from FPR + e^ε·FNR ≥ 1 − δ and its mirror; rules with one zero rate are dropped."""
    both_zero = (rates_fpr == 0) & (rates_fnr == 0)
    if both_zero.any():
        return math.inf
    keep = (rates_fpr > 0) & (rates_fnr > 0)
    if not keep.any():
        return 0.0
    fpr, fnr = rates_fpr[keep], rates_fnr[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        eps = np.fmax(np.log(1 - DELTA - fpr) - np.log(fnr), np.log(1 - DELTA - fnr) - np.log(fpr))
    return float(np.nanmax(np.clip(eps, 0, None), initial=0.0))


def _share_in(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Share of ``values`` in [low, high] for each pair of bounds."""
    s = np.sort(values)
    return (np.searchsorted(s, high, side="right") - np.searchsorted(s, low, side="left")) / len(s)


def example_epsilon(unlearned: np.ndarray, retrained: np.ndarray) -> float:
    """ε of one forget example from its φ under N unlearned and N retrained models (§3.6), clipped to [0, 50].

    Rules: one threshold on a 1/100 grid over the pooled range (positive = the side with the larger median), and
    intervals [l, r] around the narrower distribution, with r on a 1/100 grid and l within ±2 of r − its width.
    """
    pos, neg = (retrained, unlearned) if np.median(retrained) > np.median(unlearned) else (unlearned, retrained)
    spread = sorted([np.ptp(pos), np.ptp(neg)])
    if spread[1] == 0:
        return 0.0 if pos[0] == neg[0] else EPSILON_CAP
    if spread[0] / spread[1] < 0.01:  # one side is a spike: the grid may miss it, so the reference takes the cap
        return EPSILON_CAP
    pooled = np.concatenate([pos, neg])
    t = np.linspace(pooled.min(), pooled.max(), math.ceil(np.ptp(pooled) * THRESHOLDS_PER_UNIT))
    fpr = [_share_in(neg, t, np.full_like(t, np.inf))]
    fnr = [1 - _share_in(pos, t, np.full_like(t, np.inf))]

    narrow, wide = (pos, neg) if np.ptp(pos) < np.ptp(neg) else (neg, pos)
    width = spread[0]
    lo, hi = narrow.min() + width - BUFFER, narrow.max() + BUFFER
    right = np.linspace(lo, hi, math.ceil((hi - lo) * THRESHOLDS_PER_UNIT))
    offsets = np.linspace(-BUFFER, BUFFER, math.ceil(2 * BUFFER * THRESHOLDS_PER_UNIT))
    left = (right[:, None] - width + offsets[None, :]).ravel()
    right = np.repeat(right, len(offsets))
    fpr.append(_share_in(wide, left, right))
    fnr.append(1 - _share_in(narrow, left, right))
    return min(_epsilon(np.concatenate(fpr), np.concatenate(fnr)), EPSILON_CAP)


def forget_score(unlearned_phi: np.ndarray, retrained_phi: np.ndarray) -> tuple[float, np.ndarray]:
    """Challenge forget score F ∈ [0, 1], ↑, and the per-example ε; inputs are φ of shape [N models, |D_f|].

    F = mean over D_f of ``points(ε, N)``, the closed form of ``metric.py``'s half-unit buckets.
    """
    eps = np.array([example_epsilon(unlearned_phi[:, i], retrained_phi[:, i]) for i in range(unlearned_phi.shape[1])])
    return float(points(eps, unlearned_phi.shape[0]).mean()), eps


def points(eps: np.ndarray, n: int) -> np.ndarray:
    """Per-example points 2^(−⌊2ε⌋), or 0 from ε ≥ ⌈ln(n − 1)⌉ on (n models per side: finer ε is not resolvable)."""
    max_eps = math.ceil(math.log(n - 1))
    return np.where(eps < max_eps, 2.0 ** -np.floor(2 * eps), 0.0)


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t interval over seeds (RUM's protocol, Zhao et al. 2024)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    sem = stats.sem(x)
    if sem == 0:
        return mean, 0.0
    low, _ = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=sem)
    return mean, float(mean - low)
