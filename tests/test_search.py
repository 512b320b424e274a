"""Search: beam 1 equals greedy, batching and padding change nothing, beam search finds the exact optimum
when the beam holds every hypothesis, n-best lists are sorted, n-gram bans and length penalties work."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import hourglass.decoders.rnn  # noqa: F401  (registration)
import hourglass.decoders.transformer  # noqa: F401
import hourglass.encoders.rnn  # noqa: F401
import hourglass.encoders.transformer  # noqa: F401
from hourglass._registry import DECODERS, ENCODERS
from hourglass.code import Code
from hourglass.decoders.base import SequenceDecoder
import hourglass.search as search_module
from hourglass.search import (_block, _block_topk, _LogProbs, ban_repeats, beam_search, filter_logits, gnmt_penalty,
                              greedy, prune_beams, sample)

PAD, BOS, EOS, VOCAB = 0, 2, 3, 12
SMALL = {
    "gru": {"embed": 16, "hidden": 16}, "lstm": {"embed": 16, "hidden": 16},
    "gru-attention": {"embed": 16, "hidden": 16}, "lstm-attention": {"embed": 16, "hidden": 16},
    "transformer": {"d_model": 16, "heads": 2, "layers": 2, "ff": 32},
}
PAIRS = [("gru", "gru"), ("gru", "gru-attention"), ("lstm", "lstm-attention"), ("transformer", "transformer")]


def _model(enc: str, dec: str, seed: int = 0, vocab: int = VOCAB) -> tuple[nn.Module, SequenceDecoder]:
    """An untrained pair in float64, so that float noise cannot flip a near-tie between batch layouts."""
    torch.manual_seed(seed)
    encoder = ENCODERS.get(enc)(vocab_size=vocab, pad_id=PAD, **SMALL[enc])
    decoder = DECODERS.get(dec)(code=encoder.spec, vocab_size=vocab, pad_id=PAD, **SMALL[dec])
    return encoder.double().eval(), decoder.double().eval()


def _sources() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, VOCAB, (4, 7), generator=g)
    src[1, 5:] = PAD
    src[3, 2:] = PAD
    return src


def _unpadded(src: torch.Tensor, i: int) -> torch.Tensor:
    return src[i : i + 1, : int((src[i] != PAD).sum())]


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, SequenceDecoder]:
    """gru -> gru-attention trained briefly on copying (good enough to have peaked distributions)."""
    torch.manual_seed(0)
    encoder = ENCODERS.get("gru")(vocab_size=VOCAB, pad_id=PAD, embed=16, hidden=32)
    decoder = DECODERS.get("gru-attention")(code=encoder.spec, vocab_size=VOCAB, pad_id=PAD, embed=16, hidden=32,
                                            input_feeding=False)
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        src = torch.randint(4, VOCAB, (64, 6), generator=g)
        tgt = torch.cat([torch.full((64, 1), BOS), src, torch.full((64, 1), EOS)], 1)
        logits, _ = decoder(tgt[:, :-1], decoder.init_state(encoder(src)))
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tgt[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return encoder.eval(), decoder.eval()


def _assert_same(a, b, exact: bool = True) -> None:
    assert a.tokens == b.tokens
    if exact:
        assert a.scores == b.scores
    else:
        for x, y in zip(a.scores, b.scores):
            assert x == pytest.approx(y, abs=1e-9)
    for x, y in zip(a.attention, b.attention):
        assert (x is None and y is None) or torch.allclose(x, y, atol=1e-9)


@pytest.mark.parametrize("enc,dec", PAIRS)
@torch.no_grad()
def test_beam_1_equals_greedy_on_an_untrained_model(enc: str, dec: str) -> None:
    encoder, decoder = _model(enc, dec)
    code = encoder(_sources())
    _assert_same(greedy(decoder, code, bos=BOS, eos=EOS, max_len=9),
                 beam_search(decoder, code, beam=1, bos=BOS, eos=EOS, max_len=9))


@pytest.mark.parametrize("enc,dec", [("gru", "gru-attention"), ("transformer", "transformer")])
@torch.no_grad()
def test_a_search_without_attention_maps_gives_the_same_hypotheses(enc: str, dec: str) -> None:
    encoder, decoder = _model(enc, dec)
    code = encoder(_sources())
    searches = {"greedy": lambda **kw: greedy(decoder, code, bos=BOS, eos=EOS, max_len=9, **kw),
                "beam": lambda **kw: beam_search(decoder, code, beam=3, nbest=2, bos=BOS, eos=EOS, max_len=9,
                                                 length_penalty=1.0, **kw),
                "sample": lambda **kw: sample(decoder, code, bos=BOS, eos=EOS, max_len=9,
                                              generator=torch.Generator().manual_seed(3), **kw)}
    for name, search in searches.items():
        full, bare = search(), search(attention=False)
        assert bare.tokens == full.tokens and bare.scores == full.scores, name
        assert all(a is not None for a in full.attention) and all(a is None for a in bare.attention), name


@torch.no_grad()
def test_beam_1_equals_greedy_on_a_trained_model(trained) -> None:
    encoder, decoder = trained
    code = encoder(torch.randint(4, VOCAB, (16, 6), generator=torch.Generator().manual_seed(5)))
    g = greedy(decoder, code, bos=BOS, eos=EOS, max_len=10)
    _assert_same(g, beam_search(decoder, code, beam=1, bos=BOS, eos=EOS, max_len=10))
    assert sum(len(h[0]) == 6 for h in g.tokens) >= 8, "the model should have learned something"


@pytest.mark.parametrize("enc,dec", [("gru", "gru-attention"), ("transformer", "transformer"), ("lstm", "lstm")])
@torch.no_grad()
def test_a_padded_batch_gives_each_sentence_its_own_result(enc: str, dec: str) -> None:
    encoder, decoder = _model(enc, dec)
    src = _sources()
    batched = beam_search(decoder, encoder(src), beam=3, nbest=3, bos=BOS, eos=EOS, max_len=8)
    greedy_batched = greedy(decoder, encoder(src), bos=BOS, eos=EOS, max_len=8)
    for i in range(src.shape[0]):
        code = encoder(_unpadded(src, i))
        alone = beam_search(decoder, code, beam=3, nbest=3, bos=BOS, eos=EOS, max_len=8)
        assert alone.tokens[0] == batched.tokens[i]
        assert alone.scores[0] == pytest.approx(batched.scores[i], abs=1e-9)
        if alone.attention[0] is not None:
            assert alone.attention[0].shape == batched.attention[i].shape == (len(alone.tokens[0][0]) + 1,
                                                                               code.memory.shape[1])
            assert torch.allclose(alone.attention[0], batched.attention[i], atol=1e-9)
        assert greedy(decoder, code, bos=BOS, eos=EOS, max_len=8).tokens[0] == greedy_batched.tokens[i]


@pytest.mark.parametrize("enc,dec", [("gru", "gru-attention"), ("transformer", "transformer")])
@torch.no_grad()
def test_sentences_that_finish_early_leave_the_batch_without_changing_any_result(enc: str, dec: str) -> None:
    """Per-sentence limits make sentences finish at different steps; each one that is done leaves the batch
    (its rows are dropped from the decoder state), and every sentence still gets its own search's result."""
    encoder, decoder = _model(enc, dec)
    src = _sources()
    limits = torch.tensor([1, 9, 3, 6])
    batched = beam_search(decoder, encoder(src), beam=3, nbest=2, bos=BOS, eos=EOS, max_len=limits)
    for i in range(src.shape[0]):
        alone = beam_search(decoder, encoder(_unpadded(src, i)), beam=3, nbest=2, bos=BOS, eos=EOS,
                            max_len=int(limits[i]))
        assert alone.tokens[0] == batched.tokens[i]
        assert alone.scores[0] == pytest.approx(batched.scores[i], abs=1e-9)
        assert all(len(t) <= limits[i] for t in batched.tokens[i])
        if alone.attention[0] is not None:
            assert torch.allclose(alone.attention[0], batched.attention[i], atol=1e-9)


