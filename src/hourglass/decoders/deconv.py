"""A transposed-convolution decoder: code vector -> a small grid -> stride-2 upsampling stages -> image.

It mirrors :class:`~hourglass.encoders.conv.ConvEncoder`: it starts on the padded grid (size rounded up to a
multiple of ``2**(len(channels)-1)``) and crops the output back to ``output_shape``.
"""
from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from hourglass._registry import register_decoder
from hourglass.code import Code, CodeSpec
from hourglass.decoders.base import Decoder
from hourglass.nn.blocks import activation, norm2d
from hourglass.nn.padding import crop_to, padded
from hourglass.options import Widths


def _up_block(c_in: int, c_out: int, norm: str, act: str) -> nn.Sequential:
    """(B, c_in, h, w) -> (B, c_out, 2h, 2w). Kernel 4, stride 2, padding 1 avoids checkerboard overlap gaps."""
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=norm == "none"),
        norm2d(norm, c_out),
        activation(act),
    )


@register_decoder("deconv")
class DeconvDecoder(Decoder):
    """Code(vector (B, D)) -> (B, C, H, W), unbounded (the task applies the output activation)."""

    needs = ("vector",)

    def __init__(
        self,
        *,
        code: CodeSpec,
        output_shape: tuple[int, ...],
        channels: Widths = [128, 64, 32],  # noqa: B006 - read-only default
        norm: Literal["batch", "group", "none"] = "batch",
        act: Literal["relu", "gelu", "silu", "leaky_relu"] = "relu",
    ) -> None:
        super().__init__()
        c_out, self.height, self.width = output_shape
        multiple = 2 ** (len(channels) - 1)
        self.grid = (channels[0], padded(self.height, multiple) // multiple, padded(self.width, multiple) // multiple)
        self.project = nn.Sequential(nn.Linear(code.vector, channels[0] * self.grid[1] * self.grid[2]), activation(act))
        ups = [_up_block(a, b, norm, act) for a, b in zip(channels[:-1], channels[1:])]
        self.up = nn.Sequential(*ups)
        self.head = nn.Conv2d(channels[-1], c_out, 3, padding=1)

    def forward(self, code: Code) -> Tensor:
        h = self.project(code.vector).view(-1, *self.grid)  # (B, C0, h, w)
        h = self.up(h)  # (B, C_last, H', W')
        return crop_to(self.head(h), self.height, self.width)  # (B, C, H, W)
