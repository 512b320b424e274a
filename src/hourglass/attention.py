"""Attention over an encoder memory: additive (Bahdanau et al. 2015) and multiplicative (Luong et al. 2015).

Every module maps a query and a memory to a context vector and the weights that made it::

    context, weights = attention(query, memory, mask)
    # query (B, H) or (B, T, H); memory (B, S, D); mask (B, S) True at real positions
    # -> context (B, D) or (B, T, D); weights (B, S) or (B, T, S)

Masked positions get exactly zero weight. A (B, T, H) query attends for T decoder positions at once, which lets
a decoder without input feeding attend for a whole target sequence in one call during teacher forcing.

The part of the score that depends only on the memory (``W_m m_j`` in the additive score, ``W_a m_j`` in the
general score) is the same at every decoder step. :meth:`keys` computes it once; a decoder keeps the result in
its state (never on ``self``) and passes it back as ``keys=``.

Coverage (See et al. 2017, Tu et al. 2016) is an optional input to the additive score: a (B, S) sum of the
weights of earlier steps (or (B, T, S), one per query), so that the model can learn not to attend to the same
words again.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hourglass.errors import ConfigError

AttentionKind = Literal["bahdanau", "dot", "general"]


def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over the last axis with exactly zero weight where ``mask`` is False (None: no position masked).

    scores (..., S), a tensor that the caller does not read again: without a gradient to keep, it is masked in
    place, and the weights are zeroed in place (two fewer allocations of its size per call; a beam-search step
    calls this once per layer and head group). mask broadcastable to scores. The most negative finite number
    (not -inf) keeps a row whose positions are all masked (an empty source) free of NaN; multiplying by the mask
    then zeroes that row.
    """
    if mask is None:
        return torch.softmax(scores, dim=-1)
    fill = torch.finfo(scores.dtype).min
    if torch.is_grad_enabled() and scores.requires_grad:  # autograd needs the tensors that in-place ops change
        return torch.softmax(scores.masked_fill(~mask, fill), dim=-1) * mask
    return torch.softmax(scores.masked_fill_(~mask, fill), dim=-1).mul_(mask)


