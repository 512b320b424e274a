"""A multilayer perceptron decoder: code vector -> Linear-activation blocks -> an image."""
from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn

from hourglass._registry import register_decoder
from hourglass.code import Code, CodeSpec
from hourglass.decoders.base import Decoder
from hourglass.nn.blocks import activation
from hourglass.options import Hidden, Probability


@register_decoder("mlp")
class MLPDecoder(Decoder):
    """Code(vector (B, D)) -> (B, *output_shape), unbounded (the task applies the output activation)."""

    needs = ("vector",)

    def __init__(
        self,
        *,
        code: CodeSpec,
        output_shape: tuple[int, ...],
        hidden: Hidden = [256, 512],  # noqa: B006 - read-only default
        act: Literal["relu", "gelu", "silu", "tanh", "leaky_relu"] = "relu",
        dropout: Probability = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = code.vector
        for h in hidden:
            layers += [nn.Linear(width, h), activation(act), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, math.prod(output_shape)))
        self.net = nn.Sequential(*layers)
        self.output_shape = tuple(output_shape)

    def forward(self, code: Code) -> Tensor:
        out = self.net(code.vector)  # (B, prod(shape))
        return out.view(-1, *self.output_shape)
