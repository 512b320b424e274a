"""Recurrent sequence decoders, with and without attention.

- "gru", "lstm" read only the code ``vector`` c (Cho et al. 2014; Sutskever et al. 2014). A learned bridge
  ``h_0 = tanh(W c)`` starts the state, and c is fed at every step beside the previous token, as in Cho et al.
  (2014), eq. 8 and appendix A: ``h_t = f(h_{t-1}, y_{t-1}, c)``, ``o_t = tanh(W_o [h_t; c; y_{t-1}])``.
- "gru-attention", "lstm-attention" read the ``memory``: the global attention of Luong et al. (2015), sec. 3.1,
  with the score chosen by ``attention``: "bahdanau" (additive; Luong's "concat"), "dot" or "general".
  ``h_t = f(h_{t-1}, [y_{t-1}; o_{t-1}])`` (input feeding, sec. 3.3, optional),
  ``c_t = attend(h_t, memory)``, ``o_t = tanh(W_c [c_t; h_t])``. The initial state is a bridge from the mean of
  the memory over real tokens (as in Nematus, Sennrich et al. 2017), so only the memory is needed.

Both map ``o_t`` to the embedding size before the output projection, so that the projection can share the
embedding matrix (``tie_embeddings``; Press & Wolf 2017; Inan et al. 2017).

The state is an immutable NamedTuple of tensors; ``step`` returns a new one and nothing is kept on ``self``.
"""
from __future__ import annotations

from typing import ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hourglass._registry import register_decoder
from hourglass.attention import Attention, AttentionKind, make_attention
from hourglass.code import Code, CodeSpec
from hourglass.decoders.base import SequenceDecoder, from_grid, regroup, to_grid
from hourglass.decoders.narrow import narrow_modules
from hourglass.options import Probability, Size

_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class RNNState(NamedTuple):
    """State of "gru" / "lstm": the RNN state and the code vector fed at every step."""

    hidden: Tensor  # (L, B, H)
    cell: Tensor | None  # (L, B, H) for an LSTM, None for a GRU
    context: Tensor  # (B, D): the code vector c


class AttentionRNNState(NamedTuple):
    """State of "gru-attention" / "lstm-attention"."""

    hidden: Tensor  # (L, B, H)
    cell: Tensor | None  # (L, B, H) for an LSTM, None for a GRU
    mask: Tensor  # (N, S), True at real source tokens, one row per source (N sources; row i reads slot // groups)
    keys: Tensor  # (N, S, A) or (N, S, 2A): the attention's memory part (attention.py, keys), once per source
    values: Tensor  # (N, S, E): W_c m_j, the readout's context columns applied to the memory, once per source
    feed: Tensor  # (B, E): the previous attentional vector o_{t-1} (input feeding); zeros at the start
    groups: int = 1  # rows per source (beam search: K); see decoders.base.regroup
    slots: Tensor | None = None  # (B,) each row's slot in the (N, groups) grid; None: row i at slot i


def _select(x: Tensor | None, index: Tensor, dim: int) -> Tensor | None:
    return None if x is None else x.index_select(dim, index)