@pytest.mark.parametrize("enc,dec", [("gru", "gru-attention"), ("transformer", "transformer")])
@torch.no_grad()
def test_greedy_drops_finished_sentences_without_changing_any_result(enc: str, dec: str) -> None:
    encoder, decoder = _model(enc, dec)
    src, limits, rows = _sources(), torch.tensor([1, 9, 3, 6]), []
    step = decoder.step
    decoder.step = lambda tokens, state: (rows.append(tokens.shape[0]), step(tokens, state))[1]
    batched = greedy(decoder, encoder(src), bos=BOS, eos=EOS, max_len=limits)
    assert rows[0] == 4 and rows[-1] < 4 and rows == sorted(rows, reverse=True)  # the batch shrinks
    for i in range(src.shape[0]):
        alone = greedy(decoder, encoder(_unpadded(src, i)), bos=BOS, eos=EOS, max_len=int(limits[i]))
        assert alone.tokens[0] == batched.tokens[i] and len(batched.tokens[i][0]) <= limits[i]
        assert alone.scores[0] == pytest.approx(batched.scores[i], abs=1e-9)
        assert torch.allclose(alone.attention[0], batched.attention[i], atol=1e-9)


@torch.no_grad()
def test_nbest_is_sorted_distinct_and_scores_are_model_log_probabilities(trained) -> None:
    encoder, decoder = trained
    src = torch.randint(4, VOCAB, (3, 5), generator=torch.Generator().manual_seed(2))
    alpha = 0.6
    hyps = beam_search(decoder, encoder(src), beam=5, nbest=5, bos=BOS, eos=EOS, max_len=8, length_penalty=alpha)
    for b in range(3):
        assert len(hyps.tokens[b]) == 5 and len({tuple(t) for t in hyps.tokens[b]}) == 5
        assert hyps.scores[b] == sorted(hyps.scores[b], reverse=True)
        for tokens, score in zip(hyps.tokens[b], hyps.scores[b]):
            # Re-score by teacher forcing: the beam score must be log P(tokens, eos) / lp.
            inputs = torch.tensor([[BOS, *tokens]])
            logits, _ = decoder(inputs, decoder.init_state(encoder(src[b : b + 1])))
            logp = logits.log_softmax(-1)[0, torch.arange(len(tokens) + 1), torch.tensor([*tokens, EOS])].sum()
            assert score == pytest.approx(float(logp) / gnmt_penalty(len(tokens) + 1, alpha), abs=1e-4)


