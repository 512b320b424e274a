"""The variational bottleneck of a VAE (Kingma & Welling 2014).

vector -> (mu, logvar) -> z = mu + sigma * eps while training (the reparameterization trick), z = mu in eval
mode so that evaluation and encoding are deterministic. The posterior travels in the Code for the KL term.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from hourglass._registry import register_bottleneck
from hourglass.bottlenecks.base import Bottleneck
from hourglass.bottlenecks.plain import _needs_vector
from hourglass.code import Code, CodeSpec, Posterior
from hourglass.options import Size


@register_bottleneck("variational")
class Variational(Bottleneck):
    """vector (B, D_enc) -> Code(vector=z (B, dim), posterior=(mu, logvar))."""

    generative = True

    def __init__(self, *, code: CodeSpec, dim: Size = 16, logvar_clamp: float = 10.0) -> None:
        super().__init__()
        _needs_vector("variational", code)
        self.mu = nn.Linear(code.vector, dim)
        self.logvar = nn.Linear(code.vector, dim)
        self.logvar_clamp = logvar_clamp  # keeps exp(logvar) finite early in training
        self.spec = dataclasses.replace(code, vector=dim, variational=True)

    def forward(self, code: Code) -> Code:
        mu = self.mu(code.vector)  # (B, dim)
        logvar = self.logvar(code.vector).clamp(-self.logvar_clamp, self.logvar_clamp)  # (B, dim)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return code.replace(vector=z, posterior=Posterior(mu=mu, logvar=logvar))
