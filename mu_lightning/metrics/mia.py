"""Population membership-inference attacks on one model's outputs (docs/metrics.md §3.1, §3.2, §3.5).

Higher attack scores mean "looks like a member". For unlearning every one of them is judged against the gold model:
a retrained model has never seen D_f, so for random forgetting its values are the target, not 0 or 1.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata
from torchmetrics.aggregation import CatMetric

from mu_lightning.metrics import signals

SVC_C = 3.0  # Unlearn-Sparse evaluation/SVC_MIA.py: SVC(C=3, kernel="rbf", gamma="auto")
TPR_AT_FPR = 0.01
CHANCE = 0.5  # the balanced accuracy of an attack that cannot tell members from non-members


def _svc():
    from sklearn.svm import SVC

    return SVC(C=SVC_C, kernel="rbf", gamma="auto")


def _column(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy().reshape(len(t), -1)


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """The mean of the hit rates on members (label 1) and on non-members (label 0): 0.5 = chance."""
    return float((predicted[labels == 1].mean() + 1.0 - predicted[labels == 0].mean()) / 2)


def svc_attack(retain: torch.Tensor, test: torch.Tensor, forget: torch.Tensor) -> dict[str, float]:
    """MIA-Efficacy of Jia et al. 2023 (App. C.3) with the attack's own fit: ``{"score", "fit_bacc"}``.

    Args are one feature per example (``signals.confidence`` in the paper), all from the evaluated model. An RBF-SVC
    learns members = the first |D_test| examples of D_r against non-members = D_test; ``score`` is
    1 − mean prediction on D_f (the share of D_f called non-member; papers read ↑ as better, for random forgetting
    the target is the gold model's value), ``fit_bacc`` its balanced accuracy on those training points (§3.1).
    """
    n = min(len(retain), len(test))
    x = np.concatenate([_column(retain[:n]), _column(test)])
    labels = np.concatenate([np.ones(n), np.zeros(len(test))])
    clf = _svc().fit(x, labels)
    return {"score": float(1.0 - clf.predict(_column(forget)).mean()),
            "fit_bacc": balanced_accuracy(clf.predict(x), labels)}


def mia_efficacy(retain: torch.Tensor, test: torch.Tensor, forget: torch.Tensor) -> float:
    """MIA-Efficacy, the share of D_f an attacker calls non-member, whatever its fit (``svc_attack``'s score)."""
    return svc_attack(retain, test, forget)["score"]


def entropy_attack(retain: torch.Tensor, test: torch.Tensor, forget: torch.Tensor) -> dict[str, float]:
    """The bad-teaching / SSD attack (Chundawat et al. 2023; Foster et al. 2024 ``src/metrics.py``) with its fit.

    Args are prediction entropies. A class-balanced logistic regression learns the whole D_r (member) against D_test;
    ``score`` is the share of D_f predicted **member** (the opposite direction to ``mia_efficacy``: ↓ = forgotten),
    ``fit_bacc`` its balanced accuracy on the points it learned.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([_column(retain), _column(test)])
    labels = np.concatenate([np.ones(len(retain)), np.zeros(len(test))])
    clf = LogisticRegression(class_weight="balanced").fit(x, labels)
    return {"score": float(clf.predict(_column(forget)).mean()), "fit_bacc": balanced_accuracy(clf.predict(x), labels)}


def entropy_member_rate(retain: torch.Tensor, test: torch.Tensor, forget: torch.Tensor) -> float:
    """The share of D_f the entropy attack calls member, whatever its fit (``entropy_attack``'s score)."""
    return entropy_attack(retain, test, forget)["score"]


def informative(fit_bacc: float, margin: float) -> bool:
    """Whether an attack learned anything: its balanced accuracy on its own training data exceeds 0.5 + ``margin``.

    An attack at chance there draws its boundary anywhere, often past every point, so the share of D_f it calls
    member swings between ~0 and ~1 with the seed: such a score is no measurement (docs/metrics.md §3.1).
    """
    return fit_bacc > CHANCE + margin


def reported(attack: dict[str, float], margin: float) -> float | None:
    """An attack's score, or None when it is uninformative (``informative``): results.json stays strict JSON."""
    return attack["score"] if informative(attack["fit_bacc"], margin) else None


def retain_privacy(retain: torch.Tensor, test: torch.Tensor) -> float:
    """The "training privacy" variant of Unlearn-Sparse SVC_MIA (docs/metrics.md §3.1, §6.2) on D_r vs D_test.

    With n = |D_test|, an SVC learns D_r[:n/2] (member) vs D_test[:n/2] and is scored on D_r[n/2:n] and D_test[n/2:]:
    the balanced attack accuracy, 0.5 = no leakage of the retained data, ↓.
    """
    n = min(len(retain), len(test))
    h = n // 2
    x = np.concatenate([_column(retain[:h]), _column(test[:h])])
    clf = _svc().fit(x, np.concatenate([np.ones(h), np.zeros(h)]))
    held_out = np.concatenate([_column(retain[h:n]), _column(test[h:])])
    return balanced_accuracy(clf.predict(held_out), np.concatenate([np.ones(n - h), np.zeros(len(test) - h)]))


def balanced_pairs(n_pos: int, n_neg: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices that subsample the larger of two sets to the size of the smaller, with a fixed seed (§3.2)."""
    gen = torch.Generator().manual_seed(seed)
    n = min(n_pos, n_neg)
    pick = lambda size: torch.randperm(size, generator=gen)[:n].sort().values  # noqa: E731
    return pick(n_pos), pick(n_neg)


def threshold_attack(members: torch.Tensor, nonmembers: torch.Tensor,
                     device: torch.device | None = None) -> dict[str, float]:
    """ROC of the attack "score above a threshold ⇒ member" (Yeom et al. 2018): AUC and TPR at 1% FPR, exact.

    The raw scores are kept in float64 and ranked (``exact_roc``): no cast to float32 and no squashing into [0, 1],
    both of which turn distinct scores into ties (docs/metrics.md §3.2). Inside an initialised process group each
    rank passes its share of the scores; torchmetrics ``CatMetric`` states on ``device`` (default: the CPU) gather
    every rank's before the ranking.
    """
    gathered = []
    for scores in (members, nonmembers):
        cat = CatMetric(nan_strategy="disable").to(device).set_dtype(torch.float64)  # .to after would reset it
        cat.update(scores.detach().double().flatten().to(device))
        gathered.append(cat.compute().cpu().numpy())
    return exact_roc(*gathered)


def exact_roc(members: np.ndarray, nonmembers: np.ndarray, max_fpr: float = TPR_AT_FPR) -> dict[str, float]:
    """AUC = Pr[s(member) > s(non-member)] + ½ Pr[tie] from average ranks (Mann–Whitney U), and the highest TPR of
    the rule "s ≥ t" over thresholds t whose false-positive rate is at most ``max_fpr``; 0.5 = chance, and
    AUC ≪ 0.5 also leaks (docs/metrics.md §3.2). Exact for any float64 scores, infinities included.
    """
    n_m, n_n = len(members), len(nonmembers)
    ranks = rankdata(np.concatenate([members, nonmembers]))
    auc = (ranks[:n_m].sum() - n_m * (n_m + 1) / 2) / (n_m * n_n)
    thresholds = np.unique(np.concatenate([members, nonmembers]))
    false_pos = n_n - np.searchsorted(np.sort(nonmembers), thresholds, side="left")
    true_pos = n_m - np.searchsorted(np.sort(members), thresholds, side="left")
    allowed = false_pos <= np.floor(max_fpr * n_n + 1e-9)
    return {"auc": float(auc), "tpr_at_1fpr": float(true_pos[allowed].max() / n_m) if allowed.any() else 0.0}


def loss_attack(member_logits: torch.Tensor, member_y: torch.Tensor, nonmember_logits: torch.Tensor,
                nonmember_y: torch.Tensor, device: torch.device | None = None) -> dict[str, float]:
    """The loss-threshold MIA (Yeom et al. 2018; docs/metrics.md §3.2): score −ℓ, AUC and TPR at 1% FPR.

    The one definition behind ``<model>/mia_loss_auc`` of the evaluation and the trajectory callback's
    ``unlearn/mia_loss_auc``. AUC and TPR@FPR are rates within each class, so the two sets need not be the same
    size: callers pass all of both (D_f against all of D_test), with no subsampling draw to move the value.
    """
    return threshold_attack(-signals.loss(member_logits, member_y), -signals.loss(nonmember_logits, nonmember_y),
                            device)


def rmia_scores(target_x: torch.Tensor, target_z: torch.Tensor, ref_x: torch.Tensor, ref_z: torch.Tensor,
                a: float, gamma: float = 1.0) -> torch.Tensor:
    """Offline RMIA score of each point x (Zarifzadeh et al. 2024, §3; ml_privacy_meter ``run_rmia``).

    Args:
        target_x, target_z: p_y of the target model on the evaluated points and on the population Z.
        ref_x, ref_z: p_y of K OUT reference models, shape [K, ·].
        a: offline scaling, Pr(x) = ½((1 + a)·P_OUT(x) + 1 − a).
        gamma: likelihood-ratio threshold.

    Returns the share of z ∈ Z with ratio(x)/ratio(z) ≥ γ, found by binary search over the sorted ratios.
    """
    def ratio(p_target: torch.Tensor, p_ref: torch.Tensor) -> torch.Tensor:
        return p_target / (0.5 * ((1 + a) * p_ref.mean(0) + 1 - a))

    sorted_z = ratio(target_z, ref_z).sort().values
    return torch.searchsorted(sorted_z, ratio(target_x, ref_x) / gamma, right=True).double() / len(sorted_z)
