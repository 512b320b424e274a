"""Pad to a multiple of the total stride, and crop back, so any image size works.

A network that halves the resolution ``depth`` times needs sizes divisible by ``2**depth``. Instead of asking
users for such sizes (the "must divide by 32" limit of segmentation_models.pytorch), the encoder pads the
bottom and right edges and the decoder crops its output back to the exact input size.
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def padded(size: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``size``."""
    return int(math.ceil(size / multiple) * multiple)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """(B, C, H, W) -> (B, C, H', W') with H', W' multiples of ``multiple``, zero-padded bottom and right."""
    h, w = x.shape[-2:]
    ph, pw = padded(h, multiple) - h, padded(w, multiple) - w
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph))


def crop_to(x: Tensor, height: int, width: int) -> Tensor:
    """(B, C, H', W') -> (B, C, height, width): drop the padding that :func:`pad_to_multiple` added."""
    return x[..., :height, :width]
