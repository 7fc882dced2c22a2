"""Unlearning methods, one short file each; ``conf/unlearner/<name>.yaml`` selects one by ``_target_``."""

from mu_lightning.unlearners.finetune import Finetune
from mu_lightning.unlearners.gradient_ascent import GradientAscent
from mu_lightning.unlearners.none import NoUnlearning

__all__ = ["Finetune", "GradientAscent", "NoUnlearning"]
