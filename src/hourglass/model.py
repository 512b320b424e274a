"""An encoder, a bottleneck and a decoder, built from config and checked as a pair when built."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from hourglass._registry import BOTTLENECKS, DECODERS, ENCODERS, load_components
from hourglass.code import Code, check_pair
from hourglass.config import ModelConfig
from hourglass.errors import IncompatiblePairError
from hourglass.options import build


@dataclass(frozen=True)
class DataContext:
    """What the data tells the builder: the input modality and the context arguments of each part."""

    modality: str  # "image" | "tokens" | "vector"
    encoder: dict[str, Any] = field(default_factory=dict)  # e.g. {"input_shape": (1, 28, 28)}
    decoder: dict[str, Any] = field(default_factory=dict)  # e.g. {"output_shape": (1, 28, 28)}


@dataclass(frozen=True)
class CachedCode:
    """The stored output of the model's first ``parts`` for a batch (``train.cache_features``; see
    :mod:`hourglass.features`). It stands in for the input tensor, so a task's ``model.encode(batch[0])``
    runs only the parts after the cached ones."""

    code: Code
    parts: tuple[str, ...]  # ("encoder",) or ("encoder", "bottleneck")

    def __len__(self) -> int:
        return self.code.batch_size

    def to(self, device, **kwargs) -> "CachedCode":
        """Lightning moves a batch by calling ``to`` on what has one; move every tensor of the Code."""
        return CachedCode(_code_to(self.code, device, **kwargs), self.parts)


def _code_to(code: Code, device, **kwargs) -> Code:
    move = lambda t: None if t is None else t.to(device, **kwargs)  # noqa: E731
    posterior = code.posterior
    if posterior is not None:
        posterior = type(posterior)(mu=move(posterior.mu), logvar=move(posterior.logvar))
    state = tuple(map(move, code.state)) if isinstance(code.state, tuple) else move(code.state)
    return Code(vector=move(code.vector), memory=move(code.memory), memory_mask=move(code.memory_mask),
                tokens=move(code.tokens),
                features=tuple(map(move, code.features)), state=state, posterior=posterior)


class EncoderDecoder(nn.Module):
    """encode: input -> Code (through the bottleneck); decode: Code -> output (one-shot decoders)."""

    def __init__(self, *, encoder: nn.Module, bottleneck: nn.Module, decoder: nn.Module, names: dict[str, str]):
        super().__init__()
        self.encoder = encoder
        self.bottleneck = bottleneck
        self.decoder = decoder
        self.names = dict(names)
        self.frozen: tuple[str, ...] = ()  # parts that do not train (see freeze)

    def encode(self, x: Tensor | CachedCode) -> Code:
        """Input -> Code; a :class:`CachedCode` skips the parts it already went through."""
        if isinstance(x, CachedCode):
            return x.code if "bottleneck" in x.parts else self.bottleneck(x.code)
        return self.bottleneck(self.encoder(x))

    def freeze(self, parts: tuple[str, ...]) -> None:
        """Stop training ``parts`` ("encoder", "bottleneck"): no gradients, and eval mode for good (see train)."""
        for name in parts:
            getattr(self, name).requires_grad_(False)
        self.frozen = tuple(parts)
        self.train(self.training)

    def train(self, mode: bool = True) -> "EncoderDecoder":
        # A frozen part stays in eval mode while the rest trains: BatchNorm keeps the statistics it was
        # pretrained with, dropout stays off and a variational bottleneck gives its mean, so the part is a
        # fixed function (which the feature cache relies on). Lightning and users switch modes through
        # train()/eval() (eval calls train(False)), and Module.train recurses through here, so this one
        # override covers task.train(), model.train() and Lightning's restore after validation.
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    def decode(self, code: Code) -> Tensor:
        return self.decoder(code)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def describe(self) -> str:
        return f"{self.names['encoder']} -> {self.names['bottleneck']} -> {self.names['decoder']}"


def _check_modality(encoder_name: str, encoder_modality: str, data: DataContext) -> None:
    if encoder_modality != data.modality:
        raise IncompatiblePairError(
            f'Encoder "{encoder_name}" reads {encoder_modality} input, but the data provides {data.modality} '
            f"input. Set model.encoder.name to one for {data.modality} data: "
            f"{', '.join(n for n in ENCODERS.names() if ENCODERS.get(n).modality == data.modality)}."
        )


def _check_output(name: str, decoder_cls: type, output: str | None, task: str) -> None:
    if output is None or decoder_cls.modality == output:
        return
    fits = [n for n in DECODERS.names() if DECODERS.get(n).modality == output]
    raise IncompatiblePairError(
        f'Decoder "{name}" writes {decoder_cls.modality}, but the "{task}" task trains a decoder that writes '
        f"{output}. Set model.decoder.name to one of: {', '.join(fits)}."
    )


def _check_decoder(name: str, decoder_cls: type, spec, enc_name: str, protocol: type | None) -> None:
    check_pair(enc_name, spec, name, decoder_cls.needs)
    reason = decoder_cls.refuse(spec)
    if reason:
        raise IncompatiblePairError(f'Decoder "{name}" cannot read the code of encoder "{enc_name}": {reason}')
    if protocol is not None and not issubclass(decoder_cls, protocol):
        raise IncompatiblePairError(
            f'Decoder "{name}" is a {decoder_cls.__mro__[1].__name__}, but this task needs a {protocol.__name__}. '
            f"Choose one of: {', '.join(n for n in DECODERS.names() if issubclass(DECODERS.get(n), protocol))}."
        )


def build_model(config: ModelConfig, data: DataContext, *, decoder_protocol: type | None = None,
                decoder_output: str | None = None, task: str = "this") -> EncoderDecoder:
    """Build and check the three parts. Incompatible choices fail here, before any data flows. A task names
    the decoder class it drives (``decoder_protocol``) and what the decoder must write (``decoder_output``)."""
    load_components()
    enc_cfg, bn_cfg, dec_cfg = config.encoder, config.bottleneck, config.decoder
    enc_cls = ENCODERS.get(enc_cfg.name)
    _check_modality(enc_cfg.name, enc_cls.modality, data)
    dec_cls = DECODERS.get(dec_cfg.name)
    BOTTLENECKS.get(bn_cfg.name)
    encoder = build(ENCODERS, enc_cfg.name, enc_cfg.options(), data.encoder, "model.encoder")
    bottleneck = build(BOTTLENECKS, bn_cfg.name, bn_cfg.options(), {"code": encoder.spec}, "model.bottleneck")
    _check_decoder(dec_cfg.name, dec_cls, bottleneck.spec, enc_cfg.name, decoder_protocol)
    _check_output(dec_cfg.name, dec_cls, decoder_output, task)
    decoder = build(DECODERS, dec_cfg.name, dec_cfg.options(), {**data.decoder, "code": bottleneck.spec}, "model.decoder")
    names = {"encoder": enc_cfg.name, "bottleneck": bn_cfg.name, "decoder": dec_cfg.name}
    return EncoderDecoder(encoder=encoder, bottleneck=bottleneck, decoder=decoder, names=names)
