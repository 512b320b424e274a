"""Classification: an encoder and a classifier head (decoder "classifier") trained with cross-entropy.

Batches are ``(x, y (B,) long)``; ``y = -1`` marks an unlabelled example, which the loss and the accuracy skip.
With a pretrained, frozen encoder (``model.pretrained_encoder``, ``model.freeze_encoder``) this is a probe: only
the head learns. The task reads ``x`` only through ``model.encode``, so ``train.cache_features`` can serve it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_confusion_matrix

from hourglass import plots
from hourglass._registry import register_task
from hourglass.config import TrainConfig
from hourglass.decoders.base import Decoder
from hourglass.errors import DataError
from hourglass.model import EncoderDecoder
from hourglass.options import Probability
from hourglass.tasks.base import Task
from hourglass.tasks.logs import read_history

IGNORE = -1  # the label of an unlabelled example


@register_task("classification")
class ClassificationTask(Task):
    decoder_protocol = Decoder
    decoder_output = "labels"
    encodes_input_only = True

    def __init__(self, *, model: EncoderDecoder, train: TrainConfig, seed: int = 0,
                 label_smoothing: Probability = 0.0) -> None:
        super().__init__(model=model, train=train, seed=seed)
        self.num_classes = model.decoder.num_classes  # a "labels" decoder (checked when the model was built)
        self.label_smoothing = label_smoothing

    def logits(self, x: Any) -> Tensor:
        """Inputs (or a CachedCode) -> class logits (B, K)."""
        return self.model.decode(self.model.encode(x))

    def loss(self, batch: Any, stage: str) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch[0], batch[1]
        logits = self.logits(x)  # (B, K)
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE, label_smoothing=self.label_smoothing)
        accuracy = multiclass_accuracy(logits.argmax(1), y, self.num_classes, average="micro", ignore_index=IGNORE)
        return loss, {"accuracy": accuracy}

    def progress_metrics(self) -> tuple[str, ...]:
        return ("accuracy",)

    # -- results ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predictions(self, loader) -> tuple[Tensor, Tensor]:
        """(logits (N, K), labels (N,)) over a loader, in eval mode."""
        self.eval()
        logits, labels = [], []
        for batch in loader:
            logits.append(self.logits(batch[0].to(self.device)).cpu())
            labels.append(batch[1])
        return torch.cat(logits), torch.cat(labels)

    def evaluate(self, data: Any) -> dict[str, float]:
        """Accuracy, class-balanced accuracy and cross-entropy on the validation split."""
        logits, y = self.predictions(data.val_dataloader())
        if not (y != IGNORE).any():
            raise DataError(
                f"The evaluation data ({getattr(data, 'val_path', None) or 'the validation split'}) has no labels, so "
                "a classifier cannot be scored on it. Give labelled data: a folder with one subfolder per class, an "
                "IDX image file with its labels file beside it, or an .npz file with `images` and `labels` arrays."
            )
        if int(y.max()) >= self.num_classes:
            raise DataError(
                f"The evaluation data ({getattr(data, 'val_path', None) or 'the validation split'}) has labels up to "
                f"{int(y.max())}, but the classifier knows {self.num_classes} classes (ids 0 to "
                f"{self.num_classes - 1}). Evaluate it on data of those classes only."
            )
        preds = logits.argmax(1)
        k = self.num_classes
        return {
            "accuracy": float(multiclass_accuracy(preds, y, k, average="micro", ignore_index=IGNORE)),
            "balanced_accuracy": float(multiclass_accuracy(preds, y, k, average="macro", ignore_index=IGNORE)),
            "loss": float(F.cross_entropy(logits, y, ignore_index=IGNORE)),
            "examples": int((y != IGNORE).sum()),
            "train_examples": len(data.train_set) if hasattr(data, "train_set") else -1,
        }

    def plots(self, data: Any, out_dir: Path) -> list[Path]:
        out_dir = Path(out_dir)
        logits, y = self.predictions(data.val_dataloader())
        cm = multiclass_confusion_matrix(logits.argmax(1), y, self.num_classes, ignore_index=IGNORE)
        names = list(getattr(data, "class_names", None) or [])
        names = names if len(names) == self.num_classes else [str(i) for i in range(self.num_classes)]
        paths = [plots.confusion_matrix(cm.numpy(), names, out_dir / "confusion_matrix.png")]
        history = read_history(out_dir.parent / "logs")
        if history:
            paths.append(plots.loss_curves(history, out_dir / "loss_curves.png"))
        return paths
