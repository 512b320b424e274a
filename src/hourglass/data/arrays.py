"""Image arrays: every image source becomes one float32 ``(N, C, H, W)`` array in [0, 1].

Accepted sources (``load_images``): a folder of images (class subfolders give labels, as in
torchvision's ``ImageFolder``), an MNIST-style IDX file or a folder holding one (gzip or plain),
a ``.npy`` or a ``.npz`` file. ``load_digits_images`` wraps scikit-learn's 8x8 digits.

Every mistake a user can make with their data is a ``DataError`` that names the file, says what
is wrong and how to fix it; numpy, PIL and gzip errors never reach the user raw.
"""
from __future__ import annotations

import gzip
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hourglass.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ACCEPTED = (
    "a folder of images (" + ", ".join(s[1:] for s in IMAGE_SUFFIXES) + "; images in class subfolders "
    "get labels), an MNIST-style IDX file (.gz or plain) or a folder holding one, a .npy or a .npz file"
)
# IDX type codes (LeCun's MNIST page): the third magic byte; the fourth is the number of dimensions.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


# eq=False: dataclass equality would compare numpy arrays element-wise and fail on truth value.
@dataclass(frozen=True, eq=False)
class ImageArray:
    """A whole image dataset in memory.

    images: float32 (N, C, H, W) in [0, 1]. labels: int64 (N,) or None. source: where it came from.
    class_names: the name of each label index (folder names), when known.
    """

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.images)


def load_digits_images() -> ImageArray:
    """scikit-learn's digits: (1797, 1, 8, 8) in [0, 1] (raw values are 0..16), labels 0..9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 8, 8) -> (N, 1, 8, 8)
    names = tuple(str(n) for n in digits.target_names)
    return ImageArray(images, digits.target.astype(np.int64), "sklearn.datasets.load_digits", names)


def load_images(path: str | Path, *, labels: str | Path | None = None, resize: tuple[int, int] | None = None,
                channels: int | None = None, limit: int | None = None) -> ImageArray:
    """Load images from a folder, an IDX file or folder, a .npy or a .npz file (see module docstring).

    labels: a labels file (IDX or .npy) that overrides any labels found with the images.
    resize: (H, W) for every image (bilinear). channels: 1 or 3; None keeps or infers it.
    limit: keep only the first ``limit`` items. Returns images (N, C, H, W) float32 in [0, 1].
    """
    path = Path(path)
    _check_options(resize, channels, limit)
    _require(path, "Data path")
    if path.is_dir() and not _idx_files(path):
        if labels is not None:
            raise DataError(
                f"labels={labels} was given for the image folder {path}, but a folder gets its labels from "
                "class subfolders (root/cat/x.png, root/dog/y.png). Drop the labels argument and sort the "
                "images into one subfolder per class.")
        return _load_folder(path, resize=resize, channels=channels, limit=limit)
    raw, found, labels_from = _read_arrays(path)
    if labels is not None:
        found, labels_from = _read_labels(Path(labels)), str(labels)
    x = _finish(raw, found, str(path), labels_from, limit)
    return ImageArray(shaped(x, resize, channels), found if found is None else found[:limit], str(path))


def shaped(x: np.ndarray, resize: tuple[int, int] | None = None, channels: int | None = None) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] with ``channels`` (1 or 3; None keeps them) and resized to ``resize`` (H, W;
    None keeps the size), both checked first."""
    _check_options(resize, channels, None)
    return _resize(_set_channels(x, channels), resize)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip or plain): the array with the shape and dtype its header declares."""
    path = Path(path)
    _require(path, "IDX file")
    data = _read_bytes(path)
    magic = int.from_bytes(data[:4].ljust(4, b"\0"), "big")
    code, ndim = (data[2], data[3]) if len(data) >= 4 else (-1, 0)
    if len(data) < 4 or data[:2] != b"\0\0" or code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path} is not an IDX file: it starts with magic number {magic} (0x{data[:4].hex()}), but IDX "
            "images start with 2051 (0x00000803) and labels with 2049 (0x00000801). Point at the MNIST-style "
            "images file (for example train-images-idx3-ubyte.gz), or re-download it if it is damaged.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated inside its IDX header ({len(data)} of {header} bytes). Download "
                        "or copy the file again; the transfer was probably cut short.")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[code])
    need = int(np.prod(dims)) * dtype.itemsize
    have = max(len(data) - header, 0)
    if have < need:
        raise DataError(
            f"{path} is truncated: its IDX header says {dims[0]} items of shape {dims[1:]} ({need} bytes), but "
            f"the file holds only {have} bytes of data. Download or copy the file again; the transfer was "
            "probably cut short.")
    flat = np.frombuffer(data, dtype=dtype, count=int(np.prod(dims)), offset=header)
    return flat.reshape(dims).astype(dtype.newbyteorder("="))  # a writable, native-endian copy


# ---------------------------------------------------------------- arrays: IDX, .npy, .npz

def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(raw images, labels or None, where the labels came from) for an IDX, .npy or .npz source."""
    if path.is_dir():
        return _read_idx_pair(_idx_images_in(path))
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _load_npy(path), None, ""
    if suffix == ".npz":
        return _load_npz(path)
    if _is_idx_name(path):
        return _read_idx_pair(path)
    raise DataError(
        f"{path} has the extension '{path.suffix}', which hourglass cannot read as images. It accepts "
        f"{ACCEPTED}. Convert the data (for example with np.save to a .npy file) or point at a supported path.")