class MarkovDecoder(SequenceDecoder):
    """A bigram model: the next token depends only on the previous one. Enough to check search exactly."""

    needs = ("vector",)

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)  # (V, V) logits of the next token given the previous one

    def init_state(self, code: Code) -> torch.Tensor:
        return torch.zeros(code.batch_size, dtype=torch.long)

    def step(self, tokens, state):
        return self.table[tokens], state + 1, None

    def reorder_state(self, state, index):
        return state[index]


def _markov(seed: int) -> MarkovDecoder:
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(5, 5, generator=g, dtype=torch.float64) * 1.5
    table[:, 0] = float("-inf")  # token 0 is bos: never produced
    return MarkovDecoder(table)


def _brute_force(decoder: MarkovDecoder, *, max_len: int, alpha: float) -> tuple[list[int], float]:
    logp = decoder.table.detach().log_softmax(-1)
    best = None
    for n in range(max_len + 1):
        for seq in itertools.product([2, 3, 4], repeat=n):
            path = [0, *seq, 1]
            score = sum(float(logp[a, b]) for a, b in zip(path, path[1:])) / gnmt_penalty(n + 1, alpha)
            if best is None or score > best[1]:
                best = (list(seq), score)
    return best


@torch.no_grad()
def test_a_beam_that_holds_every_hypothesis_finds_the_exact_optimum() -> None:
    decoder = _markov(1)
    code = Code(vector=torch.zeros(1, 1))
    answers = {}
    for alpha in (0.0, 2.0):
        tokens, score = _brute_force(decoder, max_len=4, alpha=alpha)
        hyps = beam_search(decoder, code, beam=128, bos=0, eos=1, max_len=4, length_penalty=alpha)
        assert hyps.tokens[0][0] == tokens and hyps.scores[0][0] == pytest.approx(score)
        answers[alpha] = tokens
    assert len(answers[2.0]) > len(answers[0.0]), "the length penalty should favour a longer output here"


@pytest.mark.parametrize("beam", [2, 3, 5])
@torch.no_grad()
def test_a_live_beam_better_than_the_finished_ones_keeps_the_sentence_going(beam) -> None:
    """eos is the second-best token at every step (p = 0.01) and the best path is 2 3 4 eos (p ~ 0.98 each):
    eos candidates rank within the beam at every step, so a search that stops at K finished hypotheses answers
    a short one at about -4.6 while the live beam holds the greedy output at about -0.08."""
    p = torch.full((5, 5), 0.005, dtype=torch.float64)
    p[:, 0] = 0.0  # bos is never produced
    p[:, 1] = 0.01  # eos, second best everywhere ...
    for prev, nxt in ((0, 2), (2, 3), (3, 4), (4, 1)):
        p[prev, nxt] = 0.98  # ... but the path 2 3 4 eos is far better
    decoder, code = MarkovDecoder(p.log()), Code(vector=torch.zeros(2, 1))
    g = greedy(decoder, code, bos=0, eos=1, max_len=8)
    hyps = beam_search(decoder, code, beam=beam, nbest=2, bos=0, eos=1, max_len=8, length_penalty=1.0)
    assert g.tokens == [[[2, 3, 4]]] * 2
    assert [h[0] for h in hyps.tokens] == [[2, 3, 4]] * 2 and hyps.scores[0][0] > hyps.scores[0][1]


@pytest.mark.parametrize("prune", [None, 1.0])
@torch.no_grad()
def test_a_sentence_that_blocking_leaves_without_any_candidate_gets_an_empty_hypothesis(prune) -> None:
    """eos is impossible and unigram blocking bans tokens 2-4 once used: after three tokens every beam is at
    -inf. The search stops (with pruning, no decoder row is left) and answers an empty hypothesis at -inf."""
    decoder = _markov(3)
    decoder.table.data[:, 1] = float("-inf")  # eos is never produced
    hyps = beam_search(decoder, Code(vector=torch.zeros(2, 1)), beam=2, nbest=2, bos=0, eos=1, max_len=6,
                       no_repeat_ngram=1, prune=prune)
    assert hyps.tokens == [[[]], [[]]] and hyps.scores == [[float("-inf")], [float("-inf")]]


@torch.no_grad()
def test_the_first_step_runs_one_row_per_sentence_then_k() -> None:
    """At the first step the K beams of a sentence are all bos: one row each, expanded to K after it."""
    decoder, rows = _markov(2), []
    step = decoder.step
    decoder.step = lambda tokens, state: (rows.append(tokens.shape[0]), step(tokens, state))[1]
    hyps = beam_search(decoder, Code(vector=torch.zeros(3, 1)), beam=4, bos=0, eos=1, max_len=6)
    assert rows[0] == 3 and rows[1] == 3 * 4 and all(n % 4 == 0 for n in rows[1:]) and len(hyps.tokens) == 3


