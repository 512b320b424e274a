"""User-facing errors.

Every error a user can cause is an ``HourglassError``: one paragraph that names the file or key, what is
wrong and the fix. The CLI prints the paragraph and exits with status 2 instead of a traceback.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class HourglassError(Exception):
    """Base class: the message is a complete, one-paragraph explanation for a user."""


class ConfigError(HourglassError):
    """A config key or value is wrong."""


class RegistryError(HourglassError):
    """An unknown or duplicate component name."""


class IncompatiblePairError(HourglassError):
    """An encoder and a decoder (or a task) that cannot work together."""


class DataError(HourglassError):
    """Input data is missing, corrupt or inconsistent."""


class CheckpointError(HourglassError):
    """A checkpoint or run directory is missing or belongs to another model."""


class TrainingError(HourglassError):
    """Training had to stop, for example on a NaN loss."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to ``name`` by edit similarity, or None when nothing is close."""
    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return found[0] if found else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean "x"?' or an empty string."""
    hit = closest(name, choices)
    return f' Did you mean "{hit}"?' if hit else ""
