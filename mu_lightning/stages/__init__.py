"""Lightning modules for the stages: original and gold training, and the base of every unlearner."""

from mu_lightning.stages.base import Stage
from mu_lightning.stages.classifier import ClassifierModule
from mu_lightning.stages.unlearner import Unlearner

__all__ = ["ClassifierModule", "Stage", "Unlearner"]
