"""What a text data module lets through against the model's position tables (a Transformer's ``max_len``).

A mixin for :class:`~hourglass.data.parallel.ParallelDataModule`: ``check_model`` refuses, when training starts, a
model with fewer positions than the data feeds it (a run whose training text happens to be short would train,
and then fail on the first long sentence it is given); ``read_for`` cuts what a run trained before that check
reads to its model's positions, so a long sentence is truncated with a warning instead of failing. The host
class provides ``max_length``, ``target_limit`` ((bound, data option) of the target side), ``source_limit``,
``target_cut``, ``_encoder`` and ``_sets`` (its encoded splits, cleared when the limits change).
"""
from __future__ import annotations

from typing import Any

from hourglass.errors import ConfigError


class PositionLimits:
    """``check_model`` and ``read_for`` (module docstring)."""

    def _needs(self, model) -> list[tuple[str, Any, str, int, int]]:
        """(part, module, the data option that bounds what it reads, that bound, the positions added) for the
        encoder (a source) and the decoder (bos and a target; eos is only a label)."""
        limit, option = self.target_limit
        return [("encoder", model.encoder, "max_length", self.max_length, 0),
                ("decoder", model.decoder, option, limit, 1)]

    def check_model(self, model) -> None:
        """Refuse, when training starts, a model whose position tables (Transformer ``max_len``) are shorter than
        what this data feeds them (module docstring): a run whose training text is short would train, and then
        fail on the first long sentence it is given."""
        short = [need for need in self._needs(model)
                 if getattr(need[1], "max_inputs", None) is not None and need[1].max_inputs < need[3] + need[4]]
        if not short:
            return
        have, fixes, lower = [], [], {}
        for part, module, option, bound, bos in short:
            have.append(f"{positions(part, module)} (a {'target' if bos else 'source'} needs {bound + bos}"
                        f"{' with bos' if bos else ''})")
            if getattr(module, "max_inputs_option", None):
                fixes.append(f"model.{part}.{module.max_inputs_option} to {bound + bos}")
            lower[option] = min(lower.get(option, bound), module.max_inputs - bos)  # what its positions hold
        lets = " and ".join(dict.fromkeys(f"data.{option}={bound}" for _, _, option, bound, _ in short))
        raise ConfigError(
            f"{lets} let{'' if ' and ' in lets else 's'} sentences of that many pieces through, but the model has "
            f"fewer positions: {' and '.join(have)}. " + (f"Raise {' and '.join(fixes)}, or lower " if fixes else
                                                          "Lower ")
            + " and ".join(f"data.{option} to {n}" for option, n in lower.items()) + "."
        )

    def read_for(self, model) -> None:
        """Read at most what a trained ``model`` reads: sources cut to its encoder's positions and targets (the
        validation loss) to its decoder's, when they are fewer than this data lets through (a run trained before
        :meth:`check_model`); a long sentence is then cut short with the truncation warning, never a failure."""
        enc, dec = getattr(model.encoder, "max_inputs", None), getattr(model.decoder, "max_inputs", None)
        source = self.max_length if enc is None else min(self.max_length, enc)
        target = self.target_limit[0] if dec is None else min(self.target_limit[0], dec - 1)
        if (source, target) != (self.source_limit, self.target_cut):
            self.source_limit, self.target_cut, self._encoder = source, target, model.encoder
            self._sets.clear()  # encoded with the old limits


def positions(part: str, module: Any) -> str:
    """A part's position table in config terms ("model.encoder.max_len=80"), or in words when no option sets it (a
    pretrained encoder's)."""
    option = getattr(module, "max_inputs_option", None)
    if option:
        return f"model.{part}.{option}={module.max_inputs}"
    return f"the pretrained {part}'s {module.max_inputs} positions"
