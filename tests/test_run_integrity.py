"""A run's files are checked when they are read: weights against the checksum recorded when they were written and
for NaN/inf, a run stopped before training finished is named as such, and `train --out` never offers to resume
what is not a run, nor drops an earlier attempt's logs silently."""
from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from hourglass import recipebook
from hourglass.checkpoint import load_tree
from hourglass.cli import main
from hourglass.errors import CheckpointError, TrainingError
from hourglass.weights import load_weights, save_weights

SMALL = ["train.max_epochs=1", "train.progress=false", "data.limit=200", "model.bottleneck.dim=4"]


def _fails(capsys, *argv: str) -> str:
    """Run the CLI, expect exit status 2 and one paragraph; return it."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err and "\n" not in err, err
    return err


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _flip(path: Path, start: int = 400) -> None:
    """Flip bytes inside the tensor data (past the header), as a failing disk or a bad copy would."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) - start, len(data), 97):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished digits-ae run (seconds), copied by each test that damages it."""
    out = tmp_path_factory.mktemp("integrity") / "run"
    assert main(["train", "digits-ae", "--out", str(out), "--set", *SMALL]) == 0
    return out


@pytest.fixture
def copy(run, tmp_path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


# -- defect: damaged weights loaded silently ------------------------------------------------------------------------
def _recorded(path: Path) -> str:
    return safe_open(str(path), framework="pt").metadata()["sha256"]


def _strip_checksum(path: Path) -> None:
    """Rewrite ``path`` as a file from before the checksum (same tensors and metadata, no "sha256")."""
    with safe_open(str(path), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "sha256"}
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    save_file(tensors, str(path), metadata=meta)


def test_weights_and_checkpoints_record_their_checksum_in_their_header(run) -> None:
    """The SHA-256 of the whole file as written, with zeros where the checksum stands: header and tensors."""
    for name in ("model.safetensors", "checkpoints/last.safetensors", "checkpoints/best.safetensors"):
        data = (run / name).read_bytes()
        recorded = _recorded(run / name)
        zeroed = data.replace(f'"sha256":"{recorded}"'.encode(), b'"sha256":"' + b"0" * 64 + b'"', 1)
        assert zeroed != data and hashlib.sha256(zeroed).hexdigest() == recorded, name
    assert not list(run.rglob("*.safetensors.json"))  # one file each, nothing beside it to fall out of step


def test_weights_with_flipped_bytes_are_refused_and_the_fix_restores_them(copy, capsys) -> None:
    """Bytes flipped inside the tensor data still parse as safetensors: the run used to give garbage, exit 0."""
    good = {k: v.clone() for k, v in load_file(str(copy / "model.safetensors")).items()}  # not the mmap'd file
    _flip(copy / "model.safetensors")
    err = _fails(capsys, "evaluate", str(copy))
    assert f"{copy / 'model.safetensors'} does not match the checksum recorded when it was written" in err
    assert 'the field "sha256" in its header' in err and "damaged in place" in err
    assert "Restore it from a copy of the run" in err and str(copy / "checkpoints" / "best.safetensors") in err
    assert f"`hourglass train --resume {copy}`" in err
    # The fix it gives: a finished run resumed trains no further and exports its best checkpoint again.
    assert main(["train", "--resume", str(copy)]) == 0
    restored = load_file(str(copy / "model.safetensors"))  # not byte for byte: safetensors orders its header freely
    assert restored.keys() == good.keys() and all(torch.equal(restored[k], good[k]) for k in good)
    assert main(["evaluate", str(copy)]) == 0


def test_an_edited_header_is_caught_too(copy, capsys) -> None:
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data.replace(b"hourglass-model-1", b"hourglass-model-2", 1))
    err = _fails(capsys, "evaluate", str(copy))
    assert "does not match the checksum recorded when it was written" in err


def test_a_model_file_cut_short_is_named_with_its_size_and_best_checkpoint(copy, capsys) -> None:
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    err = _fails(capsys, "evaluate", str(copy))
    assert f"it is {len(data) // 2:,} bytes where its header says {len(data):,} (cut short" in err
    assert "checkpoints/best.safetensors" in err
    (copy / "model.safetensors").write_bytes(data)
    _strip_checksum(copy / "model.safetensors")  # a run from before the checksum: safetensors itself refuses it
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    err = _fails(capsys, "evaluate", str(copy))
    assert "is not a readable safetensors file" in err and "checkpoints/best.safetensors" in err


def test_best_checkpoint_is_offered_only_when_it_is_intact(copy, capsys) -> None:
    _flip(copy / "model.safetensors")
    _flip(copy / "checkpoints" / "best.safetensors")
    err = _fails(capsys, "evaluate", str(copy))
    assert "does not match the checksum" in err and "best.safetensors" not in err and "--resume" not in err


