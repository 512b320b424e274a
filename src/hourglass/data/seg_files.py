"""Reading segmentation data: a folder of images beside a folder of masks, matched by file stem.

A mask is a single-channel image whose pixel values are class ids (0..K-1) or the ignore index. Everything a
user can get wrong with such folders is a :class:`~hourglass.errors.DataError` that names the file(s) and the
fix: unmatched files, masks with values outside the class list, colour-coded (RGB) masks, unreadable files,
mixed sizes. Arrays stay uint8 ``(N, H, W, 3)`` images and integer ``(N, H, W)`` masks until a batch is made,
so augmentation (OpenCV through albumentations) works on them directly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from hourglass.data.arrays import IMAGE_ERRORS, IMAGE_SUFFIXES, eight_bit
from hourglass.errors import DataError

SHOW = 5  # file names listed in an error before "... and N more"


def _names(paths: Sequence[Path | str]) -> str:
    names = [Path(p).name for p in paths]
    more = f" ... and {len(names) - SHOW} more" if len(names) > SHOW else ""
    return ", ".join(names[:SHOW]) + more


def list_images(folder: Path, what: str, given_as: str | None = None) -> dict[str, Path]:
    """stem -> file for every image in ``folder`` (not recursive). ``given_as`` names where the folder came from
    in the messages (default: the config's ``data.<what>``)."""
    given_as = given_as or f"data.{what}"
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"The {what} folder {folder} does not exist. Check {given_as} (paths are relative to the "
                        "directory you run hourglass from).")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"The {what} folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}). "
                        f"Point {given_as} at the folder that holds them.")
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise DataError(f"{folder} holds two files with the stem {p.stem!r} ({out[p.stem].name}, {p.name}); "
                            "images and masks are matched by stem, so keep one of them.")
        out[p.stem] = p
    return out


