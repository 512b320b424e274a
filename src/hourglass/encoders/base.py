"""The encoder protocol: an input tensor in, a :class:`~hourglass.code.Code` out."""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from hourglass.code import Code, CodeSpec


class Encoder(nn.Module):
    """Base class. Subclasses set ``self.spec`` (what the Code will hold) in ``__init__``.

    ``modality`` names the input it reads: "image" (B, C, H, W) floats, "tokens" (B, S) ids, or "vector" (B, D).
    Constructors take keyword-only arguments; the builder passes the data's ``input_shape`` (images) or
    ``vocab_size`` and ``pad_id`` (tokens), and the config passes the rest.
    """

    modality: ClassVar[str] = "image"
    spec: CodeSpec

    def forward(self, x: Tensor) -> Code:  # pragma: no cover - abstract
        raise NotImplementedError
