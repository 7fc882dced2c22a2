"""Each metric against a value worked out by hand or by an independent formula (docs/metrics.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_kl
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from mu_lightning.metrics import accuracy, gold, mia, signals
from mu_lightning.metrics.challenge import example_epsilon, forget_score, points, t_interval
from mu_lightning.metrics.relearn import relearn_steps

LN2 = math.log(2)


def logits_for(p: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is exactly ``p``."""
    return torch.tensor(p, dtype=torch.float64).log()


# --- per-example signals -------------------------------------------------------------------------------------------

def test_phi_is_logit_of_true_class_confidence_and_finite_when_p_rounds_to_one():
    z, y = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])
    assert float(signals.phi(z, y)) == pytest.approx(2 - LN2)  # log(e²/2): p/(1−p) = e²/2
    p = torch.tensor([[0.7, 0.2, 0.1]])
    assert float(signals.phi(p.log(), torch.tensor([1]))) == pytest.approx(math.log(0.2 / 0.8), rel=1e-6)
    assert float(signals.phi(torch.tensor([[100.0, 0.0]]), torch.tensor([0]))) == pytest.approx(100.0)


def test_loss_confidence_entropy_by_hand():
    z, y = logits_for([[0.5, 0.25, 0.25]]), torch.tensor([1])
    assert float(signals.loss(z, y)) == pytest.approx(math.log(4))
    assert float(signals.confidence(z, y)) == pytest.approx(0.25)
    assert float(signals.entropy(z)) == pytest.approx(1.5 * LN2)
    assert float(signals.entropy(torch.zeros(1, 10))) == pytest.approx(math.log(10))


def test_modified_entropy_is_song_mittal_not_the_unlearn_sparse_bug():
    z = logits_for([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]])
    y = torch.tensor([0, 2])
    got = signals.modified_entropy(z, y)
    # −(1−p_y) log p_y − Σ_{j≠y} p_j log(1−p_j), by hand
    row0 = -0.5 * math.log(0.5) - 2 * 0.25 * math.log(0.75)
    row1 = -0.7 * math.log(0.3) - 0.1 * math.log(0.9) - 0.6 * math.log(0.4)
    assert got.tolist() == pytest.approx([row0, row1])
    # the reference bug uses log(p_j) for the wrong classes: 1.0397 for row 0, not 0.4904
    assert float(got[0]) != pytest.approx(-0.5 * math.log(0.5) - 2 * 0.25 * math.log(0.25))
    # and picks p_y per row: each row alone gives the same value as in the batch (no column mixing)
    alone = [float(signals.modified_entropy(z[i : i + 1], y[i : i + 1])) for i in range(2)]
    assert alone == pytest.approx(got.tolist())


def test_accuracy_is_micro_all_correct_all_wrong():
    always_zero = torch.tensor([[1.0, 0.0]] * 4)
    assert accuracy(always_zero, torch.tensor([0, 0, 0, 1])) == 0.75  # macro would give (1 + 0) / 2
    assert accuracy(always_zero, torch.zeros(4, dtype=torch.long)) == 1.0
    assert accuracy(always_zero, torch.ones(4, dtype=torch.long)) == 0.0


# --- membership inference -------------------------------------------------------------------------------------------

def test_mia_efficacy_perfectly_separable_attack():
    member, nonmember = torch.full((40,), 0.99), torch.full((20,), 0.2)
    assert mia.mia_efficacy(member, nonmember, torch.full((10,), 0.99)) == 0.0  # all look like members
    assert mia.mia_efficacy(member, nonmember, torch.full((10,), 0.2)) == 1.0  # all look unseen
    half = torch.cat([torch.full((5,), 0.99), torch.full((5,), 0.2)])
    assert mia.mia_efficacy(member, nonmember, half) == 0.5


def test_mia_efficacy_uses_only_the_first_test_size_retain_samples():
    # retain[20:] would flip the attack if it were used: the first |D_test| = 20 retain samples are high
    retain = torch.cat([torch.full((20,), 0.99), torch.full((200,), 0.2)])
    assert mia.mia_efficacy(retain, torch.full((20,), 0.2), torch.full((5,), 0.99)) == 0.0


