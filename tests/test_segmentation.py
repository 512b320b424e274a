"""Semantic segmentation: decoders (unet, segnet), losses and metrics, paired augmentation, the data module's
errors, training through ``hourglass.training.train`` on a synthetic task, and ``hourglass segment``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hourglass.cli import main
from hourglass.config import Component, ModelConfig, validate
from hourglass.data.segmentation import SegmentationDataModule, augmentation
from hourglass.errors import DataError, IncompatiblePairError
from hourglass.model import DataContext, build_model
from hourglass.tasks.segmentation import cross_entropy, dice_loss, metric_collection
from hourglass.training import train

H, W = 13, 17  # odd on purpose: the encoder pads, the decoder must crop back
CLASSES = ["background", "square"]


# -- synthetic data: bright squares on a dark background -----------------------------------------------------
def write_squares(root: Path, n: int, seed: int, size: tuple[int, int] = (H, W)) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(n):
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        s = int(rng.integers(4, 8))
        y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        image[y:y + s, x:x + s] = rng.integers(190, 256, (s, s, 3), dtype=np.uint8)
        mask[y:y + s, x:x + s] = 1
        if i % 3 == 0:
            mask[0, :] = 255  # an unlabelled row: ignored by loss and metrics
        Image.fromarray(image).save(images / f"img{i:03d}.png")
        Image.fromarray(mask).save(masks / f"img{i:03d}.png")
    return images, masks


def seg_config(train_dir: Path, val_dir: Path, decoder: str = "unet", **train_opts) -> object:
    raw = {
        "name": "squares", "seed": 0,
        "data": {"name": "segmentation", "images": str(train_dir / "images"), "masks": str(train_dir / "masks"),
                 "val_images": str(val_dir / "images"), "val_masks": str(val_dir / "masks"),
                 "classes": CLASSES, "ignore_index": 255, "batch_size": 8, "scale_range": [0.9, 1.2],
                 "color_jitter": 0.1},
        "model": {"encoder": {"name": "conv", "channels": [8, 16]}, "decoder": {"name": decoder, "blocks": 1}},
        "task": {"name": "segmentation", "loss": "ce+dice"},
        "train": {"max_epochs": 6, "lr": 0.01, "progress": False, "monitor": "val/miou", "mode": "max",
                  "checkpoint_every_n_steps": 1000, **train_opts},
    }
    return validate(raw, "test")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: a second thread only adds synchronisation (and stalls badly on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def squares(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("squares")
    write_squares(root / "train", 32, seed=0)
    write_squares(root / "val", 12, seed=1)
    return root / "train", root / "val"


@pytest.fixture(scope="module")
def seg_run(squares, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return train(seg_config(*squares), out=str(tmp_path_factory.mktemp("runs") / "seg"))


# -- decoders ----------------------------------------------------------------------------------------------
def _model(encoder: dict, decoder: dict, shape=(3, H, W), k: int = 2):
    ctx = DataContext("image", {"input_shape": shape}, {"output_shape": shape, "num_classes": k})
    return build_model(ModelConfig(encoder=Component(**encoder), decoder=Component(**decoder)), ctx)


@pytest.mark.parametrize("decoder", ["unet", "segnet"])
@pytest.mark.parametrize("size", [(13, 17), (31, 45)])
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_decoders_give_logits_of_the_exact_input_size(decoder: str, size: tuple[int, int], depth: int) -> None:
    channels = [4 * 2**i for i in range(depth)]
    model = _model({"name": "conv", "channels": channels}, {"name": decoder}, (3, *size), k=3)
    out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, *size)
    out.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_unet_reads_the_skips() -> None:
    """Changing a shallow feature map changes a U-Net's output; a SegNet reads only the deepest map."""
    torch.manual_seed(0)
    for decoder, reads_skips in (("unet", True), ("segnet", False)):
        model = _model({"name": "conv", "channels": [4, 8, 8]}, {"name": decoder}).eval()
        code = model.encode(torch.rand(1, 3, H, W))
        other = code.replace(features=(torch.randn_like(code.features[0]), *code.features[1:]))
        changed = not torch.allclose(model.decode(code), model.decode(other))
        assert changed == reads_skips, decoder


