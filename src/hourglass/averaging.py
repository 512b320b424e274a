"""Averaging the weights of the last N epochs (``train.average_last``), as in Vaswani et al. 2017, sec. 6.1.

:class:`LastEpochs` saves the task's weights at the end of every training epoch as
``checkpoints/epoch-<k>.safetensors`` (weights only, no optimizer state) and keeps the newest N files. On disk,
not in memory, so that a run killed and resumed still averages the right epochs. At the end of training,
:func:`averaged_state` returns the element-wise mean of those files' floating-point tensors (integer buffers
come from the newest), which ``train.finish`` exports instead of the best checkpoint.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

from hourglass.weights import check_checksum, save_safetensors

_NAME = re.compile(r"epoch-(\d+)\.safetensors$")


def epoch_files(ckpt_dir: Path) -> list[Path]:
    """``epoch-<k>.safetensors`` files in ``ckpt_dir``, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(ckpt_dir).glob("epoch-*.safetensors") if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


class LastEpochs(Callback):
    """Write the weights at each epoch end and keep the last ``n`` (see the module docstring)."""

    def __init__(self, ckpt_dir: Path, n: int) -> None:
        self.ckpt_dir, self.n = Path(ckpt_dir), n

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        # clone: tied weights share storage, which safetensors refuses to write twice
        state = {k: v.detach().cpu().clone().contiguous() for k, v in pl_module.state_dict().items()}
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = self.ckpt_dir / f"epoch-{trainer.current_epoch}.safetensors"
        save_safetensors(state, path, {})  # atomic, with its checksum in the header (hourglass.weights)
        for old in epoch_files(self.ckpt_dir)[: -self.n]:
            old.unlink(missing_ok=True)


def averaged_state(ckpt_dir: Path, n: int) -> dict[str, torch.Tensor] | None:
    """The mean of the last ``n`` epoch weights in ``ckpt_dir``, or None when there are none."""
    files = epoch_files(ckpt_dir)[-n:]
    if not files:
        return None
    for p in files:
        check_checksum(p, f"Delete {p} to average the epochs left, or set train.average_last: 0 to export the "
                          "best checkpoint instead.")
    states = [load_file(str(p)) for p in files]
    out = {}
    for key, newest in states[-1].items():
        if newest.is_floating_point():
            out[key] = torch.stack([s[key].double() for s in states]).mean(0).to(newest.dtype)
        else:
            out[key] = newest
    return out
