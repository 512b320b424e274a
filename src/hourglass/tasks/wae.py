"""The Wasserstein autoencoder with an MMD penalty, WAE-MMD (Tolstikhin et al. 2018).

loss = reconstruction + lambda * MMD(q(z), p(z)), with p(z) = N(0, I) and the inverse multiquadratic kernel
k(x, y) = C / (C + ||x - y||^2) summed over several scales of C = 2 * D * s (the paper's choice, robust to the
latent size). Unlike a VAE the encoder is deterministic: the aggregate posterior, not each q(z|x), is pushed
towards the prior, so samples decode from z ~ N(0, I).
"""
from __future__ import annotations

import torch
from torch import Tensor

from hourglass._registry import register_task
from hourglass.code import Code
from hourglass.config import TrainConfig
from hourglass.model import EncoderDecoder
from hourglass.noise import NoiseKind
from hourglass.options import NonNegative
from hourglass.tasks.autoencoder import AutoencoderTask, ReconLoss

SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def mmd_imq(z: Tensor, prior: Tensor) -> Tensor:
    """Unbiased MMD^2 estimate between samples ``z`` (B, D) and ``prior`` (B, D) with IMQ kernels."""
    n, d = z.shape
    zz, pp, zp = torch.cdist(z, z).pow(2), torch.cdist(prior, prior).pow(2), torch.cdist(z, prior).pow(2)
    off = 1.0 - torch.eye(n, device=z.device)
    total = z.new_zeros(())
    for s in SCALES:
        c = 2.0 * d * s
        k_zz, k_pp, k_zp = c / (c + zz), c / (c + pp), c / (c + zp)
        total = total + ((k_zz + k_pp) * off).sum() / (n * (n - 1)) - 2.0 * k_zp.mean()
    return total


@register_task("wae")
class WAETask(AutoencoderTask):
    generative = True

    def __init__(
        self,
        *,
        model: EncoderDecoder,
        train: TrainConfig,
        seed: int = 0,
        loss: ReconLoss = "bce",
        noise: NoiseKind = "none",
        noise_level: NonNegative = 0.0,
        mmd_weight: NonNegative = 10.0,
    ) -> None:
        super().__init__(model=model, train=train, seed=seed, loss=loss, noise=noise, noise_level=noise_level)
        self.mmd_weight = mmd_weight

    def regularizer(self, code: Code, stage: str) -> tuple[Tensor, dict[str, Tensor]]:
        z = code.vector  # (B, D)
        if z.shape[0] < 2:
            return z.new_zeros(()), {}
        g = None if stage == "train" else torch.Generator(device=z.device).manual_seed(4099)
        prior = torch.randn(z.shape, generator=g, device=z.device, dtype=z.dtype)
        mmd = mmd_imq(z, prior)
        return self.mmd_weight * mmd, {"mmd": mmd}
