"""Image data for autoencoders: a folder, an IDX file, a .npy/.npz array, or scikit-learn's digits.

Batches are ``(x (B, C, H, W) float in [0, 1], y (B,) long)``, with ``y = -1`` where there are no labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from hourglass._registry import register_dataset
from hourglass.data.arrays import ImageArray, load_digits_images, load_images, shaped
from hourglass.data.base import OPTIONAL_COUNT, OPTIONAL_NAMES, SHAPE, DataModule, read_artifact, training_or_empty
from hourglass.data.sampler import ResumableSampler
from hourglass.errors import DataError
from hourglass.io import atomic_write_json
from hourglass.model import DataContext
from hourglass.options import Location, Size

BUILTIN = "digits"
ARTIFACT = "image_data.json"


def read_images(path: str, *, labels=None, resize=None, channels=None, limit=None) -> ImageArray:
    """``path`` may be "digits" (bundled with scikit-learn) or anything :func:`load_images` reads."""
    if path == BUILTIN:  # 8x8 grey; data.resize and data.channels apply as to any array
        arr = load_digits_images()
        images = shaped(arr.images[:limit], tuple(resize) if resize else None, channels)
        return ImageArray(images, arr.labels[:limit], arr.source)
    return load_images(path, labels=labels, resize=tuple(resize) if resize else None, channels=channels, limit=limit)


def match_classes(train: ImageArray, val: ImageArray) -> ImageArray:
    """``val`` with its folder labels renumbered to ``train``'s class names. Both number their subfolders in
    alphabetical order, so a validation folder with other classes (only cat/ and dog/ of bird/, cat/, dog/) would
    otherwise be scored against the wrong ids. A class the training data does not have is refused."""
    if train.class_names is None or val.class_names is None or val.class_names == train.class_names:
        return val
    index = {name: i for i, name in enumerate(train.class_names)}
    unknown = [name for name in val.class_names if name not in index]
    if unknown:
        raise DataError(
            f"{val.source} has the class folder(s) {', '.join(unknown[:5])}, which the training data "
            f"({train.source}) does not have; its classes are {', '.join(train.class_names[:20])}. Rename those "
            "folders to the training class names, or leave them out."
        )
    ids = np.array([index[name] for name in val.class_names], dtype=np.int64)[val.labels]  # (N,)
    return ImageArray(val.images, ids, val.source, train.class_names)


def _tensors(arr: ImageArray, index: np.ndarray) -> TensorDataset:
    x = torch.from_numpy(arr.images[index]).float()  # (N, C, H, W)
    y = torch.from_numpy(arr.labels[index]).long() if arr.labels is not None else torch.full((len(index),), -1)
    return TensorDataset(x, y)


def labelled_subset(labels: np.ndarray | None, index: np.ndarray, n: int | None) -> np.ndarray:
    """The first ``n`` of ``index`` (all when None). With labels, balanced over classes: the first ``n // K``
    of each class in ``index`` order, the remainder from the first classes (so 100 digits are 10 per class)."""
    if n is None or n >= len(index):
        return index
    if labels is None:
        return index[:n]
    y = labels[index]
    rank = np.zeros(len(index), dtype=np.int64)  # position of each example among those of its class
    for c in np.unique(y):
        rank[y == c] = np.arange(int((y == c).sum()))
    chosen = np.lexsort((y, rank))[:n]  # round-robin over classes: every class's 1st, then every 2nd, ...
    return index[np.sort(chosen)]


@register_dataset("images")
class ImageDataModule(DataModule):
    builtin_names = frozenset({BUILTIN})

    def __init__(
        self,
        *,
        path: Location = BUILTIN,
        labels: Optional[Location] = None,
        val_path: Optional[Location] = None,
        val_fraction: float = 0.1,
        resize: Optional[list[int]] = None,
        channels: Optional[int] = None,
        limit: Optional[Size] = None,
        train_limit: Optional[Size] = None,
        batch_size: Size = 64,
        num_workers: int = 0,
        split_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0 and val_path is None:
            raise DataError(f"data.val_fraction must be between 0 and 1 (got {val_fraction}); 0.1 is typical.")
        self.opts = dict(path=path, labels=labels, resize=resize, channels=channels, limit=limit)
        self.val_path, self.val_fraction = val_path, val_fraction
        self.train_limit = train_limit  # keep N training examples after the split; the validation split is whole
        self.batch_size, self.num_workers, self.split_seed = batch_size, num_workers, split_seed
        self.sampler: ResumableSampler | None = None
        self.seed = seed
        self._splits: tuple[TensorDataset, TensorDataset] | None = None
        self._resume: tuple[int, int] | None = None
        self.class_names: tuple[str, ...] | None = None
        self._stored: dict[str, Any] | None = None  # a trained run's ARTIFACT (load_artifacts)

    def _load(self) -> tuple[TensorDataset, TensorDataset]:
        if self.val_path is not None:
            arr = self._training_images()
            val = match_classes(arr, read_images(self.val_path, resize=self.opts["resize"],
                                                 channels=arr.images.shape[1]))
            self.source, self.class_names = arr.source, arr.class_names
            train = labelled_subset(arr.labels, np.arange(len(arr.images)), self.train_limit)
            return _tensors(arr, train), _tensors(val, np.arange(len(val.images)))
        arr = read_images(**self.opts)
        n = len(arr.images)
        n_val = max(1, int(round(n * self.val_fraction)))
        if n - n_val < 1:
            raise DataError(f"{arr.source} holds {n} image(s): too few to split off a validation set. Add images.")
        order = np.random.default_rng(self.split_seed).permutation(n)
        self.source = arr.source
        self.class_names = arr.class_names
        return _tensors(arr, labelled_subset(arr.labels, order[n_val:], self.train_limit)), _tensors(arr, order[:n_val])

    def _training_images(self) -> ImageArray:
        """The training images; for a trained run whose training data has moved away, an empty array of the
        stored shape and class names instead: evaluating it on other data (``val_path``) needs no training image."""
        def empty() -> ImageArray:
            shape, names = self._stored["input_shape"], self._stored["class_names"]
            return ImageArray(np.zeros((0, *shape), np.float32), None if names is None else np.zeros(0, np.int64),
                              str(self.opts["path"]), None if names is None else tuple(names))

        return training_or_empty(lambda: read_images(**self.opts), None if self._stored is None else empty)

    def setup(self, stage: str | None = None) -> None:
        if self._splits is None:
            self._splits = self._load()

    def save_artifacts(self, run_dir: Path) -> None:
        """``image_data.json``: the input shape, class count and names, so that the run can be used (encode,
        reconstruct, export, evaluate on other data) after its training images have moved away."""
        context = self.context()
        atomic_write_json(Path(run_dir) / ARTIFACT, {"input_shape": list(context.encoder["input_shape"]),
                                                     "num_classes": context.decoder["num_classes"],
                                                     "class_names": list(self.class_names or []) or None})

    def load_artifacts(self, run_dir: Path) -> None:
        file = Path(run_dir) / ARTIFACT
        self._stored = read_artifact(file, {"input_shape": SHAPE, "num_classes": OPTIONAL_COUNT,
                                            "class_names": OPTIONAL_NAMES}) if file.is_file() else None

    @property
    def train_set(self) -> TensorDataset:
        self.setup()
        return self._splits[0]

    @property
    def val_set(self) -> TensorDataset:
        self.setup()
        return self._splits[1]

    def context(self) -> DataContext:
        if self._stored is not None:  # a trained run: what its model was built with, images read or not
            shape, num_classes = tuple(self._stored["input_shape"]), int(self._stored["num_classes"])
        else:
            shape = tuple(self.train_set.tensors[0].shape[1:])
            labels = self.train_set.tensors[1]
            num_classes = int(labels.max()) + 1 if labels.numel() and labels.min() >= 0 else 0
        return DataContext(
            modality="image",
            encoder={"input_shape": shape},
            decoder={"output_shape": shape, "num_classes": num_classes},
        )

    def resume_at(self, epoch: int, batches_done: int) -> None:
        self._resume = (epoch, batches_done * self.batch_size)

    def train_dataloader(self) -> DataLoader:
        self.sampler = ResumableSampler(len(self.train_set), seed=self.seed)
        if self._resume is not None:
            self.sampler.resume_at(*self._resume)
            self._resume = None
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=self.sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    def describe(self) -> dict[str, Any]:
        return {
            "source": str(self.opts["path"]),
            "train": len(self.train_set),
            "val": len(self.val_set),
            "shape": list(self.train_set.tensors[0].shape[1:]),
        }
