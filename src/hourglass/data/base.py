"""What every hourglass data module provides on top of ``LightningDataModule``."""
from __future__ import annotations

import json
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


def _shape(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) and v > 0 for v in value)


#: What a run's JSON artifacts hold, by field: (a test of the value, what the value should be).
SHAPE = (_shape, "a list of positive whole numbers, such as [1, 28, 28]")
NAMES = (lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "a list of names")
OPTIONAL_COUNT = (lambda v: v is None or (isinstance(v, int) and v >= 0), "a whole number (0: no labels), or null")
OPTIONAL_NAMES = (lambda v: v is None or NAMES[0](v), "a list of names, or null")
NUMBERS = (lambda v: isinstance(v, list) and all(isinstance(n, (int, float)) for n in v), "a list of numbers")


_RESTORE = "Restore the file from a copy of the run, or train the run again."


def read_artifact(path: Path, fields: dict[str, tuple[Callable[[Any], bool], str]]) -> dict[str, Any]:
    """A JSON file that training wrote into a run (the input shape, class names) -> its object, with ``fields``
    checked: a damaged file is one DataError that names it and the field, never a JSONDecodeError or KeyError
    from deep inside a command."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise DataError(f"{path} is not the JSON that hourglass wrote when the run was trained ({err}). {_RESTORE}") \
            from None
    if not isinstance(saved, dict):
        raise DataError(f"{path} should hold a JSON object with the fields {', '.join(fields)}, but it holds a "
                        f"{type(saved).__name__}. {_RESTORE}")
    return check_fields(path, saved, fields)


def check_fields(path: Path, saved: dict[str, Any], fields: dict[str, tuple[Callable[[Any], bool], str]]
                 ) -> dict[str, Any]:
    """``saved``, read from ``path``, when each of ``fields`` passes its test; else a DataError naming the field."""
    for field, (good, what) in fields.items():
        if not good(saved.get(field)):
            raise DataError(f'{path}: the field "{field}" should be {what}, but it is {saved.get(field)!r}. {_RESTORE}')
    return saved


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

    #: Whether training may call ``save_artifacts`` before it starts (what they hold is fixed by ``setup``): a run
    #: killed before its end then still has them, for ``resume_from``.
    early_artifacts: ClassVar[bool] = False

    def resume_from(self, run_dir: Path) -> None:
        """Before ``setup`` of a resumed run: take what the run fixed when it began (its vocabulary), so that it
        goes on with the same token ids even if its training text has changed since. Default: nothing."""
