"""Continuing a run directory: which config changes a resume accepts, the checkpoint it starts from, and the
log history it keeps.

A resume restores weights, optimizer, schedule and the sampler's place in the epoch from
``checkpoints/last.safetensors``. Keys that shape the model, the data order or the optimizer must therefore
stay as they were; keys that only say how long or how gently to go on may change (``RESUMABLE``), and a new
``train.lr`` takes effect (``Task.on_train_start`` applies it over the restored optimizer state).
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

from hourglass.checkpoint import load_tree, read_metadata
from hourglass.config import Config, load_config
from hourglass.errors import CheckpointError, ConfigError
from hourglass.options import absolute_data_paths
from hourglass.weights import check_state

#: Dotted keys (or prefixes ending in ".") that may differ between a run's config.yaml and its resume.
RESUMABLE = ("description", "train.max_epochs", "train.max_steps", "train.lr", "train.gradient_clip",
             "train.early_stopping", "train.progress", "train.checkpoint_every_n_steps", "data.num_workers", "trainer.")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def _resumable(key: str) -> bool:
    return any(key == k or key.startswith(k if k.endswith(".") else k + ".") for k in RESUMABLE)


def stored_config(run_dir: Path) -> Path:
    """The ``config.yaml`` of the run to resume, or a clear error when ``run_dir`` is not a run directory."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CheckpointError(
            f"Cannot resume {run_dir}: it is not a run directory (no config.yaml there). Pass the directory that "
            "`hourglass train` printed, e.g. runs/digits-ae-20260101-120000."
        )
    return path


def check_config(config: Config, run_dir: Path) -> None:
    """Refuse a resume whose config changes a key the checkpoint depends on (a clear error, nothing written).
    ``config`` is the one training holds, its data paths already absolute."""
    stored_path = stored_config(run_dir)
    stored = absolute_data_paths(load_config(stored_path))  # a run from before paths were stored absolute
    old, new = _flat(stored.to_dict()), _flat(config.to_dict())
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and not _resumable(k))
    if changed:
        diffs = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
        raise ConfigError(
            f"Cannot resume {run_dir} with a changed {', '.join(changed[:6])} ({diffs}): its checkpoint was trained "
            f"with the values in {stored_path}, and continuing with others would not be the same run. A resume may "
            f"change only {', '.join(k + '*' if k.endswith('.') else k for k in RESUMABLE)}. Start a new run with "
            "--out to change the rest (nothing was written)."
        )


def checkpoint(run_dir: Path, task, data) -> tuple[Path, int]:
    """The checkpoint to continue from, checked against the model, and its optimizer steps; positions the
    sampler mid-epoch."""
    path = run_dir / "checkpoints" / "last.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"Cannot resume {run_dir}: it has no checkpoints/last.safetensors. Start a new run instead."
        )
    read_metadata(path)
    tree = load_tree(path)
    check_state(task, tree["state_dict"], path, "Resume a run with the config it was trained with.")
    pos = tree.get("hourglass") or {}
    if pos:
        epoch, done = pos["epoch"], pos["batches_done"]
        data.resume_at(*((epoch + 1, 0) if pos.get("epoch_complete") else (epoch, done)))
    return path, int(tree.get("global_step", 0))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def log_history(run_dir: Path, steps_done: int) -> list[dict[str, float]]:
    """The rows of ``logs/metrics.csv`` logged before the checkpoint (step < ``steps_done``), so that a resumed
    run's CSV log holds the whole curve: Lightning's CSVLogger deletes an existing metrics.csv when it starts."""
    path = run_dir / "logs" / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="", errors="replace") as f:
        rows, bad = [], []
        for line, row in enumerate(csv.DictReader(f), start=2):  # line 1 is the header
            # A header's value is text, or None past a short line's end; more fields than the header names come
            # under the key None.
            values = {k: _number(v) for k, v in row.items() if k and v not in ("", None)}
            rows.append({k: v for k, v in values.items() if v is not None})
            if None in row or None in values.values():
                bad.append(line)
    if bad:
        warnings.warn(f"{path}: line{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad[:5]))} hold values that are "
                      "not numbers (was the file edited?); the resumed run's log keeps the numbers it could read. The "
                      "checkpoint is not affected.", stacklevel=2)
    kept = [row for row in rows if row.get("step", steps_done) < steps_done]
    for row in kept:
        row.update({k: int(row[k]) for k in ("step", "epoch") if k in row})
    return kept