class Attention(nn.Module):
    """Shared plumbing: (B, H) or (B, T, H) queries, masking, and the weighted sum of the memory."""

    def keys(self, memory: Tensor) -> Tensor:
        """memory (B, S, D) -> keys (B, S, A'): the query-independent part of the score, in a form that only
        :meth:`score` reads (A' = A, or 2A for the additive score's factored form)."""
        raise NotImplementedError

    def score(self, query: Tensor, keys: Tensor, coverage: Tensor | None) -> Tensor:
        """query (B, T, H), keys (B, S, A') from :meth:`keys` -> scores (B, T, S)."""
        raise NotImplementedError

    def forward(
        self,
        query: Tensor,
        memory: Tensor,
        mask: Tensor,
        *,
        keys: Tensor | None = None,
        coverage: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """query (B, H) or (B, T, H), memory (B, S, D), mask (B, S) -> context (B[, T], D), weights (B[, T], S).

        coverage (B, S), the same for every query, or (B, T, S), one per query (additive attention only)."""
        single = query.dim() == 2
        q = query.unsqueeze(1) if single else query  # (B, T, H)
        k = self.keys(memory) if keys is None else keys  # (B, S, A')
        weights = self.weights(q, k, mask, coverage=coverage)  # (B, T, S)
        context = torch.bmm(weights, memory)  # (B, T, D)
        if single:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights

    def weights(self, query: Tensor, keys: Tensor, mask: Tensor, *, coverage: Tensor | None = None) -> Tensor:
        """query (B, T, H), keys (B, S, A') (from :meth:`keys`), mask (B, S) -> weights (B, T, S), without the
        context: for a caller that mixes something else than the memory with them (decoders/rnn.py)."""
        cov = coverage.unsqueeze(1) if coverage is not None and coverage.dim() == 2 else coverage  # (B, 1|T, S)
        return masked_softmax(self.score(query, keys, cov), mask.unsqueeze(1))


#: The most numbers (256 K: 1 MB in float32) in one piece of the additive score's (B, T, S, A) tensor without a
#: gradient: small enough for a core's L2 cache, large enough that the per-piece calls cost little.
CHUNK = 1 << 18


class AdditiveAttention(Attention):
    """Bahdanau et al. (2015), eq. 6: ``e_ij = v^T tanh(W_q s_i + W_m m_j [+ w_c cov_ij])``.

    Luong et al. (2015) call the same score "concat". ``coverage=True`` adds the coverage term of See et al.
    (2017), eq. 11.

    Computed as ``2 v^T (sigmoid(2 W_q s_i + 2 W_m m_j [+ 2 w_c cov_ij]) - 1/2)``, the same number, since tanh(x) =
    2 sigmoid(2x) - 1. The reason is speed: torch's tanh kernel can be slow on CPU (over 1.6 M float32 numbers, 5.1
    ms against 0.7 ms for sigmoid on the AVX-512 CPU where it was first measured; torch 2.13, one thread), and this
    (B, T, S, A) sum is the largest cost of a batched beam-search step. Where tanh is fast, sigmoid is close to it
    (an Intel Xeon with AVX-512 and AMX: 0.47 against 0.58 ms in float32; in bfloat16 tanh took 2.4 ms and sigmoid
    0.7). ``keys`` holds ``2 W_m m_j``. Without a gradient the sigmoid runs in place, and the shift and the product
    with ``2 v`` are one pass, ``addcmul(-v, sigmoid, 2 v)``, where a subtraction and then a product were two: the
    score of a 640-row beam step on Multi30k (K = 5, S = 20, A = 256) went from 2.0-2.1 to 1.5-1.6 ms, and a whole
    GRU beam search took 1.7-2.2% less time (greedy 0.8-3.4%), with the same outputs. (Dropping the shift, a
    constant that the softmax cancels, would put an offset of sum(v) into the score, which bfloat16 then rounds
    coarsely.)

    Without a gradient (search, evaluation) the sum runs over a few sentences at a time (:data:`CHUNK`): each
    piece of the (B, T, S, A) tensor then stays in the CPU's cache through its passes (sum, sigmoid, shift and
    product with v, sum over A) instead of going out to memory and back each time, and no tensor of that size is
    allocated.
    The dot with v is a multiply and a sum over A, row by row, never a matrix product: a matrix product rounds a
    row differently with the number of rows around it (MKL's blocks of four), which made a sentence's scores
    depend on its batch by about 1e-7. Given the query and key projections, its scores are now the same bits
    alone, in a batch and in any pieces, when A is a multiple of 16 (the vector width; the default A, the
    decoder's hidden size, is 256). The projections themselves are matrix products and keep that dependence,
    as every layer of every decoder does. With a gradient, the whole tensor is kept for the backward pass.

    Without a gradient or coverage, in float32 or float64, the score is factored: sigmoid(q + k) =
    1 / (1 + exp(-q) exp(-k)), with q = 2 W_q s_i and k = 2 W_m m_j. :meth:`keys` then hands over
    [k ; exp(-k)] (B, S, 2A), once per source, and a call takes exp(-q) once per query: (T + S) x A
    exponentials per sentence instead of T x S x A, and the (B, T, S, A) passes are 1 + exp(-q) exp(-k) (one
    ``addcmul``), v divided by it, and the sum over A, none of them an exponential; the shift, -sum(v) / 2,
    comes once per score, after the sum. A beam step's score on Multi30k (128 sentences, K = 5,
    S = 16, A = 256; the query projection included) went from 2.6-2.8 ms to 2.0 ms on an AVX2 CPU (two
    threads), a teacher-forced validation batch's attention (80 x 20 queries, S = 18) from 9.3-9.5 to 7.7 ms,
    and a whole beam-5 search of the trained GRU by 3-4%, with the same 1,000 outputs. Greedy search, one query
    per source, gains little and pays for keys twice as wide, copied whenever a sentence leaves its batch: it
    took 0-4% longer (bench/RESULTS-seq2seq.md). A sentence with a number beyond
    :data:`EXP_BOUND` in its q or k (where an exponential could overflow) gets the sigmoid form, decided
    sentence by sentence, so that its scores stay the same bits alone and in a batch. One exception: a padded
    position counts (a key of source padding, or a query of target padding in teacher forcing), so a sentence
    whose padding alone lies beyond the bound takes the sigmoid form in that batch, where its scores differ from
    the factored ones by rounding (about 1e-7).
    """

    def __init__(self, *, query_dim: int, memory_dim: int, hidden: int | None = None, coverage: bool = False):
        super().__init__()
        hidden = hidden or query_dim
        self.query_proj = nn.Linear(query_dim, hidden, bias=False)
        self.memory_proj = nn.Linear(memory_dim, hidden, bias=True)
        self.coverage_proj = nn.Linear(1, hidden, bias=False) if coverage else None
        self.v = nn.Linear(hidden, 1, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        """memory (B, S, D) -> 2 W_m m_j (B, S, A), doubled for the sigmoid form; without a gradient or coverage,
        in float32 or float64, [2 W_m m_j ; exp(-2 W_m m_j)] (B, S, 2A) for the factored form (class docstring)."""
        keys = 2 * self.memory_proj(memory)  # (B, S, A)
        if (self.coverage_proj is not None or self._tracked(memory) or keys.dtype not in _FACTORED_DTYPES
                or not keys.numel()):
            return keys  # sigmoid form: coverage (a term per query and position), autograd, bfloat16, or empty
        return torch.cat([keys, _bounded_exp_neg(keys)], -1)  # (B, S, 2A)

    def _tracked(self, *tensors: Tensor | None) -> bool:
        """Whether autograd records this call: the backward pass then needs the whole (B, T, S, A) tensor."""
        return torch.is_grad_enabled() and (any(p.requires_grad for p in self.parameters())
                                            or any(x is not None and x.requires_grad for x in tensors))

    def score(self, query: Tensor, keys: Tensor, coverage: Tensor | None) -> Tensor:
        if self.coverage_proj is not None and coverage is None:
            raise ValueError("this attention was built with coverage=True; pass coverage (B, S)")
        q = 2 * self.query_proj(query)  # (B, T, A)
        cov = None if self.coverage_proj is None else coverage.unsqueeze(-1)  # (B, 1|T, S, 1)
        if self._tracked(keys, query, cov):
            hidden = q.unsqueeze(2) + keys[..., : q.shape[-1]].unsqueeze(1)  # (B, T, S, A)
            hidden = hidden if cov is None else hidden + 2 * self.coverage_proj(cov)  # (B, 1|T, S, A)
            return F.linear(torch.sigmoid(hidden) - 0.5, 2 * self.v.weight).squeeze(-1)  # (B, T, S)
        return self._score_in_pieces(q, keys, cov)

    def _score_in_pieces(self, q: Tensor, keys: Tensor, cov: Tensor | None) -> Tensor:
        """q (B, T, A), keys (B, S, A) or (B, S, 2A) (:meth:`keys`), cov (B, 1|T, S, 1) or None -> scores (B, T, S),
        without a gradient, a few sentences at a time, factored where keys() gave the exponentials (class
        docstring)."""
        a = q.shape[-1]
        if cov is not None or keys.shape[-1] != 2 * a or q.dtype != keys.dtype or not q.numel():
            return self._pieces(q, keys[..., :a], cov, factored=False)
        out = self._pieces(q, keys, None, factored=True)  # (B, T, S)
        if not bool(out.sum().isnan()):  # the usual case: no mark reached a score
            return out
        # Some sentence has a number beyond EXP_BOUND in its q or its k: NaN marks (_bounded_exp_neg).
        rows = out.flatten(1).isnan().any(1).nonzero().squeeze(1)
        out[rows] = self._pieces(q[rows], keys[rows, :, :a], None, factored=False)
        return out

    def _pieces(self, q: Tensor, keys: Tensor, cov: Tensor | None, *, factored: bool) -> Tensor:
        """The score in pieces of a few sentences: sigmoid form, keys (B, S, A), or factored form, keys (B, S, 2A)
        = [k ; exp(-k)], NaN where a number of q or k lies beyond EXP_BOUND (the caller redoes those)."""
        b, t, a = q.shape
        s = keys.shape[1]
        dtype = torch.result_type(q, keys)  # bfloat16 under autocast
        v = 2 * self.v.weight.squeeze(0).to(dtype)  # (A,)
        shift = -0.5 * v  # (A,): (sigmoid - 1/2) v = sigmoid v - v/2, in one pass (class docstring)
        one = q.new_ones((), dtype=dtype)
        e = _bounded_exp_neg(q) if factored else None  # (B, T, A): exp(-2 W_q s_i), marked beyond the bound
        out = q.new_empty(b, t, s, dtype=dtype)
        step = max(1, CHUNK // max(1, t * s * a))  # sentences per piece
        for i in range(0, b, step):
            j = min(b, i + step)
            if factored:  # v / (1 + exp(-2 W_q s_i) exp(-2 W_m m_j)): no exponential per (i, j) pair
                hidden = torch.addcmul(one, e[i:j].unsqueeze(2), keys[i:j, None, :, a:])  # (n, T, S, A)
                torch.sum(torch.div(v, hidden, out=hidden), -1, out=out[i:j])  # (n, T, S): sum of sigmoid v
                continue
            hidden = q[i:j].unsqueeze(2) + keys[i:j].unsqueeze(1)  # (n, T, S, A), a new tensor
            if cov is not None:
                hidden += 2 * self.coverage_proj(cov[i:j])  # (n, 1|T, S, A)
            torch.sum(torch.addcmul(shift, hidden.sigmoid_(), v, out=hidden), -1, out=out[i:j])  # (n, T, S)
        return out.sub_(v.sum() / 2) if factored else out  # the shift, once per score: sum(v/2) = -sum(shift)


#: The factored score (:class:`AdditiveAttention`) takes a number only within [-EXP_BOUND, EXP_BOUND]: its
#: exponential is then a finite, normal float32 number, and no product of two of them is 0 x inf.
EXP_BOUND = 80.0

_FACTORED_DTYPES = (torch.float32, torch.float64)  # bfloat16 would keep three significant digits of each exp


def _bounded_exp_neg(x: Tensor) -> Tensor:
    """exp(-x), with NaN where |x| > :data:`EXP_BOUND`: the mark, on a key (once per source) or a query, reaches
    the factored scores of its sentence, which then take the sigmoid form. A mark never reaches another
    sentence's scores, so a sentence takes the same form alone and in a batch."""
    out = torch.neg(x).exp_()
    low, high = torch.aminmax(x)
    if bool((low >= -EXP_BOUND) & (high <= EXP_BOUND)):  # the usual case: nothing to mark
        return out
    return out.masked_fill_(~(x.abs() <= EXP_BOUND), float("nan"))  # NaN in x: marked too


class DotAttention(Attention):
    """Luong et al. (2015), "dot": ``e_ij = h_i^T m_j``. The query and memory sizes must be equal."""

    def __init__(self, *, query_dim: int, memory_dim: int):
        super().__init__()
        if query_dim != memory_dim:
            raise ConfigError(
                f'Attention "dot" scores a decoder state against the encoder memory with a plain dot product, so '
                f"their sizes must match, but the decoder hidden size is {query_dim} and the encoder memory size "
                f"is {memory_dim} (a bidirectional encoder doubles it). Set model.decoder.hidden to {memory_dim}, "
                f'or use attention "general" or "bahdanau", which learn a projection.'
            )

    def keys(self, memory: Tensor) -> Tensor:
        return memory  # (B, S, D)

    def score(self, query: Tensor, keys: Tensor, coverage: Tensor | None) -> Tensor:
        return torch.bmm(query, keys.transpose(1, 2))  # (B, T, S)


class GeneralAttention(Attention):
    """Luong et al. (2015), "general": ``e_ij = h_i^T W_a m_j``; ``W_a m_j`` is precomputed as the keys."""

    def __init__(self, *, query_dim: int, memory_dim: int):
        super().__init__()
        self.memory_proj = nn.Linear(memory_dim, query_dim, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        return self.memory_proj(memory)  # (B, S, H)

    def score(self, query: Tensor, keys: Tensor, coverage: Tensor | None) -> Tensor:
        return torch.bmm(query, keys.transpose(1, 2))  # (B, T, S)


_KINDS: dict[str, type[Attention]] = {
    "bahdanau": AdditiveAttention,
    "dot": DotAttention,
    "general": GeneralAttention,
}


def make_attention(kind: AttentionKind, query_dim: int, memory_dim: int) -> Attention:
    """Build the attention named ``kind`` ("bahdanau", "dot" or "general")."""
    if kind not in _KINDS:
        raise ConfigError(
            f'Unknown attention "{kind}". Choose "bahdanau" (additive, Bahdanau et al. 2015), "dot" or "general" '
            f"(multiplicative, Luong et al. 2015)."
        )
    return _KINDS[kind](query_dim=query_dim, memory_dim=memory_dim)
