"""Read the metric history that Lightning's CSVLogger wrote, for loss curves."""
from __future__ import annotations

import csv
from pathlib import Path


def read_history(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{"train/loss": [(step, value), ...], ...} from every metrics.csv under ``log_dir``."""
    history: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(log_dir).rglob("metrics.csv")):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                step = int(float(row.get("step") or 0))
                for key, value in row.items():
                    if key in ("step", "epoch") or not value or not key.endswith("loss"):
                        continue
                    history.setdefault(key, []).append((step, float(value)))
    return history
