"""Bad input gets one clear paragraph (exit status 2), never a traceback from inside torch."""
from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hourglass.cli import main
from hourglass.errors import TrainingError

FAST = ["--set", "train.max_epochs=1", "train.progress=false", "data.limit=200", "model.bottleneck.dim=4"]


def _fails(capsys, *argv: str) -> str:
    """Run the CLI, expect exit status 2 and a one-paragraph message; return it."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err and "\n" not in err, err
    return err


def test_unknown_config_key(capsys) -> None:
    err = _fails(capsys, "train", "digits-ae", "--set", "train.learning_rate=0.1")
    assert 'unknown key "train.learning_rate"' in err and "digits-ae.yaml" in err


def test_wrong_value_type(capsys) -> None:
    err = _fails(capsys, "train", "digits-ae", "--set", "train.max_epochs=many")
    assert '"train.max_epochs"' in err and "'many'" in err


def test_unknown_encoder_lists_known(capsys) -> None:
    err = _fails(capsys, "train", *FAST, "model.encoder.name=resnet")
    assert 'Unknown encoder "resnet"' in err and "conv" in err and "mlp" in err


def test_incompatible_pair_names_both_parts(capsys) -> None:
    err = _fails(capsys, "train", *FAST, "model.encoder={name: mlp}", "model.decoder={name: gru-attention}",
                 "model.bottleneck={name: none}")
    assert '"gru-attention" needs `memory`' in err and 'encoder "mlp" provides only `vector`' in err


@pytest.mark.parametrize("setting, words", [
    ("model.decoder={name: unet}", 'Decoder "unet" writes mask, but the "autoencoder" task trains a decoder that '
                                   "writes image. Set model.decoder.name to one of: deconv, mlp."),
    ("task.name=classification", 'Decoder "deconv" writes image, but the "classification" task trains a decoder '
                                 "that writes labels. Set model.decoder.name to one of: classifier."),
])
def test_a_decoder_that_writes_the_wrong_kind_of_output_is_refused(capsys, setting: str, words: str) -> None:
    assert words in _fails(capsys, "train", *FAST, setting)


def test_sequence_decoder_for_an_image_task_is_refused(capsys) -> None:
    err = _fails(capsys, "train", *FAST, "model.decoder={name: gru-attention}", "model.bottleneck={name: none}")
    assert "needs a Decoder" in err


def test_missing_data_path(capsys, tmp_path: Path) -> None:
    err = _fails(capsys, "train", *FAST, f"data.path={tmp_path / 'nowhere'}")
    assert str(tmp_path / "nowhere") in err and "does not exist" in err


def test_truncated_idx(capsys, tmp_path: Path) -> None:
    path = tmp_path / "images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">IIII", 2051, 100, 28, 28) + bytes(28 * 28 * 3))  # header says 100, holds 3
    err = _fails(capsys, "train", *FAST, f"data.path={path}")
    assert str(path) in err and "100" in err


def test_corrupt_image(capsys, tmp_path: Path) -> None:
    for i in range(4):
        Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "2.png").write_bytes(b"\x89PNG not really")
    err = _fails(capsys, "train", *FAST, f"data.path={tmp_path}")
    assert "2.png" in err


def test_mixed_sizes_suggest_resize(capsys, tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((9, 7), np.uint8)).save(tmp_path / "b.png")
    err = _fails(capsys, "train", *FAST, f"data.path={tmp_path}")
    assert "data.resize" in err


def test_empty_dataset(capsys, tmp_path: Path) -> None:
    err = _fails(capsys, "train", *FAST, f"data.path={tmp_path}")
    assert str(tmp_path) in err and ("no image" in err.lower() or "empty" in err.lower())


def test_checkpoint_of_another_model(capsys, tmp_path: Path) -> None:
    assert main(["train", *FAST, "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *FAST, "model.bottleneck.dim=6", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    shutil.copy(tmp_path / "b" / "model.safetensors", tmp_path / "a" / "model.safetensors")
    err = _fails(capsys, "evaluate", str(tmp_path / "a"))
    assert "weights of another model" in err and "bottleneck.proj.weight" in err


def test_evaluate_a_folder_that_is_not_a_run(capsys, tmp_path: Path) -> None:
    err = _fails(capsys, "evaluate", str(tmp_path))
    assert "not an hourglass run directory" in err


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(monkeypatch, tmp_path: Path) -> None:
    from hourglass import recipebook
    from hourglass.checkpoint import load_tree
    from hourglass.tasks.autoencoder import AutoencoderTask
    from hourglass.training import train

    real_loss = AutoencoderTask.loss

    def poisoned(self, batch, stage, batch_idx=0):
        loss, logs = real_loss(self, batch, stage, batch_idx)
        return (loss * float("nan"), logs) if stage == "train" and self.global_step == 7 else (loss, logs)

    monkeypatch.setattr(AutoencoderTask, "loss", poisoned)
    config = recipebook.load("digits-ae", FAST[1:] + ["train.checkpoint_every_n_steps=3", "train.max_epochs=3"])
    with pytest.raises(TrainingError, match=r"loss became nan at step 7 .*last good checkpoint.*last.safetensors"):
        train(config, out=str(tmp_path / "run"))
    tree = load_tree(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert tree["global_step"] == 6
    assert all(torch.isfinite(t).all() for t in tree["state_dict"].values())
    # The fix the message gives: resume with a lower train.lr, which replaces the checkpoint's learning rate.
    monkeypatch.undo()
    lower = recipebook.load(str(tmp_path / "run" / "config.yaml"), ["train.lr=0.0001"])
    train(lower, resume=tmp_path / "run", report=False)
    tree = load_tree(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert tree["global_step"] > 6 and tree["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-4)


def test_nan_loss_before_any_checkpoint_says_to_start_again(monkeypatch, tmp_path: Path) -> None:
    from hourglass import recipebook
    from hourglass.tasks.autoencoder import AutoencoderTask
    from hourglass.training import train

    monkeypatch.setattr(AutoencoderTask, "loss", lambda self, *args, **kwargs: (torch.tensor(float("inf")), {}))
    with pytest.raises(TrainingError, match=r"loss became inf at step 0 .*No checkpoint was due yet.*same command again"):
        train(recipebook.load("digits-ae", FAST[1:]), out=str(tmp_path / "run"))
    monkeypatch.undo()  # the same --out again: the stopped run holds no weights, so it is reused
    assert train(recipebook.load("digits-ae", FAST[1:]), out=str(tmp_path / "run")) == tmp_path / "run"
    assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.mark.parametrize("setting, words", [
    ("data.batch_size=0", '"data.batch_size" has a wrong value 0: .* at least 1'),
    ("model.bottleneck.dim=-1", '"model.bottleneck.dim" has a wrong value -1: .* at least 1'),
    ("model.encoder.channels=[]", '"model.encoder.channels" has a wrong value \\[\\]: .*non-empty list'),
    ("model.encoder.channels=[32, 0]", '"model.encoder.channels" .* at least 1'),
    ("task.loss=l3", "\"task.loss\" has a wrong value 'l3': Input should be 'mse', 'bce' or 'l1'\\.$"),
    ("train.gradient_clip=-1", '"train.gradient_clip" has a wrong value -1: .*greater than or equal to 0'),
    ("task.noise_level=-1", '"task.noise_level" has a wrong value -1: .* a finite number, 0 or more'),
])
def test_option_out_of_range_is_refused_before_anything_runs(capsys, tmp_path: Path, setting: str, words: str) -> None:
    import re

    err = _fails(capsys, "train", *FAST, setting, "--out", str(tmp_path / "run"))
    assert re.search(words, err), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["../escape", "", "-x", "a/b"])
def test_a_run_name_must_be_one_folder_name(capsys, tmp_path: Path, monkeypatch, name: str) -> None:
    """``name=../escape`` wrote runs/../escape-DATE, outside runs/; an empty name made runs/-DATE, an option."""
    monkeypatch.chdir(tmp_path)
    err = _fails(capsys, "train", *FAST, f"name={name!r}")
    assert f'"name" has a wrong value {name!r}: String should match pattern' in err
    assert not list(tmp_path.iterdir())


def test_a_noise_fraction_above_one_is_refused(capsys, tmp_path: Path) -> None:
    err = _fails(capsys, "train", *FAST, "task.noise=masking", "task.noise_level=7", "--out", str(tmp_path / "run"))
    assert 'task.noise_level is the fraction of pixels that "masking" noise changes, from 0 to 1; got 7' in err


def test_a_seed_out_of_range_is_refused_in_the_config_and_on_the_command_line(capsys, tmp_path: Path) -> None:
    """Lightning's seed_everything and torch's generators raised their own overflow errors."""
    err = _fails(capsys, "train", *FAST, "seed=4294967296", "--out", str(tmp_path / "run"))
    assert '"seed" has a wrong value 4294967296' in err and not (tmp_path / "run").exists()
    for command in (["sample", str(tmp_path), "--output", str(tmp_path / "s.png")], ["translate", str(tmp_path)]):
        with pytest.raises(SystemExit):
            main([*command, "--seed", "99999999999999999999"])
        assert "is not a seed: give a whole number from 0 to 4294967295" in capsys.readouterr().err


@pytest.mark.parametrize("setting, words", [
    ("trainer.precision=foo", "Precision 'foo' is invalid"),
    ("trainer.strategy=ddpx", "invalid strategy name"),
    ("trainer.max_epochs=3", '"trainer.max_epochs" is set by hourglass from train.max_epochs'),
    ("trainer.devices=abc", "should be an int > 0"),  # a TypeError inside Lightning
    ("trainer.precision=64", "(float64) is not supported"),  # failed in the first conv, float32 input
    ("trainer.accelerator=tpu", "torch_xla"),  # an ImportError inside Lightning: its package is not installed
])
def test_bad_trainer_value_is_a_config_error_and_writes_nothing(capsys, tmp_path: Path, setting: str,
                                                                words: str) -> None:
    err = _fails(capsys, "train", *FAST, setting, "--out", str(tmp_path / "run"))
    assert words in err and "trainer." in err
    assert not (tmp_path / "run").exists()


TEXT = ["multi30k-gru-attention", "--set", "data.tsv=pairs.tsv", "data.source=null", "data.target=null",
        "data.val_path=null", "data.val_ref=null"]


@pytest.mark.parametrize("setting, words", [
    ("data.source_col=-3", '"data.source_col" has a wrong value -3'),
    ("data.source_col=1", "data.source_col and data.target_col are both 1"),
    ("data.max_length=0", '"data.max_length" has a wrong value 0'),
    ("data.train_limit=0", '"data.train_limit" has a wrong value 0'),
    ("task.max_len_ratio=-1", '"task.max_len_ratio" has a wrong value -1'),
    ("task.length_penalty=1000", "task.length_penalty is GNMT's alpha: a number from -10 to 10, got 1000"),
    ("task.length_penalty=.nan", "task.length_penalty is GNMT's alpha: a number from -10 to 10, got nan"),
    ("task.label_smoothing=1.5", '"task.label_smoothing" has a wrong value 1.5: Input should be less than 1.'),
    ("model.encoder.dropout=2", "It must be a number from 0 up to, not including, 1."),
    ("model.decoder.dropout=-0.1", '"model.decoder.dropout" has a wrong value -0.1: Input should be greater'),
    ("task.max_len=0", '"task.max_len" has a wrong value 0'),
])
def test_text_options_out_of_range_are_refused(capsys, tmp_path: Path, monkeypatch, setting: str, words: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pairs.tsv").write_text("".join(f"ein satz {i}\ta sentence {i}\n" for i in range(40)))
    err = _fails(capsys, "train", *TEXT, "data.vocab=40", setting, "--out", str(tmp_path / "run"))
    assert words in err and not (tmp_path / "run").exists()


def test_tsv_and_source_files_together_say_how_to_clear_the_recipes_pair(capsys, tmp_path: Path) -> None:
    err = _fails(capsys, "train", "multi30k-gru-attention", "--set", f"data.tsv={tmp_path / 'p.tsv'}")
    assert "not several" in err and "data.source=null data.target=null" in err


def test_an_existing_run_is_never_overwritten_by_a_new_one(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(run)]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    err = _fails(capsys, "train", *FAST, "data.batch_size=0", "--out", str(run))  # a bad config changes nothing
    err = _fails(capsys, "train", *FAST, "--out", str(run))
    assert f"Will not train into {run}: it already holds a run" in err and f"--resume {run}" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_refuses_a_changed_model_and_an_extra_recipe(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(run)]) == 0
    config = (run / "config.yaml").read_text()
    err = _fails(capsys, "train", "--resume", str(run), "--set", "model.bottleneck.dim=8")
    assert "Cannot resume" in err and "model.bottleneck.dim: 4 -> 8" in err and "train.max_epochs" in err
    err = _fails(capsys, "train", "mnist-ae", "--resume", str(run))
    assert "recipe mnist-ae would be ignored" in err
    assert (run / "config.yaml").read_text() == config


def test_the_cli_prints_our_own_warnings_without_python_source_lines() -> None:
    import os
    import warnings

    from hourglass import cli

    cli._quiet()
    ours = os.sep.join(["", "site", "hourglass", "tasks", "seq2seq.py"])
    assert warnings.formatwarning("1 source truncated", UserWarning, ours, 290, "source = ...") == \
        "warning: 1 source truncated\n"
    assert "lightning" in warnings.formatwarning("x", UserWarning, "/site/lightning/trainer.py", 1, "code")
