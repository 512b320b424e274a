"""Model weights as safetensors, checked against the model before loading.

A file from another model is refused with a list of what differs, instead of torch's strict-load traceback.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hourglass.errors import CheckpointError
from hourglass.io import atomic_write

MODEL_FORMAT = "hourglass-model-1"


def save_weights(module: nn.Module, path: Path, metadata: dict | None = None) -> None:
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}  # clone: tied weights
    meta = {"format": MODEL_FORMAT, **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    atomic_write(Path(path), lambda tmp: save_file(state, tmp, metadata=meta))


def mismatches(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], limit: int = 8) -> list[str]:
    """Human-readable differences between two state dicts (names and shapes)."""
    out = [f"missing {k}" for k in expected if k not in found]
    out += [f"unexpected {k}" for k in found if k not in expected]
    out += [
        f"{k}: file {tuple(found[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


def check_state(module: nn.Module, state: dict[str, torch.Tensor], source: Path, hint: str) -> None:
    diff = mismatches(module.state_dict(), state)
    if diff:
        raise CheckpointError(
            f"{source} holds weights of another model: {'; '.join(diff)}. {hint}"
        )


def load_weights(module: nn.Module, path: Path, *, hint: str = "Use the weights saved by this run.") -> None:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Weights file {path} does not exist. Train the run first, or check the path.")
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises several types for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}). Re-export or retrain it.") from None
    check_state(module, state, path, hint)
    module.load_state_dict(state)
