"""Model weights as safetensors, checked before loading: against the checksum recorded when they were written,
for NaN and infinite values, and against the model.

A file from another model is refused with a list of what differs, instead of torch's strict-load traceback.

Every safetensors file hourglass writes (``model.safetensors``, ``checkpoints/*.safetensors``) records its own
SHA-256 in its header's metadata, under ``"sha256"`` (the name a run's ``tokenizer.model.json`` uses): a file
changed after it was written (bytes flipped by a disk or a copy, a copy cut short) still parses, and would give
garbage with exit status 0. The checksum is of the whole file as written with 64 zeros in that field's place, so
it covers the header (names, shapes, offsets) as well as the tensor bytes; it is patched into the temporary file
before the atomic rename, so the file and its checksum appear together. A record in the header rather than a
sidecar ``.json``: one file, one rename, nothing to fall out of step, and a file copied alone keeps its record.
Files from before the record have none and load unchecked.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hourglass.errors import CheckpointError
from hourglass.io import atomic_write

MODEL_FORMAT = "hourglass-model-1"
CHECKSUM_FIELD = "sha256"
_ZEROS = "0" * 64
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_MAX_HEADER = 100 << 20  # safetensors' own limit


def _field(digest: str) -> bytes:
    """The field as it stands in the header's compact JSON (a metadata value is a string; a tensor's entry an
    object, and quotes inside other strings are escaped, so this cannot occur elsewhere)."""
    return f'"{CHECKSUM_FIELD}":"{digest}"'.encode()


def _digest(f, header: bytes, skip: int) -> str:
    """SHA-256 of the file open as ``f``, whose first ``skip`` bytes are ``header`` (as the checksum sees it), the
    rest read in 1 MiB chunks (about 1 GB/s: 30 ms for 30 MB)."""
    digest, buffer = hashlib.sha256(header), bytearray(_CHUNK)
    view = memoryview(buffer)
    f.seek(skip)
    while n := f.readinto(buffer):
        digest.update(view[:n])
    return digest.hexdigest()


def _seal(path: str) -> None:
    """Write the checksum of the file just written at ``path`` (with zeros in its field) into that field."""
    with open(path, "r+b", buffering=0) as f:
        first = f.read(8)
        head = first + f.read(int.from_bytes(first, "little"))
        digest = _digest(f, head, len(head))
        f.seek(head.index(_field(_ZEROS)) + len(_field("")) - 1)  # the first of the 64 zeros
        f.write(digest.encode())


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write ``tensors`` atomically as a safetensors file whose header records its checksum (see the module)."""
    meta = {**metadata, CHECKSUM_FIELD: _ZEROS}

    def write(tmp: str) -> None:
        save_file(tensors, tmp, metadata=meta)
        _seal(tmp)  # before atomic_write's fsync and rename

    atomic_write(Path(path), write)