def test_conv_pairs_build_and_mlp_unet_is_refused() -> None:
    for decoder in ("unet", "segnet"):
        model = _model({"name": "conv", "channels": [4, 8]}, {"name": decoder})
        assert model(torch.rand(1, 3, H, W)).shape == (1, 2, H, W)
    with pytest.raises(IncompatiblePairError, match="features"):
        _model({"name": "mlp", "hidden": [8]}, {"name": "unet"})


def test_unet_refuses_a_single_feature_scale() -> None:
    with pytest.raises(IncompatiblePairError, match="at least 2 feature scales"):
        _model({"name": "conv", "channels": [8]}, {"name": "unet"})
    assert _model({"name": "conv", "channels": [8]}, {"name": "segnet"})(torch.rand(1, 3, H, W)).shape == (1, 2, H, W)


# -- losses and metrics ------------------------------------------------------------------------------------
def test_ignore_index_is_excluded_from_losses_and_metrics() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 7, generator=g)
    target = torch.randint(0, 3, (2, 5, 7), generator=g)
    target[:, 0] = 11  # ignored row
    other = logits.clone()
    other[:, :, 0] = torch.randn(2, 3, 7, generator=g) * 10  # anything at ignored pixels
    assert torch.allclose(cross_entropy(logits, target, 11), cross_entropy(other, target, 11))
    assert torch.allclose(dice_loss(logits, target, 11), dice_loss(other, target, 11))
    labelled = target[:, 1:]
    assert torch.allclose(cross_entropy(logits, target, 11),
                          torch.nn.functional.cross_entropy(logits[:, :, 1:], labelled))
    assert cross_entropy(logits, torch.full_like(target, 11), 11) == 0  # no labelled pixel: 0, not nan
    scores = []
    for lg in (logits, other):
        m = metric_collection(3, 11)
        m.update(lg.argmax(1), target)
        scores.append(m.compute())
    for key in ("miou", "pixel_accuracy", "confusion"):
        assert torch.equal(scores[0][key], scores[1][key]), key
    assert int(scores[0]["confusion"].sum()) == labelled.numel()


def test_perfect_prediction_scores_one() -> None:
    target = torch.randint(0, 3, (2, 5, 7))
    m = metric_collection(3, 11)
    m.update(target, target)
    out = m.compute()
    assert out["miou"] == 1 and out["pixel_accuracy"] == 1
    assert dice_loss(torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50, target, 11) < 1e-3


