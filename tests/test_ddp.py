"""trainer.devices and trainer.strategy pass through to Lightning: DDP with 2 CPU processes (gloo) trains."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path


def test_ddp_two_cpu_processes_trains(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "hourglass.cli", "train", "digits-ae", "--out", str(out), "--set",
           "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "train.max_epochs=3",
           "train.progress=false", "data.limit=400", "model.bottleneck.dim=4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines() == [str(out)], "only rank 0 prints the run directory"
    rows = list(csv.DictReader(open(out / "logs" / "metrics.csv")))
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(val) == 3 and val[-1] < val[0], f"validation loss should fall under DDP: {val}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] > 0 and metrics["final"]["mse"] < 0.1


def test_a_run_over_several_nodes_says_it_waits_for_them_and_where(tiny_config, tmp_path: Path, monkeypatch,
                                                                  capsys) -> None:
    """Lightning waits for the other nodes without a word; node 0 of 2 on one machine seemed to hang."""
    from hourglass.training import make_trainer, say_nodes

    monkeypatch.setenv("MASTER_ADDR", "10.0.0.7")
    monkeypatch.setenv("MASTER_PORT", "29511")
    config = tiny_config("digits-ae", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=ddp",
                         "trainer.num_nodes=2")
    say_nodes(make_trainer(config, tmp_path / "run"))
    err = capsys.readouterr().err
    assert "Training on 2 nodes; this is node 0" in err and "joined at 10.0.0.7:29511" in err
    assert "NODE_RANK (0 to 1)" in err and not (tmp_path / "run").exists(), "building the trainer writes nothing"
    trainer = make_trainer(tiny_config("digits-ae"), tmp_path / "one")
    capsys.readouterr()  # Lightning's own INFO lines (the CLI turns them off)
    say_nodes(trainer)
    assert capsys.readouterr().err == "", "one node: nothing to say"
