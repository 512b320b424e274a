"""A U-Net decoder (Ronneberger et al. 2015): upsample the deepest feature map and merge each skip on the way.

It is built only from the encoder's ``CodeSpec.features`` (channels and strides, highest resolution first),
never from the encoder object, so any encoder that provides two or more feature scales works. Its output is
per-pixel class logits (B, K, H, W) at the exact size of the input image: the conv encoder pads to a multiple
of its total stride (:mod:`hourglass.nn.padding`) and :func:`fit_to` crops the padding off again.

The helpers :func:`up_block`, :func:`stride_ratios` and :func:`fit_to` are shared with the SegNet-style
decoder (:mod:`hourglass.decoders.segnet`).
"""
from __future__ import annotations

from typing import ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hourglass._registry import register_decoder
from hourglass.code import Code, CodeSpec, FeatureSpec
from hourglass.decoders.base import Decoder
from hourglass.errors import ConfigError
from hourglass.nn.blocks import activation, conv_block, norm2d
from hourglass.options import Probability, Size, Widths


def stride_ratios(features: tuple[FeatureSpec, ...]) -> list[int] | str:
    """How much each deeper map is smaller than the one before it ([2, 2, ...]), or why that is not whole."""
    ratios = []
    for fine, coarse in zip(features[:-1], features[1:]):
        if coarse.stride <= fine.stride or coarse.stride % fine.stride:
            return (f"its feature strides {[f.stride for f in features]} do not grow by whole factors from the "
                    "highest resolution to the lowest")
        ratios.append(coarse.stride // fine.stride)
    return ratios


def up_block(c_in: int, c_out: int, factor: int, norm: str, act: str) -> nn.Sequential:
    """(B, c_in, h, w) -> (B, c_out, factor*h, factor*w), a learned upsampling.

    Kernel == stride, so output pixels never overlap: no checkerboard artefacts (Odena et al. 2016).
    """
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, factor, stride=factor, bias=norm == "none"),
        norm2d(norm, c_out),
        activation(act),
    )


def match_size(h: Tensor, like: Tensor) -> Tensor:
    """Crop or zero-pad ``h`` (B, C, h, w) at the bottom/right to the spatial size of ``like``.

    With the conv encoder the sizes already agree (it pads its input to a multiple of the total stride); this
    keeps the decoder correct for an encoder that rounds odd sizes down instead.
    """
    dh, dw = like.shape[-2] - h.shape[-2], like.shape[-1] - h.shape[-1]
    if dh == 0 and dw == 0:
        return h
    h = h[..., : like.shape[-2], : like.shape[-1]]
    return F.pad(h, (0, max(dw, 0), 0, max(dh, 0)))


def fit_to(logits: Tensor, stride: int, height: int, width: int) -> Tensor:
    """(B, K, h, w) at ``stride`` -> (B, K, height, width): upsample to stride 1, then crop the padding."""
    if stride > 1:
        logits = F.interpolate(logits, scale_factor=stride, mode="bilinear", align_corners=False)
    if logits.shape[-2] < height or logits.shape[-1] < width:  # an encoder that rounded down: stretch
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return logits[..., :height, :width]


def check_widths(name: str, channels: Optional[list[int]], default: list[int]) -> list[int]:
    """``channels`` (one width per upsampling stage) or the default; a wrong length is a config error."""
    if channels is None:
        return default
    if len(channels) != len(default):
        raise ConfigError(
            f'model.decoder.channels of "{name}" has {len(channels)} entries, but the encoder gives {len(default)} '
            f"upsampling stage(s) (one per feature scale after the deepest). Give {len(default)} widths, "
            f"e.g. {default}, or leave the option out to mirror the encoder."
        )
    return list(channels)


@register_decoder("unet")
class UNetDecoder(Decoder):
    """Code(features: (B, C_i, H_i, W_i), highest resolution first) -> class logits (B, K, H, W).

    Each stage doubles (in general: multiplies by the stride ratio) the resolution with a learned upsampling,
    concatenates the encoder's map of that resolution (the skip) and applies ``blocks`` 3x3 conv blocks
    (two in the paper). ``channels`` are the stage widths from deep to shallow; by default the skip widths.
    """

    modality: ClassVar[str] = "mask"

    needs = ("features",)

    def __init__(
        self,
        *,
        code: CodeSpec,
        output_shape: tuple[int, ...],
        num_classes: int,
        channels: Optional[Widths] = None,
        blocks: Size = 2,
        norm: Literal["batch", "group", "none"] = "batch",
        act: Literal["relu", "gelu", "silu", "leaky_relu"] = "relu",
        dropout: Probability = 0.0,
    ) -> None:
        super().__init__()
        feats = code.features
        ratios = stride_ratios(feats)
        skips = [f.channels for f in reversed(feats[:-1])]  # deep -> shallow
        widths = check_widths("unet", channels, skips)
        self.height, self.width = output_shape[-2:]
        self.num_classes = num_classes
        self.stride = feats[0].stride
        self.ups, self.merges = nn.ModuleList(), nn.ModuleList()
        prev = feats[-1].channels
        for skip, width, ratio in zip(skips, widths, reversed(ratios)):
            self.ups.append(up_block(prev, width, ratio, norm, act))
            merge = [conv_block(width + skip, width, norm=norm, act=act)]
            merge += [conv_block(width, width, norm=norm, act=act) for _ in range(blocks - 1)]
            self.merges.append(nn.Sequential(*merge))
            prev = width
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(prev, num_classes, 1)

    @classmethod
    def refuse(cls, spec: CodeSpec) -> str | None:
        if len(spec.features) < 2:
            return (f"a U-Net needs at least 2 feature scales to have a skip connection, but this encoder provides "
                    f"{len(spec.features)}. Give the encoder two or more stages (e.g. model.encoder.channels: "
                    "[32, 64, 128]), or use the segnet decoder.")
        ratios = stride_ratios(spec.features)
        return ratios if isinstance(ratios, str) else None

    def forward(self, code: Code) -> Tensor:
        feats = code.features
        h = feats[-1]  # (B, C_deep, h, w)
        for up, merge, skip in zip(self.ups, self.merges, reversed(feats[:-1])):
            h = match_size(up(h), skip)  # (B, C_j, H_j, W_j)
            h = merge(torch.cat([h, skip], dim=1))  # (B, C_j, H_j, W_j)
        logits = self.head(self.dropout(h))  # (B, K, H', W') at stride feats[0]
        return fit_to(logits, self.stride, self.height, self.width)  # (B, K, H, W)