# -- augmentation ------------------------------------------------------------------------------------------
def _pattern() -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric blocky image whose red channel says the class: mask = red > 127."""
    mask = np.zeros((48, 64), np.uint8)
    mask[:, :24] = 1  # a wide band on the left: a mirrored mask disagrees with the image on ~70% of pixels
    mask[28:44, 40:56] = 1
    image = np.zeros((48, 64, 3), np.uint8)
    image[..., 0] = mask * 255
    image[..., 1] = 80
    return image, mask


@pytest.mark.parametrize("scale", [(1.0, 1.0), (0.7, 1.6)])
def test_augmentation_moves_image_and_mask_together(scale) -> None:
    image, mask = _pattern()
    transform = augmentation(48, 64, scale_range=scale, color_jitter=0.0, ignore_index=255)
    flipped = 0
    for seed in range(20):
        transform.set_random_seed(seed)
        out = transform(image=image, mask=mask)
        img, msk = out["image"], out["mask"]
        assert img.shape == image.shape and msk.shape == mask.shape
        labelled = msk != 255
        agree = ((img[..., 0] > 127) == (msk == 1))[labelled].mean()
        # Exact without rescaling; with it, only pixels on a square's edge (linear vs nearest) may differ.
        assert agree == 1.0 if scale == (1.0, 1.0) else agree > 0.95, (seed, agree)
        misaligned = ((img[..., 0] > 127) == (msk[:, ::-1] == 1))[labelled[:, ::-1]].mean()
        assert misaligned < 0.8  # the check would catch a mask that was not flipped with its image
        if scale == (1.0, 1.0) and not np.array_equal(msk, mask):
            assert np.array_equal(msk, mask[:, ::-1])
            flipped += 1
    if scale == (1.0, 1.0):
        assert 0 < flipped < 20


def test_colour_jitter_leaves_the_mask_alone() -> None:
    image, mask = _pattern()
    transform = augmentation(48, 64, scale_range=(1.0, 1.0), color_jitter=0.4, ignore_index=255)
    for seed in range(5):
        transform.set_random_seed(seed)
        out = transform(image=image, mask=mask)
        assert np.array_equal(out["mask"], mask) or np.array_equal(out["mask"], mask[:, ::-1])


# -- the data module and its errors ------------------------------------------------------------------------
def _data(images: Path, masks: Path, **opts) -> SegmentationDataModule:
    dm = SegmentationDataModule(images=str(images), masks=str(masks), classes=CLASSES, **opts)
    dm.setup()
    return dm


def test_data_module_batches_context_artifacts_and_resume(squares, tmp_path: Path) -> None:
    train_dir, val_dir = squares
    dm = _data(train_dir / "images", train_dir / "masks", val_path=str(val_dir), batch_size=4)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, H, W) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (4, H, W) and y.dtype == torch.long and set(y.unique().tolist()) <= {0, 1, 255}
    assert len(dm.val_set) == 12
    ctx = dm.context()
    assert ctx.encoder["input_shape"] == (3, H, W) and ctx.decoder == {"output_shape": (3, H, W), "num_classes": 2}
    dm.save_artifacts(tmp_path)
    saved = json.loads((tmp_path / "classes.json").read_text())
    assert saved == {"classes": CLASSES, "ignore_index": 255, "input_shape": [3, H, W],
                     "class_frequency": pytest.approx(dm.class_frequency().tolist())}

    def epoch(n: int, skip: int = 0) -> list[torch.Tensor]:
        """Epoch n's augmented batches, from a fresh loader, after ``skip`` batches (a resumed run)."""
        if skip:
            dm.resume_at(n, skip)
            loader = dm.train_dataloader()
        else:
            loader = dm.train_dataloader()
            dm.sampler.set_epoch(n)  # what Lightning does at each epoch start
        return [torch.cat([x.flatten(), y.flatten().float()]) for x, y in loader]

    full = epoch(1)
    rest = epoch(1, skip=2)
    assert len(rest) == len(full) - 2 and all(torch.equal(a, b) for a, b in zip(full[2:], rest))
    assert not torch.equal(epoch(0)[0], full[0])  # another epoch, another order and augmentation


def _bad_dir(tmp_path: Path, n: int = 3) -> tuple[Path, Path]:
    write_squares(tmp_path, n, seed=2)
    return tmp_path / "images", tmp_path / "masks"


def test_error_unmatched_images_and_masks(tmp_path: Path) -> None:
    images, masks = _bad_dir(tmp_path)
    (masks / "img000.png").rename(masks / "orphan.png")
    with pytest.raises(DataError) as err:
        _data(images, masks)
    msg = str(err.value)
    assert "1 image(s)" in msg and "img000.png" in msg and "1 mask(s)" in msg and "orphan.png" in msg


def test_error_many_unmatched_masks_are_counted(tmp_path: Path) -> None:
    images, masks = _bad_dir(tmp_path)
    for i in range(8):
        Image.fromarray(np.zeros((H, W), np.uint8)).save(masks / f"extra{i}.png")
    with pytest.raises(DataError, match=r"8 mask\(s\) .* no image .*extra0\.png.*and 3 more"):
        _data(images, masks)


def test_error_mask_value_outside_the_classes(tmp_path: Path) -> None:
    images, masks = _bad_dir(tmp_path)
    bad = np.zeros((H, W), np.uint8)
    bad[2, 3] = 7
    Image.fromarray(bad).save(masks / "img001.png")
    with pytest.raises(DataError, match=r"img001\.png holds the value\(s\) 7.*2 classes"):
        _data(images, masks)


