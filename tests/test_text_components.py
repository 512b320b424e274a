"""Token encoders x sequence decoders, driven by the registries.

Every pair builds, runs teacher forcing with the right shapes, back-propagates into both parts without NaN,
and decodes step by step exactly as it does in one forward pass. Then a few families learn to copy or reverse
short sequences to >= 99% exact match with greedy search, trained here in plain PyTorch.
"""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import hourglass.decoders.rnn  # noqa: F401  (registration)
import hourglass.decoders.transformer  # noqa: F401
import hourglass.encoders.rnn  # noqa: F401
import hourglass.encoders.transformer  # noqa: F401
from hourglass._registry import DECODERS, ENCODERS
from hourglass.code import check_pair
from hourglass.decoders.base import SequenceDecoder
from hourglass.errors import ConfigError, DataError, IncompatiblePairError
from hourglass.options import parameters, user_options
from hourglass.search import greedy

PAD, BOS, EOS, VOCAB = 0, 2, 3, 12  # 1 is unk; 4..11 are the 8 symbols of the toy tasks
SMALL = {
    "gru": {"embed": 8, "hidden": 16}, "lstm": {"embed": 8, "hidden": 16},
    "gru-attention": {"embed": 8, "hidden": 16}, "lstm-attention": {"embed": 8, "hidden": 16},
    "gru-pointer": {"embed": 8, "hidden": 16}, "lstm-pointer": {"embed": 8, "hidden": 16},
    "transformer": {"d_model": 16, "heads": 2, "layers": 2, "ff": 32},
    "transformer-pointer": {"d_model": 16, "heads": 2, "layers": 2, "ff": 32},
}
TOKEN_ENCODERS = [n for n in ENCODERS.names() if ENCODERS.get(n).modality == "tokens"]
SEQUENCE_DECODERS = [n for n in DECODERS.names() if issubclass(DECODERS.get(n), SequenceDecoder)]
PAIRS = [(e, d) for e in TOKEN_ENCODERS for d in SEQUENCE_DECODERS]
SLOW = pytest.mark.skipif(not os.environ.get("HOURGLASS_SLOW_TESTS"), reason="slow; set HOURGLASS_SLOW_TESTS=1")


def _small(registry, name: str, **extra):
    cls = registry.get(name)
    return {k: v for k, v in SMALL.get(name, {}).items() if k in user_options(cls)} | extra


def build(enc: str, dec: str, *, seed: int = 0, enc_options: dict | None = None, dec_options: dict | None = None):
    torch.manual_seed(seed)
    try:
        encoder = ENCODERS.get(enc)(vocab_size=VOCAB, pad_id=PAD, **(enc_options or _small(ENCODERS, enc)))
    except IncompatiblePairError as err:  # e.g. a pretrained encoder that reads only its own tokenizer's ids
        pytest.skip(f"{enc} refuses a toy vocabulary: {err}")
    except ConfigError as err:  # its weights come with an optional extra (hourglass[pretrained]) not installed
        if "not installed" not in str(err):
            raise
        pytest.skip(f"{enc} needs an optional extra: {err}")
    check_pair(enc, encoder.spec, dec, DECODERS.get(dec).needs)
    options = dec_options or _small(DECODERS, dec)
    if "shared_vocab" in parameters(DECODERS.get(dec)):  # one vocabulary on both sides, as the toy tasks have
        options = {**options, "shared_vocab": True}
    decoder = DECODERS.get(dec)(code=encoder.spec, vocab_size=VOCAB, pad_id=PAD, **options)
    return encoder, decoder


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, VOCAB, (3, 7), generator=g)
    src[0, 4:] = PAD
    return src, torch.randint(4, VOCAB, (3, 5), generator=g)


def test_the_families_are_registered() -> None:
    assert {"gru", "lstm", "transformer"} <= set(TOKEN_ENCODERS)
    assert {"gru", "lstm", "gru-attention", "lstm-attention", "transformer"} <= set(SEQUENCE_DECODERS)


