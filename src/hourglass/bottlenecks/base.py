"""The bottleneck protocol: what happens to the Code between encoder and decoder."""
from __future__ import annotations

from torch import Tensor, nn

from hourglass.code import Code, CodeSpec


class Bottleneck(nn.Module):
    """Maps a Code to a Code. Sets ``self.spec`` (the CodeSpec after it) in ``__init__``.

    The builder passes ``code``, the encoder's CodeSpec. ``dim`` is the latent size of bottlenecks that have
    one, and ``prior_sample(n, device)`` draws codes for generation where a prior exists.
    """

    spec: CodeSpec
    generative: bool = False

    def forward(self, code: Code) -> Code:  # pragma: no cover - abstract
        raise NotImplementedError

    def prior_sample(self, n: int, device) -> Tensor:
        import torch

        return torch.randn(n, self.spec.vector, device=device)  # (n, D) ~ N(0, I)
