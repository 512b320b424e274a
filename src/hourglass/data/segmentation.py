"""Semantic segmentation data: images beside masks of class ids, with paired augmentation.

Config (``data:``)::

    name: segmentation
    images: path/to/train/images      # RGB images (any format PIL reads)
    masks: path/to/train/masks        # one mask per image, same file stem, single channel of class ids
    val_images: path/to/val/images    # optional; without them data.val_fraction of the pairs is held out
    val_masks: path/to/val/masks
    classes: [sky, building, ...]     # class id i is classes[i]
    ignore_index: 255                 # the mask value of unlabelled pixels: no loss, no metric
    augment: true                     # flip, scale-and-crop, colour jitter (training only)

``val_path`` (a folder with ``images/`` and ``masks/`` or ``labels/``, see :func:`find_split`) replaces the
validation folders; ``hourglass evaluate RUN --data DIR`` sets it. Batches are ``(x (B, 3, H, W) float in
[0, 1], mask (B, H, W) long)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from hourglass._registry import register_dataset
from hourglass.data.base import NAMES, NUMBERS, SHAPE, DataModule, check_fields, read_artifact, training_or_empty
from hourglass.data.sampler import ResumableSampler
from hourglass.data.seg_files import find_split, load_pairs
from hourglass.errors import ConfigError, DataError
from hourglass.model import DataContext
from hourglass.options import Location, Size

CLASSES_FILE = "classes.json"


def to_tensors(images: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, H, W, 3), int (N, H, W) -> float (N, 3, H, W) in [0, 1], long (N, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return x, torch.from_numpy(masks.astype(np.int64))


def augmentation(height: int, width: int, *, scale_range: tuple[float, float], color_jitter: float,
                 ignore_index: int) -> A.Compose:
    """Paired augmentation: albumentations moves the mask with the image (nearest-neighbour for the mask).

    Horizontal flip; random scale in ``scale_range`` then a random crop back to (height, width), padding a
    shrunk image with black and its mask with ``ignore_index`` so padding is neither loss nor metric; colour
    jitter (image only). A scale range of [1, 1] and ``color_jitter: 0`` switch those parts off.
    """
    lo, hi = scale_range
    steps: list[A.BasicTransform] = [A.HorizontalFlip(p=0.5)]
    if (lo, hi) != (1.0, 1.0):
        steps += [
            A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR, p=1.0),
            A.PadIfNeeded(height, width, position="random", border_mode=cv2.BORDER_CONSTANT, fill=0,
                          fill_mask=ignore_index),
            A.RandomCrop(height, width),
        ]
    if color_jitter > 0:
        j = color_jitter
        steps.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(0.5, j / 4), p=0.8))
    return A.Compose(steps)


class PairSet(Dataset):
    """uint8 images (N, H, W, 3) and masks (N, H, W) -> ``(x (3, H, W) float, mask (H, W) long)`` items.

    With a ``transform``, each item is augmented with a seed drawn from (seed, epoch, index), so augmentation
    depends only on where a sample falls in training, not on worker count or history: a resumed run sees the
    same augmented batches as an uninterrupted one.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, transform: A.Compose | None = None, *,
                 seed: int = 0, epoch: Callable[[], int] = lambda: 0) -> None:
        self.images, self.masks, self.transform = images, masks, transform
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.images[i], self.masks[i]
        if self.transform is not None:
            self.transform.set_random_seed((self.seed * 1_000_003 + self.epoch() * 100_003 + int(i)) % 2**32)
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        x, y = to_tensors(image[None], mask[None])
        return x[0], y[0]  # (3, H, W), (H, W)


