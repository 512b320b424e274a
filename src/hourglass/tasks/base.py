"""The task base: a LightningModule that owns a model, its losses, its metrics and its pictures.

The trainer knows nothing about the model: a task implements ``loss``, ``evaluate`` and ``plots``. This base
adds what every task shares: optimizers and schedules from ``train``, per-step seeding (so a resumed run
draws the same noise as an uninterrupted one), the record of where in an epoch a checkpoint was taken, and a
clear stop on a non-finite loss.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor

from hourglass.config import TrainConfig
from hourglass.errors import TrainingError
from hourglass.model import EncoderDecoder
from hourglass.tasks.schedule import apply_base_lr, configure


class Task(L.LightningModule):
    #: The decoder protocol class this task drives (checked when the model is built).
    decoder_protocol: ClassVar[type | None] = None
    #: What that decoder must write (its ``modality``: "image", "mask", "labels"), or None for any.
    decoder_output: ClassVar[str | None] = None
    #: Whether ``sample`` makes sense (a prior over codes exists).
    generative: ClassVar[bool] = False
    #: Whether ``loss`` reads the first batch element only through ``model.encode``, so that the feature cache
    #: (``train.cache_features``, :mod:`hourglass.features`) may replace it by the frozen encoder's code.
    encodes_input_only: ClassVar[bool] = False

    def __init__(self, *, model: EncoderDecoder, train: TrainConfig, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.train_cfg = train
        self.seed = seed
        self._batches_in_epoch = 0

    # -- to implement ---------------------------------------------------------------------------------------
    def loss(self, batch: Any, stage: str) -> tuple[Tensor, dict[str, Tensor]]:  # pragma: no cover
        """The scalar loss to minimize and named values to log, for one batch."""
        raise NotImplementedError

    def evaluate(self, data: Any) -> dict[str, float]:  # pragma: no cover
        """Final metrics on the data module's validation split."""
        raise NotImplementedError

    def plots(self, data: Any, out_dir: Path) -> list[Path]:
        """Pictures of what the model does, written as PNG files into ``out_dir``."""
        return []

    # -- shared Lightning plumbing ----------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Seed from (seed, step, rank): noise and dropout depend only on the step, never on history.
        torch.manual_seed(self.seed * 1_000_003 + self.global_step * 7919 + self.global_rank)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self._batches_in_epoch = batch_idx + 1
        loss, logs = self.loss(batch, "train")
        self._check_finite(loss, batch_idx)
        self.log("train/loss", loss, prog_bar=True, batch_size=self._batch_size(batch))
        for k, v in logs.items():
            self.log(f"train/{k}", v, batch_size=self._batch_size(batch))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, logs = self.loss(batch, "val")
        n = self._batch_size(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        for k, v in logs.items():
            self.log(f"val/{k}", v, batch_size=n, sync_dist=True, prog_bar=k in self.progress_metrics())

    def progress_metrics(self) -> tuple[str, ...]:
        return ()

    def configure_optimizers(self):
        return configure(self, self.train_cfg, int(self.trainer.estimated_stepping_batches))

    def on_train_start(self) -> None:
        # Runs after a resume restored the optimizer: the config's train.lr wins over the checkpoint's.
        apply_base_lr(self.trainer, self.train_cfg.lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        done = self._batches_in_epoch
        complete = done >= self.trainer.num_training_batches
        checkpoint["hourglass"] = {"epoch": self.current_epoch, "batches_done": done, "epoch_complete": complete}

    def _check_finite(self, loss: Tensor, batch_idx: int) -> None:
        if torch.isfinite(loss):
            return
        run = Path(self.trainer.default_root_dir)
        last = run / "checkpoints" / "last.safetensors"
        fix = "Lower train.lr, set train.gradient_clip, or check the data for NaN or infinite values"
        if last.is_file():
            then = (f"Nothing after the last good checkpoint was written; it is kept at {last}. {fix}, then continue "
                    f"with `hourglass train --resume {run} --set train.lr=...`.")
        else:
            then = (f"No checkpoint was due yet, so only these steps are lost. {fix}, then run the same command again "
                    "(a run directory without a checkpoint may be reused).")
        raise TrainingError(
            f"Training stopped: the loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}, "
            f"batch {batch_idx}). {then}"
        )

    @staticmethod
    def _batch_size(batch: Any) -> int:
        first = batch[0] if isinstance(batch, (tuple, list)) else next(iter(batch.values()))
        return len(first)  # a tensor's first dimension, or the rows of a CachedCode
