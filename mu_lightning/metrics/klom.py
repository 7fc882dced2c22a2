"""KLoM: per example, the KL divergence between the margins of retrained models and those of unlearned models.

Georgiev et al. 2024 ("Attribute-to-Delete: Machine Unlearning via Datamodel Matching", arXiv 2410.23232), as the
Easy Data-Unlearning Bench computes it (Rinberg et al.; RoyRin/data-unlearning-bench, ``unlearning_bench/eval.py``,
``compute_binned_KL_div`` and ``kl_from_margins``, called by ``unlearning_bench/run.py``, ``load_klom``). Per
example, with the margins of N retrained (gold) models G and N unlearned models U on it (docs/metrics.md §11):

1. both arrays are clipped to [-100, 100];
2. 20 equal bins span [min(G ∪ U), max(G ∪ U)] (one unit wide when every value is the same);
3. each array becomes bin frequencies by ``np.digitize`` against the 21 edges, counting indices 1..20 only: a value
   equal to the top edge (the largest margin of the two arrays) gets index 21 and falls in no bin, as in the
   reference;
4. wherever the first histogram is positive, the second is raised to at least 1e-5;
5. ``scipy.stats.entropy(p, q)``: both renormalised, Σ p log(p / q) in nats; NaN where p has no count left (all
   of its values on the top edge), as there.

Direction: ``load_klom`` passes the oracle margins as the first argument of ``kl_from_margins``, whose first
parameter is named ``all_unlearned_margins``, so the histogram in p is the **retrained** one: the benchmark's
numbers are KL(gold ‖ unlearned), and so are these. The arrays are vectorised over examples here; the reference
loops over them.
"""

from __future__ import annotations

import numpy as np
import torch

BINS, EPS, CLIP = 20, 1e-5, 100.0  # unlearning_bench/eval.py: bin_count=20, eps=1e-5, min_val=-100, max_val=100


def histograms(p: np.ndarray, q: np.ndarray, bins: int = BINS, clip: float = CLIP) -> tuple[np.ndarray, np.ndarray]:
    """Per-example bin counts ``[examples, bins]`` of ``p`` and ``q`` (``[models, examples]`` each), on the shared
    bins of each example; the top edge's values fall in no bin (step 3 of the module doc)."""
    p, q = np.clip(p, -clip, clip), np.clip(q, -clip, clip)
    lo = np.minimum(p.min(0), q.min(0))
    hi = np.maximum(p.max(0), q.max(0))
    hi = np.where(lo >= hi, lo + 1, hi)
    edges = np.linspace(lo, hi, bins + 1, axis=0)  # [bins + 1, examples]: each column is the reference's linspace

    def counts(a: np.ndarray) -> np.ndarray:
        idx = (a[None, :, :] >= edges[:, None, :]).sum(0)  # np.digitize(a, edges) per example: 0 .. bins + 1
        return np.stack([(idx == i).sum(0) for i in range(1, bins + 1)], axis=1)

    return counts(p), counts(q)


def klom(gold: torch.Tensor | np.ndarray, unlearned: torch.Tensor | np.ndarray, bins: int = BINS,
         eps: float = EPS, clip: float = CLIP) -> np.ndarray:
    """KLoM of every example: KL(gold margins ‖ unlearned margins) on binned histograms, ``[examples]`` in nats.

    ``gold`` and ``unlearned``: margins ``[models, examples]`` (the numbers of models may differ)."""
    g = np.asarray(gold, dtype=np.float64)
    u = np.asarray(unlearned, dtype=np.float64)
    cg, cu = histograms(g, u, bins, clip)
    pg = cg / np.maximum(cg.sum(1, keepdims=True), 1)
    pu = cu / np.maximum(cu.sum(1, keepdims=True), 1)
    qu = np.where(pg > 0, np.maximum(pu, eps), pu)
    with np.errstate(divide="ignore", invalid="ignore"):
        pg = pg / pg.sum(1, keepdims=True)  # scipy.stats.entropy renormalises both; an empty p gives NaN there too
        qu = qu / qu.sum(1, keepdims=True)
        terms = np.where(pg > 0, pg * np.log(pg / qu), 0.0)
    return np.where(np.isnan(pg).any(1), np.nan, terms.sum(1))


def tail(values: np.ndarray) -> dict[str, float]:
    """Mean and the 95th and 99th percentiles over examples (linear interpolation), NaN examples left out (a gold
    histogram with every value on the top edge: step 3 of the module doc)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return {"": float("nan"), "_p95": float("nan"), "_p99": float("nan")}
    return {"": float(v.mean()), "_p95": float(np.percentile(v, 95)), "_p99": float(np.percentile(v, 99))}


def gold_halves(gold: torch.Tensor | np.ndarray) -> np.ndarray:
    """The gold-vs-gold floor: KLoM between the first and the second half of the gold models, what retraining
    itself scores; the ensemble tier trains 2N golds, so each half holds the N models the other rows compare."""
    g = np.asarray(gold, dtype=np.float64)
    half = len(g) // 2
    return klom(g[:half], g[half:2 * half])
