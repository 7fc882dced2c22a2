"""Plain ``nn.Module`` classifiers, a small causal language model (``GPT``) and a Hugging Face checkpoint as one
(``HFCausalLM``). Input shape and class count (or vocabulary size) come from the dataset config by interpolation."""

from mu_lightning.models.cnn import CNN
from mu_lightning.models.gpt import GPT, CausalLM
from mu_lightning.models.hf import HFCausalLM
from mu_lightning.models.mlp import MLP
from mu_lightning.models.resnet import ResNet18

__all__ = ["CNN", "GPT", "MLP", "CausalLM", "HFCausalLM", "ResNet18"]
