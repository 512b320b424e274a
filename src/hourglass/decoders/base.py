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
    #: What it writes: "image" (pixels), "mask" (per-pixel class logits) or "labels" (class logits); a task
    #: names the one it trains (``Task.decoder_output``) and the model builder refuses any other.
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
    - ``step(tokens (B,), state) -> (logits (B, V), new state, attention (B, S) or None)``: one token. The
      logits belong to the caller, which may overwrite them (search turns them into log-probabilities in
      place); a decoder never keeps them, nor returns a tensor that its state or parameters hold.
    - ``reorder_state(state, index (B',)) -> state``: select/repeat batch rows (beam search).
    - ``narrow_vocabulary(ids (V',)) -> decoder or None``: a copy that reads and writes only the pieces ``ids``,
      numbered 0..V'-1 (decoders/narrow.py); None (the default) when it cannot.
    """

    needs: ClassVar[tuple[str, ...]] = ("memory",)
    modality: ClassVar[str] = "tokens"
    #: Whether ``forward`` and ``step`` return attention weights (a coverage loss and heatmaps read them).
    attends: ClassVar[bool] = True

    @classmethod
    def refuse(cls, spec: CodeSpec) -> str | None:
        return None

    @property
    def max_inputs(self) -> int | None:
        """The most tokens, bos included, that one sequence may feed the decoder (a Transformer's position
        table); None: no limit (RNNs)."""
        return None

    def init_state(self, code: Code) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, tokens: Tensor, state: Any) -> tuple[Tensor, Tensor | None]:  # pragma: no cover
        raise NotImplementedError

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any, Tensor | None]:  # pragma: no cover
        raise NotImplementedError

    def reorder_state(self, state: Any, index: Tensor) -> Any:  # pragma: no cover
        raise NotImplementedError

    def narrow_vocabulary(self, ids: Tensor) -> SequenceDecoder | None:
        """A copy of this decoder for search over the vocabulary rows ``ids`` only, or None: not supported."""
        return None


def regroup(index: Tensor, groups: int, sources: int, slots: Tensor | None = None
            ) -> tuple[Tensor | None, int, Tensor | None]:
    """Per-source state (encoder memory, attention keys) under a row reorder, without copying it per row.

    A decoder state holds its source-side tensors once per source, read by the rows of an (N, ``groups``) grid:
    row i sits at grid slot ``slots[i]`` (slot i when ``slots`` is None, so ``groups`` consecutive rows per
    source, as the K beams of a sentence), and reads source ``slot // groups``. After
    ``reorder_state(state, index)``, new row i is old row ``index[i]``. Returns (which sources to keep, in order,
    or None when they are already in place; the new ``groups``; the new ``slots``).

    Beam search only permutes beams within a sentence or drops whole sentences, so the per-source tensors move
    only when a sentence leaves. With pruning, sources keep different numbers of rows: the grid is then as wide
    as the source with the most (``slots`` places the rows, the other slots stay empty), so attention still
    reads each source once, for all its rows together.
    """
    at = index if slots is None else slots.index_select(0, index)  # (B',) the old slot of each new row
    source = at.div(groups, rounding_mode="floor")  # (B',) the source each new row reads
    kept, inverse, counts = source.unique_consecutive(return_inverse=True, return_counts=True)
    if not counts.numel():
        return source, 1, None
    in_place = kept.numel() == sources and bool((kept == torch.arange(sources, device=kept.device)).all())
    keep = None if in_place else kept
    if bool((counts == counts[0]).all()):
        return keep, int(counts[0]), None
    width = int(counts.max())
    first = counts.cumsum(0) - counts  # (N',) the first new row of each kept source
    rank = torch.arange(index.shape[0], device=index.device) - first[inverse]  # (B',) its place among them
    return keep, width, inverse * width + rank


def to_grid(rows: Tensor, slots: Tensor | None, size: int) -> Tensor:
    """rows (B, ...) -> (size, ...): row i at ``slots[i]``, zeros in the other slots; ``rows`` when slots is None."""
    if slots is None:
        return rows
    return rows.new_zeros(size, *rows.shape[1:]).index_copy_(0, slots, rows)


def from_grid(grid: Tensor, slots: Tensor | None) -> Tensor:
    """(size, ...) -> rows (B, ...), the inverse of :func:`to_grid`."""
    return grid if slots is None else grid.index_select(0, slots)