def test_entropy_member_rate_runs_the_opposite_direction():
    low, high = torch.full((30,), 0.01), torch.full((20,), 2.0)  # members are confident: low entropy
    forget = torch.cat([torch.full((3,), 0.01), torch.full((7,), 2.0)])
    assert mia.entropy_member_rate(low, high, forget) == pytest.approx(0.3)
    assert mia.mia_efficacy(-low, -high, -forget) == pytest.approx(0.7)  # same split, non-member rate


def test_retain_privacy_separable_and_inseparable():
    assert mia.retain_privacy(torch.full((40,), 0.99), torch.full((20,), 0.2)) == 1.0
    assert mia.retain_privacy(torch.full((40,), 0.5), torch.full((20,), 0.5)) == 0.5


def test_threshold_attack_auc_by_hand_with_ties_and_against_sklearn():
    # pairs (3>2), (3>0), (1<2), (1>0): 3 of 4
    assert mia.threshold_attack(torch.tensor([3.0, 1.0]), torch.tensor([2.0, 0.0]))["auc"] == pytest.approx(0.75)
    # ties count one half: (tie, >, tie, >) = 3 of 4
    assert mia.threshold_attack(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]))["auc"] == pytest.approx(0.75)
    gen = torch.Generator().manual_seed(0)
    m, n = torch.randn(50, generator=gen) + 0.5, torch.randn(70, generator=gen)
    expected = roc_auc_score(np.r_[np.ones(50), np.zeros(70)], np.r_[m.numpy(), n.numpy()])
    assert mia.threshold_attack(m, n)["auc"] == pytest.approx(expected, abs=1e-6)


def test_threshold_attack_inseparable_is_chance():
    assert mia.threshold_attack(torch.full((7,), 0.3), torch.full((5,), 0.3))["auc"] == 0.5


def test_threshold_attack_tpr_at_one_percent_fpr():
    assert mia.threshold_attack(torch.tensor([5.0, 6.0]), torch.tensor([1.0, 2.0]))["tpr_at_1fpr"] == 1.0
    # no false positive allowed: the threshold must sit above 2, which keeps only the member at 3
    assert mia.threshold_attack(torch.tensor([3.0, 1.0]), torch.tensor([2.0, 0.0]))["tpr_at_1fpr"] == 0.5