class _RecurrentDecoder(SequenceDecoder):
    """Shared parts: embedding, RNN, bridge to the initial state, readout and (tied) output projection."""

    cell: ClassVar[Literal["gru", "lstm"]]

    def __init__(self, *, vocab_size: int, pad_id: int, embed: int, hidden: int, layers: int, dropout: float,
                 extra_input: int, summary: int, readout: int, tie_embeddings: bool) -> None:
        super().__init__()
        self.layers, self.hidden = layers, hidden
        self.embedding = nn.Embedding(vocab_size, embed, padding_idx=pad_id)
        self.rnn = _CELLS[self.cell](embed + extra_input, hidden, num_layers=layers, batch_first=True,
                                     dropout=dropout if layers > 1 else 0.0)
        parts = 2 if self.cell == "lstm" else 1
        self.bridge = nn.Linear(summary, parts * layers * hidden)  # summary -> every layer's h_0 (and c_0)
        self.readout = nn.Linear(readout, embed)
        self.output = nn.Linear(embed, vocab_size)
        if tie_embeddings:
            self.output.weight = self.embedding.weight  # (V, E), shared (Press & Wolf 2017)
        self.dropout = nn.Dropout(dropout)

    def _start(self, summary: Tensor) -> tuple[Tensor, Tensor | None]:
        """summary (B, Dc) -> h_0 (L, B, H) and, for an LSTM, c_0 (L, B, H): the learned bridge tanh(W s)."""
        b = summary.shape[0]
        parts = torch.tanh(self.bridge(summary)).view(b, -1, self.layers, self.hidden)  # (B, 1|2, L, H)
        parts = parts.permute(1, 2, 0, 3).contiguous()  # (1|2, L, B, H)
        return (parts[0], parts[1]) if self.cell == "lstm" else (parts[0], None)

    def _run(self, x: Tensor, hidden: Tensor, cell: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """x (B, T, Din) -> outputs of the top layer (B, T, H) and the new hidden (and cell) (L, B, H)."""
        if cell is None:
            out, hidden = self.rnn(x, hidden)
            return out, hidden, None
        out, (hidden, cell) = self.rnn(x, (hidden, cell))
        return out, hidden, cell

    def _readout(self, features: Tensor) -> Tensor:
        """(..., F) -> o (..., E) = tanh(W [features])."""
        return torch.tanh(self.readout(features))

    def _project(self, o: Tensor) -> Tensor:
        """o (..., E) -> logits (..., V)."""
        return self.output(self.dropout(o))

    def narrow_vocabulary(self, ids: Tensor) -> SequenceDecoder:
        return narrow_modules(self, ids, embedding="embedding", output="output")


class RNNDecoder(_RecurrentDecoder):
    """Reads only the code vector (Cho et al. 2014); see the module docstring."""

    needs: ClassVar[tuple[str, ...]] = ("vector",)
    attends: ClassVar[bool] = False

    def __init__(self, *, code: CodeSpec, vocab_size: int, pad_id: int, embed: Size = 256, hidden: Size = 256,
                 layers: Size = 1, dropout: Probability = 0.0, tie_embeddings: bool = False) -> None:
        c = code.vector
        super().__init__(vocab_size=vocab_size, pad_id=pad_id, embed=embed, hidden=hidden, layers=layers,
                         dropout=dropout, extra_input=c, summary=c, readout=hidden + c + embed,
                         tie_embeddings=tie_embeddings)

    def init_state(self, code: Code) -> RNNState:
        hidden, cell = self._start(code.vector)
        return RNNState(hidden=hidden, cell=cell, context=code.vector)

    def _advance(self, tokens: Tensor, state: RNNState) -> tuple[Tensor, RNNState]:
        """tokens (B, T) -> logits (B, T, V) and the state after them. c is the same at every step."""
        emb = self.dropout(self.embedding(tokens))  # (B, T, E)
        context = state.context.unsqueeze(1).expand(-1, tokens.shape[1], -1)  # (B, T, D)
        out, hidden, cell = self._run(torch.cat([emb, context], -1), state.hidden, state.cell)  # (B, T, H)
        logits = self._project(self._readout(torch.cat([out, context, emb], -1)))  # (B, T, V)
        return logits, state._replace(hidden=hidden, cell=cell)

    def forward(self, tokens: Tensor, state: RNNState) -> tuple[Tensor, None]:
        """tokens (B, T) -> logits (B, T, V); no attention."""
        return self._advance(tokens, state)[0], None

    def step(self, tokens: Tensor, state: RNNState) -> tuple[Tensor, RNNState, None]:
        """tokens (B,) -> logits (B, V), new state, no attention."""
        logits, state = self._advance(tokens.unsqueeze(1), state)
        return logits.squeeze(1), state, None

    def reorder_state(self, state: RNNState, index: Tensor) -> RNNState:
        return RNNState(hidden=state.hidden.index_select(1, index), cell=_select(state.cell, index, 1),
                        context=state.context.index_select(0, index))


class AttentionRNNDecoder(_RecurrentDecoder):
    """Luong et al. (2015) global attention over the memory; see the module docstring."""

    needs: ClassVar[tuple[str, ...]] = ("memory",)
    #: The state's fields held once per source (``regroup``): they move only when a sentence leaves the batch.
    #: No ``memory``: after ``init_state`` a step reads only the keys and the values made from it (``_attend``),
    #: and the state's per-source tensors are copied whenever a sentence leaves a search's batch. Without the
    #: (N, S, D) memory in the state, greedy search on the Multi30k GRU took 3.6% less time and beam 5 0.3-1.4%
    #: less (best and median of 5 rounds; bench/RESULTS-seq2seq.md); the pointer decoders, which mix the memory
    #: itself, keep it.
    per_source: ClassVar[tuple[str, ...]] = ("mask", "keys", "values")

    def __init__(self, *, code: CodeSpec, vocab_size: int, pad_id: int, embed: Size = 256, hidden: Size = 256,
                 layers: Size = 1, dropout: Probability = 0.0, attention: AttentionKind = "bahdanau",
                 input_feeding: bool = True, tie_embeddings: bool = False) -> None:
        d = code.memory
        super().__init__(vocab_size=vocab_size, pad_id=pad_id, embed=embed, hidden=hidden, layers=layers,
                         dropout=dropout, extra_input=embed if input_feeding else 0, summary=d,
                         readout=d + hidden, tie_embeddings=tie_embeddings)
        self.input_feeding, self.memory_dim = input_feeding, d
        self.attention = self._build_attention(attention, hidden, d)

    def _build_attention(self, kind: AttentionKind, query_dim: int, memory_dim: int) -> Attention:
        """The attention module (the pointer decoders build theirs with coverage)."""
        return make_attention(kind, query_dim, memory_dim)

    def init_state(self, code: Code) -> AttentionRNNState:
        fields = self._start_fields(code)  # before values: keeps the order of the memory gradient sums (bitwise)
        del fields["memory"]  # read only through the keys and values (per_source)
        values = F.linear(code.memory, self.readout.weight[:, : self.memory_dim])  # (B, S, E): see _attend
        return AttentionRNNState(**fields, values=values)

    def _start_fields(self, code: Code) -> dict[str, Tensor | None]:
        """The fields that every attention RNN state starts with (the pointer decoders' too): hidden and cell
        (bridged from the mean of the memory), memory, mask, attention keys and a zero input feed."""
        memory, mask = code.memory, code.memory_mask  # (B, S, D), (B, S)
        real = mask.unsqueeze(-1).to(memory.dtype)  # (B, S, 1)
        mean = (memory * real).sum(1) / real.sum(1).clamp(min=1)  # (B, D)
        hidden, cell = self._start(mean)
        feed = memory.new_zeros(memory.shape[0], self.embedding.embedding_dim)  # (B, E)
        return dict(hidden=hidden, cell=cell, memory=memory, mask=mask, keys=self.attention.keys(memory), feed=feed)

    def _context(self, out: Tensor, state: AttentionRNNState, coverage: Tensor | None = None,
                 values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Top-layer outputs (B[, T], H) -> the attention's mix of ``values`` (N, S, F), by default the memory
        (context vectors, F = D; only the pointer decoders' state holds it), (B[, T], F), and the weights
        (B[, T], S).

        The rows of one source attend together, as groups*T queries over one copy of its memory. ``coverage``
        (B, S), one per row, is placed on the same grid (decoders/pointer.py)."""
        n = state.mask.shape[0]
        grid = to_grid(out, state.slots, n * state.groups)  # (N*groups[, T], H)
        if coverage is not None:
            coverage = to_grid(coverage, state.slots, n * state.groups).view(n, state.groups, -1)  # (N, groups, S)
        weights = self.attention.weights(grid.reshape(n, -1, grid.shape[-1]), state.keys, state.mask,
                                         coverage=coverage)  # (N, groups[*T], S)
        mixed = torch.bmm(weights, state.memory if values is None else values)  # (N, groups[*T], F)
        mixed = from_grid(mixed.reshape(*grid.shape[:-1], -1), state.slots)  # (B[, T], F)
        weights = from_grid(weights.reshape(*grid.shape[:-1], -1), state.slots)  # (B[, T], S)
        return mixed, weights

    def _attend(self, out: Tensor, state: AttentionRNNState) -> tuple[Tensor, Tensor]:
        """Top-layer outputs s (B[, T], H) -> attentional vectors o (B[, T], E) and weights (B[, T], S).

        o = tanh(W_c c + W_s s + b) (the readout of [c; s]), with W_c c = sum_j a_j (W_c m_j): the weights mix
        ``state.values``, the memory through W_c computed once per source, never the memory itself. The same
        number as ``_readout(cat([c, s]))`` up to rounding, but each row then costs S x E multiply-adds for
        W_c c instead of S x D for c and D x E for W_c c, and the K beams of a source share its values (on
        Multi30k's GRU, D = 384, E = 128, S = 16: a beam-5 step of 640 rows went from 12.3 ms to 10.6 ms)."""
        mixed, weights = self._context(out, state, values=state.values)  # (B[, T], E), (B[, T], S)
        d = self.memory_dim
        return torch.tanh(mixed + F.linear(out, self.readout.weight[:, d:], self.readout.bias)), weights

    def _step(self, emb: Tensor, state: AttentionRNNState) -> tuple[Tensor, Tensor, AttentionRNNState]:
        """emb (B, E) -> o (B, E), weights (B, S), new state."""
        x = torch.cat([emb, state.feed], -1) if self.input_feeding else emb  # (B, Din)
        out, hidden, cell = self._run(x.unsqueeze(1), state.hidden, state.cell)  # (B, 1, H)
        o, weights = self._attend(out.squeeze(1), state)
        return o, weights, state._replace(hidden=hidden, cell=cell, feed=o)

    def forward(self, tokens: Tensor, state: AttentionRNNState) -> tuple[Tensor, Tensor]:
        """tokens (B, T) -> logits (B, T, V), attention (B, T, S)."""
        emb = self.dropout(self.embedding(tokens))  # (B, T, E)
        if not self.input_feeding:
            # Without input feeding the RNN does not depend on attention: run it over all T at once.
            out, _, _ = self._run(emb, state.hidden, state.cell)  # (B, T, H)
            o, weights = self._attend(out, state)  # (B, T, E), (B, T, S)
            return self._project(o), weights
        outputs, weights = [], []
        for t in range(tokens.shape[1]):
            o, w, state = self._step(emb[:, t], state)
            outputs.append(o)
            weights.append(w)
        return self._project(torch.stack(outputs, 1)), torch.stack(weights, 1)  # (B, T, V), (B, T, S)

    def step(self, tokens: Tensor, state: AttentionRNNState) -> tuple[Tensor, AttentionRNNState, Tensor]:
        """tokens (B,) -> logits (B, V), new state, attention (B, S)."""
        o, weights, state = self._step(self.dropout(self.embedding(tokens)), state)
        return self._project(o), state, weights

    def reorder_state(self, state: AttentionRNNState, index: Tensor) -> AttentionRNNState:
        keep, groups, slots = regroup(index, state.groups, state.mask.shape[0], state.slots)
        moved = {} if keep is None else {f: getattr(state, f).index_select(0, keep) for f in self.per_source}
        return state._replace(hidden=state.hidden.index_select(1, index), cell=_select(state.cell, index, 1),
                              feed=state.feed.index_select(0, index), groups=groups, slots=slots, **moved)


@register_decoder("gru")
class GRUDecoder(RNNDecoder):
    cell = "gru"


@register_decoder("lstm")
class LSTMDecoder(RNNDecoder):
    cell = "lstm"


@register_decoder("gru-attention")
class GRUAttentionDecoder(AttentionRNNDecoder):
    cell = "gru"


@register_decoder("lstm-attention")
class LSTMAttentionDecoder(AttentionRNNDecoder):
    cell = "lstm"
