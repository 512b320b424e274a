"""Input corruptions for denoising autoencoders (Vincent et al. 2008): the input is corrupted, the target
stays clean. All take images in [0, 1] and return images in [0, 1]."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

NoiseKind = Literal["none", "gaussian", "salt_pepper", "masking"]


def corrupt(x: Tensor, kind: NoiseKind, level: float, generator: torch.Generator | None = None) -> Tensor:
    """``gaussian``: add N(0, level^2), clipped; ``salt_pepper``: set a ``level`` fraction of pixels to 0 or 1;
    ``masking``: zero a ``level`` fraction of pixels."""
    if kind == "none" or level <= 0:
        return x
    if kind == "gaussian":
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + level * noise).clamp(0.0, 1.0)
    hit = torch.rand(x.shape, generator=generator, device=x.device) < level
    if kind == "masking":
        return x.masked_fill(hit, 0.0)
    salt = torch.rand(x.shape, generator=generator, device=x.device) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)