def test_weights_from_before_the_checksum_load_unchecked_and_nan_weights_are_refused(tmp_path) -> None:
    module = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    path = tmp_path / "w.safetensors"
    save_weights(module, path)
    _strip_checksum(path)
    load_weights(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), path)
    state = {k: v.clone() for k, v in load_file(str(path)).items()}  # not mapped onto the file it rewrites
    state["0.weight"][1, 2] = float("nan")
    state["1.bias"][0] = float("inf")
    save_file(state, str(path))
    target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"w\.safetensors holds NaN or infinite values in 2 tensors "
                                              r"\(0\.weight, 1\.bias\)") as caught:
        load_weights(target, path)
    assert "Restore it from a copy" in str(caught.value)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # nothing was loaded


def test_a_damaged_checksum_field_is_named(copy, capsys) -> None:
    path = copy / "model.safetensors"
    path.write_bytes(path.read_bytes().replace(_recorded(path).encode(), b"z" * 64, 1))
    err = _fails(capsys, "evaluate", str(copy))
    assert str(path) in err and 'the field "sha256" in its header should be 64 hexadecimal digits' in err


def test_a_damaged_checkpoint_is_refused_at_resume_and_nothing_changes(copy, capsys) -> None:
    _flip(copy / "checkpoints" / "last.safetensors")
    before = _files(copy)
    err = _fails(capsys, "train", "--resume", str(copy), "--set", "train.max_epochs=2")
    assert f"{copy / 'checkpoints' / 'last.safetensors'} does not match the checksum recorded" in err
    assert "complete copy of the run" in err
    assert _files(copy) == before


# -- defect: a stopped run said "Train the run first" ---------------------------------------------------------------
def test_a_run_stopped_before_training_finished_says_to_resume_it(tmp_path, capsys) -> None:
    from hourglass.training import train

    out = tmp_path / "stopped"
    train(recipebook.load("digits-ae", SMALL), out=str(out), report=False)  # as a kill before finish() leaves it
    assert not (out / "model.safetensors").exists()
    step = load_tree(out / "checkpoints" / "last.safetensors")["global_step"]
    err = _fails(capsys, "evaluate", str(out))
    assert f"{out} stopped before training finished, so it has no model.safetensors yet" in err
    assert f"{out / 'checkpoints' / 'last.safetensors'}, from step {step}" in err
    assert f"`hourglass train --resume {out}`" in err and "Train the run first" not in err
    shutil.rmtree(out / "checkpoints")  # no checkpoint at all: the old words fit
    err = _fails(capsys, "evaluate", str(out))
    assert "does not exist. Train the run first" in err


# -- defect: `train --out FILE|FOLDER` offered --resume -------------------------------------------------------------
def test_out_that_is_a_file_or_a_folder_that_is_not_a_run_is_refused_without_resume(tmp_path, capsys) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    err = _fails(capsys, "train", "digits-ae", "--out", str(notes), "--set", *SMALL)
    assert f"--out {notes} is an existing file, not a run directory" in err and "--resume" not in err
    assert "give --out a new or empty directory (nothing was written)" in err and notes.read_text() == "mine\n"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    err = _fails(capsys, "train", "digits-ae", "--out", str(folder), "--set", *SMALL)
    assert f"--out {folder} is a folder that is not a run" in err and "notes.txt" in err and "--resume" not in err
    assert "nothing was written" in err and [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_out_that_is_a_finished_run_still_offers_resume(run, capsys) -> None:
    before = _files(run)
    err = _fails(capsys, "train", "digits-ae", "--out", str(run), "--set", *SMALL)
    assert f"Will not train into {run}: it already holds a run" in err and f"--resume {run}" in err
    assert _files(run) == before


# -- defect: Lightning's raw warning when an --out without a checkpoint is trained again ----------------------------
def test_training_again_into_a_run_stopped_before_its_first_checkpoint_keeps_its_logs(tmp_path, monkeypatch) -> None:
    from hourglass.tasks.autoencoder import AutoencoderTask
    from hourglass.training import train

    out = tmp_path / "run"
    monkeypatch.setattr(AutoencoderTask, "loss", lambda self, *args, **kwargs: (torch.tensor(float("nan")), {}))
    with pytest.raises(TrainingError, match="No checkpoint was due yet"):
        train(recipebook.load("digits-ae", SMALL), out=str(out))
    monkeypatch.undo()
    earlier = {p.relative_to(out / "logs"): p.read_bytes() for p in (out / "logs").rglob("*") if p.is_file()}
    assert earlier  # that attempt's hparams and TensorBoard events
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train(recipebook.load("digits-ae", SMALL), out=str(out)) == out
    said = [str(w.message) for w in caught]
    assert not [m for m in said if "Experiment logs directory" in m or "will be deleted" in m], said
    moved = [m for m in said if "stopped before its first checkpoint" in m]
    assert len(moved) == 1 and f"{out / 'logs'}" in moved[0]
    kept = [p for p in out.iterdir() if p.name.startswith("logs-earlier-")]
    assert len(kept) == 1 and str(kept[0]) in moved[0]
    assert {p.relative_to(kept[0]): p.read_bytes() for p in kept[0].rglob("*") if p.is_file()} == earlier
    assert (out / "logs" / "metrics.csv").is_file() and (out / "model.safetensors").is_file()