def pair_files(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs matched by file stem; any file without a partner is an error that lists them."""
    images, masks = list_images(image_dir, "images"), list_images(mask_dir, "masks")
    no_mask = [images[s] for s in images if s not in masks]
    no_image = [masks[s] for s in masks if s not in images]
    problems = []
    if no_mask:
        problems.append(f"{len(no_mask)} image(s) in {image_dir} have no mask in {mask_dir}: {_names(no_mask)}")
    if no_image:
        problems.append(f"{len(no_image)} mask(s) in {mask_dir} have no image in {image_dir}: {_names(no_image)}")
    if problems:
        raise DataError("Images and masks are matched by file stem, but " + "; and ".join(problems) +
                        ". Add the missing files, remove the extra ones, or fix their names.")
    return [(images[s], masks[s]) for s in sorted(images)]


def read_image(path: Path) -> np.ndarray:
    """Any image file -> uint8 (H, W, 3) RGB (grey is repeated, alpha dropped)."""
    try:
        with Image.open(path) as im:
            return np.array(eight_bit(im, path).convert("RGB"), dtype=np.uint8)  # a writable copy
    except IMAGE_ERRORS as err:
        raise DataError(f"Cannot read the image {path} ({err}). Replace or remove the file.") from None


def read_mask(path: Path) -> np.ndarray:
    """A mask file -> integer (H, W) class ids. Palette PNGs give their indices; RGB masks are refused."""
    try:
        with Image.open(path) as im:
            mask = np.asarray(im)
    except IMAGE_ERRORS as err:
        raise DataError(f"Cannot read the mask {path} ({err}). Replace or remove the file.") from None
    if mask.ndim == 3:
        colour = mask[..., :3] if mask.shape[-1] >= 3 else mask[..., :1]
        if (colour != colour[..., :1]).any():
            raise DataError(
                f"The mask {path} is a colour (RGB) image, but masks must hold one class id per pixel in a single "
                "channel (a greyscale or palette PNG with values 0..K-1). Convert colour-coded masks to ids with "
                "their colour table, then save them as greyscale PNG."
            )
        mask = colour[..., 0]  # grey stored as RGB: every channel holds the id
    if mask.dtype.kind not in "iub":
        raise DataError(f"The mask {path} holds {mask.dtype} values; masks must hold integer class ids. "
                        "Save it as an 8- or 16-bit greyscale PNG.")
    return mask.astype(np.int32, copy=False)


def check_values(masks: list[np.ndarray], paths: list[Path], classes: Sequence[str], ignore_index: int, *,
                 trained: bool = False) -> None:
    """Every mask value must be a class id (0..K-1) or ``ignore_index``. ``trained``: the masks are read for a
    trained run, whose classes are fixed, so the advice is not to add classes."""
    k = len(classes)
    bad = []
    for mask, path in zip(masks, paths):
        values = np.unique(mask)
        wrong = values[((values < 0) | (values >= k)) & (values != ignore_index)]
        if wrong.size:
            bad.append((path, wrong))
    if bad:
        path, wrong = bad[0]
        others = f" ({len(bad) - 1} other mask(s) too: {_names([p for p, _ in bad[1:]])})" if len(bad) > 1 else ""
        raise DataError(
            f"The mask {path} holds the value(s) {', '.join(map(str, wrong[:8].tolist()))}, but data.classes lists "
            f"{k} classes (ids 0..{k - 1}) and data.ignore_index is {ignore_index}{others}. "
            + (f"This run's model was trained on those classes and scores no others: set pixels that are unlabelled "
               f"to {ignore_index}, the value this run ignores, or fix the masks; to score more classes, train a new "
               "run whose data.classes lists them." if trained else
               "Add the missing classes to data.classes, set data.ignore_index to the value of unlabelled pixels, or "
               "fix the masks.")
        )


def check_sizes(images: list[np.ndarray], masks: list[np.ndarray], pairs: list[tuple[Path, Path]]) -> None:
    """One size for all images (a batch needs it), and each mask the size of its image."""
    for img, mask, (ip, mp) in zip(images, masks, pairs):
        if img.shape[:2] != mask.shape[:2]:
            raise DataError(f"The mask {mp} is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image {ip} is "
                            f"{img.shape[0]}x{img.shape[1]}. A mask must be the size of its image; fix the file.")
    first = images[0].shape[:2]
    odd = [(ip, img.shape[:2]) for img, (ip, _) in zip(images, pairs) if img.shape[:2] != first]
    if odd:
        (path, (h, w)), odd = odd[0], [p for p, _ in odd]
        raise DataError(
            f"The images have different sizes: {pairs[0][0]} is {first[0]}x{first[1]} (HxW) but {path} is {h}x{w} "
            f"({len(odd)} image(s) differ from the first: {_names(odd)}). A model is built for one size: set "
            f"data.resize: [H, W] (e.g. [{first[0]}, {first[1]}]) to resize them all, or resize the files."
        )


def resize_pair(image: np.ndarray, mask: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to (H, W): area/linear interpolation for the image, nearest for the mask (ids stay ids)."""
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image, mask
    shrink = h * w < image.shape[0] * image.shape[1]
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, mask


def load_pairs(
    image_dir: Path,
    mask_dir: Path,
    *,
    classes: Sequence[str],
    ignore_index: int,
    resize: Sequence[int] | None = None,
    limit: int | None = None,
    trained: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[tuple[Path, Path]]]:
    """Read and check a folder pair: uint8 images (N, H, W, 3), masks (N, H, W) and the file pairs (``trained``:
    for a trained run, as :func:`check_values`)."""
    pairs = pair_files(Path(image_dir), Path(mask_dir))[:limit]
    images = [read_image(ip) for ip, _ in pairs]
    masks = [read_mask(mp) for _, mp in pairs]
    if resize is None:
        check_sizes(images, masks, pairs)
    else:
        for i, ((ip, mp), img, mask) in enumerate(zip(pairs, images, masks)):
            if img.shape[:2] != mask.shape[:2]:
                check_sizes([img], [mask], [(ip, mp)])
            images[i], masks[i] = resize_pair(img, mask, resize)
    check_values(masks, [mp for _, mp in pairs], classes, ignore_index, trained=trained)
    dtype = np.uint8 if max(len(classes) - 1, ignore_index) <= 255 else np.int32
    return np.stack(images), np.stack(masks).astype(dtype), pairs


def find_split(root: Path) -> tuple[Path, Path]:
    """A folder with ``images/`` and ``masks/`` (or ``labels/``) subfolders -> the two folders.

    When those hold a ``val/`` subfolder (the layout ``images/{train,val}``, ``labels/{train,val}``), the
    ``val`` folders are used: this is what ``hourglass evaluate RUN --data ROOT`` reads.
    """
    root = Path(root)
    images = root / "images"
    masks = next((root / n for n in ("masks", "labels") if (root / n).is_dir()), None)
    if not images.is_dir() or masks is None:
        raise DataError(f"{root} must hold an images/ folder and a masks/ (or labels/) folder with the same file "
                        "stems. Point --data (data.val_path) at such a folder.")
    if (images / "val").is_dir() and (masks / "val").is_dir():
        return images / "val", masks / "val"
    return images, masks