def test_log_probs_work_in_place_or_reuse_one_buffer_and_keep_at_least_float32(monkeypatch) -> None:
    """Float32 logits that the search owns become log-probabilities in place; other logits (a view that is not
    contiguous, bfloat16) go into one buffer for all large steps (its first rows when the batch shrinks).
    bfloat16 logits give float32 scores, float64 stays float64, and a larger batch gets a larger buffer."""
    monkeypatch.setattr(search_module, "_LARGE", 100)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g)
    expected = torch.log_softmax(logits, -1)
    out = _LogProbs()(logits)
    assert out.data_ptr() == logits.data_ptr() and torch.equal(out, expected)
    graded = torch.randn(2, 50, generator=g, requires_grad=True)
    assert _LogProbs()(graded).data_ptr() != graded.data_ptr(), "a tensor with a gradient is never overwritten"
    small = _LogProbs()
    small(torch.randn(50, 1, generator=g).t())
    assert small.buffer is None, "a tensor under _LARGE numbers gets no buffer"
    log_probs = _LogProbs()
    wide = torch.randn(50, 6, generator=g)
    first = log_probs(wide.t())  # (6, 50), not contiguous
    assert torch.equal(first, torch.log_softmax(wide.t(), -1)) and log_probs.buffer is not None
    narrow = torch.randn(50, 4, generator=g)
    second = log_probs(narrow.t())
    assert second.data_ptr() == first.data_ptr() and torch.equal(second, torch.log_softmax(narrow.t(), -1))
    low = torch.randn(3, 50, generator=g).bfloat16()
    assert log_probs(low).dtype == torch.float32
    assert torch.equal(log_probs(low), torch.log_softmax(low.float(), -1))
    assert torch.equal(low, low.clone()) and low.dtype == torch.bfloat16
    assert log_probs(torch.randn(9, 50, generator=g, dtype=torch.float64)).dtype == torch.float64


@torch.no_grad()
def test_searches_are_the_same_in_place_and_through_the_log_probability_buffer(monkeypatch) -> None:
    """Logits that are not contiguous take the buffer (and, under _LARGE, a fresh tensor); the result must be
    the same as in place."""
    encoder, decoder = _model("transformer", "transformer")
    code = encoder(_sources())

    def all_three() -> tuple:
        return (greedy(decoder, code, bos=BOS, eos=EOS, max_len=9),
                sample(decoder, code, bos=BOS, eos=EOS, max_len=9, top_k=5, generator=torch.Generator().manual_seed(3)),
                beam_search(decoder, code, beam=3, bos=BOS, eos=EOS, max_len=9, nbest=2))

    in_place = all_three()
    step = decoder.step

    def strided_step(tokens, state):
        logits, state, weights = step(tokens, state)
        return logits.t().contiguous().t(), state, weights  # the same numbers, column-major

    monkeypatch.setattr(decoder, "step", strided_step)
    fresh = all_three()
    monkeypatch.setattr(search_module, "_LARGE", 0)
    for a, b, c in zip(in_place, fresh, all_three()):
        _assert_same(a, b)
        _assert_same(a, c)


def test_block_sizes_divide_the_vocabulary_and_leave_enough_blocks() -> None:
    assert _block(4000, 10, 5) == 160 and _block(4000, 10, 1) == 160  # 25 blocks a row
    assert _block(96, 10, 5) == 48  # a multiple of 16 first; 2 blocks a row, 10 a sentence
    assert _block(4001, 10, 5) is None and _block(12, 4, 2) is None  # no divisor from 32 to 256: plain top-k
    assert _block(64, 10, 1) is None  # 2 blocks cannot hold the 10 best


@pytest.mark.parametrize("width", [1, 5])
def test_block_topk_gives_exactly_the_plain_topk(width: int) -> None:
    """The block-maxima selection returns the same k best (values bit for bit), also with rows that may only
    end (all -inf but eos) and sentences with fewer than k finite candidates."""
    g = torch.Generator().manual_seed(0)
    sentences, vocab, k = 6, 4000, 10
    logp = torch.log_softmax(3 * torch.randn(sentences * width, vocab, generator=g, dtype=torch.float64), -1)
    logp[2] = float("-inf")
    logp[2, 7] = -1.5  # a row forced to end
    logp[3 * width : 4 * width] = float("-inf")
    logp[3 * width : 4 * width, 7] = -0.5  # a whole sentence forced to end: width finite candidates, k - width -inf
    scores = torch.randn(sentences * width, generator=g, dtype=torch.float64)
    top, idx = _block_topk(scores, logp.clone(), width, k, _block(vocab, k, width))
    flat = (scores.unsqueeze(1) + logp).view(sentences, -1)
    assert torch.equal(top, flat.topk(k, dim=1).values)
    assert torch.equal(flat.gather(1, idx), top)
    assert all(len(set(row)) == k for row in idx.tolist()), "k distinct candidates per sentence"