def _read_idx_pair(images: Path) -> tuple[np.ndarray, np.ndarray | None, str]:
    """An IDX images file and its sibling labels file, when one is found."""
    labels = _sibling_labels(images)
    if labels is None:
        return read_idx(images), None, ""
    return read_idx(images), _as_labels(read_idx(labels), str(labels)), f"{labels} (found next to the images)"


def _idx_images_in(folder: Path) -> Path:
    """The single idx3/idx4 images file inside ``folder``."""
    found = [p for p in _idx_files(folder) if "idx3" in p.name.lower() or "idx4" in p.name.lower()]
    if len(found) != 1:
        names = ", ".join(p.name for p in _idx_files(folder))
        raise DataError(
            f"The IDX folder {folder} should hold exactly one images file (a name containing 'idx3'), but it "
            f"holds {len(found)} among: {names}. Point at one images file directly, for example "
            f"{folder / 'train-images-idx3-ubyte.gz'}.")
    return found[0]


def _sibling_labels(images: Path) -> Path | None:
    """The labels file next to ``images``: its name twin (images -> labels, idx3 -> idx1), else the only one."""
    candidates = [p for p in images.parent.iterdir()
                  if p.is_file() and "labels" in p.name.lower() and "idx1" in p.name.lower()]
    twin = _strip_gz(images.name.lower()).replace("images", "labels").replace("idx3", "idx1")
    named = [p for p in candidates if _strip_gz(p.name.lower()) == twin]
    if len(named) == 1:
        return named[0]
    return candidates[0] if len(candidates) == 1 else None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(_npy_problem(path, err)) from err


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Images under 'images', 'x' or 'X'; labels, when present, under 'labels' or 'y'."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            image_key = next((k for k in ("images", "x", "X") if k in archive.files), None)
            if image_key is None:
                raise DataError(
                    f"{path} has no images array: it holds {archive.files or 'no arrays'}, but hourglass looks "
                    "for the key 'images' (or 'x', 'X'). Re-save it with np.savez(path, images=..., labels=...).")
            label_key = next((k for k in ("labels", "y") if k in archive.files), None)
            found = _as_labels(archive[label_key], str(path)) if label_key else None
            return archive[image_key], found, str(path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(_npy_problem(path, err)) from err


def _npy_problem(path: Path, err: Exception) -> str:
    if "object arrays" in str(err).lower():
        return (f"{path} holds Python objects (dtype=object), which hourglass never unpickles, for safety. "
                "Save a numeric array instead, for example np.save(path, np.asarray(images, dtype=np.uint8)).")
    if "pickle" in str(err).lower():  # numpy's guess for any file without the .npy header
        return (f"{path} is not in {path.suffix} format (it may be a pickle, which hourglass never loads, for "
                "safety). Save the images with np.save or np.savez as a numeric array.")
    return (f"{path} is not a readable {path.suffix} file (numpy says: {err}). Re-save it with np.save or "
            "np.savez, or copy it again if the transfer was cut short.")


def _read_labels(path: Path) -> np.ndarray:
    """A labels file given by the user: .npy or IDX (1-D integers)."""
    _require(path, "Labels file")
    if path.suffix.lower() == ".npy":
        return _as_labels(_load_npy(path), str(path))
    if _is_idx_name(path):
        return _as_labels(read_idx(path), str(path))
    raise DataError(
        f"The labels file {path} has the extension '{path.suffix}'; labels must be a .npy file or an IDX file "
        "(for example train-labels-idx1-ubyte.gz). Save them with np.save(path, labels).")


def _as_labels(arr: np.ndarray, source: str) -> np.ndarray:
    """int64 (N,) from an (N,) or (N, 1) integer array (floats holding whole numbers are accepted)."""
    arr = arr[:, 0] if arr.ndim == 2 and arr.shape[1] == 1 else arr
    whole = arr.dtype.kind in "biu" or (arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0))
    if arr.ndim != 1 or not whole:
        raise DataError(
            f"The labels in {source} have shape {arr.shape} and dtype {arr.dtype}, but labels must be one whole "
            "number per image, shape (N,). Save them as an integer vector, e.g. np.save(path, y.astype('int64')).")
    return arr.astype(np.int64)


