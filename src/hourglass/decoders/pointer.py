"""Pointer-generator decoders (See et al. 2017): attention that can copy source tokens, with coverage.

"gru-pointer" and "lstm-pointer" are the attention decoders of :mod:`hourglass.decoders.rnn` (additive attention,
input feeding) whose output distribution mixes generating a token and copying one from the source::

    P(w)  = p_gen P_vocab(w) + (1 - p_gen) sum_{i: x_i = w} a_i       (See et al. 2017, eq. 9)
    p_gen = sigmoid(w_c^T c_t + w_s^T s_t + w_x^T x_t + b)              (eq. 8)

with c_t the attention's context vector, s_t the top RNN layer's output and x_t the embedded input token. The
copied ids are the source tokens that a text encoder puts in the Code (``Code.tokens``), so the source and the
target must share one vocabulary (``data.joint_vocab: true``, checked when the model is built). With subwords no
word is out of vocabulary, so the paper's per-sentence extended vocabulary is not needed: a rare name is copied
piece by piece.

``coverage: true`` (the default) feeds the sum of the attention of earlier steps into the additive score
(eq. 11), so the model can see what it has already summarized; the coverage loss of eq. 12 that teaches it to
use that is the task's ``coverage_loss`` weight (:mod:`hourglass.tasks.seq2seq`), computed from the attention
this decoder returns.

"transformer-pointer" is the Transformer decoder of :mod:`hourglass.decoders.transformer` with the same mixture:
the copy weights a_i are its last layer's cross-attention, averaged over heads (the weights it returns), and
p_gen = sigmoid(w^T h_t + b) reads the top layer's normalized state h_t, whose residual stream already sums the
input embedding and the cross-attention context (eq. 8's three inputs). It has no coverage vector (See et al.'s
coverage is an RNN-attention feature); the task's ``coverage_loss`` still applies to its attention.

``forward`` and ``step`` return log-probabilities where other decoders return logits. The search and the loss
take a log-softmax of them, which leaves log-probabilities as they are.
"""
from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from hourglass._registry import register_decoder
from hourglass.attention import AdditiveAttention
from hourglass.code import Code, CodeSpec
from hourglass.decoders.base import SequenceDecoder, from_grid
from hourglass.decoders.rnn import AttentionRNNDecoder, _select
from hourglass.decoders.transformer import TransformerDecoder, TransformerState
from hourglass.encoders.transformer import Positions
from hourglass.errors import ConfigError
from hourglass.options import Probability, Size

#: The floor of a mixed probability before its log: a token that is neither generated (p_gen underflows) nor
#: in the source would otherwise get log 0 = -inf, and a NaN gradient through the mixture.
_FLOOR = 1e-12


_NOT_COPYING = {"gru": "gru-attention", "lstm": "lstm-attention", "transformer": "transformer"}


def _check_vocabulary(cell: str, source_vocab: int | None, vocab_size: int, shared: bool) -> None:
    """Copying puts source ids into the output: both sides must use one vocabulary (the data says so)."""
    if not shared or source_vocab != vocab_size:
        raise ConfigError(
            f'Decoder "{cell}-pointer" copies source tokens into its output, so the source and the target must share '
            f"one vocabulary, but this data has separate ones (source {source_vocab} pieces, target {vocab_size}). "
            f'Set data.joint_vocab=true, or use a decoder that does not copy ("{_NOT_COPYING.get(cell, cell)}").'
        )


def mix(logits: Tensor, gen: Tensor, weights: Tensor, ids: Tensor) -> Tensor:
    """logits (B[, T], V), p_gen (B[, T], 1), weights (B[, T], S), source ids (B, S) -> log P(w) (B[, T], V)
    (eq. 9). In float32 whatever the autocast: a sum of probabilities in bfloat16 would round the small ones away."""
    vocab = torch.softmax(logits.float(), -1)  # (B[, T], V)
    if logits.dim() == 3:
        ids = ids.unsqueeze(1).expand(-1, logits.shape[1], -1)  # (B, T, S)
    copy = torch.zeros_like(vocab).scatter_add_(-1, ids, weights.float())  # (B[, T], V): eq. 9's sum
    gen = gen.float()
    return (gen * vocab + (1 - gen) * copy).clamp_min(_FLOOR).log()