@pytest.mark.parametrize("width", [1, 5])
def test_a_sentence_gets_the_same_candidates_alone_and_in_a_large_batch_even_with_ties(width: int) -> None:
    """Log-probabilities from bfloat16 logits tie often. Whatever path a selection takes, it must not depend on
    the rest of the batch, or a batched search would differ from the one-sentence search."""
    from hourglass.search import _candidates

    g = torch.Generator().manual_seed(0)
    vocab, beam = 4000, 5
    logits = (4 * torch.randn(64 * width, vocab, generator=g)).bfloat16()  # ties: 8 significant bits
    logp = torch.log_softmax(logits.float(), -1)
    scores = torch.randn(64 * width, generator=g).bfloat16().float()
    top, origin, token = _candidates(scores, logp.clone(), width, beam)
    for b in (0, 17, 63):
        rows = slice(b * width, (b + 1) * width)
        one = _candidates(scores[rows], logp[rows].clone(), width, beam)
        assert torch.equal(one[0][0], top[b]) and torch.equal(one[2][0], token[b])
        assert torch.equal(one[1][0] + b * width, origin[b])


@pytest.mark.parametrize("enc,dec", [("gru", "gru-attention"), ("transformer", "transformer")])
@torch.no_grad()
def test_beam_search_is_the_same_with_block_topk_and_plain_topk(enc: str, dec: str, monkeypatch) -> None:
    """A vocabulary of 640 takes the block path: blocks of 64 at the first step (one row per sentence), of 160
    after it."""
    calls = []
    monkeypatch.setattr(search_module, "_block_topk", lambda *a: (calls.append(1), _block_topk(*a))[1])
    encoder, decoder = _model(enc, dec, vocab=640)
    code = encoder(_sources())
    blocked = beam_search(decoder, code, beam=5, bos=BOS, eos=EOS, max_len=9, length_penalty=1.0, nbest=3)
    assert calls, "the block path should have run"
    monkeypatch.setattr(search_module, "_block", lambda vocab, k, width: None)
    _assert_same(blocked, beam_search(decoder, code, beam=5, bos=BOS, eos=EOS, max_len=9, length_penalty=1.0,
                                      nbest=3))


def test_prune_beams_drops_the_beams_too_far_below_their_sentence_best() -> None:
    inf = float("inf")
    scores = torch.tensor([-1.0, -1.5, -2.5, -inf, -4.0, -6.0, -4.75, -5.25])  # two sentences, K = 4
    assert prune_beams(scores, 4, 1.0).tolist() == [-1.0, -1.5, -inf, -inf, -4.0, -inf, -4.75, -inf]
    scores = torch.tensor([-1.0, -2.5, -3.0, -inf])  # the first beams are the best (_next_beams' order)
    assert prune_beams(scores, 4, 1.0, keep=2).tolist() == [-1.0, -2.5, -inf, -inf]  # an n-best of 2 keeps 2


#: decoder -> (output weight scale, pruning threshold) that prune some beams of the untrained test models
PRUNING = {"gru": (8, 0.5), "gru-attention": (16, 0.3), "lstm-attention": (16, 0.3), "transformer": (4, 1.0)}


def _rows_per_step(decoder: SequenceDecoder) -> list[int]:
    rows, step = [], decoder.step
    decoder.step = lambda tokens, state: (rows.append(tokens.shape[0]), step(tokens, state))[1]
    return rows


_PER_SENTENCE = {"no_repeat_ngram": 2, "max_len": torch.tensor([3, 9, 5, 7])}


@pytest.mark.parametrize("enc,dec,vocab,extra", [
    *((e, d, VOCAB, {}) for e, d in PAIRS),
    ("gru", "gru-attention", 640, {}), ("transformer", "transformer", 640, {}),  # the block top-k path
    ("gru", "gru-attention", VOCAB, _PER_SENTENCE), ("transformer", "transformer", VOCAB, _PER_SENTENCE),
    ("transformer", "transformer", 6, {}),  # fewer than 2K candidates: -inf ones fill the top-k
    ("transformer", "transformer", VOCAB, {"use_cache": False}),
])
@torch.no_grad()
def test_pruned_beams_leave_the_decoder_and_the_search_is_otherwise_the_same(enc, dec, vocab, extra,
                                                                           monkeypatch) -> None:
    """Pruning must equal a plain search whose pruned beams stay in the batch with a score of -inf (they can
    never come back), while the decoder runs on fewer rows, also with n-gram blocking and limits per sentence."""
    encoder, decoder = _model(enc, dec, vocab=vocab)
    extra = dict(extra)
    decoder.use_cache = extra.pop("use_cache", True)
    scale, threshold = PRUNING[dec]
    decoder.output.weight.mul_(scale)  # peaked distributions, as in a trained model, so that beams fall behind
    src = _sources()
    src = torch.where(src == PAD, src, 4 + src % (vocab - 4))  # tokens of the vocabulary
    options = dict(beam=5, bos=BOS, eos=EOS, max_len=9, length_penalty=1.0, nbest=2) | extra
    rows = _rows_per_step(decoder)
    pruned = beam_search(decoder, encoder(src), prune=threshold, **options)
    pruned_rows, rows[:] = list(rows), []
    plain_next = search_module._next_beams

    def next_beams(*args, **kwargs):  # the plain search, with pruned beams kept in the batch at -inf
        scores, select, tokens = plain_next(*args, **kwargs)
        return prune_beams(scores, kwargs["beam"], threshold, keep=2), select, tokens

    monkeypatch.setattr(search_module, "_next_beams", next_beams)
    _assert_same(pruned, beam_search(decoder, encoder(src), **options), exact=False)
    assert sum(pruned_rows) < 0.85 * sum(rows), (pruned_rows, rows)
    assert any(n % 5 for n in pruned_rows[1:]), "sentences should keep different numbers of beams"
    assert all(len(hyps) == 2 for hyps in pruned.tokens)


