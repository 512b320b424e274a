"""Image array loaders: folders, IDX, .npy/.npz, digits, and one clear DataError per mistake."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hourglass.data.arrays import ImageArray, load_digits_images, load_images, read_idx
from hourglass.errors import DataError

MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def write_idx(path: Path, arr: np.ndarray, *, compress: bool = False) -> Path:
    """An IDX file: 0, 0, type code, ndim, big-endian int32 dims, big-endian data."""
    header = struct.pack(">BBBB", 0, 0, IDX_CODES[arr.dtype.type], arr.ndim)
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_png(path: Path, size_hw: tuple[int, int] = (6, 5), mode: str = "L", value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, (size_hw[1], size_hw[0]), colour).save(path)
    return path


def digits_uint8(n: int = 4, h: int = 6, w: int = 5) -> np.ndarray:
    return (np.arange(n * h * w).reshape(n, h, w) % 256).astype(np.uint8)


def fails(call, *needles: str) -> str:
    """Run ``call``, expect a DataError whose message contains every needle; return the message."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"
    assert "Traceback" not in message and "\n" not in message
    return message


def check(arr: ImageArray, shape: tuple[int, ...]) -> None:
    assert arr.images.shape == shape and arr.images.dtype == np.float32
    assert 0.0 <= arr.images.min() and arr.images.max() <= 1.0
    if arr.labels is not None:
        assert arr.labels.dtype == np.int64 and arr.labels.shape == (shape[0],)


# ---------------------------------------------------------------- happy paths

def test_digits_are_8x8_in_unit_range_with_ten_labels():
    digits = load_digits_images()
    check(digits, (1797, 1, 8, 8))
    assert digits.images.max() == 1.0 and set(digits.labels.tolist()) == set(range(10))
    assert len(digits) == 1797 and digits.class_names == tuple("0123456789")


@pytest.mark.parametrize("dtype", list(IDX_CODES))
def test_read_idx_round_trips_every_type_code(tmp_path, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    back = read_idx(write_idx(tmp_path / "a-idx3-ubyte", arr))
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative and np.array_equal(back, arr)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a-idx3-ubyte.gz", arr, compress=True)), arr)


def test_idx_file_finds_its_sibling_labels(tmp_path):
    images = write_idx(tmp_path / "train-images-idx3-ubyte.gz", digits_uint8(), compress=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([3, 1, 4, 1], np.uint8), compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([9, 9], np.uint8), compress=True)
    loaded = load_images(images)
    check(loaded, (4, 1, 6, 5))
    assert loaded.labels.tolist() == [3, 1, 4, 1]
    assert np.allclose(loaded.images[0, 0], digits_uint8()[0] / 255.0)


def test_idx_folder_explicit_labels_limit_resize_channels(tmp_path):
    write_idx(tmp_path / "images-idx3-ubyte", digits_uint8())
    write_idx(tmp_path / "labels-idx1-ubyte", np.array([0, 1, 2, 3], np.uint8))
    check(load_images(tmp_path), (4, 1, 6, 5))
    np.save(tmp_path / "mine.npy", np.array([5, 6, 7, 8]))
    loaded = load_images(tmp_path, labels=tmp_path / "mine.npy", limit=3, resize=(8, 8), channels=3)
    check(loaded, (3, 3, 8, 8))
    assert loaded.labels.tolist() == [5, 6, 7]


def test_idx_without_labels_gives_none(tmp_path):
    assert load_images(write_idx(tmp_path / "x-idx3-ubyte", digits_uint8())).labels is None


def test_real_mnist_folder_loads():
    if not MNIST.is_dir():
        pytest.skip(f"{MNIST} is absent")
    mnist = load_images(MNIST)
    check(mnist, (8000, 1, 28, 28))
    assert set(mnist.labels.tolist()) == set(range(10))


def test_flat_grey_folder_has_no_labels(tmp_path):
    for name in ["b.png", "a.jpg", "sub/c.bmp", ".hidden.png"]:
        write_png(tmp_path / name)
    loaded = load_images(tmp_path)
    check(loaded, (3, 1, 6, 5))
    assert loaded.labels is None and loaded.class_names is None


def test_class_subfolders_give_sorted_labels(tmp_path):
    for name in ["dog/1.png", "cat/2.png", "cat/1.png", "emu/deep/1.png"]:
        write_png(tmp_path / name)
    loaded = load_images(tmp_path, limit=3)
    check(loaded, (3, 1, 6, 5))
    assert loaded.class_names == ("cat", "dog", "emu") and loaded.labels.tolist() == [0, 0, 1]


def test_colour_is_inferred_and_can_be_forced(tmp_path):
    write_png(tmp_path / "a.png", mode="RGB", value=200)
    write_png(tmp_path / "b.png", mode="L")
    check(load_images(tmp_path), (2, 3, 6, 5))
    grey = load_images(tmp_path, channels=1, resize=(4, 4))
    check(grey, (2, 1, 4, 4))


def test_grey_palette_image_counts_as_grey(tmp_path):
    Image.new("L", (5, 6), 90).convert("P").save(tmp_path / "p.gif")
    check(load_images(tmp_path), (1, 1, 6, 5))


@pytest.mark.parametrize("layout", ["nhw", "nchw", "nhwc"])
def test_npy_layouts(tmp_path, layout):
    x = np.random.default_rng(0).random((4, 6, 5), dtype=np.float32)
    arr = {"nhw": x, "nchw": np.stack([x] * 3, 1), "nhwc": np.stack([x] * 3, -1)}[layout]
    loaded = load_images(_save(tmp_path / "x.npy", arr))
    check(loaded, (4, 1 if layout == "nhw" else 3, 6, 5))
    assert np.allclose(loaded.images[:, 0], x)


def test_npy_scaling_rules(tmp_path):
    assert load_images(_save(tmp_path / "u.npy", digits_uint8())).images.max() == pytest.approx(119 / 255)
    floats = digits_uint8().astype(np.float64) * 2  # 0..238: treated as 0..255
    assert load_images(_save(tmp_path / "f.npy", floats)).images.max() == pytest.approx(238 / 255)


def test_npz_with_x_and_y(tmp_path):
    np.savez(tmp_path / "d.npz", x=digits_uint8(), y=np.array([1.0, 0.0, 1.0, 2.0]))
    loaded = load_images(tmp_path / "d.npz", limit=2)
    check(loaded, (2, 1, 6, 5))
    assert loaded.labels.tolist() == [1, 0]


def _save(path: Path, arr: np.ndarray) -> Path:
    np.save(path, arr)
    return path


# ---------------------------------------------------------------- one DataError per mistake

def test_missing_path(tmp_path):
    fails(lambda: load_images(tmp_path / "nope"), "nope", "does not exist", "folder of images", ".npz")


def test_missing_labels_file(tmp_path):
    images = write_idx(tmp_path / "x-idx3-ubyte", digits_uint8())
    fails(lambda: load_images(images, labels=tmp_path / "lab.npy"), "lab.npy", "does not exist")


def test_bad_magic_number(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(struct.pack(">I", 1234) + bytes(20))
    fails(lambda: load_images(bad), str(bad), "1234", "2051", "re-download")


def test_truncated_idx(tmp_path):
    path = write_idx(tmp_path / "t-idx3-ubyte", digits_uint8())  # 4 items of 30 bytes
    path.write_bytes(path.read_bytes()[:-50])
    fails(lambda: read_idx(path), str(path), "truncated", "4 items", "120 bytes", "70 bytes", "again")


def test_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "t-idx3-ubyte.gz", digits_uint8(), compress=True)
    path.write_bytes(path.read_bytes()[:-12])
    fails(lambda: load_images(path), str(path), "gzip", "again")


def test_corrupt_image(tmp_path):
    write_png(tmp_path / "good.png")
    (tmp_path / "zz.png").write_bytes(b"not a png at all")
    fails(lambda: load_images(tmp_path), "zz.png", "corrupt", "Remove it", "re-export")


def test_truncated_image_is_corrupt(tmp_path):
    path = tmp_path / "cut.png"  # a valid header, so the failure comes while decoding the pixels
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:2000])
    fails(lambda: load_images(tmp_path), "cut.png", "re-export")


