"""The variational autoencoder objective (Kingma & Welling 2014) with beta (Higgins et al. 2017) and KL
annealing: linear (Bowman et al. 2016) or cyclical (Fu et al. 2019).

loss = reconstruction + beta * w(step) * KL(q(z|x) || N(0, I)); with ``loss: bce`` the reconstruction term is
the Bernoulli negative log-likelihood, so ``elbo = -(recon + KL)`` is in nats per image.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from hourglass._registry import register_task
from hourglass.code import Code, Posterior
from hourglass.config import TrainConfig
from hourglass.errors import IncompatiblePairError
from hourglass.model import EncoderDecoder
from hourglass.noise import NoiseKind
from hourglass.options import NonNegative
from hourglass.tasks.autoencoder import AutoencoderTask, ReconLoss


def kl_divergence(p: Posterior) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)), summed over latent dims, averaged over the batch."""
    kl = -0.5 * (1 + p.logvar - p.mu.pow(2) - p.logvar.exp())  # (B, D)
    return kl.sum(1).mean()


def anneal_weight(step: int, kind: str, steps: int, cycles: int, ratio: float = 0.5) -> float:
    """The KL weight in [0, 1] at ``step``. Cyclical: ``cycles`` ramps over ``steps``, each rising during its
    first ``ratio`` and then held at 1 (Fu et al. 2019)."""
    if kind == "none" or steps <= 0:
        return 1.0
    if kind == "linear":
        return min(1.0, step / steps)
    period = max(1, steps // max(1, cycles))
    phase = (step % period) / period if step < steps else 1.0
    return min(1.0, phase / ratio)


@register_task("vae")
class VAETask(AutoencoderTask):
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
        beta: NonNegative = 1.0,
        anneal: Literal["none", "linear", "cyclical"] = "linear",
        anneal_steps: int = 1000,
        anneal_cycles: int = 4,
    ) -> None:
        super().__init__(model=model, train=train, seed=seed, loss=loss, noise=noise, noise_level=noise_level)
        if not model.bottleneck.spec.variational:
            raise IncompatiblePairError(
                f'Task "vae" needs a variational bottleneck, but model.bottleneck.name is '
                f'"{model.names["bottleneck"]}". Set model.bottleneck.name=variational.'
            )
        self.beta, self.anneal, self.anneal_steps, self.anneal_cycles = beta, anneal, anneal_steps, anneal_cycles

    def kl_weight(self, stage: str) -> float:
        if stage != "train":
            return self.beta
        return self.beta * anneal_weight(self.global_step, self.anneal, self.anneal_steps, self.anneal_cycles)

    def regularizer(self, code: Code, stage: str) -> tuple[Tensor, dict[str, Tensor]]:
        kl = kl_divergence(code.posterior)
        weight = self.kl_weight(stage)
        return weight * kl, {"kl": kl, "kl_weight": torch.tensor(weight)}

    def loss(self, batch, stage: str, batch_idx: int = 0):
        total, logs = super().loss(batch, stage, batch_idx)
        logs["elbo"] = -(logs["recon"] + logs["kl"])  # nats per image when loss is bce
        return total, logs
