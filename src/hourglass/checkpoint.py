"""Checkpoints as safetensors plus JSON, written atomically, never unpickled.

Lightning's checkpoint is a nested dict (weights, optimizer state, loop progress, callback state). Its
default IO pickles that dict with ``torch.save``, and loading it means unpickling a file a user hands us.
:class:`SafetensorsCheckpointIO` instead stores every tensor in a safetensors file and the rest of the tree
as JSON in that file's metadata header, so a checkpoint is one file, written with one atomic rename. The header
also records the file's SHA-256 (:func:`hourglass.weights.save_safetensors`), checked when the checkpoint is read
(:func:`load_tree`), and the step and epoch it was written at.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO
from safetensors import SafetensorError, safe_open

from hourglass.errors import CheckpointError
from hourglass.weights import check_checksum, save_safetensors

FORMAT = "hourglass-checkpoint-1"


def flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able tree with each tensor replaced by ``{"__tensor__": key}`` (tensors collected in ``tensors``)."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().clone()  # clone: tied weights share storage
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: flatten(v, tensors) for k, v in obj.items()}
        return {"__items__": [[flatten(k, tensors), flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [flatten(v, tensors) for v in obj]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():  # numpy scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__tuple__" in obj:
        return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {unflatten(k, tensors): unflatten(v, tensors) for k, v in obj["__items__"]}
    return {k: unflatten(v, tensors) for k, v in obj.items()}


def save_tree(tree: dict[str, Any], path: Path, extra_metadata: dict[str, str] | None = None) -> None:
    """Write ``tree`` atomically as one safetensors file with the JSON skeleton (and its checksum) in its header."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(tree, tensors)
    meta = {"format": FORMAT, "tree": json.dumps(skeleton), **(extra_metadata or {})}
    save_safetensors(tensors, Path(path), meta)


def read_metadata(path: Path) -> dict[str, str]:
    """The safetensors header metadata, without reading any tensor."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist. Check the run directory or train it first.")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"Checkpoint {path} is not a readable safetensors file ({err}). It may be truncated or from "
            "another tool; use the run's checkpoints/last.safetensors or retrain."
        ) from None


def checkpoint_step(path: Path) -> int | None:
    """The training step a checkpoint was written at, from its header (without reading a tensor); None when the
    header cannot be read or does not say."""
    try:
        return int(read_metadata(Path(path)).get("global_step", ""))
    except (CheckpointError, ValueError):
        return None


def load_tree(path: Path) -> dict[str, Any]:
    """Read a file written by :func:`save_tree`, checked against the checksum in its header."""
    path = Path(path)
    if path.is_file():  # first: a checkpoint cut short is named as such, not as unreadable safetensors
        check_checksum(path, "Restore it from a complete copy of the run; a damaged checkpoint would resume "
                             "training from wrong weights.")
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not an hourglass training checkpoint (format "
            f"{meta.get('format')!r}). Resume from a run directory's checkpoints/last.safetensors."
        )
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    try:
        tree = unflatten(json.loads(meta["tree"]), tensors)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:  # a header edited by hand
        tree = err
    if not isinstance(tree, dict) or "state_dict" not in tree:
        what = f"{type(tree).__name__}: {tree}" if isinstance(tree, Exception) else "no state_dict in it"
        raise CheckpointError(
            f"{path} has a damaged checkpoint header ({what}), so its training state cannot be read. Resume from "
            "another checkpoint of the run, or start a new run; its weights may still load from model.safetensors."
        )
    return tree


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning checkpoint IO that writes :func:`save_tree` files instead of pickles."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        step = str(checkpoint.get("global_step", ""))
        save_tree(checkpoint, Path(path), {"global_step": step, "epoch": str(checkpoint.get("epoch", ""))})

    def load_checkpoint(self, path, map_location: Any = None, weights_only: Any = None) -> dict[str, Any]:
        tree = load_tree(Path(path))
        relocate(tree, os.path.realpath(Path(path).parent))
        return tree

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


def relocate(tree: dict[str, Any], directory: str) -> None:
    """Point the checkpoint callbacks' state in ``tree`` at ``directory``, the folder the checkpoint is read from
    now, when the run was moved or copied since it was written.

    Lightning's ModelCheckpoint restores its best score only when its folder is unchanged; otherwise it warns,
    forgets the best score, and the first validation of a resumed copy became "best" however bad it was (the run
    then exported worse weights as model.safetensors). The paths it keeps are moved along, so that a new best
    replaces this run's file, never one in the folder the run was copied from."""
    for state in (tree.get("callbacks") or {}).values():
        old = state.get("dirpath") if isinstance(state, dict) else None
        if not isinstance(old, str) or old == directory:
            continue

        def move(p: Any) -> Any:
            return directory + p[len(old):] if isinstance(p, str) and p.startswith(old + os.sep) else p

        state["dirpath"] = directory
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if key in state:
                state[key] = move(state[key])
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}
