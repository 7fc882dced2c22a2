"""The evaluation step of the pipeline: every metric of M, M_g and M_u from logits computed once per (model, split).

Tiers (``conf/metric/``): ``fast`` on every run, ``full`` adds the costlier checks, ``seeds`` adds the ones that need
a gold distribution; each lives in the module of its name. Every name is ``<model>/<metric>`` with model ∈ original,
gold, unlearn; in the ``gold`` row a gold-relative metric compares other gold seeds with the reference gold: the
noise floor (docs/metrics.md §4).
"""

from __future__ import annotations

from typing import Any

from mu_lightning.data.qa import is_qa
from mu_lightning.errors import ConfigError
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.corrective import corrective
from mu_lightning.metrics.ensemble import ensemble
from mu_lightning.metrics.fast import fast
from mu_lightning.metrics.full import full
from mu_lightning.metrics.lm import check_rouge, lm
from mu_lightning.metrics.margins import Margins
from mu_lightning.metrics.names import TIERS
from mu_lightning.metrics.seeds import seeds
from mu_lightning.metrics.validation import validation

TIER_METRICS = {"fast": fast, "full": full, "seeds": seeds, "ensemble": ensemble}
# the tiers each tier runs: full and seeds add to the tier before them; ensemble adds its own models to fast alone
RUNS = {"fast": ("fast",), "full": ("fast", "full"), "seeds": ("fast", "full", "seeds"),
        "ensemble": ("fast", "ensemble")}


def evaluate(ctx: EvalContext, objective: str | None = None) -> dict[str, float]:
    """Metrics named ``<model>/<metric>`` (model: original, gold, unlearn), e.g. ``unlearn/forget_acc``.

    The tiers ``ctx.cfg.tier`` runs (``RUNS``; checked beforehand by ``check_config``), then the validation-split
    metrics the hyperparameter-search ``objective`` names, if any (``<model>/avg_gap_val``), and the
    corrective-unlearning metrics when the training set was manipulated (``poison=...``: ``corrective.py``, with the
    ``clean`` model). Question-answer data for a language model has its own metrics (``lm.py``, docs/metrics.md §15).
    """
    if is_qa(ctx.data.samples):
        return lm(ctx)
    out: dict[str, float] = {}
    for tier in RUNS[ctx.cfg.tier]:
        out.update(TIER_METRICS[tier](ctx))
    out.update(validation(ctx, objective))
    out.update(corrective(ctx))
    return out


def check_config(cfg: Any) -> str:
    """Validate the ``metric`` config group and return its tier; the message names the option and what is allowed."""
    tier = cfg.tier
    if tier not in TIERS:
        raise ConfigError(f"metric.tier={tier!r} is not a tier: use one of {', '.join(TIERS)}")
    Margins.of(cfg)  # metric.warnings: known keys, numbers in [0, 1]
    check_rouge(cfg.get("rouge") or "words")  # metric.rouge: words or tofu, and tofu's package installed
    if tier == "fast":
        return tier
    if tier == "ensemble":
        size, worst = int(cfg.ensemble.size), float(cfg.ensemble.worst)
        if size < 4:
            raise ConfigError(f"metric.ensemble.size={size} is too few: KLoM's gold-vs-gold floor needs two halves "
                              "of at least 2 golds and U-LiRA two shadows per Gaussian (4 or more; 16 advised)")
        if not 0 < worst < 1:
            raise ConfigError(f"metric.ensemble.worst={worst} is out of range: the share of D_f listed as worst-off "
                              "must be > 0 and < 1")
        return tier
    if int(cfg.seeds) < 3:
        raise ConfigError(f"metric.seeds={cfg.seeds} is too few: metric={tier} needs at least 3 gold seeds "
                          "(the reference gold and two more, for a per-example spread)")
    zrf_on = (cfg.get("zrf") or {}).get("on", "forget")
    if zrf_on not in ("forget", "heldout"):
        raise ConfigError(f"metric.zrf.on={zrf_on!r} is not allowed: use forget (D_f) or heldout (validation "
                          "samples of the forgotten classes)")
    if not 0 <= cfg.ain.alpha < 1:
        raise ConfigError(f"metric.ain.alpha={cfg.ain.alpha} is out of range: it must be >= 0 and < 1")
    if tier == "seeds" and not 0 <= cfg.rmia.a <= 1:
        raise ConfigError(f"metric.rmia.a={cfg.rmia.a} is out of range: it must be in [0, 1]")
    return tier
