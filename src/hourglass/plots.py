"""Figures for runs: image grids, code maps, loss curves, attention and masks.

Every plotting function writes one PNG to ``path`` and returns it as a ``Path``;
figures are always closed, so that long sweeps do not leak memory. Inputs are
numpy arrays; images are floats in [0, 1] laid out channels-first, (N, C, H, W)
with C in {1, 3}, the way torch tensors come out of ``.cpu().numpy()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs on servers and in CI without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = [
    "attention_map",
    "attention_on_image",
    "code_map",
    "colorize",
    "confusion_matrix",
    "default_palette",
    "image_grid",
    "interpolation_strip",
    "loss_curves",
    "mask_overlay",
    "sample_grid",
]

# CamVid's 11 classes (Brostow et al. 2009): sky, building, pole, road, pavement,
# tree, sign, fence, car, pedestrian, bicyclist. Used first so that CamVid
# masks look the way people expect; further colours come from a colour map.
_CAMVID = np.array(
    [
        [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128],
        [60, 40, 222], [128, 128, 0], [192, 128, 128], [64, 64, 128],
        [64, 0, 128], [64, 64, 0], [0, 128, 192],
    ],
    dtype=np.uint8,
)  # fmt: skip


# ---------------------------------------------------------------- helpers


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` as PNG (creating parent folders) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _to_hwc(image: np.ndarray) -> np.ndarray:
    """(C, H, W) float image -> (H, W) or (H, W, 3) clipped to [0, 1] for imshow."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:  # already (H, W)
        return np.clip(image, 0.0, 1.0)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected an image shaped (C, H, W) with C in 1 or 3, got {image.shape}")
    image = np.clip(image, 0.0, 1.0)
    if image.shape[0] == 1:
        return image[0]  # (H, W)
    return image.transpose(1, 2, 0)  # (H, W, 3)


def _show(ax, image: np.ndarray) -> None:
    """Draw one (C, H, W) image on ``ax`` without ticks; grey maps for 1 channel."""
    hwc = _to_hwc(image)
    ax.imshow(hwc, cmap="gray" if hwc.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])


def _check_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    """Check a (N, C, H, W) batch and return it as an array."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"{name} must be shaped (N, C, H, W), got {images.shape}")
    return images


# ---------------------------------------------------------------- image grids


def image_grid(
    rows: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | Path,
    max_cols: int = 10,
) -> Path:
    """Rows of images, each titled on the left (e.g. inputs / noisy / reconstructions).

    rows: sequence of R arrays, each (N_r, C, H, W); at most ``max_cols`` of each are shown.
    titles: R row titles.
    """
    if len(rows) != len(titles):
        raise ValueError(f"got {len(rows)} rows but {len(titles)} titles")
    if not rows:
        raise ValueError("image_grid needs at least one row")
    rows = [_check_images(r, f"rows[{i}]")[:max_cols] for i, r in enumerate(rows)]
    n_cols = max(1, max(len(r) for r in rows))
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(1.2 * n_cols + 1, 1.2 * len(rows)), squeeze=False
    )  # axes: (R, n_cols)
    for r, (row, title) in enumerate(zip(rows, titles)):
        for c in range(n_cols):
            ax = axes[r, c]
            if c < len(row):
                _show(ax, row[c])
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center")
    return _save(fig, path)


def sample_grid(images: np.ndarray, path: str | Path, cols: int = 8) -> Path:
    """A square-ish grid of samples. images: (N, C, H, W)."""
    images = _check_images(images)
    n = len(images)
    cols = max(1, min(cols, math.ceil(math.sqrt(n)) if n else 1))
    n_rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(1.2 * cols, 1.2 * n_rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            _show(ax, images[i])
        else:
            ax.axis("off")
    return _save(fig, path)


def interpolation_strip(images: np.ndarray, path: str | Path) -> Path:
    """R strips of S steps each, e.g. decoded latent interpolations.

    images: (R, S, C, H, W); strip r goes left to right from step 0 to step S-1.
    """
    images = np.asarray(images)
    if images.ndim != 5:
        raise ValueError(f"images must be shaped (R, S, C, H, W), got {images.shape}")
    n_rows, n_steps = images.shape[:2]
    fig, axes = plt.subplots(
        n_rows, n_steps, figsize=(1.0 * n_steps, 1.0 * n_rows), squeeze=False
    )  # axes: (R, S)
    for r in range(n_rows):
        for s in range(n_steps):
            _show(axes[r, s], images[r, s])
    return _save(fig, path)


# ---------------------------------------------------------------- codes and curves


def _project_2d(codes: np.ndarray) -> tuple[np.ndarray, str, str]:
    """(N, D) codes -> (N, 2) points plus axis labels; PCA when D > 2."""
    if codes.shape[1] > 2:
        from sklearn.decomposition import PCA

        n_comp = min(2, codes.shape[0])
        points = PCA(n_components=n_comp).fit_transform(codes)  # (N, n_comp)
        if n_comp < 2:  # a single code: pad so it can still be drawn
            points = np.pad(points, ((0, 0), (0, 2 - n_comp)))
        return points, "PCA 1", "PCA 2"
    if codes.shape[1] == 1:  # draw a 1-D code along x
        return np.concatenate([codes, np.zeros_like(codes)], axis=1), "code 1", ""
    return codes, "code 1", "code 2"


def code_map(
    codes: np.ndarray,
    labels: np.ndarray | None,
    path: str | Path,
    title: str = "codes",
) -> Path:
    """2-D scatter of codes (N, D), coloured by ``labels`` (N,) when given.

    When D > 2 the codes are projected to 2 dims with PCA; the axis labels say so.
    """
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2:
        raise ValueError(f"codes must be shaped (N, D), got {codes.shape}")
    points, xlabel, ylabel = _project_2d(codes)  # (N, 2)
    fig, ax = plt.subplots(figsize=(5, 5))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.7)
    else:
        labels = np.asarray(labels)
        classes = np.unique(labels)
        colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, cls in enumerate(classes):
            keep = labels == cls
            ax.scatter(points[keep, 0], points[keep, 1], s=8, alpha=0.7,
                       color=colours(i % colours.N), label=str(cls))  # fmt: skip
        ax.legend(markerscale=2, fontsize="small", loc="best")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def loss_curves(history: dict[str, list[tuple[int, float]]], path: str | Path) -> Path:
    """One line per metric: history maps a name (e.g. "val/loss") to (step, value) pairs.

    The y axis is logarithmic when every value is positive, so that late, small
    improvements stay visible.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    all_values = []
    for name, points in history.items():
        if not points:
            continue
        steps, values = zip(*points)
        all_values.extend(values)
        ax.plot(steps, values, label=name, marker="." if len(points) < 30 else None)
    if all_values and all(v > 0 for v in all_values):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    if all_values:
        ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