def row_ids(tokens: Tensor, groups: int, slots: Tensor | None) -> Tensor:
    """The source ids of each decoder row (B, S), from the per-source (N, S) (decoders.base.regroup's grid)."""
    return from_grid(tokens.repeat_interleave(groups, 0) if groups > 1 else tokens, slots)


class PointerState(NamedTuple):
    """State of "gru-pointer" / "lstm-pointer": :class:`~hourglass.decoders.rnn.AttentionRNNState` plus the
    source ids to copy and the coverage."""

    hidden: Tensor  # (L, B, H)
    cell: Tensor | None  # (L, B, H) for an LSTM, None for a GRU
    memory: Tensor  # (N, S, D), one per source
    mask: Tensor  # (N, S), True at real source tokens
    keys: Tensor  # (N, S, A) or (N, S, 2A): the attention's memory part (attention.py, keys), once per source
    feed: Tensor  # (B, E): o_{t-1} (input feeding)
    tokens: Tensor  # (N, S) long: the source ids, in the target vocabulary
    coverage: Tensor | None  # (B, S): the sum of each row's earlier attention; None without coverage
    groups: int = 1  # rows per source; see decoders.base.regroup
    slots: Tensor | None = None  # (B,) each row's slot in the (N, groups) grid


class PointerRNNDecoder(AttentionRNNDecoder):
    """See the module docstring."""

    needs: ClassVar[tuple[str, ...]] = ("memory", "tokens")
    per_source: ClassVar[tuple[str, ...]] = ("memory", "mask", "keys", "tokens")

    def __init__(self, *, code: CodeSpec, vocab_size: int, pad_id: int, shared_vocab: bool = False,
                 embed: Size = 256, hidden: Size = 256, layers: Size = 1, dropout: Probability = 0.0,
                 coverage: bool = True, input_feeding: bool = True, tie_embeddings: bool = False) -> None:
        _check_vocabulary(self.cell, code.tokens, vocab_size, shared_vocab)
        self.coverage = coverage  # a plain bool, which nn.Module takes before its __init__; _build_attention reads it
        super().__init__(code=code, vocab_size=vocab_size, pad_id=pad_id, embed=embed, hidden=hidden, layers=layers,
                         dropout=dropout, attention="bahdanau", input_feeding=input_feeding,
                         tie_embeddings=tie_embeddings)
        self.switch = nn.Linear(code.memory + hidden + embed, 1)  # p_gen from [c_t; s_t; x_t] (eq. 8)

    # Not narrowed (None): the copy distribution puts probability on source ids anywhere in the vocabulary.
    narrow_vocabulary = SequenceDecoder.narrow_vocabulary

    def _build_attention(self, kind: str, query_dim: int, memory_dim: int) -> AdditiveAttention:
        return AdditiveAttention(query_dim=query_dim, memory_dim=memory_dim, coverage=self.coverage)  # (eq. 11)

    def init_state(self, code: Code) -> PointerState:
        coverage = code.memory.new_zeros(code.memory_mask.shape) if self.coverage else None  # (B, S)
        return PointerState(**self._start_fields(code), tokens=code.tokens, coverage=coverage)

    def _point(self, emb: Tensor, state: PointerState) -> tuple[Tensor, Tensor, Tensor, PointerState]:
        """emb (B, E) -> o (B, E), p_gen (B, 1), weights (B, S), the next state."""
        x = torch.cat([emb, state.feed], -1) if self.input_feeding else emb  # (B, Din)
        out, hidden, cell = self._run(x.unsqueeze(1), state.hidden, state.cell)  # (B, 1, H)
        out = out.squeeze(1)  # (B, H)
        context, weights = self._context(out, state, state.coverage)  # (B, D), (B, S)
        o = self._readout(torch.cat([context, out], -1))  # (B, E)
        gen = torch.sigmoid(self.switch(torch.cat([context, out, emb], -1)))  # (B, 1)
        coverage = None if state.coverage is None else state.coverage + weights  # (B, S)
        return o, gen, weights, state._replace(hidden=hidden, cell=cell, feed=o, coverage=coverage)

    def _mix(self, o: Tensor, gen: Tensor, weights: Tensor, ids: Tensor) -> Tensor:
        """o (B[, T], E), p_gen (B[, T], 1), weights (B[, T], S), source ids (B, S) -> log P(w) (B[, T], V)."""
        return mix(self._project(o), gen, weights, ids)

    def _row_ids(self, state: PointerState) -> Tensor:
        return row_ids(state.tokens, state.groups, state.slots)

    def forward(self, tokens: Tensor, state: PointerState) -> tuple[Tensor, Tensor]:
        """tokens (B, T) -> log-probabilities (B, T, V), attention (B, T, S). Step by step: coverage and input
        feeding make each step depend on the previous one's attention."""
        emb = self.dropout(self.embedding(tokens))  # (B, T, E)
        outputs, gates, weights = [], [], []
        ids = self._row_ids(state)  # (B, S)
        for t in range(tokens.shape[1]):
            o, gen, w, state = self._point(emb[:, t], state)
            outputs.append(o)
            gates.append(gen)
            weights.append(w)
        attention = torch.stack(weights, 1)  # (B, T, S)
        return self._mix(torch.stack(outputs, 1), torch.stack(gates, 1), attention, ids), attention

    def step(self, tokens: Tensor, state: PointerState) -> tuple[Tensor, PointerState, Tensor]:
        """tokens (B,) -> log-probabilities (B, V), new state, attention (B, S)."""
        ids = self._row_ids(state)  # (B, S), before the state moves on (same grid)
        o, gen, weights, state = self._point(self.dropout(self.embedding(tokens)), state)
        return self._mix(o, gen, weights, ids), state, weights

    def reorder_state(self, state: PointerState, index: Tensor) -> PointerState:
        return super().reorder_state(state, index)._replace(coverage=_select(state.coverage, index, 0))


