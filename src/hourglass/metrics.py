"""Evaluation helpers shared by the autoencoder family (no Lightning here).

- ``pca_baseline`` / ``pca_error_per_image``: the linear baseline an autoencoder
  has to beat on held-out data (a linear AE with MSE loss learns the PCA
  subspace at best; Baldi & Hornik 1989).
- ``linear_probe``: how linearly separable the codes are by class.
- ``psnr`` / ``ssim``: image quality of reconstructions (Wang et al. 2004 for SSIM).
"""

from __future__ import annotations

import math

import numpy as np
import torch
# torchmetrics >= 1.x moved these to functional.image; the top-level names are deprecated.
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

__all__ = [
    "linear_probe",
    "pca_baseline",
    "pca_error_per_image",
    "pca_reconstruct",
    "psnr",
    "ssim",
    "ssim_kernel_size",
]


# ---------------------------------------------------------------- PCA baseline


def _flatten(x: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, D) float64, so images can be passed as they are."""
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def pca_reconstruct(train: np.ndarray, test: np.ndarray, dim: int) -> np.ndarray:
    """Fit PCA(dim) on ``train`` (N, D) and return the reconstruction of ``test`` (M, D).

    Inputs may be (N, C, H, W) images; they are flattened. ``dim`` is clamped to
    [1, min(N, D)], the largest rank sklearn can fit.
    """
    from sklearn.decomposition import PCA

    train, test = _flatten(train), _flatten(test)
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train has D={train.shape[1]} but test has D={test.shape[1]}")
    dim = max(1, min(int(dim), *train.shape))
    pca = PCA(n_components=dim, svd_solver="full").fit(train)
    return pca.inverse_transform(pca.transform(test))  # (M, D)


def pca_baseline(train: np.ndarray, test: np.ndarray, dim: int) -> float:
    """Mean squared error per element of the PCA(dim) reconstruction of ``test``.

    train: (N, D) or (N, C, H, W); test: (M, D) or (M, C, H, W). Comparable with
    ``F.mse_loss(recon, x)`` of an autoencoder with a ``dim``-sized code.
    """
    test_flat = _flatten(test)
    recon = pca_reconstruct(train, test_flat, dim)  # (M, D)
    return float(np.mean((recon - test_flat) ** 2))


def pca_error_per_image(train: np.ndarray, test: np.ndarray, dim: int) -> float:
    """Summed squared error per image of the PCA(dim) reconstruction, averaged over images.

    Equals ``pca_baseline(...) * D``; comparable with ``mse_loss(..., reduction="sum") / B``.
    """
    test_flat = _flatten(test)
    recon = pca_reconstruct(train, test_flat, dim)  # (M, D)
    return float(np.mean(np.sum((recon - test_flat) ** 2, axis=1)))


# ---------------------------------------------------------------- linear probe


def linear_probe(
    train_codes: np.ndarray,
    train_labels: np.ndarray,
    test_codes: np.ndarray,
    test_labels: np.ndarray,
) -> float:
    """Test accuracy of a standardized logistic regression fit on the codes.

    codes: (N, D) / (M, D); labels: (N,) / (M,). Returns nan when the training
    labels hold a single class (nothing to separate) or the test set is empty.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_codes, test_codes = _flatten(train_codes), _flatten(test_codes)
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if len(np.unique(train_labels)) < 2 or len(test_labels) == 0:
        return math.nan
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(train_codes, train_labels)
    return float(np.mean(probe.predict(test_codes) == test_labels))


# ---------------------------------------------------------------- image quality


def ssim_kernel_size(height: int, width: int, default: int = 11) -> int:
    """The Gaussian kernel for SSIM: ``default`` (11, Wang et al. 2004) or, for
    images smaller than that, the largest odd size that fits (e.g. 7 for 8x8 digits).
    """
    size = min(default, height, width)
    size = size if size % 2 == 1 else size - 1
    if size < 1:
        raise ValueError(f"SSIM needs images of at least 1x1, got {height}x{width}")
    return size


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB over a batch (B, C, H, W) -> scalar.

    Identical images give +inf (zero error).
    """
    return peak_signal_noise_ratio(pred, target, data_range=data_range)


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity over a batch (B, C, H, W) -> scalar in [-1, 1].

    The kernel shrinks for small images (see ``ssim_kernel_size``); the sigma
    follows it so the Gaussian still spans the window as 1.5 does for 11.
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"expected matching (B, C, H, W) tensors, got {pred.shape} and {target.shape}"
        )
    k = ssim_kernel_size(pred.shape[-2], pred.shape[-1])
    sigma = 1.5 * k / 11
    return structural_similarity_index_measure(
        pred.float(), target.float(), kernel_size=k, sigma=sigma, data_range=data_range
    )
