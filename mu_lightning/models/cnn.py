"""A small convolutional classifier for 8×8 to 32×32 images."""

from __future__ import annotations

from torch import nn


class CNN(nn.Sequential):
    """Two conv blocks (3×3 conv → BatchNorm → ReLU → 2×2 max-pool), global average pool, linear head.

    Global pooling makes it work at any input size of at least 4×4 (digits' 8×8, MNIST's 28×28, CIFAR's 32×32).
    """

    def __init__(self, input_shape: list[int], num_classes: int, channels: list[int] = (32, 64)):
        c_in = input_shape[0]
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
        super().__init__(*layers)