def test_error_rgb_mask(tmp_path: Path) -> None:
    images, masks = _bad_dir(tmp_path)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 128  # a colour-coded mask
    Image.fromarray(rgb).save(masks / "img002.png")
    with pytest.raises(DataError, match=r"img002\.png is a colour \(RGB\) image"):
        _data(images, masks)


def test_error_unreadable_image(tmp_path: Path) -> None:
    images, masks = _bad_dir(tmp_path)
    (images / "img001.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"Cannot read the image .*img001\.png"):
        _data(images, masks)


def test_error_mixed_sizes_and_the_resize_fix(tmp_path: Path) -> None:
    images, masks = _bad_dir(tmp_path)
    write_squares(tmp_path / "big", 1, seed=3, size=(20, 24))
    (tmp_path / "big" / "images" / "img000.png").rename(images / "big.png")
    (tmp_path / "big" / "masks" / "img000.png").rename(masks / "big.png")
    with pytest.raises(DataError, match=r"different sizes.*big\.png is 20x24.*data\.resize"):
        _data(images, masks)
    dm = _data(images, masks, resize=[H, W], val_fraction=0.25)
    assert dm.context().encoder["input_shape"] == (3, H, W)


# -- training, evaluation and the CLI ----------------------------------------------------------------------
def test_training_learns_the_squares(seg_run: Path) -> None:
    metrics = json.loads((seg_run / "metrics.json").read_text())
    final = metrics["final"]
    assert final["miou"] > 0.8, final
    assert set(final) >= {"miou", "pixel_accuracy", "iou/background", "iou/square"}
    assert (seg_run / "classes.json").is_file()
    plots = {p.name for p in (seg_run / "plots").glob("*.png")}
    assert "confusion_matrix.png" in plots and "loss_curves.png" in plots
    assert any(p.startswith("best-1") for p in plots) and any(p.startswith("worst-1") for p in plots)


def test_evaluate_on_other_data_prints_miou_and_per_class_iou(seg_run: Path, squares, capsys) -> None:
    assert main(["evaluate", str(seg_run), "--data", str(squares[1]), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((seg_run / "metrics.json").read_text())["final"]
    assert printed["miou"] == pytest.approx(saved["miou"], abs=1e-6)
    assert "iou/square" in printed


def test_evaluate_a_trained_run_on_masks_with_an_unknown_value_advises_no_new_classes(seg_run: Path, squares,
                                                                                      tmp_path: Path, capsys) -> None:
    other = tmp_path / "other"
    shutil.copytree(squares[1], other)
    bad = np.asarray(Image.open(other / "masks" / "img001.png")).copy()
    bad[0, 0] = 7
    Image.fromarray(bad).save(other / "masks" / "img001.png")
    assert main(["evaluate", str(seg_run), "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "img001.png holds the value(s) 7" in err and "set pixels that are unlabelled to 255, the value" in err
    assert "Add the missing classes" not in err and "Traceback" not in err


def test_segment_writes_masks_and_overlays(seg_run: Path, squares, tmp_path: Path, capsys) -> None:
    val_images = squares[1] / "images"
    big = tmp_path / "big.png"  # another size: resized for the model, the mask comes back at this size
    Image.open(val_images / "img000.png").resize((34, 26)).save(big)
    out = tmp_path / "out"
    assert main(["segment", str(seg_run), str(val_images / "img001.png"), str(big), "--output", str(out)]) == 0
    mask = np.asarray(Image.open(out / "img001.png"))
    truth = np.asarray(Image.open(squares[1] / "masks" / "img001.png"))
    assert mask.shape == (H, W) and set(np.unique(mask)) <= {0, 1}
    assert (mask == truth)[truth != 255].mean() > 0.9
    assert np.asarray(Image.open(out / "img001-overlay.png")).shape == (H, W, 3)
    assert np.asarray(Image.open(out / "big.png")).shape == (26, 34)
    assert np.asarray(Image.open(out / "big-overlay.png")).shape == (26, 34, 3)
    assert main(["segment", str(seg_run), str(tmp_path / "missing.png"), "--output", str(out)]) == 2
    assert f"The input {tmp_path / 'missing.png'} does not exist" in capsys.readouterr().err


def test_segment_never_overwrites_its_inputs(seg_run: Path, squares, tmp_path: Path, capsys) -> None:
    """`segment a.png --output <a.png's folder>` wrote a's mask over a itself: the photo was lost."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("img000.png", "img001.png"):
        (folder / name).write_bytes((squares[1] / "images" / name).read_bytes())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for inputs in ([str(folder / "img000.png")], [str(folder)]):
        assert main(["segment", str(seg_run), *inputs, "--output", str(folder)]) == 2
        err = capsys.readouterr().err
        assert "would overwrite the input image(s)" in err and "nothing was written" in err
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    (tmp_path / "taken").write_text("mine")
    assert main(["segment", str(seg_run), str(folder), "--output", str(tmp_path / "taken")]) == 2
    assert "is a file" in capsys.readouterr().err and (tmp_path / "taken").read_text() == "mine"
    fresh = tmp_path / "never"
    assert main(["segment", str(seg_run), str(tmp_path / "missing.png"), "--output", str(fresh)]) == 2
    assert not fresh.exists()  # the inputs are checked before the output folder is made
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["segment", str(seg_run), str(tmp_path / "empty"), "--output", str(fresh)]) == 2
    assert "holds no image files" in (err := capsys.readouterr().err) and "Point the IMAGE arguments" in err


@pytest.mark.parametrize("setting, said", [
    ({"data": {"ignore_index": 1}}, "data.ignore_index=1 is the id of the class 'square'"),
    ({"task": {"class_weights": [1.0, -5.0]}}, "task.class_weights must be finite, 0 or more and not all 0"),
    ({"task": {"class_weights": [0.0, 0.0]}}, "task.class_weights must be finite, 0 or more and not all 0"),
])
def test_settings_that_would_train_the_wrong_thing_are_refused(squares, tmp_path: Path, setting, said) -> None:
    """ignore_index=1 trained and scored nothing of class 1, silently; negative weights trained to make mistakes,
    and zero weights stopped at step 0 with a NaN loss blamed on the learning rate."""
    from hourglass.errors import ConfigError

    raw = seg_config(*squares, max_epochs=1).to_dict()
    for section, values in setting.items():
        raw[section].update(values)
    with pytest.raises(ConfigError, match=said.replace("(", "\\(")):
        train(validate(raw, "test"), out=str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_run_whose_training_images_moved_away_still_segments_evaluates_and_exports(squares, tmp_path: Path,
                                                                                     capsys) -> None:
    """Run.load read every training image to learn the input shape: moving them made the run unusable."""
    import shutil

    import importlib.util

    train_dir = shutil.copytree(squares[0], tmp_path / "train")
    raw = seg_config(train_dir, squares[1], max_epochs=1).to_dict()
    raw["task"]["class_weights"] = "median_frequency"  # weights computed from the training masks
    run = train(validate(raw, "test"), out=str(tmp_path / "run"))

    def evaluated() -> dict:
        capsys.readouterr()
        assert main(["evaluate", str(run), "--data", str(squares[1]), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    before = evaluated()
    shutil.rmtree(train_dir)
    image = squares[1] / "images" / "img000.png"
    assert main(["segment", str(run), str(image), "--output", str(tmp_path / "masks")]) == 0
    assert (tmp_path / "masks" / "img000.png").is_file()
    # The loss still weighs the classes as in training: the weights come from the stored class frequency.
    assert evaluated() == pytest.approx(before, nan_ok=True)
    assert main(["evaluate", str(run)]) == 0  # its validation images (squares[1]) are still there
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        assert main(["export", str(run), "--output", str(tmp_path / "onnx")]) == 0
        assert (tmp_path / "onnx" / "segmenter.onnx").is_file()
