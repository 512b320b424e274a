"""Image captioning data: a folder of images and a captions file with one or more captions per image.

Captions files (UTF-8, plain or gzip):

- TSV, one caption a line: ``image_name<TAB>caption``. A name repeated on several lines gives that image several
  captions (as in Flickr8k's ``Flickr8k.token.txt``, whose ``name.jpg#0`` suffixes are accepted and dropped).
- JSON (a ``.json`` name, or text starting with ``{`` or ``[``): ``{"image_name": ["caption", ...]}`` (a single
  string is one caption), or a list of ``{"image": name, "caption": text}`` objects.

Image names are paths relative to the images folder. Images are decoded with PIL as grey when every image is grey
and as RGB otherwise (or as ``channels`` says), and resized to ``resize`` (H, W) when given; without it they must
all have one size. Every problem is one :class:`~hourglass.errors.DataError` paragraph: a missing or empty
captions file, a TSV line without a tab, captions naming images that are not in the folder (all listed), and
images that cannot be read (all listed).

Training sees one example per (image, caption) pair; evaluation decodes each image once and scores it against
all of its captions (BLEU takes multiple references, Papineni et al. 2002). In a config::

    data:
      name: captions
      images: photos/              # the names in the captions file are relative to this folder
      captions: captions.tsv       # or captions.json
      val_ref: val-captions.tsv    # optional; images in val_path (default: the same folder). Without it,
      val_fraction: 0.1            #   this share of the images (never of the captions) is held out
      resize: [224, 224]           # (H, W); required when the images differ in size
      fit: stretch                 # or pad: keep the aspect, scale to H, pad on the right (strips, text lines)
      vocab: 1000                  # SentencePiece pieces, trained on the training captions only
"""
from __future__ import annotations

import json
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from hourglass._registry import register_dataset
from hourglass.data.arrays import GRAY_MODES, IMAGE_ERRORS, eight_bit
from hourglass.data.base import NAMES, SHAPE, DataModule, read_artifact, training_or_empty
from hourglass.data.batching import pad
from hourglass.data.sampler import ResumableSampler
from hourglass.data.text import iter_lines
from hourglass.data.tokenizer import Tokenizer
from hourglass.errors import DataError
from hourglass.io import atomic_write_json
from hourglass.model import DataContext
from hourglass.options import Location, Size

_FLICKR_SUFFIX = re.compile(r"#\d+$")  # "name.jpg#0" in Flickr8k/30k token files
_SHOWN = 10  # names listed in an error before "and N more"

Fit = Literal["stretch", "pad"]  # see _fit


@dataclass(frozen=True, eq=False)
class CaptionSet:
    """Images float32 (N, C, H, W) in [0, 1], the captions of each (one or more) and each image's name."""

    images: np.ndarray
    references: list[list[str]]
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: Sequence[int]) -> "CaptionSet":
        index = list(index)
        return CaptionSet(self.images[index], [self.references[i] for i in index], [self.names[i] for i in index])


# ---------------------------------------------------------------- captions files

def read_captions(path: str | Path) -> dict[str, list[str]]:
    """Image name -> its captions, in file order (module docstring for the formats)."""
    path = Path(path)
    lines = list(iter_lines(path))  # DataError for a missing, non-UTF-8 or broken gzip file
    text = "\n".join(lines).strip()
    if not text:
        raise DataError(f"The captions file {path} is empty. It needs one `image_name<TAB>caption` line per caption "
                        '(or JSON {"image_name": ["caption", ...]}).')
    found = _read_json(path, text) if path.suffix.lower() == ".json" or text[0] in "{[" else _read_tsv(path, lines)
    if not found:
        raise DataError(f"The captions file {path} holds no caption: every entry is empty. Check that it is the "
                        "right file and that captions follow the image names.")
    return found


