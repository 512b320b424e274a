"""Recurrent token encoders: "gru" (Cho et al. 2014) and "lstm" (Hochreiter & Schmidhuber 1997).

Embedding, then a (by default bidirectional, as in Bahdanau et al. 2015) multi-layer GRU or LSTM. The padded
batch is packed (``pack_padded_sequence``), so the padding of a sentence never changes its outputs or its final
state: a sentence gives the same code alone or in a batch with longer ones.

The Code holds:

- ``memory`` (B, S, dirs * hidden): the top layer's outputs, for attention; zeros at padding.
- ``memory_mask`` (B, S): True at real tokens (``tokens != pad_id``).
- ``vector`` (B, dirs * hidden): the top layer's final states of both directions, concatenated: the fixed-size
  summary of Cho et al. (2014) and Sutskever et al. (2014).
- ``state``: PyTorch's final state, (layers * dirs, B, hidden), or the pair (h, c) for an LSTM.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from hourglass._registry import register_encoder
from hourglass.code import Code, CodeSpec, StateSpec
from hourglass.encoders.base import Encoder
from hourglass.options import Probability, Size

_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class RNNEncoder(Encoder):
    """A GRU or LSTM over embedded tokens. Subclasses pick the cell; see the module docstring for the Code."""

    modality: ClassVar[str] = "tokens"
    cell: ClassVar[Literal["gru", "lstm"]]

    def __init__(
        self,
        *,
        vocab_size: int,
        pad_id: int,
        embed: Size = 256,
        hidden: Size = 256,
        layers: Size = 1,
        bidirectional: bool = True,
        dropout: Probability = 0.0,
    ) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, embed, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        # nn.GRU's own dropout acts between layers only; the embedding dropout above covers the input.
        self.rnn = _CELLS[self.cell](
            embed, hidden, num_layers=layers, bidirectional=bidirectional, batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.layers, self.directions = layers, 2 if bidirectional else 1
        out = hidden * self.directions
        self.spec = CodeSpec(
            vector=out, memory=out, tokens=vocab_size,
            state=StateSpec(hidden=hidden, layers=layers * self.directions, cell=self.cell),
        )

    def forward(self, tokens: Tensor) -> Code:
        """tokens (B, S) long -> Code (see the module docstring)."""
        mask = tokens != self.pad_id  # (B, S)
        # An all-padding row (an empty sentence) is read as one padding token: packing refuses length 0.
        lengths = mask.sum(1).clamp(min=1).cpu()  # (B,)
        x = self.dropout(self.embedding(tokens))  # (B, S, E)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])  # (B, S, dirs*H)
        h = state[0] if isinstance(state, tuple) else state  # (layers*dirs, B, H)
        top = h.view(self.layers, self.directions, *h.shape[1:])[-1]  # (dirs, B, H)
        vector = top.transpose(0, 1).reshape(tokens.shape[0], -1)  # (B, dirs*H)
        return Code(vector=vector, memory=memory, memory_mask=mask, tokens=tokens, state=state)


@register_encoder("gru")
class GRUEncoder(RNNEncoder):
    """Gated recurrent units (Cho et al. 2014)."""

    cell = "gru"


@register_encoder("lstm")
class LSTMEncoder(RNNEncoder):
    """Long short-term memory (Hochreiter & Schmidhuber 1997)."""

    cell = "lstm"
