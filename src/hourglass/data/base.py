"""What every hourglass data module provides on top of ``LightningDataModule``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import lightning as L

from hourglass.errors import DataError
from hourglass.model import DataContext

T = TypeVar("T")


def training_or_empty(read: Callable[[], T], empty: Callable[[], T] | None) -> T:
    """``read()``, the training data; when it is gone (DataError) and ``empty`` is given, ``empty()``: none of it, of
    the shape a trained run stored, which is all that evaluating that run on other data needs. ``empty`` is None
    when there is no stored shape or no other data to evaluate on, and the error stands."""
    try:
        return read()
    except DataError:
        if empty is None:
            raise
        return empty()


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