@register_dataset("segmentation")
class SegmentationDataModule(DataModule):
    def __init__(
        self,
        *,
        images: Location,
        masks: Location,
        classes: list[str],
        ignore_index: int = 255,
        val_images: Optional[Location] = None,
        val_masks: Optional[Location] = None,
        val_path: Optional[Location] = None,
        val_fraction: float = 0.1,
        resize: Optional[list[int]] = None,
        augment: bool = True,
        scale_range: tuple[float, float] = (0.75, 1.5),
        color_jitter: float = 0.2,
        limit: Optional[int] = None,
        batch_size: Size = 8,
        num_workers: int = 0,
        split_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ConfigError(f"data.classes must name at least 2 distinct classes, in id order; got {classes}.")
        if 0 <= ignore_index < len(classes):  # that class would get no loss and no metric, silently
            raise ConfigError(f"data.ignore_index={ignore_index} is the id of the class {classes[ignore_index]!r}: "
                              f"it must lie outside 0..{len(classes) - 1}, the ids of data.classes (255 is usual).")
        if (val_images is None) != (val_masks is None):
            raise ConfigError("Set both data.val_images and data.val_masks (or neither, to hold out "
                              "data.val_fraction of the training pairs).")
        if resize is not None and (len(resize) != 2 or min(resize) < 1):
            raise ConfigError(f"data.resize must be [H, W] with positive sizes; got {resize}.")
        if not 0.0 < scale_range[0] <= scale_range[1]:
            raise ConfigError(f"data.scale_range must be [low, high] with 0 < low <= high; got {list(scale_range)}.")
        self.classes, self.ignore_index = list(classes), ignore_index
        self.train_dirs = (Path(images), Path(masks))
        # val_path is resolved when the data is read (_load), so that a run whose validation folder has moved
        # still loads (Run.load) and can be given other data.
        self.val_path = val_path
        self.val_dirs = (Path(val_images), Path(val_masks)) if val_images else None
        self.val_fraction, self.split_seed, self.resize, self.limit = val_fraction, split_seed, resize, limit
        self.augment, self.scale_range, self.color_jitter = augment, tuple(scale_range), color_jitter
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.sampler: ResumableSampler | None = None
        self._splits: tuple[PairSet, TensorDataset] | None = None
        self._resume: tuple[int, int] | None = None
        self._shape: tuple[int, int, int] | None = None  # (C, H, W) of a trained run (load_artifacts)
        self._frequency: np.ndarray | None = None  # class_frequency, once computed or stored (load_artifacts)
        self._trained = False  # a trained run's data (load_artifacts): its classes are fixed

    # -- loading ----------------------------------------------------------------------------------------------
    def _read(self, dirs: tuple[Path, Path], limit: Optional[int] = None):
        return load_pairs(*dirs, classes=self.classes, ignore_index=self.ignore_index, resize=self.resize,
                          limit=limit, trained=self._trained)

    def _training_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The training images (N, H, W, C) and masks (N, H, W); for a trained run whose training data has moved
        away and that is evaluated on other data, none, of the stored size (no training image is needed)."""
        def empty() -> tuple[np.ndarray, np.ndarray]:
            c, h, w = self._shape
            return np.zeros((0, h, w, c), np.uint8), np.zeros((0, h, w), np.int64)

        usable = self._shape is not None and bool(self.val_path or self.val_dirs)
        return training_or_empty(lambda: self._read(self.train_dirs, self.limit)[:2], empty if usable else None)

    def _load(self) -> tuple[PairSet, TensorDataset]:
        images, masks = self._training_pairs()
        val_dirs = find_split(Path(self.val_path)) if self.val_path else self.val_dirs
        if val_dirs is not None:
            val_images, val_masks, pairs = self._read(val_dirs)
            if val_images.shape[1:3] != images.shape[1:3]:
                raise DataError(
                    f"The validation images ({pairs[0][0].parent}) are {val_images.shape[1]}x{val_images.shape[2]} "
                    f"(HxW) but the training images are {images.shape[1]}x{images.shape[2]}. Use one size, or set "
                    "data.resize: [H, W] to resize both."
                )
        else:
            n = len(images)
            n_val = max(1, int(round(n * self.val_fraction)))
            if not 0.0 < self.val_fraction < 1.0 or n - n_val < 1:
                raise DataError(f"{self.train_dirs[0]} holds {n} image(s): too few to hold out data.val_fraction="
                                f"{self.val_fraction} for validation. Add images, or set data.val_images and "
                                "data.val_masks.")
            order = np.random.default_rng(self.split_seed).permutation(n)
            val_images, val_masks = images[order[:n_val]], masks[order[:n_val]]
            images, masks = images[order[n_val:]], masks[order[n_val:]]
        transform = None
        if self.augment:
            transform = augmentation(images.shape[1], images.shape[2], scale_range=self.scale_range,
                                     color_jitter=self.color_jitter, ignore_index=self.ignore_index)
        train = PairSet(images, masks, transform, seed=self.seed, epoch=self._epoch)
        return train, TensorDataset(*to_tensors(val_images, val_masks))

    def _epoch(self) -> int:
        return self.sampler.epoch if self.sampler is not None else 0

    def setup(self, stage: str | None = None) -> None:
        if self._splits is None:
            self._splits = self._load()

    @property
    def train_set(self) -> PairSet:
        self.setup()
        return self._splits[0]

    @property
    def val_set(self) -> TensorDataset:
        self.setup()
        return self._splits[1]

    # -- what the model and the task need ---------------------------------------------------------------------
    def context(self) -> DataContext:
        if self._shape is not None:  # a trained run: what its model was built with, images read or not
            shape = self._shape
        else:
            _, height, width, channels = self.train_set.images.shape
            shape = (channels, height, width)
        return DataContext(modality="image", encoder={"input_shape": shape},
                           decoder={"output_shape": shape, "num_classes": len(self.classes)})

    def class_frequency(self) -> np.ndarray:
        """Per class: its pixels / all labelled pixels of the training images that contain it, (K,).

        The frequency behind median-frequency balancing (Eigen & Fergus 2015; SegNet's class weights). A trained
        run's is the stored one: its training masks may have moved away, and its loss must weigh as in training.
        """
        if self._frequency is not None:
            return self._frequency
        k = len(self.classes)
        pixels, totals = np.zeros(k), np.zeros(k)
        for mask in self.train_set.masks:
            counts = np.bincount(mask[mask != self.ignore_index].ravel(), minlength=k)[:k]
            pixels += counts
            totals += (counts > 0) * counts.sum()
        self._frequency = np.divide(pixels, totals, out=np.zeros(k), where=totals > 0)  # asked again by finish()
        return self._frequency

    # -- loaders ----------------------------------------------------------------------------------------------
    def resume_at(self, epoch: int, batches_done: int) -> None:
        self._resume = (epoch, batches_done * self.batch_size)

    def train_dataloader(self) -> DataLoader:
        self.sampler = ResumableSampler(len(self.train_set), seed=self.seed)
        if self._resume is not None:
            self.sampler.resume_at(*self._resume)
            self._resume = None
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=self.sampler,
                          num_workers=self.num_workers, persistent_workers=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    # -- artifacts --------------------------------------------------------------------------------------------
    def save_artifacts(self, run_dir: Path) -> None:
        from hourglass.io import atomic_write_json

        # The input shape and the class frequency let the run segment and evaluate after its training images have
        # moved away.
        atomic_write_json(Path(run_dir) / CLASSES_FILE, {"classes": self.classes, "ignore_index": self.ignore_index,
                                                         "input_shape": list(self.context().encoder["input_shape"]),
                                                         "class_frequency": self.class_frequency().tolist()})

    def load_artifacts(self, run_dir: Path) -> None:
        path = Path(run_dir) / CLASSES_FILE
        if not path.is_file():
            return
        saved = read_artifact(path, {"classes": NAMES})
        if saved.get("classes") != self.classes:
            raise DataError(f"{path} lists the classes {saved.get('classes')}, but the config lists {self.classes}. "
                            "The run was trained with the former; restore its config.yaml.")
        self._trained = True
        if saved.get("input_shape"):  # runs from before these were stored read their training images instead
            check_fields(path, saved, {"input_shape": SHAPE, "class_frequency": NUMBERS})
            self._shape = tuple(saved["input_shape"])
            self._frequency = np.asarray(saved["class_frequency"], dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {
            "source": str(self.train_dirs[0]),
            "train": len(self.train_set),
            "val": len(self.val_set),
            "shape": list(self.context().encoder["input_shape"]),
            "classes": self.classes,
            "ignore_index": self.ignore_index,
        }