def _finish(raw: np.ndarray, labels: np.ndarray | None, source: str, labels_from: str,
            limit: int | None) -> np.ndarray:
    """Raw array -> float32 (N, C, H, W) in [0, 1], checked against the labels and cut to ``limit``."""
    x = _to_nchw(raw, source)
    if len(x) == 0:
        raise DataError(f"{source} holds no images (N=0). Point at a file or folder that contains data.")
    if labels is not None and len(labels) != len(x):
        raise DataError(
            f"{source} holds {len(x)} images but the labels in {labels_from} number {len(labels)}. Each image "
            "needs exactly one label: pass the labels file that belongs to these images (labels=...), or "
            "remove the mismatched file so it is not picked up.")
    return _to_unit_float(x, source)[:limit]  # the [0, 1] vs 0..255 decision looks at all images


def _to_nchw(x: np.ndarray, source: str) -> np.ndarray:
    """(N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3} -> (N, C, H, W).

    When both axis 1 and axis 3 could be channels, (N, C, H, W) wins: it is PyTorch's layout.
    """
    if x.ndim == 3:
        return x[:, None]  # (N, H, W) -> (N, 1, H, W)
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    hint = " A 1-D array looks like labels, not images." if x.ndim == 1 else ""
    raise DataError(
        f"{source} holds an array of shape {x.shape}, which is not a stack of images.{hint} Images must have "
        "shape (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 (grey) or 3 (RGB); reshape or convert the "
        "array and save it again.")