@pytest.mark.parametrize("enc,dec", [("gru", "gru-attention"), ("transformer", "transformer")])
@torch.no_grad()
def test_a_pruned_search_gives_each_sentence_its_own_result_in_a_batch(enc: str, dec: str) -> None:
    encoder, decoder = _model(enc, dec)
    scale, threshold = PRUNING[dec]
    decoder.output.weight.mul_(scale)
    src, limits = _sources(), torch.tensor([2, 9, 4, 7])
    options = dict(beam=4, nbest=2, bos=BOS, eos=EOS, length_penalty=1.0, prune=threshold)
    rows = _rows_per_step(decoder)
    batched = beam_search(decoder, encoder(src), max_len=limits, **options)
    assert any(n % 4 for n in rows[1:]), "some beams should have been pruned"
    assert all(len(hyps) == 2 for hyps in batched.tokens), "pruning keeps the beams an n-best list needs"
    for i in range(src.shape[0]):
        alone = beam_search(decoder, encoder(_unpadded(src, i)), max_len=int(limits[i]), **options)
        assert alone.tokens[0] == batched.tokens[i]
        assert alone.scores[0] == pytest.approx(batched.scores[i], abs=1e-9)
        assert torch.allclose(alone.attention[0], batched.attention[i], atol=1e-9)
    assert greedy(decoder, encoder(src), bos=BOS, eos=EOS, max_len=limits).tokens == \
        beam_search(decoder, encoder(src), beam=1, bos=BOS, eos=EOS, max_len=limits, prune=threshold).tokens
    with pytest.raises(ValueError, match="prune"):
        beam_search(decoder, encoder(src), beam=2, bos=BOS, eos=EOS, max_len=5, prune=0.0)


@torch.no_grad()
def test_no_repeat_ngram_is_respected() -> None:
    decoder = _markov(1)
    code = Code(vector=torch.zeros(1, 1))
    plain = beam_search(decoder, code, beam=4, nbest=4, bos=0, eos=1, max_len=12)
    assert any(_repeats(t, 2) for t in plain.tokens[0]), "the test needs a model that repeats itself"
    for n in (1, 2, 3):
        banned = beam_search(decoder, code, beam=4, nbest=4, bos=0, eos=1, max_len=12, no_repeat_ngram=n)
        assert not any(_repeats(t, n) for t in banned.tokens[0])


def _repeats(tokens: list[int], n: int) -> bool:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


def test_ban_repeats_marks_exactly_the_completing_tokens() -> None:
    history = torch.tensor([[5, 6, 5, 7, 5], [1, 2, 3, 4, 5]])
    out = ban_repeats(torch.zeros(2, 9), history, 2)
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [6, 7]  # "5 6" and "5 7" were seen
    assert not torch.isinf(out[1]).any()


@torch.no_grad()
def test_max_len_per_sentence_is_respected() -> None:
    encoder, decoder = _model("gru", "gru-attention")
    code = encoder(_sources())
    limits = torch.tensor([0, 1, 3, 6])
    for hyps in (greedy(decoder, code, bos=BOS, eos=EOS, max_len=limits),
                 beam_search(decoder, code, beam=3, nbest=3, bos=BOS, eos=EOS, max_len=limits)):
        for b, limit in enumerate(limits.tolist()):
            assert all(len(t) <= limit for t in hyps.tokens[b])
        assert hyps.tokens[0] == [[]] * len(hyps.tokens[0])