def test_threshold_attack_is_exact_where_float32_and_a_sigmoid_tie_the_scores():
    """Negative losses near 0 differ in float64 but all squash to sigmoid 0.5 in float32: AUC 0.5 and TPR 0 then."""
    members, nonmembers = torch.full((3,), -1e-9, dtype=torch.float64), torch.full((200,), -2e-9, dtype=torch.float64)
    roc = mia.threshold_attack(members, nonmembers)
    assert roc == {"auc": 1.0, "tpr_at_1fpr": 1.0}
    # scores 1 + k·1e-12 are distinct in float64 only; compare with sklearn's exact float64 ROC
    gen = torch.Generator().manual_seed(3)
    m = 1 + torch.randint(0, 50, (40,), generator=gen).double() * 1e-12
    n = 1 + torch.randint(0, 45, (60,), generator=gen).double() * 1e-12
    labels, scores = np.r_[np.ones(40), np.zeros(60)], np.r_[m.numpy(), n.numpy()]
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    roc = mia.threshold_attack(m, n)
    assert roc["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert roc["tpr_at_1fpr"] == pytest.approx(tpr[fpr <= 0.01].max(), abs=1e-12)


def test_threshold_attack_takes_infinite_losses():
    members = torch.tensor([0.0, -float("inf")], dtype=torch.float64)
    assert mia.threshold_attack(members, torch.tensor([-1.0, -float("inf")]))["auc"] == pytest.approx(0.625)


def test_loss_attack_of_the_evaluation_uses_all_of_d_test():
    """fast's ``mia_loss_auc`` is the attack on all of D_f against all of D_test: no balancing draw."""
    from types import SimpleNamespace

    from mu_lightning.metrics.fast import _summary

    gen = torch.Generator().manual_seed(0)
    z = {s: torch.randn(n, 3, generator=gen) for s, n in (("forget", 7), ("retain", 30), ("test", 23))}
    y = {s: torch.randint(0, 3, (len(v),), generator=gen) for s, v in z.items()}
    ctx = SimpleNamespace(logits=lambda m, s: z[s], labels=lambda s: y[s], cfg=SimpleNamespace(mia_seed=0))
    expected = mia.exact_roc(-signals.loss(z["forget"], y["forget"]).numpy(),
                             -signals.loss(z["test"], y["test"]).numpy())
    assert _summary(ctx, "unlearn")["mia_loss_auc"] == pytest.approx(expected["auc"], abs=1e-12)


def test_balanced_pairs_subsample_the_larger_set():
    pos, neg = mia.balanced_pairs(5, 12, seed=0)
    assert pos.tolist() == [0, 1, 2, 3, 4] and len(neg) == 5 and len(set(neg.tolist())) == 5
    assert neg.tolist() == mia.balanced_pairs(5, 12, seed=0)[1].tolist()


def test_rmia_score_by_hand_and_against_the_pairwise_definition():
    # a = 1: Pr(x) = P_OUT(x). ratio(x) = 0.8 / 0.4 = 2; ratios of Z = [1, 2, 1]; ratio(x)/ratio(z) = [2, 1, 2]
    args = (torch.tensor([0.8]), torch.tensor([0.5, 0.5, 0.9]), torch.tensor([[0.4]]), torch.tensor([[0.5, 0.25, 0.9]]))
    assert mia.rmia_scores(*args, a=1.0).tolist() == pytest.approx([1.0])
    assert mia.rmia_scores(*args, a=1.0, gamma=1.5).tolist() == pytest.approx([2 / 3])
    gen = torch.Generator().manual_seed(1)
    tx, tz = torch.rand(7, generator=gen, dtype=torch.float64), torch.rand(9, generator=gen, dtype=torch.float64)
    rx, rz = torch.rand(3, 7, generator=gen, dtype=torch.float64), torch.rand(3, 9, generator=gen, dtype=torch.float64)
    prx, prz = 0.5 * (1.3 * rx.mean(0) + 0.7), 0.5 * (1.3 * rz.mean(0) + 0.7)
    pairwise = ((tx / prx)[:, None] / (tz / prz)[None, :] >= 1.0).double().mean(1)
    assert mia.rmia_scores(tx, tz, rx, rz, a=0.3).tolist() == pytest.approx(pairwise.tolist())


# --- comparisons with gold ------------------------------------------------------------------------------------------

def test_agreement_by_hand():
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
    assert gold.agreement(a, b) == pytest.approx(0.75)
    assert gold.agreement(a, a) == 1.0 and gold.agreement(a, -a) == 0.0


def test_js_kl_activation_distance_extremes_and_independent_formulas():
    one_hot = logits_for([[1 - 1e-12, 1e-12]])
    other = logits_for([[1e-12, 1 - 1e-12]])
    assert gold.js_divergence(one_hot, other) == pytest.approx(LN2, rel=1e-6)  # the nats maximum
    assert gold.js_divergence(one_hot, one_hot) == pytest.approx(0.0, abs=1e-8)  # torchmetrics' ln 2 is float32
    assert gold.activation_distance(one_hot, other) == pytest.approx(math.sqrt(2), rel=1e-6)
    p, q = [0.7, 0.2, 0.1], [0.1, 0.3, 0.6]
    assert gold.js_divergence(logits_for([p]), logits_for([q])) == pytest.approx(jensenshannon(p, q) ** 2)
    # KL(p_g ‖ p_model): gold is the reference distribution; the reverse order gives a different number
    assert gold.kl_from_gold(logits_for([q]), logits_for([p])) == pytest.approx(scipy_kl(p, q))
    assert scipy_kl(p, q) != pytest.approx(scipy_kl(q, p))
    assert gold.activation_distance(logits_for([p]), logits_for([q])) == pytest.approx(
        math.dist(p, q))


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # the reference's own reduction, on purpose
def test_zrf_textbook_by_default_and_reference_jsdiv_only_with_compat():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    pa, pb = a.double().softmax(1), b.double().softmax(1)
    textbook = np.mean([jensenshannon(pa[i], pb[i]) ** 2 for i in range(6)])
    assert gold.zrf(a, b) == pytest.approx(1 - textbook)
    m = (pa + pb) / 2  # bad-teaching JSDiv: F.kl_div(log p, m) is KL(m ‖ p), averaged over N·C entries
    reference = 0.5 * F.kl_div(pa.log(), m, reduction="mean") + 0.5 * F.kl_div(pb.log(), m, reduction="mean")
    assert gold.zrf(a, b, compat=True) == pytest.approx(1 - float(reference))
    assert gold.zrf(a, b, compat=True) != pytest.approx(gold.zrf(a, b), abs=1e-4)


@pytest.mark.parametrize("fn", [gold.agreement, gold.js_divergence, gold.kl_from_gold, gold.activation_distance,
                                lambda a, b, bs: gold.zrf(a, b, compat=True, batch_size=bs)])
def test_same_value_in_one_batch_or_many(fn):
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(50, 5, generator=gen), torch.randn(50, 5, generator=gen)
    assert fn(a, b, 3) == pytest.approx(fn(a, b, 1024), rel=1e-9, abs=1e-12)


def test_weight_distance_sums_parameters_and_skips_buffers():
    a, b = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1)), nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    with torch.no_grad():
        for net, w in ((a, [1.0, 2.0]), (b, [4.0, 6.0])):
            net[0].weight.copy_(torch.tensor([w]))
            net[0].bias.zero_()
        b[1].running_mean.fill_(100.0)  # a buffer: not a parameter
    assert gold.weight_distance(a, b) == pytest.approx(5.0)  # √(3² + 4²)


