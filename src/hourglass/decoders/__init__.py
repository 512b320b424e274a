"""Decoders: each module registers itself with ``@register_decoder``."""
from hourglass.decoders import classifier, deconv, mlp, pointer, rnn, segnet, transformer, unet  # noqa: F401
from hourglass.decoders.base import Decoder, SequenceDecoder  # noqa: F401
