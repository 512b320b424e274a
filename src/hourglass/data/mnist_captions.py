"""MNIST captions: strips of 1 to 5 handwritten digits, each captioned with the digits' names.

A generated captioning set that trains in CPU minutes and has an exact answer, so exact match is meaningful:
the strip of a 7, a 2 and a 9 is captioned "seven two nine". It reads the MNIST IDX files (default
``../shared/data/mnist``, 8,000 digits) with :func:`~hourglass.data.arrays.read_idx`, then

1. splits the *source digits* into training and validation digits (``val_fraction``, ``split_seed``), so that
   no handwritten digit of a validation strip was ever seen in training (rendering first and splitting the
   strips after would leak the same digit images into both sides);
2. renders ``train_size`` strips from the training digits and ``val_size`` from the validation digits: each
   strip draws a length uniformly from ``min_digits..max_digits`` and that many digits without replacement,
   places them left to right in 28-pixel cells and pads the rest with black, so every strip is
   28 x (28 * ``max_digits``) (28 x 140 for 5 digits). Everything depends only on ``seed``.

The strips and captions then go through :class:`~hourglass.data.captions.CaptionDataModule`, exactly as a folder
of images with a captions file would.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hourglass._registry import register_dataset
from hourglass.data.arrays import read_idx
from hourglass.data.captions import CaptionDataModule, CaptionSet
from hourglass.errors import DataError
from hourglass.options import Location, Size

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_PATH = "../shared/data/mnist"
CELL = 28  # MNIST digits are 28 x 28


@dataclass(frozen=True, eq=False)
class Strips:
    """Rendered strips: images float32 (N, 1, 28, 28 * max_digits) in [0, 1], one caption each, and the
    index (into the source digits) of every digit drawn, left to right."""

    images: np.ndarray
    captions: list[str]
    digits: list[tuple[int, ...]]


def caption_of(labels) -> str:
    """[7, 2, 9] -> "seven two nine"."""
    return " ".join(DIGIT_NAMES[int(d)] for d in labels)


def split_digits(n: int, *, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, val) index arrays over ``n`` source digits; validation gets ``round(n * val_fraction)``."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"data.val_fraction must be between 0 and 1 (got {val_fraction}); 0.125 is typical.")
    n_val = max(1, int(round(n * val_fraction)))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def render_strips(digits: np.ndarray, labels: np.ndarray, pool: np.ndarray, *, count: int, min_digits: int,
                  max_digits: int, seed: int) -> Strips:
    """Render ``count`` strips from the digits ``pool`` (indices into ``digits`` (N, 28, 28) in [0, 1]).

    A strip's length is uniform in ``min_digits..max_digits``; its digits are distinct source digits (drawn
    without replacement within the strip), left-aligned, and the empty cells on the right stay black.
    """
    if not 1 <= min_digits <= max_digits:
        raise DataError(f"data.min_digits={min_digits} and data.max_digits={max_digits} must satisfy "
                        "1 <= min_digits <= max_digits; for example min_digits=1, max_digits=5.")
    if len(pool) < max_digits:
        raise DataError(f"Only {len(pool)} source digits are left for a split, fewer than max_digits={max_digits}. "
                        "Use more digits (data.path, data.val_fraction) or shorter strips (data.max_digits).")
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_digits, max_digits + 1, size=count)  # (N,)
    picks = rng.integers(0, len(pool), size=(count, max_digits))  # (N, max) positions in the pool
    for i in np.flatnonzero([len(set(row)) < max_digits for row in picks.tolist()]):  # rare repeats: redraw
        picks[i] = rng.choice(len(pool), size=max_digits, replace=False)
    chosen = pool[picks]  # (N, max) source indices
    used = np.arange(max_digits) < lengths[:, None]  # (N, max): cells that hold a digit
    cells = digits[chosen]  # (N, max, 28, 28)
    cells[~used] = 0.0  # empty cells black (in place: 20,000 strips are 300 MB)
    images = cells.transpose(0, 2, 1, 3).reshape(count, 1, CELL, max_digits * CELL).astype(np.float32, copy=False)
    drawn = [tuple(int(d) for d in row[:k]) for row, k in zip(chosen.tolist(), lengths.tolist())]
    return Strips(images, [caption_of(labels[list(d)]) for d in drawn], drawn)


def read_mnist(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A folder with ``*images*idx3*`` and ``*labels*idx1*`` files (or the images file itself) ->
    digits float32 (N, 28, 28) in [0, 1] and labels int64 (N,)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"MNIST data {path} does not exist. Point data.path at a folder holding the IDX files "
                        "images-idx3-ubyte.gz and labels-idx1-ubyte.gz (the project keeps them in "
                        f"{DEFAULT_PATH}).")
    folder = path if path.is_dir() else path.parent
    images = path if path.is_file() else _one(folder, "idx3")
    x, y = read_idx(images), read_idx(_one(folder, "idx1"))
    if x.ndim != 3 or x.shape[1:] != (CELL, CELL) or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{images} holds {x.shape} images with {y.shape} labels, but MNIST captions need "
                        "(N, 28, 28) digits with one label each. Point data.path at the MNIST IDX files.")
    if y.min() < 0 or y.max() > 9:
        raise DataError(f"The labels next to {images} range over {y.min()}..{y.max()}, not digits 0..9.")
    return x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0), y.astype(np.int64)


def _one(folder: Path, kind: str) -> Path:
    found = sorted(p for p in folder.iterdir() if p.is_file() and kind in p.name.lower())
    if len(found) != 1:
        what = "images (a name with 'idx3')" if kind == "idx3" else "labels (a name with 'idx1')"
        raise DataError(f"{folder} should hold exactly one MNIST {what} file, but holds {len(found)}: "
                        f"{', '.join(p.name for p in found) or 'none'}. Point data.path at the MNIST folder.")
    return found[0]


@register_dataset("mnist-captions")
class MnistCaptionsDataModule(CaptionDataModule):
    """Generated strips of MNIST digits captioned with their names (module docstring)."""

    fit = "pad"  # a shorter strip is a strip with fewer cells: padded on the right, as rendered, never stretched

    def __init__(self, *, path: Location = DEFAULT_PATH, train_size: Size = 20000, val_size: Size = 1000,
                 min_digits: int = 1, max_digits: int = 5, val_fraction: float = 0.125, split_seed: int = 0,
                 vocab: Size = 64, batch_size: Size = 64, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(vocab=vocab, batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.path, self.train_size, self.val_size = path, train_size, val_size
        self.min_digits, self.max_digits = min_digits, max_digits
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.strips: dict[str, Strips] = {}  # "train"/"val" -> the rendered strips, with their source digits

    def read(self) -> tuple[CaptionSet, CaptionSet]:
        digits, labels = read_mnist(self.path)
        train_pool, val_pool = split_digits(len(digits), val_fraction=self.val_fraction, seed=self.split_seed)
        sets, self.strips = [], {}
        # Different seeds per split, both derived from split_seed (the data, not the training seed).
        splits = (("train", train_pool, self.train_size, 1), ("val", val_pool, self.val_size, 2))
        for split, pool, count, offset in splits:
            strips = render_strips(digits, labels, pool, count=count, min_digits=self.min_digits,
                                   max_digits=self.max_digits, seed=self.split_seed * 1_000_003 + offset)
            self.strips[split] = strips
            # A strip's name says which source digits it shows: "val-00007 mnist[4120,5452]".
            names = [f"{split}-{i:05d} mnist[{','.join(map(str, d))}]" for i, d in enumerate(strips.digits)]
            sets.append(CaptionSet(strips.images, [[c] for c in strips.captions], names))
        return sets[0], sets[1]

    def describe(self) -> dict:
        return {**super().describe(), "source": f"mnist strips of {self.min_digits}-{self.max_digits} digits "
                                                f"from {self.path}"}
