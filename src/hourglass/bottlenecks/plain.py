"""Deterministic bottlenecks: ``none`` passes the Code through; ``plain`` projects the vector to ``dim``."""
from __future__ import annotations

import dataclasses

from torch import nn

from hourglass._registry import register_bottleneck
from hourglass.bottlenecks.base import Bottleneck
from hourglass.code import Code, CodeSpec
from hourglass.errors import IncompatiblePairError
from hourglass.options import Size


def _needs_vector(name: str, code: CodeSpec) -> None:
    if code.vector is None:
        raise IncompatiblePairError(
            f'Bottleneck "{name}" projects the code vector, but the encoder provides no vector '
            f"(it provides {', '.join(code.provided())}). Use model.bottleneck.name=none or another encoder."
        )


@register_bottleneck("none")
class Identity(Bottleneck):
    """No bottleneck: the decoder reads the encoder's Code as it is."""

    def __init__(self, *, code: CodeSpec) -> None:
        super().__init__()
        self.spec = code

    def forward(self, code: Code) -> Code:
        return code


@register_bottleneck("plain")
class Plain(Bottleneck):
    """vector (B, D_enc) -> Linear -> vector (B, dim). Other Code fields pass through unchanged.

    With ``generative: true`` the latent is treated as N(0, I)-distributed for sampling; the WAE objective
    (Tolstikhin et al. 2018) makes that true by matching the aggregate posterior to the prior.
    """

    def __init__(self, *, code: CodeSpec, dim: Size = 16, generative: bool = False) -> None:
        super().__init__()
        _needs_vector("plain", code)
        self.proj = nn.Linear(code.vector, dim)
        self.generative = generative
        self.spec = dataclasses.replace(code, vector=dim)

    def forward(self, code: Code) -> Code:
        return code.replace(vector=self.proj(code.vector))  # (B, dim)
