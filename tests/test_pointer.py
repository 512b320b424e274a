"""The pointer-generator decoders (See et al. 2017): the copy distribution, coverage, the Code contract, search."""
from __future__ import annotations

import pytest
import torch

from hourglass.code import CodeSpec
from hourglass.config import validate
from hourglass.decoders.pointer import GRUPointerDecoder, LSTMPointerDecoder, TransformerPointerDecoder
from hourglass.encoders.rnn import GRUEncoder
from hourglass.encoders.transformer import TransformerEncoder
from hourglass.errors import ConfigError, IncompatiblePairError
from hourglass.features import flatten_code, unflatten_code
from hourglass.model import DataContext, build_model
from hourglass.search import beam_search, greedy
from hourglass.tasks.seq2seq import coverage_penalty

V = 30


def pair(cls=GRUPointerDecoder, coverage: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    if cls is TransformerPointerDecoder:
        encoder = TransformerEncoder(vocab_size=V, pad_id=0, d_model=16, heads=2, layers=1, ff=32, max_len=16)
        decoder = cls(code=encoder.spec, vocab_size=V, pad_id=0, shared_vocab=True, d_model=16, heads=2, layers=2,
                      ff=32, max_len=16)
        return encoder.eval(), decoder.eval()
    encoder = GRUEncoder(vocab_size=V, pad_id=0, embed=8, hidden=8)
    decoder = cls(code=encoder.spec, vocab_size=V, pad_id=0, shared_vocab=True, embed=8, hidden=16,
                  coverage=coverage)
    return encoder.eval(), decoder.eval()


ALL = [GRUPointerDecoder, LSTMPointerDecoder, TransformerPointerDecoder]


def sources() -> torch.Tensor:
    src = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0], [14, 14, 15, 16, 0, 0]])  # (3, 6), 0 = pad
    return src


@pytest.mark.parametrize("cls", ALL)
def test_the_output_is_a_distribution_and_without_generation_it_is_the_attention_on_source_ids(cls):
    encoder, decoder = pair(cls)
    src = sources()
    code = encoder(src)
    with torch.no_grad():
        logp, attention = decoder(torch.randint(4, V, (3, 4)), decoder.init_state(code))  # (3, 4, V), (3, 4, 6)
        torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3, 4))
        decoder.switch.bias.fill_(-1e4)  # p_gen = 0: copy only (eq. 9 without its first term)
        logp, attention = decoder(torch.randint(4, V, (3, 4)), decoder.init_state(code))
    probs = logp.exp()
    for b in range(3):
        expected = torch.zeros(4, V).index_add_(1, src[b], attention[b])  # attention mass per source id
        expected[:, 0] = 0  # padding positions get no attention
        torch.testing.assert_close(probs[b], expected.clamp_min(1e-12), atol=1e-6, rtol=1e-5)
    assert probs[1, :, 5:11].sum() < 1e-6  # ids of the other sentences get nothing
    assert probs[2, :, 14].sum() > 0  # a repeated id gets the attention of both of its positions


def test_step_by_step_equals_teacher_forcing_and_coverage_sums_the_attention():
    encoder, decoder = pair()
    code = encoder(sources())
    tokens = torch.randint(4, V, (3, 5))
    with torch.no_grad():
        forced, attention = decoder(tokens, decoder.init_state(code))
        state, steps = decoder.init_state(code), []
        for t in range(5):
            logp, state, weights = decoder.step(tokens[:, t], state)
            steps.append(logp)
    torch.testing.assert_close(torch.stack(steps, 1), forced, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state.coverage, attention.sum(1))


