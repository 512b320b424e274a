"""Greedy search, beam search and sampling, written only against the SequenceDecoder protocol.

Every function takes a decoder and the encoder's :class:`~hourglass.code.Code`, and calls only
``decoder.init_state``, ``decoder.step`` and ``decoder.reorder_state``; there is no branch on the decoder's type.
The Code (not a state) is the input because it knows its batch size, and the state is opaque here.

Conventions shared by all three:

- ``max_len`` is the most output tokens a hypothesis may have, not counting bos and eos: an int, or a (B,)
  tensor for a limit per sentence (for example ``ratio * source_length``). When a hypothesis reaches it, eos is
  the only token allowed, so every hypothesis ends with eos (and its probability counts in the score).
- ``min_len`` (default 0) is the fewest output tokens before eos may come: eos gets probability 0 until then,
  as fairseq's ``--min-len`` and Hugging Face's ``min_new_tokens`` do (See et al. 2017 decode summaries with a
  minimum of 35 tokens). A sentence's ``max_len`` wins over it.
- Scores are sums of log-probabilities (natural log), divided by the length penalty in beam search.
- ``Hypotheses.attention[b]`` is the best hypothesis' attention, (T + 1, S_b): one row per output token plus
  the final eos row, one column per real source token (when the Code has a ``memory_mask``). It is None when
  the decoder returns no attention, or when the caller passes ``attention=False``: then the search does not
  keep the weights at all (beam search would otherwise reorder every beam's whole attention history at each
  step: 3.7% (Transformer) to 5.6% (GRU) of a batched beam search on Multi30k), as fairseq keeps them only for
  ``--print-alignment``.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from hourglass.code import Code
from hourglass.decoders.base import SequenceDecoder
from hourglass.nn.argmax import argmax, block_size


@dataclass(frozen=True)
class Hypotheses:
    """The result of a search for B sentences."""

    tokens: list[list[list[int]]]  # [B][nbest] token ids, without bos and eos, best first
    scores: list[list[float]]  # [B][nbest]
    attention: list[Tensor | None]  # [B] (T + 1, S_b) for the best hypothesis, or None

    def best(self) -> list[list[int]]:
        """[B] the best hypothesis of each sentence."""
        return [n[0] for n in self.tokens]


def _device(decoder: SequenceDecoder) -> torch.device:
    return next(decoder.parameters()).device


def _limits(max_len: int | Tensor, batch: int, device: torch.device) -> Tensor:
    """max_len, an int or (B,) -> (B,) long."""
    if isinstance(max_len, Tensor):
        if max_len.shape != (batch,):
            raise ValueError(f"max_len must be an int or a ({batch},) tensor, got shape {tuple(max_len.shape)}")
        return max_len.to(device=device, dtype=torch.long)
    return torch.full((batch,), int(max_len), dtype=torch.long, device=device)


#: Log-probability tensors of at least this many numbers (1 MB in float32) go into :class:`_LogProbs`' buffer.
#: A smaller tensor, such as one sentence's beam (5 x 4,000), comes from memory the allocator reuses (glibc maps
#: fresh pages only above 128 KB to 32 MB), so it has no page faults to save.
_LARGE = 1 << 18


class _LogProbs:
    """logits (N, V) -> log-probabilities, at least float32: scores summed over many steps must not be rounded
    to bfloat16 or float16 (autocast gives such logits); float64 stays float64.

    The search owns the logits that ``step`` returns (:class:`~hourglass.decoders.base.SequenceDecoder`), so
    float32 or float64 logits become their log-probabilities in place: each row is then read and written while
    it is in the CPU's cache, and the step's working set is one (N, V) tensor, not two. On Multi30k's GRU
    (V = 4,000), the output projection and log-softmax of a beam-5 step of 640 rows took 13% less time so (6.9
    against 6.1 ms, one A/B run; 4% at greedy's 128 rows).

    Other logits (bfloat16 under autocast, a view that is not contiguous, a tensor with a gradient) go into a
    buffer that one object keeps for one search, when they have ``_LARGE`` numbers or more (the first N rows of
    it; N changes as sentences leave and, with pruning, as beams are dropped, and the buffer grows to the
    largest N seen). A fresh (N, V) tensor per step would be memory that the CPU has to fault in again each
    time: on Multi30k's beam search (640 x 4,000) that made the log-softmax twice as slow. What a step returns
    is overwritten by the next step: the search reads it within the step.

    For the same reason a search lets go of a step's logits before the next step: if they were still held, the
    next step's logits could not take their memory, and fresh memory would be faulted in at every step.
    """

    def __init__(self) -> None:
        self.buffer: Tensor | None = None

    def __call__(self, logits: Tensor) -> Tensor:
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        if logits.dtype == dtype and logits.is_contiguous() and not logits.requires_grad:
            return torch.log_softmax(logits, -1, out=logits)
        if logits.numel() < _LARGE:
            return torch.log_softmax(logits, -1, dtype=dtype)
        n = logits.shape[0]
        if self.buffer is None or self.buffer.shape[0] < n:  # V, dtype and device are the same at every step
            self.buffer = logits.new_empty(logits.shape, dtype=dtype)
        return torch.log_softmax(logits, -1, dtype=dtype, out=self.buffer[:n])


def _force_eos(logp: Tensor, t: int, limit: Tensor, eos: int) -> Tensor:
    """logp (N, V): rows whose hypothesis has ``limit`` tokens (``t >= limit``) may only end."""
    full = (limit <= t).unsqueeze(1)  # (N, 1)
    if not bool(full.any()):  # the usual case: no row is at its limit, and nothing to mask (two (N, V) passes)
        return logp
    only_eos = torch.full_like(logp, float("-inf"))
    only_eos[:, eos] = logp[:, eos]
    return torch.where(full, only_eos, logp)


def _ban_eos(logp: Tensor, t: int, min_len: int, limit: Tensor, eos: int) -> Tensor:
    """logp (N, V) with eos at -inf in the rows whose hypothesis, of ``t`` tokens, is shorter than ``min_len`` and
    than its ``limit`` (N,); in place (the caller owns ``logp``, as :class:`_LogProbs` gives it)."""
    if t >= min_len:  # the usual case, and every step once the minimum is reached: nothing to do
        return logp
    early = limit > t  # (N,) rows not at their limit, where :func:`_force_eos` allows eos only
    logp[:, eos] = logp[:, eos].masked_fill(early, float("-inf"))
    return logp


def _trimmer(code: Code) -> Callable[[Tensor | None, int], Tensor | None]:
    """A function (attention (T + 1, S), sentence b) -> (T + 1, S_b) on the CPU, without source padding."""
    lengths = None if code.memory_mask is None else code.memory_mask.sum(1).tolist()

    def trim(attention: Tensor | None, b: int) -> Tensor | None:
        if attention is None:
            return None
        return (attention if lengths is None else attention[:, : lengths[b]]).cpu()

    return trim


# --------------------------------------------------------------------------------------------- greedy & sampling
def _decode(decoder: SequenceDecoder, code: Code, choose: Callable[[Tensor], Tensor], *, bos: int, eos: int,
            max_len: int | Tensor, min_len: int = 0, no_repeat_ngram: int = 0, attention: bool = True
            ) -> Hypotheses:
    """Pick one token per sentence and step, with ``choose(logp (B', V)) -> (B',)``, until every sentence ends."""
    batch, device = code.batch_size, _device(decoder)
    limit = _limits(max_len, batch, device)
    state = decoder.init_state(code)
    tokens = torch.full((batch,), bos, dtype=torch.long, device=device)
    # The sentences still decoded (B' of them, in order): a sentence that ends leaves the batch, as in beam search.
    active, score = torch.arange(batch, device=device), None
    steps = []  # per step: (active (B',), tokens (B',), weights (B', S) or None)
    log_probs = _LogProbs()
    history = tokens.new_zeros(batch, 0)  # (B', t): kept only for n-gram blocking
    for t in range(int(limit.max()) + 1):
        logits, state, weights = decoder.step(tokens, state)
        row_limit = limit[active]  # (B',)
        logp = _force_eos(_ban_eos(log_probs(logits), t, min_len, row_limit, eos), t, row_limit, eos)  # (B', V)
        logp = ban_repeats(logp, history, no_repeat_ngram)
        tokens = choose(logp)  # (B',)
        gained = logp.gather(1, tokens.unsqueeze(1)).squeeze(1)  # (B',)
        # A row whose every token is banned (n-gram blocking before ``min_len``) has no choice to make: it ends
        # here at -inf, as beam search answers such a sentence at -inf.
        tokens = torch.where(gained == float("-inf"), eos, tokens)
        del logits, logp  # before the next step makes its own (see _LogProbs)
        if no_repeat_ngram:
            history = torch.cat([history, tokens.unsqueeze(1)], 1)
        # The same additions as beam search's ``scores + logp``, so that beam 1 equals greedy bit for bit.
        if score is None:
            score = gained  # the first step: every sentence is active
        else:
            score[active] = score[active] + gained
        steps.append((active, tokens, weights if attention else None))
        going = tokens != eos  # (B',)
        if not bool(going.all()):
            if not bool(going.any()):
                break
            rows = going.nonzero().squeeze(1)
            active, tokens, state = active[rows], tokens[rows], decoder.reorder_state(state, rows)
            history = history[rows] if no_repeat_ngram else history
    return _assemble(steps, batch, score, eos, _trimmer(code))


def _assemble(steps: list[tuple[Tensor, Tensor, Tensor | None]], batch: int, score: Tensor, eos: int,
              trim: Callable[[Tensor | None, int], Tensor | None]) -> Hypotheses:
    """Per-step (sentences, tokens, attention) of a shrinking batch -> one hypothesis per sentence."""
    table = steps[0][1].new_full((batch, len(steps)), eos)  # (B, T') tokens, eos after a sentence's end
    weights = None if steps[0][2] is None else steps[0][2].new_zeros(batch, len(steps), steps[0][2].shape[-1])
    for t, (active, tokens, step_weights) in enumerate(steps):
        table[active, t] = tokens
        if weights is not None:
            weights[active, t] = step_weights
    out_tokens, out_attention = [], []
    for b, row in enumerate(table.tolist()):
        n = row.index(eos) if eos in row else len(row)
        out_tokens.append([row[:n]])
        out_attention.append(None if weights is None else trim(weights[b, : n + 1], b))
    return Hypotheses(tokens=out_tokens, scores=[[s] for s in score.tolist()], attention=out_attention)


def greedy(decoder: SequenceDecoder, code: Code, *, bos: int, eos: int, max_len: int | Tensor,
           min_len: int = 0, attention: bool = True) -> Hypotheses:
    """The most likely token at every step."""
    return _decode(decoder, code, argmax, bos=bos, eos=eos, max_len=max_len, min_len=min_len,
                   attention=attention)


def filter_logits(logits: Tensor, *, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """logits (N, V) with -inf outside the top-k tokens (Fan et al. 2018) and outside the nucleus, the fewest
    tokens whose probability sums to at least ``top_p`` (Holtzman et al. 2020). 0 and 1.0 switch them off."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)  # (N, V)
        probs = ordered.softmax(-1)
        outside = probs.cumsum(-1) - probs >= top_p  # the mass of the better tokens already reaches top_p
        outside[:, 0] = False  # the best token always stays, even at top_p 0
        drop = outside.scatter(1, order, outside)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample(decoder: SequenceDecoder, code: Code, *, bos: int, eos: int, max_len: int | Tensor, min_len: int = 0,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, no_repeat_ngram: int = 0,
           generator: torch.Generator | None = None, attention: bool = True) -> Hypotheses:
    """Ancestral sampling from softmax(logits / temperature), optionally restricted to top-k / top-p, never
    repeating an n-gram of ``no_repeat_ngram`` tokens (0: off).

    Scores are log-probabilities under the model itself (temperature 1, no filtering).
    """
    if not 0 < temperature < math.inf:
        raise ValueError(f"temperature must be > 0 and finite (got {temperature}); use greedy() for temperature 0")

    def choose(logp: Tensor) -> Tensor:
        # Shifted so that the best token is at 0: a tiny temperature then gives 0 and -inf, never -inf alone
        # (logp / 1e-40 overflows). A row with no allowed token draws from zeros; _decode ends it with eos.
        best = logp.amax(-1, keepdim=True)  # (B, 1)
        none = best == float("-inf")
        scaled = ((logp - best.masked_fill(none, 0.0)) / temperature).masked_fill(none, 0.0)  # (B, V)
        probs = filter_logits(scaled, top_k=top_k, top_p=top_p).softmax(-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _decode(decoder, code, choose, bos=bos, eos=eos, max_len=max_len, min_len=min_len,
                   no_repeat_ngram=no_repeat_ngram, attention=attention)


# ---------------------------------------------------------------------------------------------------- beam search
def gnmt_penalty(length: int, alpha: float) -> float:
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016, eq. 14); |Y| counts eos."""
    return ((5.0 + length) / 6.0) ** alpha


def ban_repeats(logp: Tensor, history: Tensor, n: int) -> Tensor:
    """logp (N, V) with -inf on every token that would repeat an n-gram of ``history`` (N, t) (Paulus et al.
    2018)."""
    t = history.shape[1]
    if n <= 0 or t < n:  # no complete n-gram yet, nothing to repeat
        return logp
    grams = history.unfold(1, n, 1)  # (N, G, n), G = t - n + 1
    tail = history[:, t - (n - 1):].unsqueeze(1)  # (N, 1, n-1): the last n-1 tokens
    match = (grams[:, :, :-1] == tail).all(-1)  # (N, G): n-grams that the next token would complete
    counts = torch.zeros_like(logp).scatter_add_(1, grams[:, :, -1], match.to(logp.dtype))  # (N, V)
    return logp.masked_fill(counts > 0, float("-inf"))


#: Per sentence, its finished hypotheses: (normalized score, tokens, attention (T + 1, S) or None).
_Finished = list[list[tuple[float, list[int], Tensor | None]]]


def _finalize(finished: _Finished, active: list[int], top: Tensor, origin: Tensor, token: Tensor,
              history: Tensor, attention: Tensor | None, *, eos: int, beam: int, alpha: float) -> None:
    """Move eos candidates ranked within the top ``beam`` (as fairseq does) to ``finished``. A sentence may
    collect more than ``beam`` of them while a live beam is still better (:func:`_settled`).

    top, origin (flat row), token: (B', 2K) candidates of the B' sentences still searched, best first;
    ``active[b']`` is the sentence's index in the batch; history (B'*width, t); attention (B'*width, t+1, S).
    """
    hits = ((token[:, :beam] == eos) & top[:, :beam].isfinite()).nonzero()  # (H, 2): (sentence b', rank)
    if not hits.numel():
        return
    rows = origin[hits[:, 0], hits[:, 1]]  # (H,) flat rows; every hit has t tokens, so one length penalty
    penalty = gnmt_penalty(history.shape[1] + 1, alpha)
    kept = None if attention is None else attention.index_select(0, rows)  # (H, t+1, S)
    raw = top[hits[:, 0], hits[:, 1]].tolist()
    for h, (i, tokens) in enumerate(zip(hits[:, 0].tolist(), history.index_select(0, rows).tolist())):
        finished[active[i]].append((raw[h] / penalty, tokens, None if kept is None else kept[h]))


def _settled(finished: _Finished, active: list[int], top: Tensor, token: Tensor, *, eos: int, beam: int,
             nbest: int, penalty: float) -> list[bool]:
    """For each sentence still searched: is it done? It is once it has ``beam`` finished hypotheses (fairseq's
    rule) and its best live candidate, scored as if it ended now (``penalty``, the length penalty of that
    length), does not beat its ``nbest``-th best finished one.

    fairseq stops at ``beam`` finished hypotheses alone. With a peaked model whose second-best token is eos at
    every step (a copying decoder), that finishes ``beam`` short hypotheses at -7 while the live beam holds the
    greedy output at -0.004, and beam search answers worse than greedy. The second condition keeps such a
    sentence going; at beam 1 it always holds (an eos that ranks first is the best candidate), so beam 1 is
    still greedy. top, token: (B', 2K) candidates, best first."""
    done = [False] * len(active)
    ready = [i for i, b in enumerate(active) if len(finished[b]) >= beam]
    if not ready:  # most steps: no sentence has enough finished hypotheses, nothing to compare (and no sync)
        return done
    live = top.masked_fill(token == eos, float("-inf")).amax(1).div(penalty).tolist()  # (B',)
    for i in ready:
        done[i] = heapq.nlargest(nbest, (item[0] for item in finished[active[i]]))[-1] >= live[i]
    return done


def _candidates(scores: Tensor, logp: Tensor, width: int, beam: int, live: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
    """The best 2K extensions of each sentence's ``width`` slots: scores, flat origin slots, tokens, each (B', 2K).

    scores (B'*width,) per slot; logp (L, V) per decoder row, row i being slot ``live[i]`` (every slot a row, in
    order, when ``live`` is None; a slot without a row is pruned and has no extensions). A vocabulary too small to
    give 2K candidates gets -inf ones, which no search step keeps while a finite one is left.
    """
    vocab, k = logp.shape[1], 2 * beam
    # The choice depends on the sentence alone (V, width, k), never on the batch: the two paths may order tied
    # candidates differently, and a sentence must get the same result in any batch.
    block = _block(vocab, k, width) if logp.device.type == "cpu" else None
    if block is None:
        flat = (scores.unsqueeze(1) + _to_slots(logp, live, scores.shape[0])).view(-1, width * vocab)  # (B', wV)
        if flat.shape[1] < k:
            flat = F.pad(flat, (0, k - flat.shape[1]), value=float("-inf"))
        top, idx = flat.topk(k, dim=1)
    else:
        top, idx = _block_topk(scores, logp, width, k, block, live)
    top, idx = _ties_by_index(top, idx)
    here = torch.arange(top.shape[0], device=top.device).unsqueeze(1) * width  # (B', 1) first slot of each
    return top, (idx // vocab).clamp(max=width - 1) + here, idx % vocab


def _ties_by_index(top: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """top (B', k) best first, idx (B', k) -> the same with equal scores in increasing index order, the order in
    which ``argmax`` (greedy search) picks among equal tokens; ``topk`` leaves it unspecified. Without it beam 1
    and greedy could part at an exact tie, which bfloat16 logits give often. Ties are rare in float32, so the two
    small sorts run only when there is one."""
    if not bool((top[:, 1:] == top[:, :-1]).any()):
        return top, idx
    by_index = idx.argsort(1)
    top, idx = top.gather(1, by_index), idx.gather(1, by_index)
    by_score = top.argsort(dim=1, descending=True, stable=True)
    return top.gather(1, by_score), idx.gather(1, by_score)


def _to_slots(rows: Tensor, live: Tensor | None, slots: int, fill: float = float("-inf")) -> Tensor:
    """rows (L, ...) of the slots ``live`` (L,) -> (slots, ...), ``fill`` in the slots without a row."""
    if live is None:
        return rows
    return rows.new_full((slots, *rows.shape[1:]), fill).index_copy_(0, live, rows)


def _by_row(slots: Tensor, live: Tensor | None) -> Tensor:
    """(B'*width, ...) by slot -> (L, ...) by decoder row."""
    return slots if live is None else slots.index_select(0, live)


def _slot_rows(live: Tensor | None, slots: int) -> Tensor | None:
    """live (L,) -> (slots,) the decoder row of each slot; 0 for a slot without one (whose score is -inf)."""
    if live is None:
        return None
    return live.new_zeros(slots).index_copy_(0, live, torch.arange(live.shape[0], device=live.device))


def _block(vocab: int, k: int, width: int) -> int | None:
    """The block size for :func:`_block_topk`: one that leaves k blocks per sentence at least (``width`` rows of
    ``vocab`` numbers); None when there is none."""
    return block_size(vocab, -(-k // width))


def _block_topk(scores: Tensor, logp: Tensor, width: int, k: int, block: int, live: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
    """``(scores.unsqueeze(1) + logp).view(B', width*V).topk(k)``, exact (same values), through block maxima.

    The k best candidates of a sentence lie in its k blocks with the best maxima (a block outside them has k
    better maxima, so k candidates at least as good as each of its own). One vectorized ``amax`` over the
    blocks and two small top-k then replace the (B', width*V) sum and the top-k over it. Why by hand: torch's
    CPU ``topk`` walks each row through a partial sort, about 20x slower per number than its ``amax``; it was
    the largest cost of the search itself (Multi30k, K=5, V=4,000: a step's sum and top-k took 2.0 ms, this
    takes 0.9 ms). Among tied candidates it may keep others than ``topk`` would (bfloat16 logits tie often);
    what it keeps depends on the sentence's own numbers only. ``live`` as in :func:`_candidates`: a slot without
    a row has -inf blocks.
    """
    rows, vocab = logp.shape
    per_row, sentences = vocab // block, scores.shape[0] // width
    blocks = logp.reshape(rows * per_row, block)  # (L*V/c, c)
    row_scores = scores if live is None else scores.index_select(0, live)  # (L,)
    best = blocks.view(rows, per_row, block).amax(2) + row_scores.unsqueeze(1)  # (L, V/c)
    best = _to_slots(best, live, scores.shape[0]).view(sentences, width * per_row)
    chosen = best.topk(k, dim=1).indices  # (B', k): the blocks that hold the k best candidates
    slot = chosen // per_row + torch.arange(sentences, device=logp.device).unsqueeze(1) * width  # (B', k)
    row = slot if live is None else _slot_rows(live, scores.shape[0])[slot]  # (B', k) the decoder row of each
    picked = blocks.index_select(0, (row * per_row + chosen % per_row).view(-1)).view(sentences, k, block)
    owner = scores[slot]  # (B', k): the score of each block's slot (-inf for a slot without a row)
    top, at = picked.add_(owner.unsqueeze(2)).view(sentences, -1).topk(k, dim=1)  # (B', k)
    return top, chosen.gather(1, at // block) * block + at % block  # index into the sentence's width*V


def _next_beams(top: Tensor, origin: Tensor, token: Tensor, *, eos: int, beam: int) -> tuple[Tensor, Tensor, Tensor]:
    """The best ``beam`` candidates that do not end, per sentence: scores, flat origin rows, tokens (B*K,)."""
    ends = token == eos  # (B, 2K)
    rank = torch.arange(token.shape[1], device=token.device)
    keep = (ends.long() * token.shape[1] + rank).argsort(1)[:, :beam]  # (B, K): non-eos first, by rank
    scores = top.gather(1, keep).masked_fill(ends.gather(1, keep), float("-inf"))  # eos only if nothing else
    return scores.reshape(-1), origin.gather(1, keep).reshape(-1), token.gather(1, keep).reshape(-1)


def prune_beams(scores: Tensor, beam: int, threshold: float, keep: int = 1) -> Tensor:
    """scores (B*K,) -> the same with -inf for every beam more than ``threshold`` (natural log) below its
    sentence's best: absolute threshold pruning (Freitag & Al-Onaizan 2017, sec. 3). The first ``keep`` beams of
    each sentence, its best (:func:`_next_beams` orders them so), always stay: an n-best list of ``keep``
    hypotheses needs them."""
    per_sentence = scores.view(-1, beam)  # (B, K)
    behind = per_sentence < per_sentence.amax(1, keepdim=True) - threshold  # (B, K)
    behind[:, :keep] = False
    return per_sentence.masked_fill(behind, float("-inf")).view(-1)


def beam_search(decoder: SequenceDecoder, code: Code, *, beam: int, bos: int, eos: int, max_len: int | Tensor,
                min_len: int = 0, length_penalty: float = 0.0, no_repeat_ngram: int = 0, nbest: int = 1,
                prune: float | None = None, attention: bool = True) -> Hypotheses:
    """Beam search batched over sentences and beams: B*K rows, one ``step`` call per time step.

    A hypothesis that ends is kept aside; a sentence is done when it has ``beam`` of them and no live beam
    is better (:func:`_settled`), or reached its ``max_len``, and the search stops when every sentence is done.
    Hypotheses are ranked by score / lp(Y) with GNMT's length penalty, ``length_penalty`` being its alpha (0 =
    none).

    ``prune`` (None: off) drops, after every step, the beams whose score is more than ``prune`` below their
    sentence's best, keeping the ``nbest`` best (:func:`prune_beams`); the decoder then runs only on the beams
    left, so a sentence whose beams agree costs fewer rows. Beam 5 with ``prune=1.5`` keeps about 60% of the
    rows on Multi30k at the same BLEU (bench/RESULTS-seq2seq.md).
    """
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be between 1 and beam={beam}, got {nbest}")
    if prune is not None and not 0 < prune < math.inf:
        raise ValueError(f"prune is a log-probability margin and must be finite and > 0 (None: off), got {prune}")
    batch, k, device, alpha = code.batch_size, beam, _device(decoder), length_penalty
    limit = _limits(max_len, batch, device)
    # At the first step all K beams of a sentence are the same hypothesis (bos), so it runs on one row per
    # sentence (``width`` = 1) and expands to K rows after it; from then on, K slots per sentence.
    state, width = decoder.init_state(code), 1
    tokens = torch.full((batch,), bos, dtype=torch.long, device=device)  # (L,) one per decoder row
    history = tokens.new_zeros(batch, 0)  # (B'*width, t), by slot
    keep_attention, attention, scores = attention, None, None  # (B'*width, t, S), (B'*width,), by slot
    # The slot of each decoder row, (L,); None when every slot has its row, in order (always without pruning).
    live: Tensor | None = None
    finished: _Finished = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    # The sentences still searched (B' of them, in order). A finished sentence leaves the batch, as in
    # fairseq, so the decoder's work follows the sentences that remain, not the longest one.
    active, log_probs = torch.arange(batch, device=device), _LogProbs()
    for t in range(int(limit.max()) + 1):
        logits, state, weights = decoder.step(tokens, state)
        logp = log_probs(logits)  # (L, V)
        scores = logp.new_zeros(batch) if scores is None else scores  # the first step: one row per sentence
        row_limit = _by_row(limit[active].repeat_interleave(width), live)  # (L,)
        logp = _force_eos(_ban_eos(logp, t, min_len, row_limit, eos), t, row_limit, eos)
        logp = ban_repeats(logp, _by_row(history, live), no_repeat_ngram)
        if weights is not None and keep_attention:
            step_weights = _to_slots(weights, live, scores.shape[0], 0.0).unsqueeze(1)  # (B'*width, 1, S)
            attention = step_weights if attention is None else torch.cat([attention, step_weights], 1)
        top, origin, token = _candidates(scores, logp, width, k, live)  # (B', 2K) each
        del logits, logp  # before the next step makes its own (see _LogProbs)
        rows_of = active.tolist()
        _finalize(finished, rows_of, top, origin, token, history, attention, eos=eos, beam=k, alpha=alpha)
        settled = _settled(finished, rows_of, top, token, eos=eos, beam=k, nbest=nbest,
                           penalty=gnmt_penalty(history.shape[1] + 1, alpha))
        done[active] |= (limit[active] <= t) | torch.tensor(settled, device=device)
        if bool(done.all()):
            break
        keep = ~done[active]  # (B',)
        if not bool(keep.all()):  # drop the sentences that are done: their slots leave ``select`` below
            top, origin, token, active = top[keep], origin[keep], token[keep], active[keep]
        scores, select, tokens = _next_beams(top, origin, token, eos=eos, beam=k)  # (B'*K,) each, by slot
        rows = select if live is None else _slot_rows(live, history.shape[0])[select]  # (B'*K,) decoder rows
        history = torch.cat([history[select], tokens.unsqueeze(1)], 1)  # (B'*K, t+1)
        attention = None if attention is None else attention[select]
        width, live = k, None
        if prune is not None:
            scores = prune_beams(scores, k, prune, keep=nbest)
            alive = scores.isfinite()  # (B'*K,)
            if not bool(alive.all()):  # only the slots left get a decoder row
                live = alive.nonzero().squeeze(1)  # (L',)
                rows, tokens = rows[live], tokens[live]
        if live is not None and not live.numel():  # every beam at -inf (n-gram blocking): nothing can finish
            break
        state = decoder.reorder_state(state, rows)
    return _collect(finished, nbest, _trimmer(code))


def _collect(finished: _Finished, nbest: int, trim: Callable[[Tensor | None, int], Tensor | None]) -> Hypotheses:
    tokens, scores, attention = [], [], []
    for b, f in enumerate(finished):
        # A sentence has one finished hypothesis at least (eos is forced at max_len on the best beam) unless
        # n-gram blocking left it no finite candidate, not even eos: then it gets an empty one at -inf.
        ranked = sorted(f, key=lambda item: -item[0])[:nbest] or [(float("-inf"), [], None)]  # stable sort
        tokens.append([item[1] for item in ranked])
        scores.append([item[0] for item in ranked])
        attention.append(trim(ranked[0][2], b))
    return Hypotheses(tokens=tokens, scores=scores, attention=attention)
