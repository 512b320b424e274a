"""The recurrent decoders' inference step from a table of first-layer gates per token (hourglass.nn.cells): the
same numbers as nn.GRU / nn.LSTM, the same search results, rebuilt when the weights change, never used in
training."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import hourglass.decoders.pointer  # noqa: F401  (registration)
import hourglass.decoders.rnn  # noqa: F401
import hourglass.encoders.rnn  # noqa: F401
import hourglass.nn.cells as cells
from hourglass._registry import DECODERS, ENCODERS
from hourglass.search import beam_search, greedy

PAD, BOS, EOS, VOCAB = 0, 2, 3, 12
DECODER_OPTIONS = [
    ("gru-attention", {"input_feeding": False}),
    ("gru-attention", {"input_feeding": True, "layers": 2}),
    ("lstm-attention", {"input_feeding": False, "layers": 2}),
    ("gru", {}),
    ("lstm", {}),
    ("gru-pointer", {"shared_vocab": True}),
]


def _pair(dec: str, options: dict, seed: int = 0):
    torch.manual_seed(seed)
    encoder = ENCODERS.get("gru")(vocab_size=VOCAB, pad_id=PAD, embed=8, hidden=16)
    decoder = DECODERS.get(dec)(code=encoder.spec, vocab_size=VOCAB, pad_id=PAD, embed=8, hidden=16, **options)
    return encoder.eval(), decoder.eval()


def _steps(encoder, decoder, src: torch.Tensor, tgt: torch.Tensor) -> list[torch.Tensor]:
    state, out = decoder.init_state(encoder(src)), []
    for t in range(tgt.shape[1]):
        logits, state, _ = decoder.step(tgt[:, t], state)
        out.append(logits)
    return out


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, VOCAB, (5, 7), generator=g)
    src[1, 4:] = PAD
    return src, torch.randint(4, VOCAB, (5, 6), generator=g)


@pytest.mark.parametrize("dec,options", DECODER_OPTIONS)
@torch.no_grad()
def test_steps_from_the_table_equal_the_torch_cells(dec: str, options: dict, monkeypatch) -> None:
    encoder, decoder = _pair(dec, options)
    src, tgt = _data()
    fast = _steps(encoder, decoder, src, tgt)
    assert decoder._gates._table is not None, "an inference step on the CPU should use the table"
    monkeypatch.setattr(cells, "TABLE_LIMIT", 0)  # every table above the limit: nn.GRU / nn.LSTM
    plain = _steps(encoder, decoder, src, tgt)
    for a, b in zip(fast, plain):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("dec,options", DECODER_OPTIONS[:3])
@torch.no_grad()
def test_searches_give_the_same_results_with_and_without_the_table(dec: str, options: dict, monkeypatch) -> None:
    encoder, decoder = _pair(dec, options)
    encoder, decoder = encoder.double(), decoder.double()  # no float noise between the two ways
    code = encoder(_data()[0])
    fast = [greedy(decoder, code, bos=BOS, eos=EOS, max_len=8),
            beam_search(decoder, code, beam=3, nbest=2, bos=BOS, eos=EOS, max_len=8)]
    assert decoder._gates._table is not None
    monkeypatch.setattr(cells, "TABLE_LIMIT", 0)
    plain = [greedy(decoder, code, bos=BOS, eos=EOS, max_len=8),
             beam_search(decoder, code, beam=3, nbest=2, bos=BOS, eos=EOS, max_len=8)]
    for a, b in zip(fast, plain):
        assert a.tokens == b.tokens
        for x, y in zip(a.scores, b.scores):
            assert x == pytest.approx(y, abs=1e-9)


@torch.no_grad()
def _reference(encoder, decoder, src, tgt) -> list[torch.Tensor]:
    """The steps through nn.GRU, without the table."""
    saved, cells.TABLE_LIMIT = cells.TABLE_LIMIT, 0
    try:
        return _steps(encoder, decoder, src, tgt)
    finally:
        cells.TABLE_LIMIT = saved


def test_the_table_follows_an_optimizer_step_and_a_loaded_state() -> None:
    encoder, decoder = _pair("gru-attention", {"input_feeding": False})
    src, tgt = _data()
    with torch.no_grad():
        before = _steps(encoder, decoder, src, tgt)
    # One training step changes the embedding and the GRU's input weights in place.
    decoder.train()
    logits, _ = decoder(tgt, decoder.init_state(encoder(src)))
    opt = torch.optim.SGD(decoder.parameters(), lr=1.0)
    nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tgt.reshape(-1)).backward()
    opt.step()
    decoder.eval()
    with torch.no_grad():
        after = _steps(encoder, decoder, src, tgt)
    assert not torch.allclose(before[-1], after[-1], atol=1e-3), "the step must see the new weights"
    for a, b in zip(after, _reference(encoder, decoder, src, tgt)):
        assert torch.allclose(a, b, atol=1e-6)
    # Weights loaded from another model of the same shape (copied in place).
    _, other = _pair("gru-attention", {"input_feeding": False}, seed=1)
    decoder.load_state_dict(other.state_dict())
    with torch.no_grad():
        loaded = _steps(encoder, decoder, src, tgt)
    for a, b in zip(loaded, _reference(encoder, decoder, src, tgt)):
        assert torch.allclose(a, b, atol=1e-6)


def test_training_and_gradients_never_use_the_table() -> None:
    encoder, decoder = _pair("gru-attention", {"input_feeding": False})
    src, tgt = _data()
    state = decoder.init_state(encoder(src))
    logits, _, _ = decoder.step(tgt[:, 0], state)  # eval mode, but with a gradient: the embedding must get one
    logits.sum().backward()
    assert decoder._gates._table is None
    assert decoder.embedding.weight.grad is not None and decoder.embedding.weight.grad.abs().sum() > 0
    assert decoder.rnn.weight_ih_l0.grad.abs().sum() > 0
    decoder.train()
    with torch.no_grad():
        decoder.step(tgt[:, 0], decoder.init_state(encoder(src)))  # dropout on the embeddings: no table
    assert decoder._gates._table is None


def test_replaced_copied_and_pickled_decoders_build_their_own_table() -> None:
    import copy
    import pickle

    encoder, decoder = _pair("gru-attention", {"input_feeding": False})
    src, tgt = _data()
    with torch.no_grad():
        _steps(encoder, decoder, src, tgt)  # builds the table
    # New tensors in place of the old ones (load_state_dict with assign=True), whatever their addresses.
    _, other = _pair("gru-attention", {"input_feeding": False}, seed=1)
    decoder.load_state_dict({k: v.clone() for k, v in other.state_dict().items()}, assign=True)
    for clone in (decoder, copy.deepcopy(decoder), pickle.loads(pickle.dumps(decoder))):
        with torch.no_grad():
            got = _steps(encoder, clone, src, tgt)
        for a, b in zip(got, _reference(encoder, other, src, tgt)):
            assert torch.allclose(a, b, atol=1e-6)


def test_inference_tensors_run_without_a_table() -> None:
    with torch.inference_mode():  # weights made here are inference tensors: no version counter to key a table on
        encoder, decoder = _pair("gru-attention", {"input_feeding": False})
        src, tgt = _data()
        got = _steps(encoder, decoder, src, tgt)
    assert decoder._gates._table is None
    for a, b in zip(got, _reference(encoder, decoder, src, tgt)):
        assert torch.equal(a, b)
