"""Contract tests driven by the registries: every encoder x decoder pair either builds and trains (shapes,
backward, no NaN, deterministic eval) or is refused when built, with a sentence naming both parts."""
from __future__ import annotations

import pytest
import torch

from hourglass._registry import DECODERS, ENCODERS, load_components
from hourglass.config import Component, ModelConfig
from hourglass.decoders.base import SequenceDecoder
from hourglass.errors import IncompatiblePairError
from hourglass.model import DataContext, build_model

load_components()
IMAGE = (1, 13, 11)  # odd on purpose: padding and cropping must restore it
VOCAB = 17
# Small options so that every component builds tiny; unknown names fall back to defaults.
SMALL = {
    "mlp": {"hidden": [16]}, "conv": {"channels": [4, 8]}, "deconv": {"channels": [8, 4]},
    "gru": {"hidden": 16, "embed": 8}, "lstm": {"hidden": 16, "embed": 8},
    "transformer": {"d_model": 16, "heads": 2, "layers": 1, "ff": 32},
    "gru-attention": {"hidden": 16, "embed": 8}, "lstm-attention": {"hidden": 16, "embed": 8},
    "gru-pointer": {"hidden": 16, "embed": 8}, "lstm-pointer": {"hidden": 16, "embed": 8},
    "transformer-pointer": {"d_model": 16, "heads": 2, "layers": 1, "ff": 32},
    "unet": {}, "segnet": {}, "classifier": {},
}
MUST_REFUSE = [("mlp", "gru-attention"), ("mlp", "lstm-attention"), ("mlp", "transformer"), ("mlp", "unet"),
               ("conv", "gru-pointer")]  # a copying decoder needs source token ids, which images do not have


def _options(name: str, cls: type) -> dict:
    from hourglass.options import user_options

    return {k: v for k, v in SMALL.get(name, {}).items() if k in user_options(cls)}


def _context(enc_cls: type) -> DataContext:
    enc = {"input_shape": IMAGE} if enc_cls.modality == "image" else {"vocab_size": VOCAB, "pad_id": 0}
    dec = {"output_shape": IMAGE, "num_classes": 3, "vocab_size": VOCAB, "pad_id": 0, "shared_vocab": True}
    return DataContext(modality=enc_cls.modality, encoder=enc, decoder=dec)


def _input(enc_cls: type) -> torch.Tensor:
    if enc_cls.modality == "image":
        return torch.rand(3, *IMAGE)
    tokens = torch.randint(4, VOCAB, (3, 6))
    tokens[0, 4:] = 0  # padding
    return tokens


def _build(enc: str, dec: str):
    enc_cls, dec_cls = ENCODERS.get(enc), DECODERS.get(dec)
    if enc_cls.modality not in ("image", "tokens"):
        pytest.skip(f"{enc} reads {enc_cls.modality} input")
    if getattr(enc_cls, "external_weights", False):  # e.g. hf-text: a 22M-parameter model, tested on its own
        pytest.skip(f"{enc} loads external pretrained weights")
    cfg = ModelConfig(
        encoder=Component(name=enc, **_options(enc, enc_cls)),
        decoder=Component(name=dec, **_options(dec, dec_cls)),
    )
    return build_model(cfg, _context(enc_cls)), enc_cls, dec_cls


def _run(model, x: torch.Tensor, dec_cls: type) -> torch.Tensor:
    code = model.encode(x)
    if issubclass(dec_cls, SequenceDecoder):
        tokens = torch.randint(4, VOCAB, (x.shape[0], 5), generator=torch.Generator().manual_seed(1))
        logits, _ = model.decoder(tokens, model.decoder.init_state(code))
        assert logits.shape == (x.shape[0], 5, VOCAB)
        return logits
    return model.decode(code)


PAIRS = [(e, d) for e in ENCODERS.names() for d in DECODERS.names()]


@pytest.mark.parametrize("enc,dec", PAIRS)
def test_pair_builds_and_trains_or_is_refused(enc: str, dec: str) -> None:
    torch.manual_seed(0)
    try:
        model, enc_cls, dec_cls = _build(enc, dec)
    except IncompatiblePairError as err:
        assert enc in str(err) and dec in str(err), "a refusal must name both parts"
        return
    assert (enc, dec) not in MUST_REFUSE, f"{enc} x {dec} should have been refused at build time"
    x = _input(enc_cls)
    out = _run(model.train(), x, dec_cls)
    assert out.shape[0] == x.shape[0] and torch.isfinite(out).all()
    if dec_cls.modality == "image" and out.dim() == 4 and out.shape[1] == IMAGE[0]:
        assert out.shape[-2:] == IMAGE[-2:], "the decoder must crop back to the exact input size"
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    model.eval()
    with torch.no_grad():
        assert torch.equal(_run(model, x, dec_cls), _run(model, x, dec_cls)), "eval must be deterministic"


@pytest.mark.parametrize("enc,dec", MUST_REFUSE)
def test_known_bad_pairs_are_refused_with_a_sentence(enc: str, dec: str) -> None:
    if dec not in DECODERS:
        pytest.skip(f"{dec} not registered")
    with pytest.raises(IncompatiblePairError, match=rf'"{dec}" needs .* "{enc}" provides only'):
        _build(enc, dec)


def test_bottleneck_without_vector_is_refused() -> None:
    from hourglass.code import CodeSpec
    from hourglass.bottlenecks.plain import Plain

    with pytest.raises(IncompatiblePairError, match="no vector"):
        Plain(code=CodeSpec(memory=8), dim=4)
