"""Plain ``nn.Module`` classifiers, and a small causal language model (``GPT``). Input shape and class count (or
vocabulary size) come from the dataset config by interpolation."""

from mu_lightning.models.cnn import CNN
from mu_lightning.models.gpt import GPT
from mu_lightning.models.mlp import MLP
from mu_lightning.models.resnet import ResNet18

__all__ = ["CNN", "GPT", "MLP", "ResNet18"]