def save_weights(module: nn.Module, path: Path, metadata: dict | None = None) -> None:
    """Write the module's state dict to ``path`` atomically, with its checksum in the header."""
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}  # clone: tied weights
    meta = {"format": MODEL_FORMAT, **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    save_safetensors(state, Path(path), meta)


def _header(f, file_size: int) -> tuple[bytes, dict[str, Any]] | None:
    """(the first 8 + N bytes, the parsed header) of a safetensors file; None when it cannot be parsed (safetensors
    then names the damage itself)."""
    first = f.read(8)
    if len(first) < 8:
        return None
    size = int.from_bytes(first, "little")
    if size > min(_MAX_HEADER, file_size - 8):
        return None
    raw = f.read(size)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return (first + raw, header) if isinstance(header, dict) else None


def _fix(restore: str | Callable[[], str]) -> str:
    """The fix an error gives: ``restore`` itself, or what it finds when it is a function (called only then)."""
    return restore() if callable(restore) else restore


def check_checksum(path: Path, restore: str | Callable[[], str]) -> None:
    """``path`` against the checksum in its header (:func:`save_safetensors`); nothing to check when it has none (a
    file from before the record, or of the user's own) or its header cannot be read (the reader names that).
    ``restore``: the fix to give, or a function that finds it, called only when there is something to fix."""
    path = Path(path)
    file_size = os.path.getsize(path)
    with open(path, "rb", buffering=0) as f:
        found = _header(f, file_size)
        if found is None:
            return
        head, header = found
        meta = header.get("__metadata__")
        recorded = meta.get(CHECKSUM_FIELD) if isinstance(meta, dict) else None
        if recorded is None:
            return
        if not (isinstance(recorded, str) and _HEX64.fullmatch(recorded)):
            raise CheckpointError(
                f'{path}: the field "{CHECKSUM_FIELD}" in its header should be 64 hexadecimal digits, but it is '
                f"{recorded!r}; the header was changed after hourglass wrote it, so the file cannot be trusted. "
                f"{_fix(restore)}"
            )
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
                and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2]
        want = len(head) + max((e for e in ends if isinstance(e, int)), default=0)
        if file_size != want:
            how = (f"it is {file_size:,} bytes where its header says {want:,} (cut short, by a copy that stopped "
                   "early?)" if file_size < want else f"it is {file_size:,} bytes where its header says {want:,}")
        elif _digest(f, head.replace(_field(recorded), _field(_ZEROS), 1), len(head)) != recorded:
            how = "its size is right but its bytes differ (damaged in place: a failing disk or a bad copy?)"
        else:
            return
    raise CheckpointError(
        f'{path} does not match the checksum recorded when it was written (the field "{CHECKSUM_FIELD}" in its '
        f"header): {how}. Its weights would give wrong results, so it is not loaded. "
        f"{_fix(restore)}"
    )


def intact(path: Path) -> bool:
    """True when ``path`` is a file that matches its checksum (or has none)."""
    try:
        check_checksum(path, "")
    except (CheckpointError, OSError):
        return False
    return True


def restore_hint(path: Path) -> str:
    """How to get ``path`` back. For a run's model.safetensors whose checkpoints are intact: export it again from
    checkpoints/best.safetensors with a resume (which reads last.safetensors, so both must be intact)."""
    path = Path(path)
    run, ckpts = path.parent, path.parent / "checkpoints"
    if path.name == "model.safetensors" and (run / "config.yaml").is_file() \
            and intact(ckpts / "best.safetensors") and intact(ckpts / "last.safetensors"):
        return (f"Restore it from a copy of the run, or write it again from {ckpts / 'best.safetensors'}: "
                f"`hourglass train --resume {run}` exports it anew (a run that reached its train.max_epochs or "
                "train.max_steps trains no further).")
    return "Restore it from a copy of the run, or train the run again."


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


def check_finite(state: dict[str, torch.Tensor], source: Path, restore: str | Callable[[], str],
                 limit: int = 5) -> None:
    """Refuse a state dict with NaN or infinite values: such weights give empty or garbage outputs, silently."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        names = ", ".join(bad[:limit]) + (f" and {len(bad) - limit} more" if len(bad) > limit else "")
        raise CheckpointError(
            f"{source} holds NaN or infinite values in {len(bad)} tensor{'s' if len(bad) > 1 else ''} ({names}), "
            f"which would give empty or garbage outputs, so it is not loaded. "
            f"{_fix(restore)}"
        )


def load_weights(module: nn.Module, path: Path, *, hint: str = "Use the weights saved by this run.") -> None:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Weights file {path} does not exist. Train the run first, or check the path.")

    def restore() -> str:  # only on an error: it checks the run's checkpoints, which costs a read of each
        return restore_hint(path)

    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises several types for corrupt headers
        check_checksum(path, restore)  # a file cut short is named as such, with its size
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}). {restore()}") from None
    check_state(module, state, path, hint)  # before the checksum: another model's file copied over says what differs
    check_checksum(path, restore)
    check_finite(state, path, restore)
    module.load_state_dict(state)