def test_avg_gap_and_tow_by_hand():
    u = {"forget_acc": 0.90, "retain_acc": 0.95, "test_acc": 0.85, "mia_efficacy": 0.20}
    g = {"forget_acc": 0.80, "retain_acc": 0.99, "test_acc": 0.85, "mia_efficacy": 0.10}
    assert gold.avg_gap(u, g) == pytest.approx(100 * (0.10 + 0.04 + 0.0 + 0.10) / 4)
    assert gold.tow(u, g) == pytest.approx(0.90 * 0.96 * 1.0)
    assert gold.tow(u, g, mia=True) == pytest.approx(0.90 * 0.96 * 1.0)
    assert gold.tow(g, g) == 1.0 and gold.avg_gap(g, g) == 0.0


# --- several seeds ---------------------------------------------------------------------------------------------------

def test_t_interval_by_hand():
    mean, half = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t(0.975, 2) · sem
    assert t_interval([0.5, 0.5]) == (0.5, 0.0)


def test_challenge_points_are_half_unit_buckets_up_to_max_eps():
    # N = 8: max_eps = ceil(ln 7) = 2
    eps = np.array([0.0, 0.4, 0.5, 1.2, 1.99, 2.0, 50.0])
    assert points(eps, 8).tolist() == [1.0, 1.0, 0.5, 0.25, 0.125, 0.0, 0.0]


def test_epsilon_of_an_overlapping_pair_by_hand():
    # u = 0..3, r = 2.5..5.5: the best rule keeps one model of each side wrong, FPR = FNR = 1/4 → ε = ln 3
    u, r = np.array([0.0, 1.0, 2.0, 3.0]), np.array([2.5, 3.5, 4.5, 5.5])
    assert example_epsilon(u, r) == pytest.approx(math.log(0.75 - 1e-5) - math.log(0.25))
    score, eps = forget_score(u[:, None], r[:, None])
    assert score == 0.25 and eps.tolist() == pytest.approx([math.log(3)], rel=1e-4)  # ε < ⌈ln 3⌉ = 2: 2^−⌊2ε⌋


def test_epsilon_indistinguishable_separable_and_interval_only():
    same = np.array([0.1, 0.7, 1.3, 2.2, 3.0])
    assert example_epsilon(same, same.copy()) == 0.0
    assert forget_score(same[:, None], same[:, None])[0] == 1.0
    assert example_epsilon(same, same + 10) == 50.0  # perfectly separated: ε = ∞, capped
    assert example_epsilon(np.full(5, 1.0), same) == 50.0  # one side is a spike
    # narrow inside wide: no single threshold separates them, the interval [4.9, 5.2] does
    narrow, wide = np.array([4.9, 5.0, 5.1, 5.2]), np.array([0.0, 3.0, 7.0, 10.0])
    assert example_epsilon(narrow, wide) == 50.0


# --- relearn time ----------------------------------------------------------------------------------------------------

def test_relearn_steps_at_least_one_at_most_the_cap_and_model_untouched():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    before = [p.clone() for p in net.parameters()]
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    kw = dict(lr=1e-3, batch_size=4, max_epochs=2, seed=0)
    assert relearn_steps(net, x, y, x, y, target=0.0, **kw) == 1
    assert relearn_steps(net, x, y, x, y, target=1.01, **kw) == 2 * 3  # 2 epochs of ⌈10/4⌉ batches
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters(), strict=True))
