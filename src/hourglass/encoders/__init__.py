"""Encoders: each module registers itself with ``@register_encoder``."""
from hourglass.encoders import conv, hf_text, mlp, rnn, transformer  # noqa: F401
from hourglass.encoders.base import Encoder  # noqa: F401