@torch.no_grad()
def test_min_len_holds_back_eos_until_then_but_never_past_a_sentence_limit(trained) -> None:
    """The copy model ends after 6 tokens; with min_len 9 every hypothesis of every search runs to 9 or more,
    except the sentence whose own limit (2) is below the minimum, which ends at its limit. Beam 1 is still greedy."""
    encoder, decoder = trained
    code = encoder(torch.randint(4, VOCAB, (4, 6), generator=torch.Generator().manual_seed(5)))
    limits = torch.tensor([2, 12, 12, 12])
    plain = greedy(decoder, code, bos=BOS, eos=EOS, max_len=limits)
    assert sum(len(h[0]) == 6 for h in plain.tokens[1:]) >= 2, "the trained model should stop after 6 tokens"
    ids = dict(bos=BOS, eos=EOS, max_len=limits, min_len=9)
    g = greedy(decoder, code, **ids)
    _assert_same(g, beam_search(decoder, code, beam=1, **ids))
    searches = (g, beam_search(decoder, code, beam=3, nbest=3, **ids),
                sample(decoder, code, generator=torch.Generator().manual_seed(0), **ids))
    for hyps in searches:
        assert all(len(t) == 2 for t in hyps.tokens[0])
        assert all(9 <= len(t) <= 12 for n in hyps.tokens[1:] for t in n)
    assert g.tokens[1][0][:6] == plain.tokens[1][0][:6]  # held back, not changed: the best tokens before eos
    pruned = beam_search(decoder, code, beam=3, nbest=3, prune=0.5, **ids)  # pruning keeps the minimum too
    assert all(9 <= len(t) <= 12 for n in pruned.tokens[1:] for t in n)


@torch.no_grad()
def test_sampling_with_top_k_1_or_a_tiny_top_p_equals_greedy() -> None:
    encoder, decoder = _model("transformer", "transformer")
    code = encoder(_sources())
    best = greedy(decoder, code, bos=BOS, eos=EOS, max_len=9)
    g = torch.Generator().manual_seed(0)
    for kwargs in ({"top_k": 1}, {"top_p": 1e-6}):
        drawn = sample(decoder, code, bos=BOS, eos=EOS, max_len=9, generator=g, **kwargs)
        assert drawn.tokens == best.tokens and drawn.scores == best.scores


@torch.no_grad()
def test_sampling_never_repeats_a_blocked_ngram() -> None:
    encoder, decoder = _model("gru", "gru-attention")
    code = encoder(_sources())
    for seed in range(3):
        drawn = sample(decoder, code, bos=BOS, eos=EOS, max_len=12, min_len=6, temperature=2.0, no_repeat_ngram=1,
                       generator=torch.Generator().manual_seed(seed))
        assert all(len(set(t)) == len(t) >= 6 for n in drawn.tokens for t in n)