def _to_unit_float(x: np.ndarray, source: str) -> np.ndarray:
    """uint8 / 255; other numbers kept when in [0, 1], divided by 255 when in [0, 255]."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if x.dtype.kind not in "biuf":
        raise DataError(f"{source} holds {x.dtype} values; images must be numbers. Save them as uint8 or float32.")
    x = x.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    if not np.isfinite([lo, hi]).all() or lo < 0 or hi > 255:
        raise DataError(
            f"{source} holds values from {lo} to {hi}, but pixel values must lie in [0, 1] (floats) or 0..255. "
            "Rescale the images (and replace any NaN or inf) before saving them.")
    return x if hi <= 1.0 else x / 255.0


def _set_channels(x: np.ndarray, channels: int | None) -> np.ndarray:
    """(N, C, H, W) -> (N, channels, H, W): grey repeated to RGB, RGB to luma (ITU-R 601, as PIL)."""
    if channels is None or channels == x.shape[1]:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=1)
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.einsum("nchw,c->nhw", x, weights)[:, None]  # (N, 3, H, W) -> (N, 1, H, W)


def _resize(x: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Bilinear (N, C, H, W) -> (N, C, *size), antialiased like PIL when shrinking."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return np.ascontiguousarray(x)
    out = F.interpolate(torch.from_numpy(np.ascontiguousarray(x)), size=tuple(size), mode="bilinear",
                        align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0).numpy()


# ---------------------------------------------------------------- folders of image files

def _load_folder(root: Path, *, resize: tuple[int, int] | None, channels: int | None,
                 limit: int | None) -> ImageArray:
    """Decode every image under ``root`` (sorted, recursive) to (N, C, H, W); labels from class subfolders."""
    files = _image_files(root)
    if not files:
        raise DataError(
            f"The folder {root} holds no images: nothing under it ends in {', '.join(IMAGE_SUFFIXES)}. Point "
            "at the folder that contains the images, or convert them to PNG.")
    class_names, labels = _folder_labels(root, files)
    files = files[:limit]
    modes_gray, sizes = _scan(files, need_mode=channels is None)
    if resize is None and len(set(sizes)) > 1:
        raise DataError(_mixed_sizes(root, files, sizes))
    mode = "L" if (channels or (1 if all(modes_gray) else 3)) == 1 else "RGB"
    stacked = np.stack([_decode(f, mode, resize) for f in files])  # (N, H, W) or (N, H, W, 3)
    x = stacked[:, None] if mode == "L" else stacked.transpose(0, 3, 1, 2)  # (N, C, H, W)
    images = x.astype(np.float32) / 255.0
    return ImageArray(images, None if labels is None else labels[:limit], str(root), class_names)


def _image_files(root: Path) -> list[Path]:
    """Image files under ``root``, sorted by relative path; hidden files and folders are skipped."""
    found = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _folder_labels(root: Path, files: list[Path]) -> tuple[tuple[str, ...] | None, np.ndarray | None]:
    """Labels from top-level subfolders, when every image sits in one and there are at least two."""
    tops = [p.relative_to(root).parts for p in files]
    if any(len(parts) < 2 for parts in tops):
        return None, None
    names = tuple(sorted({parts[0] for parts in tops}))
    if len(names) < 2:
        return None, None
    index = {name: i for i, name in enumerate(names)}
    return names, np.array([index[parts[0]] for parts in tops], dtype=np.int64)


@contextmanager
def _opened(file: Path) -> Iterator[Image.Image]:
    """Image.open whose failures, while open or decoding, become a DataError naming the file."""
    try:
        with Image.open(file) as im:
            yield im
    except IMAGE_ERRORS as err:
        raise DataError(
            f"The image {file} is corrupt or unreadable (PIL says: {err}). Remove it from the folder, or "
            "re-export it as PNG.") from err


def _scan(files: list[Path], *, need_mode: bool) -> tuple[list[bool], list[tuple[int, int]]]:
    """Per file: whether it is grey (only when ``need_mode``) and its (W, H), from headers where possible."""
    gray, sizes = [], []
    for file in files:
        with _opened(file) as im:
            gray.append(_is_gray(im) if need_mode else True)
            sizes.append(im.size)
    return gray, sizes


def _is_gray(im: Image.Image) -> bool:
    """Grey modes, or a palette image whose pixels are all grey."""
    if im.mode in GRAY_MODES:
        return True
    if im.mode in ("P", "PA"):
        rgb = np.asarray(im.convert("RGB"))  # (H, W, 3)
        return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    return False


#: PIL modes of more than 8 bits per pixel, which ``convert("L"/"RGB")`` clips at 255: a 16-bit PNG would read as
#: nearly all white and a float TIFF in [0, 1] as black. :func:`eight_bit` scales them instead.
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def eight_bit(im: Image.Image, file: Path | str) -> Image.Image:
    """``im``, with 16-bit, 32-bit integer and float grey pixels scaled to 8 bits ('L'); other modes unchanged.

    The scale follows the mode alone, never an image's own values, so that every image of a dataset is read
    alike: integer modes ('I;16', and 'I', which PIL gives 16-bit PGM and TIFF files) span 0-65535, float ('F')
    spans [0, 1]. Pixels outside that range (negative, NaN, larger) are refused, naming the file.
    """
    if im.mode not in _DEEP_MODES:
        return im
    a = np.asarray(im, dtype=np.float64)
    scale = 1.0 if im.mode == "F" else 65535.0
    if a.size and not (np.isfinite(a).all() and 0 <= a.min() and a.max() <= scale):
        raise DataError(f"The image {file} has {im.mode} pixels from {a.min():g} to {a.max():g}; hourglass reads "
                        f"{'float pixels in [0, 1]' if scale == 1.0 else 'integer pixels in 0-65535'} (and 8-bit "
                        "images). Rescale it and save it as PNG.")
    return Image.fromarray(np.round(a * (255.0 / scale)).astype(np.uint8), "L")


def _decode(file: Path, mode: str, resize: tuple[int, int] | None) -> np.ndarray:
    """uint8 (H, W) for mode 'L' or (H, W, 3) for 'RGB'."""
    with _opened(file) as im:
        im = eight_bit(im, file).convert(mode)
        if resize is not None:
            im = im.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)  # PIL sizes are (W, H)
        return np.asarray(im, dtype=np.uint8)


def _mixed_sizes(root: Path, files: list[Path], sizes: list[tuple[int, int]]) -> str:
    first = sizes[0]
    other = next(i for i, s in enumerate(sizes) if s != first)
    (w1, h1), (w2, h2) = first, sizes[other]
    return (f"The images in {root} have different sizes: {files[0]} is {h1}x{w1} (HxW) but {files[other]} is "
            f"{h2}x{w2}. A batch needs one size: set data.resize=[H,W] (for example data.resize=[{h1},{w1}]) "
            "to resize every image, or pass resize=(H, W) to load_images.")


# ---------------------------------------------------------------- small helpers

def _require(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(
            f"{what} {path} does not exist. hourglass reads {ACCEPTED}. Check the spelling and the working "
            "directory, or point at one of those.")


def _check_options(resize: tuple[int, int] | None, channels: int | None, limit: int | None) -> None:
    if resize is not None and (len(resize) != 2 or any(int(v) < 1 for v in resize)):
        raise DataError(f"resize={resize} is not a size: set data.resize=[H,W] with two positive integers.")
    if channels not in (None, 1, 3):
        raise DataError(f"channels={channels} is not supported: use 1 (grey), 3 (RGB) or leave it unset.")
    if limit is not None and limit < 1:
        raise DataError(f"limit={limit} would keep no images: use a positive number, or leave it unset.")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzip (detected by content, not by name)."""
    data = path.read_bytes()
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(
            f"{path} is a damaged gzip file ({err}); it was probably cut short while downloading or copying. "
            "Download or copy it again, and check it with `gzip -t`.") from err


def _is_idx_name(path: Path) -> bool:
    name = _strip_gz(path.name.lower())
    return "idx" in name or name.endswith("ubyte")


def _idx_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_idx_name(p))


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name