@pytest.mark.parametrize("enc,dec", PAIRS)
def test_teacher_forcing_shapes_backward_and_no_nan(enc: str, dec: str) -> None:
    encoder, decoder = build(enc, dec)
    src, tgt = _batch()
    code = encoder(src)
    assert code.memory.shape[:2] == (3, 7) and code.vector.shape[0] == 3
    assert code.memory_mask.tolist()[0] == [True] * 4 + [False] * 3
    logits, attention = decoder(tgt, decoder.init_state(code))
    assert logits.shape == (3, 5, VOCAB) and not logits.isnan().any()
    if attention is not None:
        assert attention.shape == (3, 5, 7)
        assert (attention[0, :, 4:] == 0).all()
        assert torch.allclose(attention.sum(-1), torch.ones(3, 5), atol=1e-5)
    nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tgt.reshape(-1)).backward()
    for part in (encoder, decoder):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and all(g.isfinite().all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0, f"no gradient reached the {type(part).__name__}"


@pytest.mark.parametrize("enc,dec", PAIRS)
@torch.no_grad()
def test_step_by_step_equals_teacher_forcing_and_eval_is_deterministic(enc: str, dec: str) -> None:
    encoder, decoder = build(enc, dec)
    encoder.eval(), decoder.eval()
    src, tgt = _batch()
    code = encoder(src)
    logits, attention = decoder(tgt, decoder.init_state(code))
    again, _ = decoder(tgt, decoder.init_state(encoder(src)))
    assert torch.equal(logits, again)
    state = decoder.init_state(code)
    state = decoder.reorder_state(state, torch.tensor([2, 0, 1]))
    state = decoder.reorder_state(state, torch.tensor([1, 2, 0]))  # back to the original order
    for t in range(tgt.shape[1]):
        step_logits, state, step_attention = decoder.step(tgt[:, t], state)
        assert torch.allclose(step_logits, logits[:, t], atol=1e-5)
        assert (step_attention is None) == (attention is None)
        if attention is not None:
            assert torch.allclose(step_attention, attention[:, t], atol=1e-5)


@pytest.mark.parametrize("enc", TOKEN_ENCODERS)
@torch.no_grad()
def test_padding_never_changes_what_the_encoder_says_about_a_sentence(enc: str) -> None:
    encoder, _ = build(enc, "transformer")
    encoder.eval()
    src, _ = _batch()
    alone, batched = encoder(src[:1, :4]), encoder(src)
    assert torch.allclose(alone.memory[0], batched.memory[0, :4], atol=1e-5)
    assert torch.allclose(alone.vector[0], batched.vector[0], atol=1e-5)
    assert (batched.memory[0, 4:] == 0).all()


@pytest.mark.parametrize("dec", [d for d in SEQUENCE_DECODERS if "tie_embeddings" in user_options(DECODERS.get(d))])
def test_tied_embeddings_share_one_matrix(dec: str) -> None:
    untied = build("gru", dec)[1]
    tied = build("gru", dec, dec_options=_small(DECODERS, dec, tie_embeddings=True))[1]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731  (parameters() lists a shared one once)
    width = 16 if dec.startswith("transformer") else 8
    assert count(untied) - count(tied) == VOCAB * width


@torch.no_grad()
def test_transformer_decoder_without_cache_gives_the_same_steps() -> None:
    encoder, cached = build("transformer", "transformer")
    uncached = DECODERS.get("transformer")(code=encoder.spec, vocab_size=VOCAB, pad_id=PAD, use_cache=False,
                                           **_small(DECODERS, "transformer"))
    uncached.load_state_dict(cached.state_dict())
    encoder.eval(), cached.eval(), uncached.eval()
    code = encoder(_batch()[0])
    a = greedy(cached, code, bos=BOS, eos=EOS, max_len=8)
    b = greedy(uncached, code, bos=BOS, eos=EOS, max_len=8)
    assert a.tokens == b.tokens
    assert [s[0] for s in a.scores] == pytest.approx([s[0] for s in b.scores], abs=1e-5)


def test_a_too_long_input_is_a_clear_error() -> None:
    encoder = ENCODERS.get("transformer")(vocab_size=VOCAB, pad_id=PAD, d_model=16, heads=2, layers=1, ff=16,
                                          max_len=6)
    with pytest.raises(DataError, match="max_len=6"):
        encoder(torch.full((1, 7), 5))


@pytest.mark.parametrize("registry", [ENCODERS, DECODERS], ids=["encoder", "decoder"])
def test_heads_that_do_not_divide_d_model_fail_at_build(registry) -> None:
    context = {"code": ENCODERS.get("gru")(vocab_size=VOCAB, pad_id=PAD).spec} if registry is DECODERS else {}
    with pytest.raises(ConfigError, match="heads=3 must divide"):
        registry.get("transformer")(vocab_size=VOCAB, pad_id=PAD, d_model=16, heads=3, **context)


def test_dot_attention_with_mismatched_sizes_fails_at_build() -> None:
    with pytest.raises(ConfigError, match="hidden"):
        build("gru", "gru-attention", dec_options={"hidden": 16, "attention": "dot"})  # memory is 2 x 16


# ------------------------------------------------------------------------------------------------ toy tasks
def toy_batch(n: int, g: torch.Generator, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sequences of 3-8 symbols (4..11), and their copy or reversal framed by bos/eos. (n, 8), (n, 10)."""
    src = torch.full((n, 8), PAD)
    tgt = torch.full((n, 10), PAD)
    for i, length in enumerate(torch.randint(3, 9, (n,), generator=g).tolist()):
        seq = torch.randint(4, VOCAB, (length,), generator=g)
        src[i, :length] = seq
        tgt[i, 0], tgt[i, 1 : length + 1], tgt[i, length + 1] = BOS, seq if task == "copy" else seq.flip(0), EOS
    return src, tgt


def train_toy(encoder: nn.Module, decoder: SequenceDecoder, *, task: str, steps: int, batch: int, lr: float) -> None:
    """Adam with a one-cycle schedule (Smith & Topin 2019): fast and steady on a tiny problem."""
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    encoder.train(), decoder.train()
    for _ in range(steps):
        src, tgt = toy_batch(batch, g, task)
        logits, _ = decoder(tgt[:, :-1], decoder.init_state(encoder(src)))
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tgt[:, 1:].reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        schedule.step()
    encoder.eval(), decoder.eval()


@torch.no_grad()
def exact_match(encoder: nn.Module, decoder: SequenceDecoder, task: str, n: int = 300) -> float:
    src, tgt = toy_batch(n, torch.Generator().manual_seed(1234), task)
    hyps = greedy(decoder, encoder(src), bos=BOS, eos=EOS, max_len=12)
    wanted = [[t for t in row if t not in (BOS, EOS, PAD)] for row in tgt.tolist()]
    return sum(h[0] == w for h, w in zip(hyps.tokens, wanted)) / n


RNN = {"embed": 32, "hidden": 64}
TRANSFORMER = {"d_model": 32, "heads": 2, "layers": 1, "ff": 64, "dropout": 0.0}
TOY = [  # encoder, its options, decoder, its options, task, steps, batch size, peak learning rate
    pytest.param("gru", RNN, "gru-attention", RNN | {"input_feeding": False}, "reverse", 220, 96, 1e-2,
                 id="gru-attn-reverse"),
    pytest.param("lstm", RNN, "lstm-attention", RNN | {"attention": "general"}, "copy", 200, 64, 1e-2,
                 id="lstm-attn-copy"),
    pytest.param("transformer", TRANSFORMER, "transformer", TRANSFORMER, "copy", 200, 128, 1e-2,
                 id="transformer-copy"),
    # Without attention the whole sequence must pass through one vector: it learns, but more slowly.
    pytest.param("gru", RNN, "gru", RNN, "copy", 600, 128, 1e-2, id="gru-plain-copy", marks=SLOW),
]


@pytest.mark.parametrize("enc,enc_opt,dec,dec_opt,task,steps,batch,lr", TOY)
def test_learns_a_toy_task_to_99_percent_exact_match(enc, enc_opt, dec, dec_opt, task, steps, batch, lr) -> None:
    encoder, decoder = build(enc, dec, enc_options=enc_opt, dec_options=dec_opt)
    train_toy(encoder, decoder, task=task, steps=steps, batch=batch, lr=lr)
    assert exact_match(encoder, decoder, task) >= 0.99
