"""A run killed with SIGKILL mid-epoch and resumed ends with the same weights as an uninterrupted run."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hourglass.checkpoint import load_tree, read_metadata

# 480 training images / 16 = 30 batches an epoch; a checkpoint every 7 steps falls mostly mid-epoch.
ARGS = ["train", "digits-ae", "--set", "train.max_epochs=3", "train.checkpoint_every_n_steps=7",
        "data.batch_size=16", "data.limit=600", "model.bottleneck.dim=4", "train.progress=false"]


def _hourglass(*args: str) -> list[str]:
    return [sys.executable, "-m", "hourglass.cli", *args]


def _position(ckpt: Path) -> dict | None:
    try:
        tree = json.loads(read_metadata(ckpt)["tree"])
    except Exception:  # not written yet
        return None
    return {"step": tree["global_step"], **tree.get("hourglass", {})}


def _kill_mid_epoch(out: Path, args: list[str] = ARGS, after_step: int = 30, timeout: float = 240.0) -> dict:
    """Start training, SIGKILL it (and any DDP processes it started) right after a mid-epoch checkpoint beyond
    ``after_step`` appears."""
    proc = subprocess.Popen(_hourglass(*args, "--out", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ckpt, start = out / "checkpoints" / "last.safetensors", time.time()
    try:
        while time.time() - start < timeout:
            pos = _position(ckpt) if ckpt.exists() else None
            if pos and pos["step"] > after_step and not pos["epoch_complete"]:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return pos
            if proc.poll() is not None:
                raise AssertionError("training finished before it could be killed")
            time.sleep(0.01)
        raise AssertionError("no mid-epoch checkpoint appeared")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_tree(path)["state_dict"]


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    subprocess.run(_hourglass(*ARGS, "--out", str(tmp_path / "full")), check=True, capture_output=True)
    killed = _kill_mid_epoch(tmp_path / "killed")
    assert not (tmp_path / "killed" / "metrics.json").exists(), "the run should have died before finishing"
    done = subprocess.run(_hourglass("train", "--resume", str(tmp_path / "killed")), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(tmp_path / "killed")
    full, resumed = _weights(tmp_path / "full/checkpoints/last.safetensors"), _weights(tmp_path / "killed/checkpoints/last.safetensors")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), f"{key} differs after resuming from step {killed['step']}"
    a = json.loads((tmp_path / "full/metrics.json").read_text())
    b = json.loads((tmp_path / "killed/metrics.json").read_text())
    assert a["steps"] == b["steps"] and a["final"]["mse"] == b["final"]["mse"]
    # The CSV log keeps the rows from before the kill (Lightning's logger would delete them) and none twice.
    assert _log(tmp_path / "full") == _log(tmp_path / "killed")


def _log(run: Path) -> list[tuple]:
    with (run / "logs" / "metrics.csv").open() as f:
        return [(r["epoch"], r["step"], r.get("train/loss"), r.get("val/loss")) for r in csv.DictReader(f)]


def test_under_ddp_a_sigkilled_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    # 2 CPU processes: 480 images / (16 x 2) = 15 steps an epoch; each process skips its own consumed share.
    ddp = [*ARGS, "trainer.devices=2", "trainer.strategy=ddp"]
    subprocess.run(_hourglass(*ddp, "--out", str(tmp_path / "full")), check=True, capture_output=True)
    killed = _kill_mid_epoch(tmp_path / "killed", ddp, after_step=15)
    done = subprocess.run(_hourglass("train", "--resume", str(tmp_path / "killed")), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    full = _weights(tmp_path / "full/checkpoints/last.safetensors")
    resumed = _weights(tmp_path / "killed/checkpoints/last.safetensors")
    for key in full:
        assert torch.equal(full[key], resumed[key]), f"{key} differs after resuming from step {killed['step']}"


def test_ctrl_c_stops_with_the_resume_command_and_the_run_resumes(tmp_path: Path) -> None:
    # The child installs Python's own Ctrl-C handler even where this shell ignores SIGINT (background CI jobs).
    wrapper = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "from hourglass.cli import main; sys.exit(main())")
    run = tmp_path / "run"
    args = [*ARGS, "train.max_epochs=50", "--out", str(run)]
    proc = subprocess.Popen([sys.executable, "-c", wrapper, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    start = time.time()
    while _position(run / "checkpoints" / "last.safetensors") is None and time.time() - start < 120:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"continue with `hourglass train --resume {run}`" in err and "Traceback" not in err
    stopped = _position(run / "checkpoints" / "last.safetensors")
    done = subprocess.run(_hourglass("train", "--resume", str(run), "--set", "train.max_epochs=3"),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _position(run / "checkpoints" / "last.safetensors")["step"] >= max(stopped["step"], 90)


def test_resume_of_a_missing_run_is_a_clear_error(tmp_path: Path, capsys) -> None:
    from hourglass.cli import main

    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "Cannot resume" in err and str(tmp_path / "nope") in err and "not a run directory" in err


@pytest.mark.parametrize("tree", ['{"epoch": 1}', "not json", "[1, 2]"])
def test_a_checkpoint_with_a_hand_edited_header_is_refused_clearly(tmp_path: Path, tree: str) -> None:
    """A header whose tree lacked state_dict ended in KeyError: 'state_dict' from deep inside resume."""
    from safetensors.torch import save_file

    from hourglass.checkpoint import FORMAT
    from hourglass.errors import CheckpointError

    path = tmp_path / "last.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": FORMAT, "tree": tree})
    with pytest.raises(CheckpointError, match="has a damaged checkpoint header"):
        load_tree(path)


def test_a_log_with_rows_that_are_not_numbers_keeps_the_rest_and_says_which_lines(tmp_path: Path) -> None:
    """An edited metrics.csv (a garbage row, a cut-off number) stopped `train --resume` with a ValueError."""
    from hourglass.resume import log_history

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/loss\n0,9,0.5,\n0,19,0.4,0.45\ngarbage,row,here\n1,29,4.67e,0.41\n1,39,0.3,\n")
    with pytest.warns(UserWarning, match=r"metrics.csv: lines 4, 5 hold values that are not numbers"):
        rows = log_history(tmp_path, steps_done=35)
    assert rows == [{"epoch": 0, "step": 9, "train/loss": 0.5}, {"epoch": 0, "step": 19, "train/loss": 0.4,
                                                                 "val/loss": 0.45},
                    {"epoch": 1, "step": 29, "val/loss": 0.41}]


def test_a_copied_run_resumes_with_its_best_score_and_leaves_the_original_alone(tmp_path: Path) -> None:
    """Lightning forgets a checkpoint callback's best score when its folder changed: a resumed copy took its next,
    worse validation as the best and exported those weights."""
    import shutil

    from hourglass.cli import main

    small = ["train.progress=false", "data.limit=200", "model.bottleneck.dim=4", "data.batch_size=32"]
    assert main(["train", "digits-ae", "--out", str(tmp_path / "a"), "--set", "train.max_epochs=2", *small]) == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    before = {p.name: p.read_bytes() for p in (tmp_path / "a" / "checkpoints").iterdir()}
    best = json.loads((tmp_path / "a" / "metrics.json").read_text())["best"]["val/loss"]
    # A learning rate this large makes the third epoch far worse than the first two.
    assert main(["train", "--resume", str(tmp_path / "b"), "--set", "train.max_epochs=3", "train.lr=50"]) == 0
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["best"]["val/loss"] == pytest.approx(best) and metrics["epochs"] == 3
    assert _weights(tmp_path / "b" / "checkpoints" / "best.safetensors").keys() == \
        _weights(tmp_path / "a" / "checkpoints" / "best.safetensors").keys()
    for name, tensor in _weights(tmp_path / "a" / "checkpoints" / "best.safetensors").items():
        assert torch.equal(tensor, _weights(tmp_path / "b" / "checkpoints" / "best.safetensors")[name]), name
    assert {p.name: p.read_bytes() for p in (tmp_path / "a" / "checkpoints").iterdir()} == before
