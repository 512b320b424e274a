"""The Transformer decoder (Vaswani et al. 2017), pre-norm, with an incremental key/value cache.

Each layer: masked self-attention, cross-attention over the encoder memory, feed-forward; LayerNorm before each
sub-layer and once after the stack (pre-norm, Xiong et al. 2020).

``step`` decodes one token. With ``use_cache=True`` (default) the keys and values of the previous positions
are kept in the state that ``step`` returns (never on ``self``), so a step costs O(t) instead of re-running the
whole prefix; ``use_cache=False`` re-runs the prefix each step, which gives the same outputs and exists to
measure what the cache saves. The cross-attention keys and values depend only on the source: ``init_state``
computes them once.

Beam search keeps K rows per sentence, and all K read the same source. The state therefore holds the
cross-attention keys and values once per source (``groups`` = K rows each), and the K rows of a sentence
attend to them together as K queries; ``reorder_state`` moves them only when a sentence leaves the batch.
Moving them with the beams at every step would copy L x 2 x (B*K) x S x d numbers per token. With beam pruning
a sentence keeps fewer rows: they sit in its ``groups`` slots (``slots``; decoders.base.regroup).

``forward`` returns the cross-attention weights of the last layer, averaged over heads, (B, T, S); ``step``
returns (B, S).
"""
from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from hourglass._registry import register_decoder
from hourglass.attention import masked_softmax
from hourglass.code import Code, CodeSpec
from hourglass.decoders.base import SequenceDecoder, from_grid, regroup, to_grid
from hourglass.decoders.narrow import narrow_modules
from hourglass.encoders.transformer import Positions, TokenEmbedding, check_heads
from hourglass.options import Probability, Size


class TransformerState(NamedTuple):
    """The decoder state. L layers, h heads, head size dh, t tokens decoded so far."""

    cross_keys: Tensor  # (L, N, h, S, dh), one per source (N sources; row i reads source slot // groups)
    cross_values: Tensor  # (L, N, h, S, dh)
    mask: Tensor  # (N, S), True at real source tokens
    self_keys: tuple[Tensor, ...]  # L x (B, h, t, dh); t = 0 when use_cache=False. A tuple, not one stacked
    self_values: tuple[Tensor, ...]  # L x (B, h, t, dh)   tensor: stacking would copy the cache every step
    prefix: Tensor  # (B, t) the tokens decoded so far (their count is the next position)
    groups: int = 1  # grid width: slots [n*groups, (n+1)*groups) read source n; see decoders.base.regroup
    slots: Tensor | None = None  # (B,) each row's slot in the (N, groups) grid; None: row i at slot i
    order: Tensor | None = None  # (B,) a pending reorder: row i of the caches is row order[i] of self_keys
    tokens: Tensor | None = None  # (N, S) source ids, one row per source (a copying decoder's; else None)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with h heads (Vaswani et al. 2017, sec. 3.2), keys projected separately.

    Written out (not ``nn.MultiheadAttention``) so that keys and values can be projected once and cached, and
    so that a query can come from a different size than the keys (cross-attention on a bidirectional RNN).
    """

    def __init__(self, *, d_model: int, heads: int, kv_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, d_model // heads
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(kv_dim, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:
        """(B, T, h*dh) -> (B, h, T, dh)."""
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def project_kv(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """source (B, S, Dk) -> keys, values, each (B, h, S, dh)."""
        k, v = self.key_value(source).chunk(2, dim=-1)  # (B, S, D) each
        return self._split(k), self._split(v)

    def forward(self, x: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """x (B, T, D), keys/values (B, h, S, dh), mask broadcastable to (B, h, T, S), True where allowed (None:
        everywhere).

        Returns the output (B, T, D) and the attention weights (B, h, T, S) (before dropout).
        """
        q = self._split(self.query(x)) * self.head_dim**-0.5  # (B, h, T, dh), scaled here: T*dh numbers, not T*S
        scores = q @ keys.transpose(-1, -2)  # (B, h, T, S)
        weights = masked_softmax(scores, mask)  # (B, h, T, S)
        out = self.dropout(weights) @ values  # (B, h, T, dh)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)  # (B, T, D)
        return self.out(out), weights


class DecoderLayer(nn.Module):
    """One pre-norm layer: x + SelfAttn(LN(x)), + CrossAttn(LN(x), memory), + FF(LN(x))."""

    def __init__(self, *, d_model: int, heads: int, ff: int, dropout: float, memory_dim: int) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model=d_model, heads=heads, kv_dim=d_model, dropout=dropout)
        self.cross_norm = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model=d_model, heads=heads, kv_dim=memory_dim, dropout=dropout)
        self.ff_norm = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor], cross: tuple[Tensor, Tensor], causal: Tensor | None,
                memory_mask: Tensor, groups: int = 1, order: Tensor | None = None, slots: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x (B, T, D); past keys/values (B0, h, t, dh), whose rows ``order`` (B,) are this batch's (all B0 rows
        when None); cross keys/values (N, h, S, dh) and memory_mask (N, S) for N sources, row i reading source
        ``slots[i] // groups`` (``i // groups`` when slots is None; decoders.base.regroup); causal
        (T, t+T), or None when every position may be seen. Returns x (B, T, D), keys and values (B, h, t+T, dh),
        cross weights (B, h, T, S).
        """
        h = self.self_norm(x)
        k, v = self.self_attn.project_kv(h)  # (B, h, T, dh)
        k, v = _append(past[0], k, order), _append(past[1], v, order)  # (B, h, t+T, dh)
        x = x + self.dropout(self.self_attn(h, k, v, causal)[0])
        a, weights = self._cross(self.cross_norm(x), cross, memory_mask, groups, slots)
        x = x + self.dropout(a)
        x = x + self.dropout(self.ff(self.ff_norm(x)))
        return x, k, v, weights

    def _cross(self, x: Tensor, cross: tuple[Tensor, Tensor], mask: Tensor, groups: int, slots: Tensor | None
               ) -> tuple[Tensor, Tensor]:
        """x (B, T, D) -> cross-attention output (B, T, D), weights (B, h, T, S): the ``groups`` rows of a source
        are its groups*T queries (attention treats every query alike, so this is the same arithmetic)."""
        n = mask.shape[0]
        grid = to_grid(x, slots, n * groups)  # (N*groups, T, D)
        g, t, d = grid.shape
        out, weights = self.cross_attn(grid.reshape(n, groups * t, d), *cross, mask[:, None, None, :])
        heads, s = weights.shape[1], weights.shape[-1]  # weights (N, h, groups*T, S)
        weights = weights.view(n, heads, groups, t, s).transpose(1, 2).reshape(g, heads, t, s)
        return from_grid(out.reshape(g, t, d), slots), from_grid(weights, slots)