def _read_tsv(path: Path, lines: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    empty = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        name, tab, caption = line.partition("\t")
        if not tab:
            raise DataError(f"{path}, line {number}: no tab between the image name and the caption: "
                            f"{line[:60]!r}. Write each line as `image_name<TAB>caption` (tabs, not spaces).")
        name, caption = _FLICKR_SUFFIX.sub("", name.strip()), " ".join(caption.split())
        if not caption:
            empty += 1
            continue
        found.setdefault(name, []).append(caption)
    if empty and found:
        warnings.warn(f"Skipped {empty} empty caption(s) in {path}.", UserWarning, stacklevel=3)
    return found


def _read_json(path: Path, text: str) -> dict[str, list[str]]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}). Fix the "
                        "syntax, or write the captions as TSV lines `image_name<TAB>caption`.") from None
    if isinstance(raw, list) and all(isinstance(e, dict) and {"image", "caption"} <= set(e) for e in raw):
        pairs = [(str(e["image"]), e["caption"]) for e in raw]
    elif isinstance(raw, dict):
        bad = [name for name, value in raw.items() if not isinstance(value, (str, list))]
        if bad:
            raise DataError(f"{path}: the value of {_listing(bad)} is neither a caption nor a list of captions. "
                            'Write {"dog.jpg": ["a dog runs", "a brown dog"]}.')
        pairs = [(name, c) for name, value in raw.items() for c in ([value] if isinstance(value, str) else value)]
    else:
        raise DataError(f'{path} must hold {{"image_name": ["caption", ...]}} or a list of {{"image": ..., '
                        '"caption": ...}} objects.')
    found: dict[str, list[str]] = {}
    for name, caption in pairs:
        if not isinstance(caption, str):
            raise DataError(f"{path}: the caption {caption!r} of {name!r} is not a string. Captions must be text.")
        if caption.split():
            found.setdefault(name, []).append(" ".join(caption.split()))
    return found


# ---------------------------------------------------------------- images

def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _is_gray(im: Image.Image) -> bool:
    if im.mode in GRAY_MODES:
        return True
    if im.mode in ("P", "PA"):
        rgb = np.asarray(im.convert("RGB"))  # (H, W, 3)
        return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    return False


def _fit(im: Image.Image, size: Sequence[int], fit: Fit) -> Image.Image:
    """``im`` brought to (H, W) = ``size``: stretched, or (``fit="pad"``) scaled to height H with its aspect kept
    and placed at the left of a black canvas (squeezed to W only when it is wider), as a strip or a text line."""
    h, w = int(size[0]), int(size[1])
    if fit == "stretch":
        return im.resize((w, h), Image.Resampling.BILINEAR)  # PIL sizes are (W, H)
    scaled_w = min(w, max(1, round(im.width * h / im.height)))
    canvas = Image.new(im.mode, (w, h))
    canvas.paste(im.resize((scaled_w, h), Image.Resampling.BILINEAR), (0, 0))
    return canvas


def read_image_files(files: Sequence[str | Path], *, resize: Optional[Sequence[int]] = None,
                     channels: Optional[int] = None, fit: Fit = "stretch",
                     otherwise: str = "remove their captions") -> np.ndarray:
    """Decode image files -> float32 (N, C, H, W) in [0, 1]; every unreadable file is listed in one DataError,
    which ends with "re-export them as PNG or JPEG, or ``otherwise``".

    resize: (H, W), bilinear (as PIL), with ``fit`` (see :func:`_fit`); without it all images must have one size.
    channels: 1 or 3, or None for grey when every image is grey and RGB otherwise.
    """
    decoded, gray, broken = [], [], []
    for file in map(Path, files):
        try:
            with Image.open(file) as im:
                gray.append(_is_gray(im))
                im = eight_bit(im, file).convert("RGB")  # also forces decoding, so a truncated file fails here
                if resize is not None:
                    im = _fit(im, resize, fit)
                decoded.append(np.asarray(im, dtype=np.uint8))  # (H, W, 3)
        except (*IMAGE_ERRORS, FileNotFoundError) as err:
            broken.append(f"{file} ({type(err).__name__})")
    if broken:
        raise DataError(f"{len(broken)} image(s) cannot be read: {_listing(broken)}. They are missing, corrupt or "
                        f"not images; re-export them as PNG or JPEG, or {otherwise}.")
    sizes = sorted({a.shape[:2] for a in decoded})
    if len(sizes) > 1:
        (h1, w1), (h2, w2) = sizes[0], sizes[-1]
        raise DataError(f"The images have {len(sizes)} different sizes (from {h1}x{w1} to {h2}x{w2}, HxW). A batch "
                        f"needs one size: set data.resize=[H,W] (for example data.resize=[{h2},{w2}]).")
    x = np.stack(decoded).astype(np.float32) / 255.0  # (N, H, W, 3)
    want = channels or (1 if all(gray) else 3)
    if want == 1:
        return np.einsum("nhwc,c->nhw", x, np.array([0.299, 0.587, 0.114], np.float32))[:, None]  # (N, 1, H, W)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, 3, H, W)


