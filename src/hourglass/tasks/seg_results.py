"""Final metrics and pictures of a segmentation run: IoU per class, confusion matrix, best and worst images."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hourglass import plots
from hourglass.tasks.logs import read_history
from hourglass.tasks.segmentation import metric_collection

SHOWN = 2  # best and worst validation images drawn


def evaluate_segmentation(task, data: Any) -> dict[str, Any]:
    """{"miou", "pixel_accuracy", "class_accuracy", "loss", "iou/<class>": float or None} on the val split."""
    out = task.predict_all(data)
    k = len(task.classes)
    metrics = metric_collection(k, task.ignore_index)
    metrics.update(out["pred"], out["mask"])
    values = metrics.compute()
    cm = values["confusion"].double()  # (K, K): rows true, columns predicted
    seen = (cm.sum(0) + cm.sum(1)) > 0  # classes in the labels or the predictions
    result: dict[str, Any] = {
        "miou": float(values["miou"]),
        "pixel_accuracy": float(values["pixel_accuracy"]),
        "class_accuracy": float(values["class_accuracy"]),
        "loss": float(out["loss"]),
        "images": int(len(out["mask"])),
    }
    for name, iou, present in zip(task.classes, values["iou"].tolist(), seen.tolist()):
        result[f"iou/{name}"] = float(iou) if present else None
    return result


def plot_segmentation(task, data: Any, out_dir: Path) -> list[Path]:
    """confusion_matrix.png, best-N/worst-N overlays (prediction and truth) and loss_curves.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = task.predict_all(data)
    k = len(task.classes)
    metrics = metric_collection(k, task.ignore_index)
    cm = metrics["confusion"](out["pred"], out["mask"]).numpy()
    paths = [plots.confusion_matrix(cm, task.classes, out_dir / "confusion_matrix.png")]
    palette = plots.default_palette(k)
    score = out["image_iou"].nan_to_num(nan=-1.0)
    order = torch.argsort(score, descending=True).tolist()
    n = min(SHOWN, len(order))
    picks = [("best", i + 1, order[i]) for i in range(n)]
    picks += [("worst", i + 1, order[-1 - i]) for i in range(n) if order[-1 - i] not in order[:n]]
    for kind, rank, idx in picks:
        image = out["x"][idx].numpy()  # (3, H, W)
        iou = f"{float(out['image_iou'][idx]):.2f}".replace(".", "p")
        stem = f"{kind}-{rank}-iou{iou}"
        paths.append(plots.mask_overlay(image, out["pred"][idx].numpy(), palette, out_dir / f"{stem}-prediction.png"))
        paths.append(plots.mask_overlay(image, out["mask"][idx].numpy(), palette, out_dir / f"{stem}-truth.png",
                                        ignore_index=task.ignore_index))
    history = read_history(out_dir.parent / "logs")
    if history:
        paths.append(plots.loss_curves(history, out_dir / "loss_curves.png"))
    return paths


def class_legend(classes: list[str]) -> dict[str, list[int]]:
    """class name -> its RGB colour in the overlays (for the CLI and reports)."""
    palette = plots.default_palette(len(classes))
    return {name: [int(c) for c in palette[i]] for i, name in enumerate(classes)}


def overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 (H, W, 3) image and (H, W) class ids -> uint8 (H, W, 3) blend of the image and the mask's colours."""
    colours = plots.colorize(mask, palette).astype(np.float32)  # (H, W, 3)
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(blend.round(), 0, 255).astype(np.uint8)
