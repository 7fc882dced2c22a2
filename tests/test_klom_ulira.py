"""KLoM, U-LiRA and memorisation against values worked out by hand or by an independent per-example computation
(docs/metrics.md §11-§13)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mu_lightning.metrics.klom import gold_halves, klom, tail
from mu_lightning.metrics.memorization import memorization
from mu_lightning.metrics.ulira import per_example, pooled, scores


def reference_klom(gold: np.ndarray, unlearned: np.ndarray) -> float:
    """One example the reference's way (unlearning_bench/eval.py, compute_binned_KL_div with p = the gold margins):
    clip, 20 bins over the joint range, np.digitize, eps where p > 0, scipy.stats.entropy."""
    p, q = np.clip(gold, -100, 100), np.clip(unlearned, -100, 100)
    lo, hi = min(p.min(), q.min()), max(p.max(), q.max())
    if lo >= hi:
        hi = lo + 1
    edges = np.linspace(lo, hi, 21)
    pc = np.array([np.sum(np.digitize(p, edges) == i) for i in range(1, 21)])
    qc = np.array([np.sum(np.digitize(q, edges) == i) for i in range(1, 21)])
    pp = pc / pc.sum() if pc.sum() else np.zeros(20)
    qp = qc / qc.sum() if qc.sum() else np.zeros(20)
    return float(stats.entropy(pk=pp, qk=np.where(pp > 0, np.maximum(qp, 1e-5), qp)))


def test_klom_by_hand():
    # gold margins 0, 1, 2, 3 and unlearned 0, 0, 0, 3 on one example: 20 bins of width 0.15 over [0, 3];
    # gold: 0 -> bin 1, 1 -> bin 7, 2 -> bin 14, 3 on the top edge -> no bin; unlearned: 0 x3 -> bin 1, 3 -> no bin.
    # p = 1/3 on bins 1, 7, 14; q = 1 on bin 1, raised to 1e-5 on bins 7 and 14, renormalised by 1 + 2e-5.
    z = 1 + 2e-5
    by_hand = (1 / 3) * math.log((1 / 3) / (1 / z)) + 2 * (1 / 3) * math.log((1 / 3) / (1e-5 / z))
    got = klom(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[0.0], [0.0], [0.0], [3.0]]))
    assert got[0] == pytest.approx(by_hand, rel=1e-12)
    # the same histograms both sides: 0; every value equal: one bin of width 1, 0
    assert klom(np.array([[1.0], [2.0]]), np.array([[1.0], [2.0]]))[0] == pytest.approx(0.0, abs=1e-15)
    assert klom(np.full((3, 1), 5.0), np.full((3, 1), 5.0))[0] == 0.0


def test_klom_direction_clipping_and_the_empty_top_edge():
    g, u = np.array([[0.0], [0.0], [1.0], [1.0]]), np.array([[0.0], [0.5], [0.5], [1.0]])
    assert klom(g, u)[0] != pytest.approx(klom(u, g)[0])  # KL is not symmetric: gold is the first argument
    # margins beyond ±100 are clipped first: 500 and 100 land in the same (top) place
    assert klom(np.array([[0.0], [500.0]]), np.array([[0.0], [100.0]]))[0] == pytest.approx(0.0, abs=1e-15)
    # every gold margin on the top edge: p has no count, NaN as scipy gives; tail leaves it out
    nan = klom(np.array([[2.0], [2.0]]), np.array([[0.0], [1.0]]))
    assert np.isnan(nan[0]) and np.isnan(reference_klom(np.array([2.0, 2.0]), np.array([0.0, 1.0])))
    assert tail(np.array([1.0, np.nan, 3.0]))[""] == 2.0


def test_klom_matches_the_reference_computation_example_by_example():
    rng = np.random.default_rng(0)
    gold = rng.normal(2.0, 1.5, size=(16, 300))
    unlearned = rng.normal(3.0, 1.0, size=(16, 300))
    unlearned[:, :20] = gold[:, :20]  # identical arrays for some examples
    unlearned[:4, 20:40] = 250.0  # clipped values
    ours = klom(gold, unlearned)
    theirs = np.array([reference_klom(gold[:, j], unlearned[:, j]) for j in range(300)])
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_tail_and_gold_halves():
    values = np.arange(101, dtype=float)
    assert tail(values) == {"": 50.0, "_p95": 95.0, "_p99": 99.0}
    rng = np.random.default_rng(1)
    gold = rng.normal(size=(32, 200))
    np.testing.assert_allclose(gold_halves(gold), klom(gold[:16], gold[16:]))
    shifted = gold[16:] + 3.0  # an "original" far from gold: its KLoM is far above the gold-vs-gold floor
    assert klom(gold[:16], shifted).mean() > gold_halves(gold).mean() + 1.0


def test_ulira_leave_one_out_by_hand():
    phi = np.array([[1.0], [2.0], [3.0], [-1.0], [0.0], [1.5]])
    pos = np.array([[1], [1], [1], [0], [0], [0]], bool)
    neg = ~pos
    llr, defined = scores(phi, pos, neg)
    assert defined.all()
    # shadow 0 held out: the "unlearned" Gaussian from 2, 3 (mean 2.5, population sd 0.5), the "held-out" one from
    # -1, 0, 1.5 (all three)
    mu_u, sd_u = 2.5, 0.5
    mu_o, sd_o = np.mean([-1.0, 0.0, 1.5]), np.std([-1.0, 0.0, 1.5])
    by_hand = stats.norm.logpdf(1.0, mu_u, sd_u) - stats.norm.logpdf(1.0, mu_o, sd_o)
    assert llr[0, 0] == pytest.approx(by_hand, rel=1e-12)
    # shadow 5 held out: unlearned from 1, 2, 3; held out from -1, 0
    by_hand = stats.norm.logpdf(1.5, 2.0, np.std([1, 2, 3])) - stats.norm.logpdf(1.5, -0.5, 0.5)
    assert llr[5, 0] == pytest.approx(by_hand, rel=1e-12)
    acc = per_example(llr, pos, neg)[0]
    said = llr[:, 0] > 0
    assert acc == pytest.approx((said[:3].mean() + (~said[3:]).mean()) / 2)


def test_ulira_separates_what_differs_and_not_what_does_not():
    rng = np.random.default_rng(2)
    n, m = 64, 400
    pos = rng.random((n, m)) < 0.5
    apart = np.where(pos, rng.normal(2.0, 1.0, (n, m)), rng.normal(0.0, 1.0, (n, m)))
    same = rng.normal(0.0, 1.0, (n, m))
    llr_apart, _ = scores(apart, pos, ~pos)
    llr_same, _ = scores(same, pos, ~pos)
    # two unit Gaussians 2 apart: the Bayes rule is right with probability Φ(1) ≈ 0.841
    assert np.nanmean(per_example(llr_apart, pos, ~pos)) == pytest.approx(stats.norm.cdf(1.0), abs=0.02)
    assert np.nanmean(per_example(llr_same, pos, ~pos)) == pytest.approx(0.5, abs=0.03)
    roc = pooled(llr_apart, pos, ~pos)
    assert roc["auc"] == pytest.approx(stats.norm.cdf(2 / math.sqrt(2)), abs=0.02) and roc["tpr_0.01"] > 0.05
    assert pooled(llr_same, pos, ~pos)["auc"] == pytest.approx(0.5, abs=0.03)


def test_ulira_needs_two_models_per_gaussian():
    phi = np.zeros((3, 1))
    pos = np.array([[1], [1], [0]], bool)
    llr, defined = scores(phi, pos, ~pos)
    assert not defined.any() and np.isnan(per_example(llr, pos, ~pos)[0])


def test_memorization_by_hand():
    correct = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 1, 1]], bool)
    included = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 1], [0, 1, 1]], bool)
    mem = memorization(correct, included)
    # sample 0: in models 0, 1 (both right), out of 2, 3 (both wrong): 1 − 0 = 1
    # sample 1: in 1, 3 (wrong, right) = 0.5, out 0, 2 (right, right) = 1: −0.5; sample 2: never out: NaN
    assert mem[0] == 1.0 and mem[1] == -0.5 and np.isnan(mem[2])
