"""The decoder protocols.

- :class:`Decoder` maps a Code to a tensor in one shot: an image (B, C, H, W), a mask's logits (B, K, H, W),
  or class logits (B, K).
- :class:`SequenceDecoder` writes a sequence with explicit state (d2l's ``init_state`` / ``forward`` /
  ``step``). Nothing is cached on ``self`` between calls; search is written against ``step`` alone.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from hourglass.code import Code, CodeSpec


class Decoder(nn.Module):
    """One-shot decoder. ``needs`` lists the Code fields it reads (checked when the model is built)."""

    needs: ClassVar[tuple[str, ...]] = ("vector",)
    modality: ClassVar[str] = "image"

    @classmethod
    def refuse(cls, spec: CodeSpec) -> str | None:
        """A reason why ``spec`` cannot work beyond missing fields (e.g. too few feature maps), or None."""
        return None

    def forward(self, code: Code) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class SequenceDecoder(nn.Module):
    """Autoregressive decoder over token ids.

    - ``init_state(code) -> state``: the state before the first token (memory, mask, RNN state, caches).
    - ``forward(tokens (B, T), state) -> (logits (B, T, V), attention (B, T, S) or None)``: teacher forcing.
    - ``step(tokens (B,), state) -> (logits (B, V), new state, attention (B, S) or None)``: one token.
    - ``reorder_state(state, index (B',)) -> state``: select/repeat batch rows (beam search).
    """

    needs: ClassVar[tuple[str, ...]] = ("memory",)
    modality: ClassVar[str] = "tokens"

    @classmethod
    def refuse(cls, spec: CodeSpec) -> str | None:
        return None

    def init_state(self, code: Code) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, tokens: Tensor, state: Any) -> tuple[Tensor, Tensor | None]:  # pragma: no cover
        raise NotImplementedError

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any, Tensor | None]:  # pragma: no cover
        raise NotImplementedError

    def reorder_state(self, state: Any, index: Tensor) -> Any:  # pragma: no cover
        raise NotImplementedError


def regroup(index: Tensor, groups: int, sources: int) -> tuple[Tensor | None, int]:
    """Per-source state (encoder memory, attention keys) under a row reorder, without copying it per row.

    A decoder state holds its source-side tensors once per source, read by ``groups`` consecutive rows each
    (beam search: the K beams of a sentence). After ``reorder_state(state, index)``, new row i reads source
    ``index[i] // groups``. Returns (which sources to keep, in order, or None when they are already in place;
    the new ``groups``). Beam search only permutes beams within a sentence or drops whole sentences, so the
    per-source tensors move only when a sentence leaves; any other order falls back to one source per row.
    """
    source = index.div(groups, rounding_mode="floor")  # (B',) the source each new row reads
    kept, counts = source.unique_consecutive(return_counts=True)
    if not counts.numel() or not bool((counts == counts[0]).all()):
        return source, 1
    in_place = kept.numel() == sources and bool((kept == torch.arange(sources, device=kept.device)).all())
    return (None if in_place else kept), int(counts[0])
