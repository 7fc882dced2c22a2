"""Per-example signals of a model's logits: the inputs of every MIA and gold-relative metric (docs/metrics.md §0)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def true_class(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A boolean mask [N, C] that is True at each row's label."""
    return F.one_hot(y, logits.shape[1]).bool()


def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ℓ = −log p_y per example (Yeom et al. 2018)."""
    return F.cross_entropy(logits.double(), y, reduction="none")


def confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """p_y, the softmax probability of the true label: the feature of MIA-Efficacy (Jia et al. 2023, App. C.3)."""
    return torch.softmax(logits.double(), dim=1).gather(1, y[:, None]).squeeze(1)


def phi(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Logit-scaled confidence log p_y − log(1 − p_y) (LiRA; NeurIPS 2023 challenge).

    Computed as z_y − logsumexp_{j≠y} z_j, an exact identity that stays finite where p_y rounds to 1.
    """
    z = logits.double()
    mask = true_class(z, y)
    return z[mask] - torch.logsumexp(z.masked_fill(mask, float("-inf")), dim=1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Prediction entropy H = −Σ p_j log p_j in nats: the feature of the bad-teaching/SSD MIA."""
    logp = torch.log_softmax(logits.double(), dim=1)
    return -(logp.exp() * logp).sum(1)


def modified_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mentr = −(1−p_y) log p_y − Σ_{j≠y} p_j log(1−p_j) (Song & Mittal 2021, Eq. 5).

    Unlike Unlearn-Sparse ``SVC_MIA.py`` this uses log(1−p_j) for the wrong classes and picks p_y per row
    (``[arange(N), y]``), not whole columns (docs/metrics.md §3.1).
    """
    logp = torch.log_softmax(logits.double(), dim=1)
    p = logp.exp()
    mask = true_class(p, y)
    log1mp = torch.log1p(-p.clamp(max=1 - 1e-12))
    own = -(1 - p[mask]) * logp[mask]
    others = -(p * log1mp).masked_fill(mask, 0.0).sum(1)
    return own + others
