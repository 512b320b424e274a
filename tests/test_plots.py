"""Every plot writes a valid PNG and returns its path; palettes are pure and distinct."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hourglass import plots


def _assert_png(path: Path) -> None:
    assert isinstance(path, Path)
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid(tmp_path, rng, channels):
    rows = [rng.random((12, channels, 8, 8)) for _ in range(3)]
    rows[2] = rows[2][:4]  # ragged rows are padded with blank axes
    out = plots.image_grid(rows, ["input", "noisy", "recon"], tmp_path / "g.png", max_cols=10)
    _assert_png(out)


def test_image_grid_rejects_mismatched_titles(tmp_path, rng):
    with pytest.raises(ValueError, match="titles"):
        plots.image_grid([rng.random((2, 1, 4, 4))], ["a", "b"], tmp_path / "g.png")


def test_sample_grid_and_interpolation(tmp_path, rng):
    _assert_png(plots.sample_grid(rng.random((10, 3, 8, 8)), tmp_path / "s.png", cols=8))
    _assert_png(plots.interpolation_strip(rng.random((3, 7, 1, 8, 8)), tmp_path / "i.png"))


@pytest.mark.parametrize("dim", [1, 2, 16])
@pytest.mark.parametrize("with_labels", [True, False])
def test_code_map(tmp_path, rng, dim, with_labels):
    codes = rng.normal(size=(50, dim))
    labels = rng.integers(0, 4, size=50) if with_labels else None
    _assert_png(plots.code_map(codes, labels, tmp_path / "c.png"))


def test_loss_curves_log_and_linear(tmp_path):
    positive = {
        "train/loss": [(i, 1.0 / (i + 1)) for i in range(20)],
        "val/loss": [(0, 1.0), (10, 0.2)],
    }
    _assert_png(plots.loss_curves(positive, tmp_path / "pos.png"))
    mixed = {"train/elbo": [(0, -3.0), (1, 0.5)], "empty": []}
    _assert_png(plots.loss_curves(mixed, tmp_path / "nested" / "mixed.png"))


def test_attention_map(tmp_path, rng):
    weights = rng.dirichlet(np.ones(5), size=4)  # (T=4, S=5)
    out = plots.attention_map(weights, list("abcde"), ["w", "x", "y", "z"], tmp_path / "a.png")
    _assert_png(out)
    with pytest.raises(ValueError):
        plots.attention_map(weights.T, list("abcde"), list("wxyz"), tmp_path / "bad.png")


def test_a_long_attention_map_stays_readable(tmp_path, rng):
    from PIL import Image

    weights = rng.dirichlet(np.ones(400), size=120)  # an article of 400 pieces, a summary of 120
    short = Image.open(plots.attention_map(weights[:80, :80], [f"s{i}" for i in range(80)],
                                           [f"t{i}" for i in range(80)], tmp_path / "short.png"))
    long = Image.open(plots.attention_map(weights, [f"s{i}" for i in range(400)], [f"t{i}" for i in range(120)],
                                          tmp_path / "long.png"))
    assert long.size[0] <= short.size[0] * 1.2 and long.size[1] <= short.size[1] * 1.2  # no wider than 80 tokens
    assert list(plots._every(400))[:3] == [0, 5, 10] and len(plots._every(400)) == 80


def test_attention_on_image(tmp_path, rng):
    weights = rng.random((3, 4, 4))  # (T, h, w) over a 4x4 encoder grid
    image = rng.random((3, 32, 32))
    out = plots.attention_on_image(image, weights, ["a", "dog", "<eos>"], tmp_path / "x.png")
    _assert_png(out)


def test_upsample_keeps_constant_and_range(rng):
    up = plots._upsample(np.full((3, 3), 0.25), 12, 9)
    assert up.shape == (12, 9) and np.allclose(up, 0.25)
    w = rng.random((4, 4))
    up = plots._upsample(w, 16, 16)
    assert up.min() >= w.min() - 1e-9 and up.max() <= w.max() + 1e-9


@pytest.mark.parametrize("k", [2, 11, 12, 40])
def test_default_palette_distinct(k):
    palette = plots.default_palette(k)
    assert palette.shape == (k, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette}) == k


def test_colorize_and_ignore_index():
    palette = plots.default_palette(3)
    mask = np.array([[0, 1], [2, 255]])
    rgb = plots.colorize(mask, palette, ignore_index=255)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 1] == palette[1]).all() and (rgb[1, 1] == 0).all()
    with pytest.raises(ValueError, match="palette"):
        plots.colorize(mask, palette)  # 255 is out of range when not ignored


def test_mask_overlay_and_confusion(tmp_path, rng):
    mask = rng.integers(0, 11, size=(16, 16))
    mask[0] = 255
    palette = plots.default_palette(11)
    image = rng.random((3, 16, 16))
    _assert_png(plots.mask_overlay(image, mask, palette, tmp_path / "m.png", ignore_index=255))
    _assert_png(plots.mask_overlay(image[:1], mask % 11, palette, tmp_path / "grey.png"))
    cm = rng.integers(0, 20, size=(4, 4))
    cm[3] = 0  # an absent class must not divide by zero
    for normalize in (True, False):
        path = tmp_path / f"cm_{normalize}.png"
        out = plots.confusion_matrix(cm, list("abcd"), path, normalize=normalize)
        _assert_png(out)