# ---------------------------------------------------------------- attention


_MOST_LABELS = 80  # token labels per axis of an attention map


def _every(n: int) -> range:
    """The positions labelled on an axis of n tokens: all of them, or every k-th to stay within _MOST_LABELS."""
    return range(0, n, -(-n // _MOST_LABELS))


def attention_map(
    weights: np.ndarray,
    source: Sequence[str],
    target: Sequence[str],
    path: str | Path,
) -> Path:
    """Heatmap of attention weights (T, S): source tokens on x, target tokens on y.

    Row t is where target token t looked (Bahdanau et al. 2015, fig. 3). A long side (an article, a summary)
    keeps the figure at most ``_MOST_LABELS`` cells wide or high and labels every k-th token.
    """
    weights = np.asarray(weights, dtype=np.float32)
    if weights.shape != (len(target), len(source)):
        raise ValueError(
            f"weights {weights.shape} do not match (len(target), len(source)) = "
            f"({len(target)}, {len(source)})"
        )
    cells = lambda n: min(n, _MOST_LABELS)  # noqa: E731
    fig, ax = plt.subplots(figsize=(0.4 * cells(len(source)) + 2, 0.4 * cells(len(target)) + 1.5))
    im = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0)
    xs, ys = _every(len(source)), _every(len(target))
    ax.set_xticks(xs, labels=[source[i] for i in xs], rotation=90)
    ax.set_yticks(ys, labels=[target[i] for i in ys])
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def _upsample(weights: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of one (h, w) map to (height, width), with pixel centres aligned.

    Separable ``np.interp`` keeps this dependency-free (PIL's float mode is deprecated).
    """
    h, w = weights.shape
    ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)  # (height,)
    xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)  # (width,)
    rows = np.stack([np.interp(xs, np.arange(w), r) for r in weights])  # (h, width)
    return np.stack([np.interp(ys, np.arange(h), c) for c in rows.T], axis=1)  # (height, width)


def attention_on_image(
    image: np.ndarray,
    weights: np.ndarray,
    words: Sequence[str],
    path: str | Path,
) -> Path:
    """One panel per word: the image with that word's attention overlaid.

    image: (C, H, W); weights: (T, h, w) over the encoder's grid, upsampled to
    (H, W) (Xu et al. 2015, "Show, Attend and Tell", fig. 2); words: T tokens.
    """
    weights = np.asarray(weights, dtype=np.float32)
    if weights.ndim != 3 or len(weights) != len(words):
        raise ValueError(f"weights must be (T={len(words)}, h, w), got {weights.shape}")
    height, width = image.shape[-2:]
    n = len(words)
    aspect = width / height
    cols = max(1, min(n, 5, round(5 / aspect)))  # wide images (a strip of digits) stack one word per row
    n_rows = max(1, math.ceil(n / cols))
    panel = 2 * min(max(aspect, 1.0), 3.0)  # inches per panel, wider for wide images
    fig, axes = plt.subplots(n_rows, cols, figsize=(panel * cols, (panel / aspect + 0.4) * n_rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        _show(ax, image)
        heat = _upsample(weights[i], height, width)  # (H, W)
        ax.imshow(heat, cmap="jet", alpha=0.5, extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        ax.set_title(words[i], fontsize="small")
    return _save(fig, path)


# ---------------------------------------------------------------- segmentation


def default_palette(k: int) -> np.ndarray:
    """(k, 3) uint8 distinct colours: CamVid's first, then a qualitative map."""
    if k <= len(_CAMVID):
        return _CAMVID[:k].copy()
    extra = k - len(_CAMVID)
    cmap = plt.get_cmap("tab20" if extra <= 20 else "hsv")
    steps = np.arange(extra) if extra <= 20 else np.linspace(0, 1, extra, endpoint=False)
    more = (np.asarray(cmap(steps))[:, :3] * 255).round().astype(np.uint8)  # (extra, 3)
    return np.concatenate([_CAMVID, more], axis=0)


def colorize(
    mask: np.ndarray, palette: np.ndarray, ignore_index: int | None = None
) -> np.ndarray:
    """(H, W) integer mask -> (H, W, 3) uint8 image; ``ignore_index`` pixels are black.

    Any other class id outside the palette is an error rather than a silent wrap.
    """
    mask = np.asarray(mask)
    palette = np.asarray(palette, dtype=np.uint8)  # (K, 3)
    ignored = mask == ignore_index if ignore_index is not None else np.zeros(mask.shape, bool)
    valid = mask[~ignored]
    if valid.size and (valid.min() < 0 or valid.max() >= len(palette)):
        raise ValueError(
            f"mask has class ids in [{valid.min()}, {valid.max()}] but the palette has "
            f"{len(palette)} colours"
        )
    out = np.zeros((*mask.shape, 3), dtype=np.uint8)  # (H, W, 3)
    out[~ignored] = palette[valid]
    return out


def mask_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    palette: np.ndarray,
    path: str | Path,
    alpha: float = 0.5,
    ignore_index: int | None = None,
) -> Path:
    """The image, the coloured mask, and the mask blended over the image.

    image: (C, H, W) floats in [0, 1]; mask: (H, W) int; palette: (K, 3) uint8.
    Ignored pixels show the bare image in the overlay.
    """
    hwc = _to_hwc(image)
    rgb = np.repeat(hwc[..., None], 3, axis=-1) if hwc.ndim == 2 else hwc  # (H, W, 3)
    colours = colorize(mask, palette, ignore_index).astype(np.float32) / 255.0  # (H, W, 3)
    blend = (1 - alpha) * rgb + alpha * colours
    if ignore_index is not None:
        ignored = np.asarray(mask) == ignore_index
        blend[ignored] = rgb[ignored]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for ax, picture, name in zip(axes, (rgb, colours, blend), ("image", "mask", "overlay")):
        ax.imshow(np.clip(picture, 0, 1))
        ax.set_title(name)
        ax.axis("off")
    return _save(fig, path)


def confusion_matrix(
    cm: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    normalize: bool = True,
) -> Path:
    """Heatmap of a (K, K) confusion matrix: rows are true classes, columns predictions.

    With ``normalize`` each row is divided by its total (empty rows stay zero), so
    the diagonal reads as per-class recall.
    """
    cm = np.asarray(cm, dtype=np.float64)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"cm must be ({k}, {k}) to match class_names, got {cm.shape}")
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)  # (K, 1)
        cm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    fig, ax = plt.subplots(figsize=(0.5 * k + 3, 0.5 * k + 2.5))
    im = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    ax.set_xticks(range(k), labels=list(class_names), rotation=90)
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:  # numbers in the cells stay legible only for small K
        threshold = cm.max() / 2 if cm.size else 0
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, f"{v:.2f}" if normalize else f"{v:g}", ha="center", va="center",
                    fontsize=7, color="white" if v > threshold else "black")  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)