def load_caption_set(images: str | Path, captions: str | Path, *, resize: Optional[Sequence[int]] = None,
                     channels: Optional[int] = None, lowercase: bool = False, fit: Fit = "stretch") -> CaptionSet:
    """The images of ``images`` (a folder) named in ``captions``, with their captions, in file order."""
    folder = Path(images)
    if not folder.is_dir():
        raise DataError(f"The images folder {folder} does not exist or is not a folder. Set data.images to the "
                        "folder that the names in the captions file are relative to.")
    found = read_captions(captions)
    missing = [name for name in found if not (folder / name).is_file()]
    if missing:
        raise DataError(f"The captions file {captions} names {len(missing)} image(s) that are not in {folder}: "
                        f"{_listing(missing)}. Add the images, remove their captions, or point data.images at "
                        "the right folder.")
    names = list(found)
    refs = [[c.lower() for c in found[n]] if lowercase else found[n] for n in names]
    return CaptionSet(read_image_files([folder / n for n in names], resize=resize, channels=channels, fit=fit),
                      refs, names)


# ---------------------------------------------------------------- the data module

def grid_of(cells: int, height: int, width: int) -> tuple[int, int]:
    """The (h, w) feature grid of ``cells`` memory positions over an H x W image: the stride s (a power of 2)
    with ceil(H/s) * ceil(W/s) == cells (floor for encoders that drop edges). Inferred from the sizes alone, so
    the data never reads the encoder's internals."""
    for s in (2**i for i in range(12)):
        for h, w in ((-(-height // s), -(-width // s)), (height // s, width // s)):
            if h * w == cells:
                return h, w
    raise ValueError(f"{cells} memory positions are no strided grid over a {height}x{width} image")


class _Examples(Dataset):
    """Examples (image row, target ids): one per (image, caption) pair in training, one per image in validation."""

    def __init__(self, images: Tensor, rows: list[int], targets: list[list[int]]) -> None:
        self.images, self.rows, self.targets = images, rows, targets

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, Tensor, list[int]]:
        return i, self.images[self.rows[i]], self.targets[i]


class CaptionDataModule(DataModule):
    """Images as the source, captions as the target: the :class:`~hourglass.tasks.seq2seq.Seq2SeqData` protocol
    for images. Subclasses implement :meth:`read` -> (train, val) :class:`CaptionSet`.

    Validation holds one example per image (its first caption is the loss target), so that evaluation decodes
    each image once and scores it against all its captions (``references``).
    """

    TOKENIZER_FILE = "captions.model"
    SHAPE_FILE = "captions.json"
    #: How an image of another size is brought to the training shape (see :func:`_fit`).
    fit: Fit = "stretch"

    def __init__(self, *, vocab: int, batch_size: int, num_workers: int, seed: int) -> None:
        super().__init__()
        self.vocab, self.batch_size, self.num_workers, self.seed = vocab, batch_size, num_workers, seed
        self.target_tokenizer: Tokenizer | None = None
        self.sets: dict[str, CaptionSet] = {}
        self._datasets: dict[str, _Examples] = {}
        self._pair_image: list[int] = []  # training pair -> image row
        self._resume: tuple[int, int] | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._shape: tuple[int, int, int] | None = None  # (C, H, W) of a trained run (load_artifacts)

    def read(self) -> tuple[CaptionSet, CaptionSet]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- setup ------------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        train, val = self.read()
        self.sets = {"train": train, "val": val}
        if self.target_tokenizer is None:
            self.target_tokenizer = self._train_tokenizer(c for refs in train.references for c in refs)
        tok = self.target_tokenizer
        pairs = [(row, c) for row, refs in enumerate(train.references) for c in refs]
        self._pair_image = [row for row, _ in pairs]
        val_targets = [tok.encode(refs[0]) for refs in val.references]  # the loss reads the first caption
        self._datasets = {
            "train": _Examples(torch.from_numpy(train.images), self._pair_image, [tok.encode(c) for _, c in pairs]),
            "val": _Examples(torch.from_numpy(val.images), list(range(len(val))), val_targets),
        }

    def _train_tokenizer(self, captions) -> Tokenizer:
        """SentencePiece on the training captions, in a folder that lives as long as this module (the model file
        is copied into the run directory by :meth:`save_artifacts`)."""
        self._tmp = tempfile.TemporaryDirectory(prefix="hourglass-captions-")
        return Tokenizer.train(captions, vocab_size=self.vocab, path_prefix=Path(self._tmp.name) / "captions")

    def save_artifacts(self, run_dir: Path) -> None:
        """The tokenizer, and the image shape (``captions.json``): with them the run captions images after its
        training data has moved away."""
        self.target_tokenizer.save(Path(run_dir) / self.TOKENIZER_FILE)
        atomic_write_json(Path(run_dir) / self.SHAPE_FILE, {"input_shape": list(self.image_shape)})

    early_artifacts = True

    def resume_from(self, run_dir: Path) -> None:
        file = Path(run_dir) / self.TOKENIZER_FILE
        if file.is_file():  # a run keeps its own vocabulary, whatever the data would train today
            self.target_tokenizer = Tokenizer.load(file)

    def load_artifacts(self, run_dir: Path) -> None:
        self.resume_from(run_dir)
        file = Path(run_dir) / self.TOKENIZER_FILE
        shape = Path(run_dir) / self.SHAPE_FILE
        if shape.is_file() and file.is_file():
            self._shape = tuple(read_artifact(shape, {"input_shape": SHAPE})["input_shape"])

    # -- what the builder and the trainer read ---------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self._shape is not None:  # a trained run: what its model was built with, images read or not
            return self._shape
        self.setup()
        return tuple(self.sets["train"].images.shape[1:])  # (C, H, W)

    def context(self) -> DataContext:
        if self._shape is None:
            self.setup()
        tok = self.target_tokenizer
        return DataContext(modality="image", encoder={"input_shape": self.image_shape},
                           decoder={"vocab_size": tok.vocab_size, "pad_id": tok.pad_id})

    def _collate(self, items: list[tuple[int, Tensor, list[int]]]) -> dict[str, Tensor]:
        tok = self.target_tokenizer
        return {"source": torch.stack([x for _, x, _ in items]),  # (B, C, H, W)
                "target": pad([[tok.bos_id, *ids, tok.eos_id] for _, _, ids in items], tok.pad_id),  # (B, T)
                "index": torch.tensor([i for i, _, _ in items], dtype=torch.long)}  # (B,)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        self._resume = (epoch, batches_done * self.batch_size)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        sampler = ResumableSampler(len(self._datasets["train"]), seed=self.seed)
        if self._resume is not None:
            sampler.resume_at(*self._resume)
            self._resume = None
        return DataLoader(self._datasets["train"], batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, collate_fn=self._collate)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self._datasets["val"], batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=self._collate)

    # -- the Seq2SeqData protocol ------------------------------------------------------------------------------------
    def references(self, stage: str = "val") -> list[list[str]]:
        """Every example's captions, by index (a training pair's are those of its image)."""
        self.setup()
        refs = self.sets[stage].references
        return refs if stage != "train" else [refs[row] for row in self._pair_image]

    def source_text(self, index: int, stage: str = "val") -> str:
        self.setup()
        row = index if stage != "train" else self._pair_image[index]
        return self.sets[stage].names[row]

    def source_labels(self, index: int, stage: str = "val") -> None:
        return None  # an image grid is not a sequence; see draw_attention

    def item_labels(self, item: Any) -> None:
        return None

    def encode_sources(self, items: Sequence[Any]) -> Tensor:
        """Image files (or (C, H, W) arrays in [0, 1]) -> (B, C, H, W), decoded and resized like the data."""
        c, h, w = self.image_shape
        arrays = [np.asarray(i, dtype=np.float32) for i in items if not isinstance(i, (str, Path))]
        if arrays and len(arrays) != len(items):
            raise DataError("encode_sources takes image files or arrays, not a mix of both.")
        if arrays:
            bad = [a.shape for a in arrays if a.shape != (c, h, w)]
            if bad:
                raise DataError(f"Images of shape {bad[0]} do not fit a model trained on {(c, h, w)} (C, H, W). "
                                "Pass image files, which are resized, or arrays of the training shape.")
            return torch.from_numpy(np.stack(arrays))
        return torch.from_numpy(read_image_files(list(items), resize=(h, w), channels=c, fit=self.fit,
                                                 otherwise="give the paths of image files"))

    @property
    def val_set(self) -> TensorDataset:
        """The validation images (N, C, H, W), as :class:`~hourglass.data.images.ImageDataModule` has them."""
        self.setup()
        return TensorDataset(torch.from_numpy(self.sets["val"].images))

    def image(self, index: int, stage: str = "val") -> np.ndarray:
        """The (C, H, W) source image of a validation (or training) example."""
        self.setup()
        row = index if stage != "train" else self._pair_image[index]
        return self.sets[stage].images[row]

    def draw_attention(self, index: int, words: Sequence[str], weights: np.ndarray, path: Path,
                       stage: str = "val", image: np.ndarray | None = None) -> Path:
        """Where the decoder looked for each word: weights (T, S) over the encoder grid, drawn on the image
        (Xu et al. 2015, fig. 2). ``words`` may lack the final eos row, which is then labelled "</s>"."""
        from hourglass import plots

        image = self.image(index, stage) if image is None else image
        weights = np.asarray(weights, dtype=np.float32)
        words = list(words) + ["</s>"] * (len(weights) - len(words))
        h, w = grid_of(weights.shape[1], *image.shape[-2:])
        return plots.attention_on_image(image, weights.reshape(len(weights), h, w), words, path)

    def describe(self) -> dict[str, Any]:
        self.setup()
        train, val = self.sets["train"], self.sets["val"]
        return {"train_images": len(train), "train_captions": sum(map(len, train.references)),
                "val_images": len(val), "shape": list(self.image_shape),
                "vocab_size": self.target_tokenizer.vocab_size}


@register_dataset("captions")
class CaptionsDataModule(CaptionDataModule):
    """A folder of images with a captions file (module docstring). Validation: ``val_ref``, a second captions
    file whose images are in ``val_path`` (default: the ``images`` folder), resized to the training shape; or
    else ``val_fraction`` of the images (never of the captions, so no image is on both sides).
    ``hourglass evaluate RUN --data FOLDER --ref CAPTIONS`` sets ``val_path`` and ``val_ref``."""

    def __init__(self, *, images: Location, captions: Location, val_path: Optional[Location] = None,
                 val_ref: Optional[Location] = None, val_fraction: float = 0.1, split_seed: int = 0,
                 resize: Optional[list[int]] = None, fit: Fit = "stretch", channels: Optional[int] = None,
                 lowercase: bool = False, vocab: Size = 1000, batch_size: Size = 32, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__(vocab=vocab, batch_size=batch_size, num_workers=num_workers, seed=seed)
        if val_ref is None and not 0.0 < val_fraction < 1.0:
            raise DataError(f"data.val_fraction must be between 0 and 1 (got {val_fraction}); 0.1 is typical.")
        if val_path is not None and val_ref is None:
            raise DataError(f"The validation images {val_path} need their captions: set data.val_ref to a captions "
                            "file (with `hourglass evaluate`, pass it as --ref).")
        if channels not in (None, 1, 3):
            raise DataError(f"data.channels={channels} is not supported: use 1 (grey), 3 (RGB) or leave it unset.")
        self.images, self.captions, self.val_path, self.val_ref = images, captions, val_path, val_ref
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.fit = fit
        self.options = dict(resize=resize, channels=channels, lowercase=lowercase, fit=fit)

    def read(self) -> tuple[CaptionSet, CaptionSet]:
        train = self._training_set()
        if self.val_ref is not None:
            like_train = dict(self.options, channels=train.images.shape[1], resize=list(train.images.shape[-2:]))
            return train, load_caption_set(self.val_path or self.images, self.val_ref, **like_train)
        n_val = max(1, int(round(len(train) * self.val_fraction)))
        if len(train) - n_val < 1:
            raise DataError(f"{self.captions} captions {len(train)} image(s): too few to split off a validation "
                            "set. Add images, or give a separate data.val_ref captions file.")
        order = np.random.default_rng(self.split_seed).permutation(len(train))  # split images, never captions
        return train.subset(np.sort(order[n_val:])), train.subset(np.sort(order[:n_val]))

    def _training_set(self) -> CaptionSet:
        """The training images and captions; for a trained run whose training data has moved away and that is
        evaluated on other data (``val_ref``), none, of the stored shape (its tokenizer is the run's own)."""
        def empty() -> CaptionSet:
            return CaptionSet(np.zeros((0, *self._shape), np.float32), [], [])

        usable = self._shape is not None and self.val_ref is not None
        return training_or_empty(lambda: load_caption_set(self.images, self.captions, **self.options),
                                 empty if usable else None)

    def describe(self) -> dict[str, Any]:
        return {"source": f"{self.images} + {self.captions}", **super().describe()}
