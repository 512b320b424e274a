"""Semantic segmentation: per-pixel class logits from a one-shot decoder (unet, segnet).

Batches are ``(x (B, 3, H, W) in [0, 1], mask (B, H, W) long)``. The class names and the ignore index belong
to the data (``data.classes``, ``data.ignore_index``); the task reads them from the data module when training
starts (``setup``) and from the ``data`` given to ``evaluate`` and ``plots``. Pixels equal to the ignore
index count in neither the loss nor the metrics.

Losses (``task.loss``): ``ce`` (cross-entropy, optionally class-weighted), ``dice`` (soft Dice) or
``ce+dice``. Metrics (torchmetrics): mean IoU over classes (the Jaccard index, macro average over the classes
that occur), per-class IoU, pixel accuracy (micro accuracy), and the confusion matrix for the plots.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassJaccardIndex

from hourglass._registry import register_task
from hourglass.config import TrainConfig
from hourglass.decoders.base import Decoder
from hourglass.errors import ConfigError, HourglassError
from hourglass.model import EncoderDecoder
from hourglass.tasks.base import Task

SegLoss = Literal["ce", "dice", "ce+dice"]


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int, weight: Tensor | None = None) -> Tensor:
    """(B, K, H, W), (B, H, W) -> scalar; the weighted mean over labelled pixels (0 when none is labelled)."""
    if not (target != ignore_index).any():
        return logits.sum() * 0.0  # F.cross_entropy would give 0/0 = nan
    return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index)


def dice_loss(logits: Tensor, target: Tensor, ignore_index: int, smooth: float = 1.0) -> Tensor:
    """Soft multi-class Dice loss (Milletari et al. 2016; Sudre et al. 2017): (B, K, H, W), (B, H, W) -> scalar.

    1 - 2|P∩T| / (|P| + |T|) per class over the whole batch, averaged over the classes present in the batch's
    labels (as segmentation_models.pytorch does: an absent class's Dice is undefined, and cross-entropy already
    punishes predicting it). Ignored pixels contribute to neither P nor T.
    """
    k = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)  # (B, 1, H, W)
    probs = logits.float().softmax(dim=1) * valid  # (B, K, H, W)
    onehot = F.one_hot(torch.where(valid[:, 0], target, 0), k).permute(0, 3, 1, 2) * valid  # (B, K, H, W)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)  # (K,)
    sizes = probs.sum(dims) + onehot.sum(dims)  # (K,)
    dice = (2.0 * inter + smooth) / (sizes + smooth)  # (K,)
    present = onehot.sum(dims) > 0
    if not present.any():
        return logits.sum() * 0.0
    return (1.0 - dice)[present].mean()


def iou_per_image(pred: Tensor, target: Tensor, k: int, ignore_index: int) -> Tensor:
    """Mean IoU of each image over the classes in its labels or its prediction: (B, H, W) x2 -> (B,)."""
    out = []
    for p, t in zip(pred, target):
        keep = t != ignore_index
        cm = torch.bincount(t[keep] * k + p[keep], minlength=k * k).reshape(k, k).double()  # (K, K)
        inter = cm.diag()
        union = cm.sum(0) + cm.sum(1) - inter
        seen = union > 0
        out.append((inter[seen] / union[seen]).mean() if seen.any() else torch.tensor(float("nan")))
    return torch.stack(out)


def metric_collection(k: int, ignore_index: int) -> MetricCollection:
    return MetricCollection({
        "miou": MulticlassJaccardIndex(k, average="macro", ignore_index=ignore_index),
        "iou": MulticlassJaccardIndex(k, average=None, ignore_index=ignore_index),
        "pixel_accuracy": MulticlassAccuracy(k, average="micro", ignore_index=ignore_index),
        "class_accuracy": MulticlassAccuracy(k, average="macro", ignore_index=ignore_index),
        "confusion": MulticlassConfusionMatrix(k, ignore_index=ignore_index),
    })


@register_task("segmentation")
class SegmentationTask(Task):
    """Cross-entropy and/or Dice on per-pixel logits; mean IoU is what ``val/miou`` reports."""

    decoder_protocol = Decoder
    decoder_output = "mask"

    def __init__(
        self,
        *,
        model: EncoderDecoder,
        train: TrainConfig,
        seed: int = 0,
        loss: SegLoss = "ce",
        class_weights: Union[None, list[float], Literal["median_frequency"]] = None,
        dice_weight: float = 1.0,
    ) -> None:
        super().__init__(model=model, train=train, seed=seed)
        self.seg_loss, self.class_weights, self.dice_weight = loss, class_weights, dice_weight
        self.classes: list[str] | None = None
        self.ignore_index = -100
        self._weight: Tensor | None = None

    # -- what the data says -------------------------------------------------------------------------------------
    def bind(self, data: Any) -> None:
        """Take the class names, the ignore index and (if asked) the class weights from the data module."""
        if not hasattr(data, "classes") or not hasattr(data, "ignore_index"):
            raise HourglassError(f'The segmentation task needs a data module with classes and an ignore index, '
                                 f'such as data.name: segmentation; got {type(data).__name__}.')
        if self.classes == list(data.classes) and self.ignore_index == data.ignore_index:
            return
        self.classes, self.ignore_index = list(data.classes), int(data.ignore_index)
        k = len(self.classes)
        if self.class_weights == "median_frequency":
            freq = data.class_frequency()
            weight = np.divide(np.median(freq[freq > 0]), freq, out=np.zeros(k), where=freq > 0)
        elif self.class_weights is not None:
            if len(self.class_weights) != k:
                raise ConfigError(f"task.class_weights has {len(self.class_weights)} entries but data.classes has "
                                  f"{k}; give one weight per class, in class order.")
            weight = np.asarray(self.class_weights, dtype=np.float64)
            if not (np.isfinite(weight).all() and (weight >= 0).all() and weight.sum() > 0):
                raise ConfigError(f"task.class_weights must be finite, 0 or more and not all 0 (got "
                                  f"{list(self.class_weights)}): the loss would be NaN or reward mistakes. Give "
                                  "one weight per class, e.g. 1 for each, or median_frequency.")
        else:
            weight = None
        self._weight = None if weight is None else torch.tensor(weight, dtype=torch.float32)
        self.val_metrics = metric_collection(k, self.ignore_index).to(self.device)

    def setup(self, stage: str) -> None:
        self.bind(self.trainer.datamodule)

    # -- model use ------------------------------------------------------------------------------------------------
    def segment(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> class ids (B, H, W) long."""
        return self.model(x).argmax(dim=1)

    # -- training ------------------------------------------------------------------------------------------------
    def objective(self, logits: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(B, K, H, W), (B, H, W) -> the loss and its terms."""
        logs: dict[str, Tensor] = {}
        total = logits.new_zeros(())
        if "ce" in self.seg_loss.split("+"):
            weight = None if self._weight is None else self._weight.to(logits.device)
            logs["ce"] = cross_entropy(logits.float(), target, self.ignore_index, weight)
            total = total + logs["ce"]
        if "dice" in self.seg_loss.split("+"):
            logs["dice"] = dice_loss(logits, target, self.ignore_index)
            total = total + self.dice_weight * logs["dice"]
        return total, logs

    def loss(self, batch: Any, stage: str) -> tuple[Tensor, dict[str, Tensor]]:
        x, mask = batch
        return self.objective(self.model(x), mask)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, mask = batch
        logits = self.model(x)  # (B, K, H, W)
        loss, logs = self.objective(logits, mask)
        n = len(x)
        self.log("val/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        for k, v in logs.items():
            self.log(f"val/{k}", v, batch_size=n, sync_dist=True)
        pred = logits.argmax(dim=1)
        self.val_metrics["miou"].update(pred, mask)
        self.val_metrics["pixel_accuracy"].update(pred, mask)
        # Logging the Metric objects: Lightning computes them over the whole epoch, then resets them.
        self.log("val/miou", self.val_metrics["miou"], prog_bar=True, on_step=False, on_epoch=True, batch_size=n)
        self.log("val/pixel_accuracy", self.val_metrics["pixel_accuracy"], on_step=False, on_epoch=True,
                 batch_size=n)

    # -- results ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_all(self, data: Any) -> dict[str, Tensor]:
        """The validation split through the model: images, labels, predictions and per-image mean IoU."""
        self.eval()
        xs, masks, preds, losses = [], [], [], []
        for x, mask in data.val_dataloader():
            logits = self.model(x.to(self.device))
            mask = mask.to(self.device)
            losses.append(self.objective(logits, mask)[0] * len(x))
            xs.append(x)
            masks.append(mask.cpu())
            preds.append(logits.argmax(dim=1).cpu())
        mask, pred = torch.cat(masks), torch.cat(preds)
        return {"x": torch.cat(xs), "mask": mask, "pred": pred, "loss": torch.stack(losses).sum() / len(mask),
                "image_iou": iou_per_image(pred, mask, len(self.classes), self.ignore_index)}

    def evaluate(self, data: Any) -> dict[str, float]:
        """miou, pixel_accuracy, class_accuracy, loss and ``iou/<class>`` on the data's validation split.

        A class that occurs neither in the labels nor in the predictions has no IoU: its value is None.
        """
        from hourglass.tasks.seg_results import evaluate_segmentation

        self.bind(data)
        return evaluate_segmentation(self, data)

    def plots(self, data: Any, out_dir: Path) -> list[Path]:
        from hourglass.tasks.seg_results import plot_segmentation

        self.bind(data)
        return plot_segmentation(self, data, out_dir)
