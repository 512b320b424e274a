"""The autoencoder family's shared task: reconstruction, optionally from a corrupted input.

``autoencoder`` reconstructs its input; ``denoising`` corrupts the input and reconstructs the clean target.
``vae`` and ``wae`` (in their own modules) add a regularizer on the codes through :meth:`regularizer`, so the
loss, the metrics, the logging and the pictures are written once for the whole family.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from hourglass._registry import register_task
from hourglass.code import Code
from hourglass.config import TrainConfig
from hourglass.decoders.base import Decoder
from hourglass.errors import ConfigError
from hourglass.model import EncoderDecoder
from hourglass.noise import NoiseKind, corrupt
from hourglass.options import NonNegative
from hourglass.tasks.base import Task

ReconLoss = Literal["mse", "bce", "l1"]


def reconstruction_loss(logits: Tensor, target: Tensor, kind: ReconLoss) -> Tensor:
    """Summed over pixels, averaged over the batch: (B, C, H, W) x2 -> scalar.

    Per-image sums keep the scale of a log-likelihood, which the VAE's ELBO needs (Kingma & Welling 2014).
    """
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif kind == "mse":
        per = F.mse_loss(torch.sigmoid(logits), target, reduction="none")
    else:
        per = F.l1_loss(torch.sigmoid(logits), target, reduction="none")
    return per.flatten(1).sum(1).mean()


@register_task("autoencoder")
class AutoencoderTask(Task):
    """Batches are ``(x (B, C, H, W) in [0, 1], y (B,))``; the decoder's output goes through a sigmoid."""

    decoder_protocol = Decoder
    decoder_output = "image"

    def __init__(
        self,
        *,
        model: EncoderDecoder,
        train: TrainConfig,
        seed: int = 0,
        loss: ReconLoss = "bce",
        noise: NoiseKind = "none",
        noise_level: NonNegative = 0.0,
    ) -> None:
        super().__init__(model=model, train=train, seed=seed)
        if noise in ("salt_pepper", "masking") and noise_level > 1:
            raise ConfigError(f'task.noise_level is the fraction of pixels that "{noise}" noise changes, from 0 to 1; '
                              f"got {noise_level}. 0.3 is a usual start (gaussian noise takes any sigma).")
        self.recon_loss, self.noise, self.noise_level = loss, noise, noise_level

    # -- model use ----------------------------------------------------------------------------------------
    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return corrupt(x, self.noise, self.noise_level, generator)

    def reconstruct(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> reconstructions in [0, 1]."""
        return torch.sigmoid(self.model(x))

    def decode(self, z: Tensor) -> Tensor:
        """Codes (B, D) -> images in [0, 1]."""
        return torch.sigmoid(self.model.decode(Code(vector=z)))

    def regularizer(self, code: Code, stage: str) -> tuple[Tensor, dict[str, Tensor]]:
        """An extra loss on the codes (none for a plain autoencoder)."""
        return torch.zeros((), device=code.vector.device), {}

    # -- training -----------------------------------------------------------------------------------------
    def _noisy(self, x: Tensor, stage: str, batch_idx: int = 0) -> Tensor:
        if stage == "train":
            return self.corrupt(x)
        g = torch.Generator(device=x.device).manual_seed(10_007 + batch_idx)  # same noise every validation
        return self.corrupt(x, g)

    def loss(self, batch: Any, stage: str, batch_idx: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
        x, _ = batch
        code = self.model.encode(self._noisy(x, stage, batch_idx))
        logits = self.model.decode(code)  # (B, C, H, W)
        recon = reconstruction_loss(logits, x, self.recon_loss)
        reg, logs = self.regularizer(code, stage)
        mse = F.mse_loss(torch.sigmoid(logits), x)
        return recon + reg, {"recon": recon, "mse": mse, **logs}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, logs = self.loss(batch, "val", batch_idx)
        n = self._batch_size(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        for k, v in logs.items():
            self.log(f"val/{k}", v, batch_size=n, sync_dist=True, prog_bar=k == "mse")

    # -- results ------------------------------------------------------------------------------------------
    def evaluate(self, data: Any) -> dict[str, float]:
        from hourglass.tasks.ae_results import evaluate_autoencoder

        return evaluate_autoencoder(self, data)

    def plots(self, data: Any, out_dir: Path) -> list[Path]:
        from hourglass.tasks.ae_results import plot_autoencoder

        return plot_autoencoder(self, data, out_dir)


@register_task("denoising")
class DenoisingTask(AutoencoderTask):
    """A denoising autoencoder (Vincent et al. 2008): Gaussian noise at sigma 0.3 unless configured."""

    def __init__(
        self,
        *,
        model: EncoderDecoder,
        train: TrainConfig,
        seed: int = 0,
        loss: ReconLoss = "bce",
        noise: NoiseKind = "gaussian",
        noise_level: NonNegative = 0.3,
    ) -> None:
        super().__init__(model=model, train=train, seed=seed, loss=loss, noise=noise, noise_level=noise_level)
