"""A multilayer perceptron encoder: flatten the input, then Linear-activation blocks."""
from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn

from hourglass._registry import register_encoder
from hourglass.code import Code, CodeSpec
from hourglass.encoders.base import Encoder
from hourglass.nn.blocks import activation
from hourglass.options import Hidden, Probability


@register_encoder("mlp")
class MLPEncoder(Encoder):
    """(B, *input_shape) -> Code(vector (B, hidden[-1]))."""

    modality = "image"

    def __init__(
        self,
        *,
        input_shape: tuple[int, ...],
        hidden: Hidden = [512, 256],  # noqa: B006 - read-only default, copied below
        act: Literal["relu", "gelu", "silu", "tanh", "leaky_relu"] = "relu",
        dropout: Probability = 0.0,
        norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h)]
            layers += [nn.LayerNorm(h)] if norm else []
            layers += [activation(act), nn.Dropout(dropout)]
            width = h
        self.net = nn.Sequential(*layers)
        self.spec = CodeSpec(vector=width)

    def forward(self, x: Tensor) -> Code:
        return Code(vector=self.net(x))  # (B, D)
