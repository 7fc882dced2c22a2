"""Plain ``nn.Module`` classifiers. Input shape and class count come from the dataset config by interpolation."""

from mu_lightning.models.cnn import CNN
from mu_lightning.models.mlp import MLP
from mu_lightning.models.resnet import ResNet18

__all__ = ["CNN", "MLP", "ResNet18"]
