"""argparse types shared by the commands: they turn a bad value into argparse's one-line usage error."""
from __future__ import annotations

import argparse
import math
from typing import Callable

from hourglass.limits import MAX_BEAM, MAX_SEED


def count(text: str) -> int:
    """A whole number of at least 1."""
    value = _int(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: give a whole number of at least 1, such as 16")
    return value


def count_upto(most: int, what: str) -> Callable[[str], int]:
    """A count of at least 1 and at most ``most``: ``what`` says why there is a ceiling."""
    def parse(text: str) -> int:
        value = count(text)
        if value > most:
            raise argparse.ArgumentTypeError(f"{value} is too many: at most {most} ({what})")
        return value

    return parse


def whole(text: str) -> int:
    """A whole number of at least 0 (0 usually switches an option off)."""
    value = _int(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number: give 0 or more, e.g. 35")
    return value


def seed(text: str) -> int:
    """A random seed: a whole number from 0 to 2**32 - 1."""
    value = _int(text)
    if value is None or not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed: give a whole number from 0 to {MAX_SEED}")
    return value


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def positive(text: str) -> float:
    """A finite number greater than 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number greater than 0 (e.g. 1.5)")
    return value


def file_ending(suffix: str) -> Callable[[str], str]:
    """An output path that must end in ``suffix`` (the format the command writes)."""

    def check(text: str) -> str:
        if not text.lower().endswith(suffix):
            raise argparse.ArgumentTypeError(f"{text!r}: this command writes {suffix} files, so give a name ending "
                                             f"in {suffix}, e.g. out{suffix}")
        return text

    return check


def refuse_overwrite(output: str, data: str, example: str) -> None:
    """Refuse, before any work, an ``--output`` that would destroy an input: the ``--data`` file itself (a .npy of
    images given to ``encode`` and named as its output), a link to it, or an existing file inside the ``--data``
    folder (an image that ``reconstruct`` would draw its grid over). ``example``: a good name to suggest."""
    from pathlib import Path

    from hourglass.errors import DataError

    out, src = Path(output), Path(data)
    if not (out.exists() and src.exists()):
        return
    if out.samefile(src):  # a link to the input is the input too
        raise DataError(f"--output {output} is the --data file itself, and writing it would destroy your input. "
                        f"Give --output another name (for example {example}); nothing was written.")
    if src.is_dir() and src.resolve() in out.resolve().parents:
        raise DataError(f"--output {output} is a file inside the --data folder {data}, and writing it would replace "
                        f"it. Give --output a path outside {data} (for example {example}); nothing was written.")


#: A beam size: 1 to :data:`hourglass.limits.MAX_BEAM`.
BEAM = count_upto(MAX_BEAM, "the search keeps sentences x beam rows")
