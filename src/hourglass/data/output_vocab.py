"""The pieces that the training targets use, saved in the run as ``output_vocab.json``.

A search reads it to decode over those pieces only (decoders/narrow.py): with a joint vocabulary, the other pieces
belong to the source language alone. The file lists vocabulary ids; a run without it (trained before it existed,
or whose data module does not write it) decodes over its whole vocabulary.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from hourglass.errors import DataError
from hourglass.io import atomic_write_json

FILE = "output_vocab.json"


def seen_pieces(targets: Iterable[list[int]]) -> list[int]:
    """The sorted ids that occur in ``targets`` (token id lists)."""
    seen: set[int] = set()
    for ids in targets:
        seen.update(ids)
    return sorted(seen)


def save(run_dir: Path, ids: list[int], vocab_size: int) -> None:
    atomic_write_json(Path(run_dir) / FILE, {"vocab_size": vocab_size, "ids": ids,
                                             "about": "the vocabulary ids that the training targets use; search "
                                                      "decodes over these (and bos, eos) only"})


def load(run_dir: Path, vocab_size: int) -> list[int] | None:
    """The ids of ``run_dir``'s file, or None when it has none; a damaged file, or one from another vocabulary, is
    refused with the fix."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    fix = (f"Delete {path} to decode over the whole vocabulary (the run's weights do not depend on it), or restore "
           "it from a copy of the run.")
    try:  # ValueError: bad UTF-8 or JSON, or an integer too long to convert; RecursionError: JSON nested too deep
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise DataError(f"{path} could not be read as JSON ({str(err)[:200]}). {fix}") from None
    size = data.get("vocab_size") if isinstance(data, dict) else None
    if type(size) is int and size != vocab_size:
        raise DataError(f"{path} was written for a vocabulary of {size} pieces, but the run's tokenizer has "
                        f"{vocab_size}: it belongs to another run. {fix}")
    ids = data.get("ids") if isinstance(data, dict) else None
    if not (size == vocab_size and isinstance(ids, list) and ids
            and all(type(i) is int and 0 <= i < vocab_size for i in ids)):
        raise DataError(f"{path} must hold \"vocab_size\": {vocab_size} (the run's tokenizer's) and \"ids\": a "
                        f"non-empty list of vocabulary ids from 0 to {vocab_size - 1}. {fix}")
    return sorted(set(ids))