def test_mixed_sizes(tmp_path):
    write_png(tmp_path / "a.png", size_hw=(6, 5))
    write_png(tmp_path / "b.png", size_hw=(7, 9))
    message = fails(lambda: load_images(tmp_path), "a.png", "6x5", "b.png", "7x9", "data.resize=[H,W]")
    assert str(tmp_path) in message
    check(load_images(tmp_path, resize=(6, 5)), (2, 1, 6, 5))


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    fails(lambda: load_images(tmp_path), str(tmp_path), "no images", ".png")


def test_empty_array(tmp_path):
    path = _save(tmp_path / "e.npy", np.zeros((0, 4, 4), np.uint8))
    fails(lambda: load_images(path), str(path), "no images")


def test_label_count_mismatch(tmp_path):
    images = write_idx(tmp_path / "images-idx3-ubyte", digits_uint8())
    labels = write_idx(tmp_path / "labels-idx1-ubyte", np.array([1, 2, 3], np.uint8))
    fails(lambda: load_images(images), str(images), str(labels), "4 images", "number 3", "labels=")
    np.savez(tmp_path / "d.npz", images=digits_uint8(), labels=np.arange(5))
    fails(lambda: load_images(tmp_path / "d.npz"), "d.npz", "4 images", "number 5")


def test_unsupported_npy_shape(tmp_path):
    path = _save(tmp_path / "s.npy", np.zeros((2, 4, 4, 4), np.uint8))
    fails(lambda: load_images(path), str(path), "(2, 4, 4, 4)", "(N, H, W, C)")
    labels_only = write_idx(tmp_path / "labels-idx1-ubyte", np.arange(3, dtype=np.uint8))
    fails(lambda: load_images(labels_only), "looks like labels")


def test_unknown_extension(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2,3")
    fails(lambda: load_images(path), str(path), "'.csv'", "np.save")


def test_values_out_of_range(tmp_path):
    path = _save(tmp_path / "r.npy", np.full((2, 3, 3), -2.0))
    fails(lambda: load_images(path), str(path), "-2.0", "[0, 1]", "0..255")


def test_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "o.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    fails(lambda: load_images(path), str(path), "never unpickles", "np.save")
    np.savez(tmp_path / "o.npz", images=np.array([None], dtype=object))
    fails(lambda: load_images(tmp_path / "o.npz"), "o.npz", "never unpickles")


def test_npz_without_images_key(tmp_path):
    np.savez(tmp_path / "k.npz", pixels=digits_uint8())
    fails(lambda: load_images(tmp_path / "k.npz"), "k.npz", "pixels", "images=")


def test_labels_argument_on_image_folder(tmp_path):
    write_png(tmp_path / "a.png")
    fails(lambda: load_images(tmp_path, labels=tmp_path / "y.npy"), str(tmp_path), "subfolder")
