"""Training end to end: the run directory, the CLI on a trained run, and the Python API."""
from __future__ import annotations

import errno
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hourglass import recipebook
from hourglass.cli import main
from hourglass.errors import DataError
from hourglass.run import Run
from hourglass.training import train


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory, tiny_config) -> Path:
    return train(tiny_config("digits-ae"), out=str(tmp_path_factory.mktemp("runs") / "ae"))


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, tiny_config) -> Path:
    config = tiny_config("digits-ae", "model.bottleneck.name=variational", "task.name=vae", "task.anneal_steps=10")
    return train(config, out=str(tmp_path_factory.mktemp("runs") / "vae"))


def test_run_directory_has_everything(ae_run: Path) -> None:
    for name in ("config.yaml", "model.safetensors", "metrics.json", "report.html",
                 "checkpoints/last.safetensors", "checkpoints/best.safetensors", "logs/metrics.csv"):
        assert (ae_run / name).is_file(), name
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.yaml", "model.safetensors", "metrics.json", "checkpoints/last.safetensors"):
        assert (ae_run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name  # atomic writes keep normal modes
    pngs = sorted(p.name for p in (ae_run / "plots").glob("*.png"))
    assert {"reconstructions.png", "code_map.png", "loss_curves.png"} <= set(pngs)
    metrics = json.loads((ae_run / "metrics.json").read_text())["final"]
    for key in ("mse", "psnr", "ssim", "pca_sse_per_image", "sse_ratio_to_pca", "linear_probe_accuracy"):
        assert np.isfinite(metrics[key]), key
    html = (ae_run / "report.html").read_text()
    assert "data:image/png;base64," in html and "psnr" in html


def test_checkpoints_are_safetensors_not_pickles(ae_run: Path) -> None:
    from hourglass.checkpoint import load_tree

    for path in (ae_run / "checkpoints").iterdir():
        assert path.read_bytes()[:2] != b"\x80\x04"  # not a pickle stream
        tree = load_tree(path)
        assert "state_dict" in tree and "optimizer_states" in tree and "loops" in tree


def test_evaluate_json_matches_the_saved_metrics(ae_run: Path, capsys) -> None:
    assert main(["evaluate", str(ae_run), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((ae_run / "metrics.json").read_text())["final"]
    assert printed["mse"] == pytest.approx(saved["mse"], rel=1e-5)


def test_encode_reconstruct_info(ae_run: Path, tmp_path: Path, capsys) -> None:
    images = (np.random.default_rng(0).random((5, 8, 8)) * 255).astype(np.uint8)
    np.save(tmp_path / "x.npy", images)
    assert main(["encode", str(ae_run), "--data", str(tmp_path / "x.npy"), "--output", str(tmp_path / "c.npy")]) == 0
    assert np.load(tmp_path / "c.npy").shape == (5, 4)
    assert main(["reconstruct", str(ae_run), "--data", str(tmp_path / "x.npy"), "--output", str(tmp_path / "r.png")]) == 0
    assert Image.open(tmp_path / "r.png").size[0] > 0
    assert main(["info", str(ae_run)]) == 0
    out = capsys.readouterr().out
    assert "conv -> plain -> deconv" in out and "parameters" in out
    assert main(["evaluate", str(ae_run), "--data", str(tmp_path / "x.npy"), "--ref", str(tmp_path / "x.npy")]) == 2
    assert "--ref gives the references of parallel text or captions" in capsys.readouterr().err
    # An --output naming the --data file is refused before it is written: the input stays.
    for command in ("encode", "reconstruct"):
        target = tmp_path / ("x.npy" if command == "encode" else "x.png")
        if command == "reconstruct":
            target.write_bytes(b"an image of mine")
        before = target.read_bytes()
        assert main([command, str(ae_run), "--data", str(target), "--output", str(target)]) == 2
        assert "is the --data file itself" in capsys.readouterr().err and target.read_bytes() == before
    # ... or a file inside the --data folder (an input image the grid would replace)
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.fromarray(images[0]).save(folder / "a.png")
    before = (folder / "a.png").read_bytes()
    assert main(["reconstruct", str(ae_run), "--data", str(folder), "--output", str(folder / "a.png")]) == 2
    err = capsys.readouterr().err
    assert "is a file inside the --data folder" in err and "reconstructions.png" in err
    assert (folder / "a.png").read_bytes() == before


@pytest.mark.parametrize("argv, words", [
    (["encode", "RUN", "--data", "x.npy", "--output", "codes.png"], "writes .npy files, so give a name ending in .npy"),
    (["reconstruct", "RUN", "--data", "x.npy", "--output", "r.npy"], "writes .png files"),
    (["sample", "RUN", "-n", "0", "--output", "s.png"], "'0' is not a count"),
    (["sample", "RUN", "-n", "-3", "--output", "s.png"], "'-3' is not a count"),
    (["sample", "RUN", "-n", "100000000", "--output", "s.png"], "too many: at most 4096 (one PNG grid"),  # was OOM
    (["translate", "RUN", "--beam", "100000"], "too many: at most 1024"),  # ran for minutes at gigabytes
    (["translate", "RUN", "--nbest", "100000"], "too many: at most 1024"),  # widened the beam to match
])
def test_cli_refuses_bad_counts_and_output_names_before_loading(argv: list[str], words: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and words in capsys.readouterr().err


def test_python_api_mirrors_the_cli(ae_run: Path) -> None:
    run = Run.load(ae_run)
    x = run.data.val_set.tensors[0][:6].numpy()
    codes = run.encode(x)
    assert codes.shape == (6, 4)
    recon = run.reconstruct(x)
    assert recon.shape == x.shape and 0 <= recon.min() and recon.max() <= 1
    np.testing.assert_allclose(run.decode(codes), recon, atol=1e-5)
    pixels = np.round(x * 255).astype(np.uint8)  # uint8 pixels are scaled to [0, 1] as the CLI's readers do
    np.testing.assert_allclose(run.encode(pixels), run.encode(pixels / 255.0), atol=1e-6)
    with pytest.raises(DataError, match=r"values from 0 to 255.*reads float pixels in \[0, 1\]"):
        run.encode(pixels.astype(np.float32))
    binary = (x > 0.5).astype(np.int64)  # other integer arrays are values, not 0-255 pixels
    np.testing.assert_allclose(run.encode(binary), run.encode(binary.astype(np.float32)), atol=1e-6)


def test_a_run_trained_on_a_relative_path_works_from_any_directory(tmp_path: Path, monkeypatch, tiny_config,
                                                                   capsys) -> None:
    from sklearn.datasets import load_digits

    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "x.npy", (load_digits().images[:300] / 16 * 255).astype(np.uint8))
    monkeypatch.chdir(tmp_path / "data")
    run = train(tiny_config("digits-ae", "data.path=x.npy", "train.max_epochs=1"), out=str(tmp_path / "run"))
    monkeypatch.chdir(tmp_path)
    assert f"path: {tmp_path / 'data' / 'x.npy'}" in (run / "config.yaml").read_text()
    saved = json.loads((run / "metrics.json").read_text())["final"]
    assert Run.load(run).evaluate()["mse"] == pytest.approx(saved["mse"])
    # A run from before paths were stored absolute resumes from where its relative path holds.
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace(f"path: {tmp_path / 'data' / 'x.npy'}", "path: x.npy"))
    monkeypatch.chdir(tmp_path / "data")
    stored = recipebook.load(str(run / "config.yaml"), ["train.max_epochs=2"])
    assert train(stored, resume=run, report=False) == run
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "x.npy").unlink()  # data gone: `info` still tells what the run directory holds
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "conv -> plain -> deconv" in out and "not readable from here" in out
    parameters = json.loads((run / "metrics.json").read_text())["parameters"]
    assert f"parameters  {parameters:,}\n" in out  # as counted on the model (tied weights once)
    assert "final       mse" in out


def test_a_builtin_data_name_is_never_taken_for_a_folder(tmp_path: Path, monkeypatch) -> None:
    from hourglass.data.images import ImageDataModule
    from hourglass.options import absolute_paths

    (tmp_path / "digits").mkdir()
    (tmp_path / "x.npy").touch()
    monkeypatch.chdir(tmp_path)
    options = {"path": "digits", "val_path": "x.npy", "labels": None, "resize": [8, 8]}
    assert absolute_paths(ImageDataModule, options) == {**options, "val_path": str(tmp_path / "x.npy")}


def test_resume_takes_the_configs_early_stopping_patience(tmp_path: Path, tiny_config) -> None:
    from lightning.pytorch.callbacks import Callback

    seen = {}

    class Spy(Callback):
        def on_train_start(self, trainer, pl_module):
            seen["patience"] = trainer.early_stopping_callback.patience

    config = tiny_config("digits-ae", "train.max_epochs=1", "train.early_stopping={monitor: val/loss, patience: 1}")
    run = train(config, out=str(tmp_path / "run"), report=False)
    more = recipebook.load(str(run / "config.yaml"), ["train.max_epochs=2", "train.early_stopping.patience=7"])
    train(more, resume=run, callbacks=[Spy()], report=False)
    assert seen["patience"] == 7


def test_hg_train_stays_the_function_after_the_module_is_imported() -> None:
    import hourglass as hg
    import hourglass.training  # noqa: F401 - a submodule import must not shadow the API function

    assert hg.train is train and callable(hg.train)


def test_sample_needs_a_generative_model(ae_run: Path, vae_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["sample", str(ae_run), "-n", "4", "--output", str(tmp_path / "s.png")]) == 2
    assert "no prior to sample from" in capsys.readouterr().err
    assert main(["sample", str(vae_run), "-n", "4", "--output", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    final = json.loads((vae_run / "metrics.json").read_text())["final"]
    assert final["elbo"] < 0 and final["kl"] > 0
    assert {"samples.png", "interpolation.png"} <= {p.name for p in (vae_run / "plots").glob("*.png")}


@pytest.mark.parametrize("task", ["denoising", "wae"])
def test_other_objectives_train(task: str, tmp_path: Path, tiny_config) -> None:
    run = train(tiny_config("digits-ae", f"task.name={task}", "train.max_epochs=1"), out=str(tmp_path / task))
    final = json.loads((run / "metrics.json").read_text())["final"]
    if task == "denoising":
        assert "denoising_gain_db" in final and "psnr_noisy_input" in final
    else:
        assert final["mmd"] == pytest.approx(final["mmd"]) and (run / "plots" / "samples.png").is_file()


def test_autoencoder_beats_pca_on_held_out_digits(tmp_path: Path) -> None:
    """A small conv autoencoder must reconstruct held-out digits better than PCA at the same code size."""
    from hourglass import recipebook

    config = recipebook.load("digits-ae", ["train.max_epochs=8", "train.progress=false", "model.bottleneck.dim=8"])
    final = json.loads((train(config, out=str(tmp_path / "r")) / "metrics.json").read_text())["final"]
    assert final["sse_ratio_to_pca"] < 1.0, final


def test_train_takes_extra_callbacks_and_can_skip_the_report(tiny_config, tmp_path):
    """``train(callbacks=..., report=False)``: a user's Lightning callback sees every step, and the run keeps
    its config and checkpoints but writes no final metrics, pictures or report."""
    import lightning as L

    class Count(L.Callback):
        steps = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            Count.steps += 1

    run_dir = train(tiny_config("digits-ae", "train.max_epochs=1"), out=str(tmp_path / "r"), callbacks=[Count()],
                    report=False)
    assert Count.steps == 8  # one epoch: the training split of the 300 digits, in batches of 32
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.safetensors").is_file()
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "report.html").exists()


@pytest.mark.parametrize("key, kind, keys, when", [
    ("train.monitor", "val", ["train.monitor=val/blue"], "before its first step"),  # caught by the sanity check
    ("train.early_stopping.monitor", "val",
     ["train.early_stopping={monitor: val/mes}", "trainer.num_sanity_val_steps=0"], "at its first validation"),
    ("train.monitor", "train", ["train.monitor=train/mes"], "at its first validation"),  # logged from a step on
])
def test_a_monitored_metric_the_task_never_logs_is_refused_at_the_first_validation(key, kind, keys, when, tiny_config,
                                                                                     tmp_path) -> None:
    """Lightning raised its own MisconfigurationException only when the first checkpoint was due, after an epoch;
    now the key, what the task does log, a close name and what to do come before (or at) the first validation."""
    from hourglass.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        train(tiny_config("digits-ae", "train.max_epochs=2", *keys), out=str(tmp_path / "r"))
    said = str(err.value)
    assert f"{key} is '{kind}/" in said and f"{kind}/loss, {kind}/mse, {kind}/recon" in said and when in said
    assert (f'Did you mean "{kind}/mse"?' in said) == ("mes" in keys[0])  # "val/blue" is close to none of them
    assert "run the same command again" in said and not (tmp_path / "r" / "checkpoints").exists()


def test_a_run_stopped_before_any_validation_says_it_has_no_best_checkpoint(tmp_path) -> None:
    """The CLI shows our one warning, not Lightning's "could not find the monitored key"."""
    from lightning.pytorch.callbacks import model_checkpoint

    model_checkpoint.warning_cache.clear()  # Lightning warns once a process: an earlier test may have used it up
    args = ["train.max_steps=2", "train.progress=false", "data.limit=300", "model.bottleneck.dim=4"]
    with pytest.warns(UserWarning, match="stopped after 2 steps, before any validation") as caught:
        assert main(["train", "digits-ae", "--set", *args, "--out", str(tmp_path / "r")]) == 0
    assert not any("could not find the monitored key" in str(w.message) for w in caught)
    run = tmp_path / "r"
    assert (run / "model.safetensors").is_file() and not (run / "checkpoints" / "best.safetensors").exists()


def _class_folders(root: Path, names: list[str]) -> Path:
    """root/<name>/k.png, three 8x8 grey images per class, each class its own brightness."""
    for i, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.full((8, 8), 40 * i + k, np.uint8)).save(root / name / f"{k}.png")
    return root


def test_validation_folders_are_labelled_by_the_training_class_names(tmp_path: Path) -> None:
    """Folder labels number the subfolders alphabetically: a validation folder holding only cat/ and dog/ of a
    run trained on bird/, cat/, dog/ was scored with cat as bird (0) and dog as cat (1), silently."""
    from hourglass.data.images import ImageDataModule

    train_dir = _class_folders(tmp_path / "train", ["bird", "cat", "dog"])
    data = ImageDataModule(path=str(train_dir), val_path=str(_class_folders(tmp_path / "val", ["cat", "dog"])))
    assert data.val_set.tensors[1].tolist() == [1, 1, 1, 2, 2, 2] and data.class_names == ("bird", "cat", "dog")
    data = ImageDataModule(path=str(train_dir), val_path=str(_class_folders(tmp_path / "other", ["cat", "fox"])))
    with pytest.raises(DataError, match="the class folder\\(s\\) fox, which the training data"):
        data.setup()


def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    """PIL's convert("L") clips at 255: a 16-bit ramp read as 0 then all 1.0, a float image in [0, 1] as black."""
    from hourglass.data.arrays import load_images
    from hourglass.data.seg_files import read_image

    ramp = np.linspace(0, 1, 8)
    for name, pixels in [("deep", (ramp * 65535).astype(np.uint16)), ("float", ramp.astype(np.float32))]:
        (tmp_path / name).mkdir()
        for k in range(2):
            Image.fromarray(np.tile(pixels, (8, 1))).save(tmp_path / name / f"{k}.{'png' if name == 'deep' else 'tif'}")
        np.testing.assert_allclose(load_images(tmp_path / name).images[0, 0, 0], ramp, atol=1 / 255)
    assert read_image(tmp_path / "deep" / "0.png")[0, :, 0].tolist() == [0, 36, 73, 109, 146, 182, 219, 255]
    # The scale follows the mode, never one image's maximum: a dark 16-bit image stays dark.
    Image.fromarray(np.full((8, 8), 200, np.uint16)).save(tmp_path / "deep" / "1.png")
    assert load_images(tmp_path / "deep").images[1].max() == pytest.approx(1 / 255)
    for value in (-1.0, 1.5):
        Image.fromarray(np.full((8, 8), value, np.float32)).save(tmp_path / "float" / "1.tif")
        with pytest.raises(DataError, match=f"1.tif has F pixels from {value:g} to {value:g}; hourglass reads float"):
            load_images(tmp_path / "float")


def test_an_output_under_a_file_is_one_paragraph_not_a_traceback(ae_run: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "afile").write_text("mine")
    assert main(["encode", str(ae_run), "--data", "digits", "--output", str(tmp_path / "afile" / "c.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot use the path {tmp_path / 'afile' / 'c.npy'}: ") and "Traceback" not in err
    assert (tmp_path / "afile").read_text() == "mine"


def test_the_progress_bar_is_on_stderr_so_stdout_is_the_run_directory(tmp_path: Path) -> None:
    """RUN=$(hourglass train ...) must hold the run directory alone, with the bar on (the default)."""
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "hourglass", "train", "digits-ae", "--out", str(out), "--set", "train.max_epochs=1",
           "data.limit=200", "model.bottleneck.dim=4", "train.progress=true"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == f"{out}\n" and "train/loss" in done.stderr


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     OSError("28752 requested and 4064 written"),  # numpy's short write
                                     RuntimeError("Error while serializing: No space left on device (os error 28)")])
def test_a_failed_atomic_write_names_the_target_and_keeps_the_old_file(tmp_path: Path, failure: Exception) -> None:
    """A full disk (or safetensors' own error for one) named the temporary file beside the target, or nothing."""
    from hourglass.io import atomic_write

    target = tmp_path / "codes.npy"
    target.write_text("old")

    def write(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise failure

    with pytest.raises(OSError) as caught:
        atomic_write(target, write)
    assert caught.value.filename == str(target) and target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["codes.npy"]  # no temporary file left beside it


def test_a_full_disk_and_a_full_stdout_are_one_paragraph(ae_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import hourglass.cli.images as images

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("hourglass.io.atomic_write", full)
    assert main(["encode", str(ae_run), "--data", "digits", "--output", str(tmp_path / "c.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot use the path {tmp_path / 'c.npy'}: No space left on device. Free some")

    def stdout_full(args):
        raise OSError(errno.ENOSPC, "No space left on device")  # print() to a file on a full disk (/dev/full)

    monkeypatch.setattr(images, "cmd_sample", stdout_full)
    assert main(["sample", str(ae_run), "--output", str(tmp_path / "s.png")]) == 2
    assert capsys.readouterr().err.startswith("error: A write failed: No space left on device. Free some space")


@pytest.mark.parametrize("text, words", [
    ("{bad", "is not the JSON that hourglass wrote"),
    ("[1, 2]", "should hold a JSON object with the fields input_shape, num_classes, class_names, but it holds a list"),
    ('{"input_shape": "x"}', 'the field "input_shape" should be a list of positive whole numbers'),
    ('{"input_shape": [1, 8, 8], "num_classes": -3}', 'the field "num_classes" should be a whole number (0: no'),
])
def test_a_damaged_run_artifact_is_one_paragraph_naming_the_file(ae_run: Path, tmp_path: Path, capsys, text: str,
                                                                  words: str) -> None:
    """A hand-edited image_data.json was a JSONDecodeError, TypeError or KeyError from deep inside `encode`."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ae_run, run)
    (run / "image_data.json").write_text(text)
    assert main(["encode", str(run), "--data", "digits", "--output", str(tmp_path / "c.npy")]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'image_data.json'}" in err and words in err and "Restore the file from a copy of the run" in err
    assert not (tmp_path / "c.npy").exists()


def test_info_on_a_run_with_a_broken_metrics_file_warns_and_shows_the_rest(ae_run: Path, tmp_path: Path,
                                                                           capsys) -> None:
    import shutil

    run = shutil.copytree(ae_run, tmp_path / "run")
    for broken, said in [("{bad", "Expecting property name"), ("[1, 2]", "a JSON list")]:
        (run / "metrics.json").write_text(broken)
        with pytest.warns(UserWarning, match=f"metrics.json is not a JSON object of metrics \\({said}"):
            assert main(["info", str(run)]) == 0
        assert "parameters" in capsys.readouterr().out


def test_the_builtin_digits_take_resize_and_channels_like_any_data() -> None:
    """data.resize and data.channels were silently ignored for the digits (and so never checked either)."""
    from hourglass.data.images import read_images

    arr = read_images("digits", resize=[16, 12], channels=3, limit=4)
    assert arr.images.shape == (4, 3, 16, 12) and arr.labels.tolist() == [0, 1, 2, 3]
    assert 0.0 <= arr.images.min() and arr.images.max() <= 1.0
    for resize, channels, said in [([0, 8], None, "is not a size"), (None, 2, "channels=2 is not supported")]:
        with pytest.raises(DataError, match=said):
            read_images("digits", resize=resize, channels=channels)


def test_an_image_run_whose_training_folder_moved_away_stays_usable(tiny_config, tmp_path: Path, capsys) -> None:
    """Run.load read every training image to learn the input shape: once the folder moved, encode, evaluate
    --data and export all failed on "Data path ... does not exist"."""
    folder = _class_folders(tmp_path / "imgs", ["a", "b"])
    run = train(tiny_config("digits-ae", f"data.path={folder}", "train.max_steps=2"), out=str(tmp_path / "run"))
    assert json.loads((run / "image_data.json").read_text()) == {"input_shape": [1, 8, 8], "num_classes": 2,
                                                                 "class_names": ["a", "b"]}
    moved = folder.rename(tmp_path / "elsewhere")
    assert main(["encode", str(run), "--data", str(moved), "--output", str(tmp_path / "c.npy")]) == 0
    assert np.load(tmp_path / "c.npy").shape == (6, 4)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(moved), "--json"]) == 0
    final = json.loads(capsys.readouterr().out)
    assert final["mse"] > 0 and "sse_ratio_to_pca" not in final  # the PCA baseline fits on training images
    assert main(["evaluate", str(run)]) == 2
    assert "evaluate on data elsewhere with --data PATH" in capsys.readouterr().err
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):  # the [export] extra
        assert main(["export", str(run), "--output", str(tmp_path / "onnx")]) == 0  # checked on seeded noise
        encoder = json.loads((tmp_path / "onnx" / "export.json").read_text())["graphs"]["encoder"]
        assert encoder["max_relative_diff"] < 1e-4


def test_a_classifier_trained_with_a_validation_folder_loads_after_its_training_folder_moved(tiny_config,
                                                                                             tmp_path: Path) -> None:
    """The missing training folder gave an empty training split, whose 0 classes then refused the classifier."""
    train_dir = _class_folders(tmp_path / "train", ["a", "b"])
    val_dir = _class_folders(tmp_path / "val", ["a", "b"])
    config = tiny_config("digits-ae", f"data.path={train_dir}", f"data.val_path={val_dir}", "train.max_steps=2",
                         "model.bottleneck={name: none}", "model.decoder={name: classifier}",
                         "task={name: classification}")
    run_dir = train(config, out=str(tmp_path / "run"))
    before = Run.load(run_dir).evaluate()
    train_dir.rename(tmp_path / "moved")
    after = Run.load(run_dir).evaluate()  # its validation folder is still there
    assert after.pop("train_examples") == 0 and before.pop("train_examples") == 6  # what the run can read now
    assert after == pytest.approx(before) and Run.load(run_dir).data.context().decoder["num_classes"] == 2