@register_decoder("transformer")
class TransformerDecoder(SequenceDecoder):
    """Pre-norm Transformer decoder over the encoder memory (module docstring)."""

    needs: ClassVar[tuple[str, ...]] = ("memory",)
    #: The option of model.decoder that sets :attr:`max_inputs` (named when the data would feed it more).
    max_inputs_option: ClassVar[str] = "max_len"

    def __init__(
        self,
        *,
        code: CodeSpec,
        vocab_size: int,
        pad_id: int,
        d_model: Size = 256,
        heads: Size = 4,
        layers: Size = 3,
        ff: Size = 1024,
        dropout: Probability = 0.1,
        max_len: Size = 512,
        positions: Positions = "sinusoidal",
        tie_embeddings: bool = False,
        use_cache: bool = True,
    ) -> None:
        super().__init__()
        check_heads(d_model, heads, "decoder")
        self.use_cache = use_cache
        self.embedding = TokenEmbedding(vocab_size=vocab_size, d_model=d_model, pad_id=pad_id, max_len=max_len,
                                        positions=positions, dropout=dropout, role="decoder")
        self.layers = nn.ModuleList(
            DecoderLayer(d_model=d_model, heads=heads, ff=ff, dropout=dropout, memory_dim=code.memory)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.output.weight = self.embedding.tokens.weight  # (V, D), shared (Press & Wolf 2017)

    @property
    def max_inputs(self) -> int:
        return self.embedding.max_len

    def narrow_vocabulary(self, ids: Tensor) -> SequenceDecoder | None:
        return narrow_modules(self, ids, embedding="embedding.tokens", output="output")

    def init_state(self, code: Code) -> TransformerState:
        kvs = [layer.cross_attn.project_kv(code.memory) for layer in self.layers]  # L x (B, h, S, dh)
        keys, values = torch.stack([k for k, _ in kvs]), torch.stack([v for _, v in kvs])  # (L, B, h, S, dh)
        empty = tuple(keys[:, :, :, :0].unbind(0))  # L x (B, h, 0, dh)
        prefix = code.memory_mask.new_zeros(code.memory.shape[0], 0, dtype=torch.long)  # (B, 0)
        return TransformerState(cross_keys=keys, cross_values=values, mask=code.memory_mask, self_keys=empty,
                                self_values=empty, prefix=prefix)

    def _run(self, tokens: Tensor, state: TransformerState) -> tuple[Tensor, Tensor, tuple, tuple]:
        """tokens (B, T) after the t cached positions of ``state`` -> logits (B, T, V), cross weights
        (B, T, S) of the last layer averaged over heads, and all keys and values, L x (B, h, t+T, dh)."""
        hidden, weights, keys, values = self._hidden(tokens, state)
        return self.output(hidden), weights, keys, values

    def _hidden(self, tokens: Tensor, state: TransformerState) -> tuple[Tensor, Tensor, tuple, tuple]:
        """As :meth:`_run`, with the normalized top-layer states (B, T, D) in place of the logits."""
        t, n = state.self_keys[0].shape[2], tokens.shape[1]
        x = self.embedding(tokens, start=t)  # (B, T, D)
        # (T, t+T); None for one new token, which may see every position (the common step of a search)
        causal = None if n == 1 else torch.ones(n, t + n, dtype=torch.bool, device=tokens.device).tril(t)
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            past = (state.self_keys[i], state.self_values[i])
            x, k, v, weights = layer(x, past, (state.cross_keys[i], state.cross_values[i]), causal, state.mask,
                                     state.groups, state.order, state.slots)
            keys.append(k)
            values.append(v)
        return self.norm(x), weights.mean(1), tuple(keys), tuple(values)

    def forward(self, tokens: Tensor, state: TransformerState) -> tuple[Tensor, Tensor]:
        """tokens (B, T) from the initial state -> logits (B, T, V), cross-attention (B, T, S)."""
        logits, weights, _, _ = self._run(tokens, state)
        return logits, weights

    def step(self, tokens: Tensor, state: TransformerState) -> tuple[Tensor, TransformerState, Tensor]:
        """tokens (B,) -> logits (B, V), new state, cross-attention (B, S)."""
        prefix = torch.cat([state.prefix, tokens.unsqueeze(1)], 1)  # (B, t+1)
        if self.use_cache:
            logits, weights, keys, values = self._run(tokens.unsqueeze(1), state)  # (B, 1, V), (B, 1, S)
            state = state._replace(self_keys=keys, self_values=values, prefix=prefix, order=None)
        else:
            # Without the cache, the whole prefix is decoded again from position 0 (for benchmarks).
            logits, weights, _, _ = self._run(prefix, state)  # (B, t+1, V), (B, t+1, S)
            state = state._replace(prefix=prefix)
        return logits[:, -1], state, weights[:, -1]

    def reorder_state(self, state: TransformerState, index: Tensor) -> TransformerState:
        """Rows ``index`` (B',) of the state. The per-source parts move only if the sources the new rows read are
        not already in place. The self-attention caches are not copied here: the reorder is kept pending and the
        next step gathers the rows as it appends its keys and values (one copy of the cache per step, not two)."""
        keep, groups, slots = regroup(index, state.groups, state.mask.shape[0], state.slots)
        cross_keys, cross_values, mask, ids = state.cross_keys, state.cross_values, state.mask, state.tokens
        if keep is not None:
            cross_keys, cross_values, mask = cross_keys.index_select(1, keep), cross_values.index_select(1, keep), \
                mask.index_select(0, keep)
            ids = None if ids is None else ids.index_select(0, keep)
        return state._replace(cross_keys=cross_keys, cross_values=cross_values, mask=mask, groups=groups, slots=slots,
                              tokens=ids,
                              prefix=state.prefix.index_select(0, index),
                              order=index if state.order is None else state.order.index_select(0, index))


def _append(past: Tensor, new: Tensor, order: Tensor | None) -> Tensor:
    """past (B0, h, t, dh), new (B, h, T, dh) -> (B, h, t+T, dh): rows ``order`` (B,) of ``past`` (all of them when
    None), then ``new``. Gathering into the result directly copies the cache once, where index_select and then
    cat would copy it twice (beam search reorders every step)."""
    if order is None or past.dtype != new.dtype:  # (a cache made outside autocast and a step inside it)
        return torch.cat([past if order is None else past.index_select(0, order), new], 2)
    t = past.shape[2]
    out = new.new_empty(new.shape[0], new.shape[1], t + new.shape[2], new.shape[3])
    torch.index_select(past, 0, order, out=out[:, :, :t])
    out[:, :, t:] = new
    return out