def test_the_transformer_pointer_steps_as_it_teacher_forces_with_and_without_its_cache():
    encoder, decoder = pair(TransformerPointerDecoder)
    code = encoder(sources())
    tokens = torch.randint(4, V, (3, 5))
    with torch.no_grad():
        forced, attention = decoder(tokens, decoder.init_state(code))  # (3, 5, V), (3, 5, 6)
        for cache in (True, False):
            decoder.use_cache = cache
            state, steps, weights = decoder.init_state(code), [], []
            for t in range(5):
                logp, state, w = decoder.step(tokens[:, t], state)
                steps.append(logp)
                weights.append(w)
            torch.testing.assert_close(torch.stack(steps, 1), forced, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(torch.stack(weights, 1), attention, atol=1e-6, rtol=1e-5)


def test_coverage_changes_where_the_decoder_attends():
    encoder, decoder = pair()
    code = encoder(sources())
    state = decoder.init_state(code)
    with torch.no_grad():
        decoder.attention.coverage_proj.weight.fill_(-5.0)  # covered positions score lower
        _, fresh = decoder(torch.full((3, 1), 4), state)
        covered = state._replace(coverage=state.coverage.index_fill(1, torch.tensor([0]), 3.0))
        _, after = decoder(torch.full((3, 1), 4), covered)
    assert (after[:, 0, 0] < fresh[:, 0, 0]).all()


@pytest.mark.parametrize("cls", ALL)
def test_beam_1_equals_greedy_and_pruned_batched_beams_match_one_sentence_at_a_time(cls):
    encoder, decoder = pair(cls, seed=3)
    src = sources()
    with torch.no_grad():
        code = encoder(src)
        g = greedy(decoder, code, bos=2, eos=3, max_len=8)
        b = beam_search(decoder, code, beam=1, bos=2, eos=3, max_len=8)
        batched = beam_search(decoder, code, beam=4, bos=2, eos=3, max_len=8, prune=0.7, no_repeat_ngram=2)
        alone = [beam_search(decoder, encoder(src[i : i + 1, : int((src[i] > 0).sum())]), beam=4, bos=2, eos=3,
                             max_len=8, prune=0.7, no_repeat_ngram=2) for i in range(3)]
    assert g.tokens == b.tokens
    assert batched.tokens == [a.tokens[0] for a in alone]
    for tokens in batched.best():  # no bigram twice
        grams = list(zip(tokens, tokens[1:]))
        assert len(grams) == len(set(grams))


def test_separate_vocabularies_and_encoders_without_token_ids_are_refused_when_built():
    spec = GRUEncoder(vocab_size=V, pad_id=0).spec
    with pytest.raises(ConfigError, match="joint_vocab=true"):
        GRUPointerDecoder(code=spec, vocab_size=V, pad_id=0, shared_vocab=False)
    with pytest.raises(ConfigError, match="source 30 pieces, target 40"):
        GRUPointerDecoder(code=spec, vocab_size=40, pad_id=0, shared_vocab=True)
    with pytest.raises(ConfigError, match='"transformer-pointer" copies .* does not copy \\("transformer"\\)'):
        TransformerPointerDecoder(code=TransformerEncoder(vocab_size=V, pad_id=0).spec, vocab_size=V, pad_id=0)
    config = validate({"name": "caption-copy", "data": {"name": "digits"},
                       "model": {"encoder": {"name": "conv"}, "decoder": {"name": "gru-pointer"}},
                       "task": {"name": "seq2seq"}}, "test")
    image = DataContext(modality="image", encoder={"input_shape": (1, 8, 8)}, decoder={"vocab_size": V, "pad_id": 0})
    with pytest.raises(IncompatiblePairError, match="tokens.*source token ids"):
        build_model(config.model, image)


def test_text_encoders_hand_over_their_token_ids_and_the_feature_cache_keeps_them():
    src = sources()
    for encoder in (GRUEncoder(vocab_size=V, pad_id=0), TransformerEncoder(vocab_size=V, pad_id=0, max_len=8)):
        assert encoder.spec.tokens == V and "tokens" in encoder.spec.provided()
        code = encoder.eval()(src)
        assert torch.equal(code.tokens, src)
        assert torch.equal(unflatten_code(flatten_code(code, ("memory", "tokens"))).tokens, src)
    assert CodeSpec(memory=4).tokens is None


def test_the_coverage_penalty_is_the_overlap_with_earlier_attention_over_real_targets():
    attention = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.5, 0.5]],  # attends twice to position 0, then half
                              [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])  # (2, 3, 2); its last step is padding
    real = torch.tensor([[True, True, True], [True, True, False]])
    # sentence 0: 0 + min(1, 1) + (min(.5, 2) + min(.5, 0)) = 1.5; sentence 1: 0 + 0 (padding not counted)
    assert float(coverage_penalty(attention, real)) == pytest.approx(1.5 / 5)
