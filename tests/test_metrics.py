"""PCA baseline, linear probe and image-quality metrics behave as their definitions say."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hourglass import metrics


@pytest.fixture
def low_rank_data():
    """Data of rank 6 plus a little noise, in D=20, as (N, 1, 4, 5) images."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(6, 20))
    x = rng.normal(size=(300, 6)) @ basis + 0.05 * rng.normal(size=(300, 20))
    return x[:200].reshape(200, 1, 4, 5), x[200:].reshape(100, 1, 4, 5)


def test_pca_full_rank_is_exact(low_rank_data):
    train, test = low_rank_data
    assert metrics.pca_baseline(train, test, dim=20) < 1e-12
    assert metrics.pca_baseline(train, test, dim=10_000) < 1e-12  # clamped to min(N, D)


def test_pca_error_decreases_with_dim(low_rank_data):
    train, test = low_rank_data
    errors = [metrics.pca_baseline(train, test, dim=d) for d in (1, 2, 4, 6, 12)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    per_image = metrics.pca_error_per_image(train, test, dim=4)
    assert per_image == pytest.approx(errors[2] * 20)


def test_linear_probe_separable_blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10.0, size=(3, 8))
    labels = rng.integers(0, 3, size=300)
    codes = centres[labels] + rng.normal(size=(300, 8))
    acc = metrics.linear_probe(codes[:200], labels[:200], codes[200:], labels[200:])
    assert acc > 0.9


def test_linear_probe_single_class_is_nan():
    codes = np.random.default_rng(0).normal(size=(10, 3))
    assert math.isnan(metrics.linear_probe(codes, np.zeros(10), codes, np.zeros(10)))


def test_psnr_and_ssim_identical():
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    p = metrics.psnr(x, x)
    assert torch.isinf(p) or p > 80
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-4)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert metrics.psnr(noisy, x) < 30 and metrics.ssim(noisy, x) < 0.99


@pytest.mark.parametrize("size", [8, 5, 3])
def test_ssim_small_images(size):
    x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(0))
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-4)
    assert metrics.ssim(x, 1 - x) < 0.5


def test_ssim_kernel_size():
    assert metrics.ssim_kernel_size(28, 28) == 11
    assert metrics.ssim_kernel_size(8, 8) == 7
    assert metrics.ssim_kernel_size(8, 6) == 5
    assert metrics.ssim_kernel_size(1, 1) == 1
