"""A classifier head: the code vector -> an MLP -> class logits.

The "small decoder" of transfer learning: pretrain an encoder (an autoencoder, say), freeze it, and train only
this head on a few labels. With ``hidden: []`` (the default) the head is a linear probe; ``norm: true``
standardizes the code first with a LayerNorm, which helps when a frozen encoder's codes have a scale the head
was not initialized for.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor, nn

from hourglass._registry import register_decoder
from hourglass.code import Code, CodeSpec
from hourglass.decoders.base import Decoder
from hourglass.errors import DataError
from hourglass.nn.blocks import activation
from hourglass.options import Hidden, Probability


@register_decoder("classifier")
class ClassifierDecoder(Decoder):
    """Code(vector (B, D)) -> logits (B, num_classes)."""

    needs: ClassVar[tuple[str, ...]] = ("vector",)
    modality: ClassVar[str] = "labels"

    def __init__(
        self,
        *,
        code: CodeSpec,
        num_classes: int,
        hidden: Hidden = [],  # noqa: B006 - read-only default
        act: Literal["relu", "gelu", "silu", "tanh", "leaky_relu"] = "relu",
        dropout: Probability = 0.0,
        norm: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise DataError(
                f'Decoder "classifier" needs labelled data with at least 2 classes, but the data has {num_classes}. '
                "Give the images labels (data.labels, or class folders), or choose another decoder."
            )
        self.num_classes = num_classes
        layers: list[nn.Module] = [nn.LayerNorm(code.vector)] if norm else []
        width = code.vector
        for h in hidden:
            layers += [nn.Linear(width, h), activation(act), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, code: Code) -> Tensor:
        return self.net(code.vector)  # (B, K)
