"""Activation and convolution blocks."""
from __future__ import annotations

from torch import nn

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
}


def activation(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


def norm2d(kind: str, channels: int) -> nn.Module:
    """'batch', 'group' (8 groups or fewer) or 'none'."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


def conv_block(c_in: int, c_out: int, *, stride: int = 1, norm: str = "batch", act: str = "relu") -> nn.Sequential:
    """3x3 conv -> norm -> activation; ``stride=2`` halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=norm == "none"),
        norm2d(norm, c_out),
        activation(act),
    )
