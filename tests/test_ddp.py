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
