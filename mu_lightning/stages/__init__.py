"""Lightning modules for the stages: the ``Stage`` step loop and ``ClassifierModule`` (original and gold
training) and ``LMModule`` (the same for language models).

The unlearning methods' base lives beside the methods, in ``mu_lightning.unlearners.base``.
"""

from mu_lightning.stages.base import Stage
from mu_lightning.stages.classifier import ClassifierModule
from mu_lightning.stages.lm import LMModule

__all__ = ["ClassifierModule", "LMModule", "Stage"]