@torch.no_grad()
def test_sampling_is_reproducible_with_a_generator() -> None:
    encoder, decoder = _model("gru", "gru-attention")
    code = encoder(_sources())
    draws = [sample(decoder, code, bos=BOS, eos=EOS, max_len=9, temperature=1.5,
                    generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert draws[0].tokens == draws[1].tokens
    other = sample(decoder, code, bos=BOS, eos=EOS, max_len=9, temperature=1.5,
                   generator=torch.Generator().manual_seed(8))
    assert other.tokens != draws[0].tokens


@pytest.mark.parametrize("vocab", [6, 40])
@torch.no_grad()
def test_beam_1_equals_greedy_when_the_best_tokens_tie(vocab: int) -> None:
    """After bos, tokens 2 and V-1 tie for the best: greedy's argmax takes 2, and beam 1 must too (topk alone
    may order tied candidates either way; the two continuations then differ: 2 -> 3, V-1 -> 4)."""
    table = torch.zeros(vocab, vocab)
    table[:, 0], table[:, 1] = float("-inf"), -5.0  # bos is never produced; eos = 1 is unlikely
    table[0, 2:] = -3.0
    table[0, 2] = table[0, vocab - 1] = 1.0
    table[2, 3] = table[vocab - 1, 4] = 3.0
    decoder, code = MarkovDecoder(table), Code(vector=torch.zeros(3, 1))
    best = greedy(decoder, code, bos=0, eos=1, max_len=2)
    assert best.tokens == [[[2, 3]]] * 3
    beam1 = beam_search(decoder, code, beam=1, bos=0, eos=1, max_len=2)
    assert beam1.tokens == best.tokens and beam1.scores == best.scores


@torch.no_grad()
def test_a_row_with_no_allowed_token_ends_at_minus_infinity_instead_of_crashing() -> None:
    """Unigram blocking with a minimum length of 4 over three real tokens: at the fourth step nothing is allowed.
    Sampling ends the sentence there at -inf (multinomial would raise on such a row); greedy, whose eos is at
    -inf when it reaches max_len, ends at max_len instead of running past it."""
    table = torch.zeros(5, 5)
    table[:, 0] = float("-inf")  # bos = 0 is never produced; eos = 1; tokens 2, 3, 4
    decoder, code = MarkovDecoder(table), Code(vector=torch.zeros(2, 1))
    drawn = sample(decoder, code, bos=0, eos=1, max_len=6, min_len=4, no_repeat_ngram=1,
                   generator=torch.Generator().manual_seed(0))
    assert [sorted(n[0]) for n in drawn.tokens] == [[2, 3, 4]] * 2 and drawn.scores == [[float("-inf")]] * 2
    table[:, 1] = float("-inf")  # eos is impossible: the forced eos at max_len has nothing to end with
    ended = greedy(decoder, code, bos=0, eos=1, max_len=2)
    assert [len(n[0]) for n in ended.tokens] == [2, 2] and ended.scores == [[float("-inf")]] * 2


@torch.no_grad()
def test_sampling_keeps_the_best_token_at_top_p_0_and_at_a_vanishing_temperature() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    assert torch.isinf(filter_logits(logits, top_p=0.0)).tolist() == [[False, True, True]]
    encoder, decoder = _model("gru", "gru-attention")
    code = encoder(_sources())
    best = greedy(decoder, code, bos=BOS, eos=EOS, max_len=9)
    for kwargs in ({"top_p": 0.0}, {"temperature": 1e-40}):
        drawn = sample(decoder, code, bos=BOS, eos=EOS, max_len=9, generator=torch.Generator().manual_seed(0),
                       **kwargs)
        assert drawn.tokens == best.tokens
    with pytest.raises(ValueError, match="finite"):
        sample(decoder, code, bos=BOS, eos=EOS, max_len=9, temperature=math.inf)


def test_filter_logits_keeps_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[False, True, True, True]]
    assert torch.isinf(filter_logits(logits, top_k=3)).tolist() == [[False, False, False, True]]
    assert math.isclose(filter_logits(logits, top_k=2, top_p=0.9).softmax(-1)[0, 0].item(), 0.5 / 0.8)


def test_nbest_larger_than_the_beam_is_refused() -> None:
    encoder, decoder = _model("gru", "gru")
    with pytest.raises(ValueError, match="nbest"):
        beam_search(decoder, encoder(_sources()), beam=2, nbest=3, bos=BOS, eos=EOS, max_len=5)


@pytest.mark.parametrize("enc,dec", [("gru", "gru-attention"), ("transformer", "transformer")])
@pytest.mark.parametrize("indexes", [
    [[0, 0, 1, 1, 2, 2, 3, 3], [1, 0, 0, 1, 5, 4, 7, 7]],  # beams: repeat, then permute within each sentence
    [[0, 0, 1, 1, 2, 2, 3, 3], [2, 3, 6, 6]],  # sentences 0 and 2 leave
    [[0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 2, 3, 2, 6]],  # rows from anywhere, runs of unequal length
    [[0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3], [0, 2, 3, 6, 7, 8, 9], [1, 0, 0, 2, 4, 5, 6, 6]],  # pruned beams
    [[3, 1, 1, 0]],
])
@torch.no_grad()
def test_reorder_state_equals_a_state_built_for_the_reordered_rows(enc: str, dec: str, indexes) -> None:
    """Decoders keep the source side once per sentence (decoders.base.regroup); whatever rows a reorder asks
    for, the next step equals a step from a state built directly for those rows."""
    encoder, decoder = _model(enc, dec)
    src = _sources()
    state, rows = decoder.init_state(encoder(src)), torch.arange(src.shape[0])
    tokens = torch.arange(4, 4 + src.shape[0])
    _, state, _ = decoder.step(tokens, state)  # one step first, so that per-row state differs
    for index in indexes:
        index = torch.tensor(index)
        state, rows, tokens = decoder.reorder_state(state, index), rows[index], tokens[index]
    logits, _, weights = decoder.step(tokens, state)
    fresh = decoder.init_state(encoder(src[rows]))
    _, fresh, _ = decoder.step(torch.arange(4, 4 + src.shape[0])[rows], fresh)
    expected, _, expected_weights = decoder.step(tokens, fresh)
    assert torch.allclose(logits, expected, atol=1e-10)
    assert torch.allclose(weights, expected_weights, atol=1e-10)


def test_regroup_moves_the_source_side_only_when_sentences_leave() -> None:
    from hourglass.decoders.base import regroup

    assert regroup(torch.tensor([0, 0, 0, 1, 1, 1]), 1, 2) == (None, 3, None)  # B -> B*K: nothing moves
    assert regroup(torch.tensor([2, 0, 1, 4, 3, 5]), 3, 2) == (None, 3, None)  # beams permuted within sentences
    keep, groups, slots = regroup(torch.tensor([3, 5, 4, 6, 7, 6]), 3, 3)  # sentence 0 leaves
    assert keep.tolist() == [1, 2] and groups == 3 and slots is None
    keep, groups, slots = regroup(torch.tensor([4, 5, 1, 1, 6]), 2, 4)  # sources 2, 0, 3 keep 2, 2, 1 rows
    assert keep.tolist() == [2, 0, 3] and groups == 2 and slots.tolist() == [0, 1, 2, 3, 4]
    keep, groups, slots = regroup(torch.tensor([0, 1, 2, 4, 5]), 3, 2)  # pruning: 3 and 2 rows, in place
    assert keep is None and groups == 3 and slots.tolist() == [0, 1, 2, 3, 4]
    # From a grid: rows at slots [0, 1, 3] of a (2, 2) grid; rows 0 and 2 stay, one per source.
    keep, groups, slots = regroup(torch.tensor([0, 2, 2]), 2, 2, torch.tensor([0, 1, 3]))
    assert keep is None and groups == 2 and slots.tolist() == [0, 2, 3]
