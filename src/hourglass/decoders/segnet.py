"""A SegNet-style decoder (Badrinarayanan et al. 2017): upsample the deepest feature map alone, no skips.

SegNet upsamples with the max-pooling indices its encoder remembered. Our conv encoder downsamples with
stride-2 convolutions, so it has no pooling indices to hand over; this decoder uses a learned (transposed
convolution) upsampling instead, followed by 3x3 conv blocks, mirroring the encoder's widths. Compared with
the U-Net it reads only the deepest map, so fine detail has to come back through the decoder alone: the
baseline that shows what the skips buy.
"""
from __future__ import annotations

from typing import ClassVar, Literal, Optional

from torch import Tensor, nn

from hourglass._registry import register_decoder
from hourglass.code import Code, CodeSpec
from hourglass.decoders.base import Decoder
from hourglass.decoders.unet import check_widths, fit_to, stride_ratios, up_block
from hourglass.nn.blocks import conv_block
from hourglass.options import Count, Widths


@register_decoder("segnet")
class SegNetDecoder(Decoder):
    """Code(features[-1] (B, C, h, w)) -> class logits (B, K, H, W).

    The stage resolutions follow the strides the encoder declares, so the output lands on the encoder's
    highest-resolution grid before it is upsampled (if that grid is strided) and cropped to the input size.
    ``channels`` are the stage widths from deep to shallow; by default the encoder's widths, mirrored.
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
        blocks: Count = 1,
        norm: Literal["batch", "group", "none"] = "batch",
        act: Literal["relu", "gelu", "silu", "leaky_relu"] = "relu",
    ) -> None:
        super().__init__()
        feats = code.features
        ratios = stride_ratios(feats)
        widths = check_widths("segnet", channels, [f.channels for f in reversed(feats[:-1])])
        self.height, self.width = output_shape[-2:]
        self.num_classes = num_classes
        self.stride = feats[0].stride
        stages = []
        prev = feats[-1].channels
        for width, ratio in zip(widths, reversed(ratios)):
            stages.append(up_block(prev, width, ratio, norm, act))
            stages += [conv_block(width, width, norm=norm, act=act) for _ in range(blocks)]
            prev = width
        self.up = nn.Sequential(*stages)
        self.head = nn.Conv2d(prev, num_classes, 1)

    @classmethod
    def refuse(cls, spec: CodeSpec) -> str | None:
        ratios = stride_ratios(spec.features)
        return ratios if isinstance(ratios, str) else None

    def forward(self, code: Code) -> Tensor:
        h = self.up(code.features[-1])  # (B, C_0, H', W') on the highest-resolution grid
        return fit_to(self.head(h), self.stride, self.height, self.width)  # (B, K, H, W)
