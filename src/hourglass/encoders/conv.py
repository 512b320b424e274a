"""A convolutional encoder for images of any size.

Stages: a stride-1 stem, then one stride-2 stage per extra entry of ``channels``. The input is zero-padded to a
multiple of ``2**depth`` (see :mod:`hourglass.nn.padding`), so odd sizes work. The Code holds:

- ``features``: every stage's map, highest resolution first (strides 1, 2, 4, ...) for U-Net skips;
- ``memory``: the last map as a sequence of grid cells (B, h*w, C), for attention (Xu et al. 2015). With
  ``positions``, a learned embedding of each cell is added, so that attention can find a cell by its place and
  not only by its content (convolutions are translation-equivariant: without it, the cells of a strip of
  digits do not say which one is leftmost, and a captioner writes the right digits in a shuffled order);
- ``vector``: the last map flattened (B, C*h*w), for a bottleneck.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from hourglass._registry import register_encoder
from hourglass.code import Code, CodeSpec, FeatureSpec
from hourglass.encoders.base import Encoder
from hourglass.nn.blocks import conv_block
from hourglass.nn.padding import pad_to_multiple, padded
from hourglass.options import Count, Widths


@register_encoder("conv")
class ConvEncoder(Encoder):
    """(B, C, H, W) -> Code(vector, memory, features)."""

    modality = "image"

    def __init__(
        self,
        *,
        input_shape: tuple[int, ...],
        channels: Widths = [32, 64, 128],  # noqa: B006 - read-only default
        blocks: Count = 1,
        norm: Literal["batch", "group", "none"] = "batch",
        act: Literal["relu", "gelu", "silu", "leaky_relu"] = "relu",
        positions: bool = False,
    ) -> None:
        super().__init__()
        c_in, height, width = input_shape
        self.multiple = 2 ** (len(channels) - 1)
        self.stages = nn.ModuleList()
        prev = c_in
        for i, c in enumerate(channels):
            layers = [conv_block(prev, c, stride=1 if i == 0 else 2, norm=norm, act=act)]
            layers += [conv_block(c, c, norm=norm, act=act) for _ in range(blocks)]
            self.stages.append(nn.Sequential(*layers))
            prev = c
        grid = (padded(height, self.multiple) // self.multiple, padded(width, self.multiple) // self.multiple)
        self.grid = grid
        # (1, h*w, C) learned cell embeddings, initialized small as in ViT (Dosovitskiy et al. 2021)
        self.positions = nn.Parameter(0.02 * torch.randn(1, grid[0] * grid[1], prev)) if positions else None
        self.spec = CodeSpec(
            vector=prev * grid[0] * grid[1],
            memory=prev,
            features=tuple(FeatureSpec(channels=c, stride=2**i) for i, c in enumerate(channels)),
        )

    def forward(self, x: Tensor) -> Code:
        h = pad_to_multiple(x, self.multiple)  # (B, C, H', W')
        features = []
        for stage in self.stages:
            h = stage(h)
            features.append(h)  # (B, C_i, H'/2^i, W'/2^i)
        memory = h.flatten(2).transpose(1, 2)  # (B, h*w, C)
        if self.positions is not None:
            memory = memory + self.positions
        mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        return Code(vector=h.flatten(1), memory=memory, memory_mask=mask, features=tuple(features))
