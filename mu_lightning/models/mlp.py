"""A multilayer perceptron over flattened inputs."""

from __future__ import annotations

import math

from torch import nn


class MLP(nn.Sequential):
    """Flatten → (Linear → ReLU) per hidden width → Linear to ``num_classes`` logits."""

    def __init__(self, input_shape: list[int], num_classes: int, hidden: list[int] = (128, 64)):
        widths = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        super().__init__(*layers)
