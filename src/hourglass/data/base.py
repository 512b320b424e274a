"""What every hourglass data module provides on top of ``LightningDataModule``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning as L

from hourglass.model import DataContext


class DataModule(L.LightningDataModule):
    """Subclasses register with ``@register_dataset`` and implement the methods below.

    - ``context()``: the modality and the context arguments for the encoder and the decoder;
    - ``describe()``: a short dict for ``hourglass info`` (source, sizes);
    - ``resume_at(epoch, batches_done)``: make the next training epoch skip consumed batches;
    - ``save_artifacts(run_dir)`` / ``load_artifacts(run_dir)``: tokenizers, class names and the like.
    """

    #: Values of its path options that name built-in data, never a file (a run keeps them as they are).
    builtin_names: ClassVar[frozenset[str]] = frozenset()

    def context(self) -> DataContext:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {}

    def resume_at(self, epoch: int, batches_done: int) -> None:
        pass

    def save_artifacts(self, run_dir: Path) -> None:
        pass

    def load_artifacts(self, run_dir: Path) -> None:
        pass