@register_decoder("gru-pointer")
class GRUPointerDecoder(PointerRNNDecoder):
    cell = "gru"


@register_decoder("lstm-pointer")
class LSTMPointerDecoder(PointerRNNDecoder):
    cell = "lstm"


@register_decoder("transformer-pointer")
class TransformerPointerDecoder(TransformerDecoder):
    """The Transformer decoder with a copy switch over its cross-attention (module docstring)."""

    needs: ClassVar[tuple[str, ...]] = ("memory", "tokens")

    def __init__(self, *, code: CodeSpec, vocab_size: int, pad_id: int, shared_vocab: bool = False,
                 d_model: Size = 256, heads: Size = 4, layers: Size = 3, ff: Size = 1024, dropout: Probability = 0.1,
                 max_len: Size = 512, positions: Positions = "sinusoidal", tie_embeddings: bool = False,
                 use_cache: bool = True) -> None:
        _check_vocabulary("transformer", code.tokens, vocab_size, shared_vocab)
        super().__init__(code=code, vocab_size=vocab_size, pad_id=pad_id, d_model=d_model, heads=heads,
                         layers=layers, ff=ff, dropout=dropout, max_len=max_len, positions=positions,
                         tie_embeddings=tie_embeddings, use_cache=use_cache)
        self.switch = nn.Linear(d_model, 1)  # p_gen from the top layer's state

    narrow_vocabulary = SequenceDecoder.narrow_vocabulary  # None: not narrowed, as PointerRNNDecoder explains

    def init_state(self, code: Code) -> TransformerState:
        return super().init_state(code)._replace(tokens=code.tokens)

    def _run(self, tokens: Tensor, state: TransformerState) -> tuple[Tensor, Tensor, tuple, tuple]:
        """As TransformerDecoder._run, with log P(w) (B, T, V) (eq. 9) in place of the logits."""
        hidden, weights, keys, values = self._hidden(tokens, state)  # (B, T, D), (B, T, S)
        gen = torch.sigmoid(self.switch(hidden))  # (B, T, 1)
        logp = mix(self.output(hidden), gen, weights, row_ids(state.tokens, state.groups, state.slots))
        return logp, weights, keys, values
