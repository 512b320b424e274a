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
    #: The option of model.encoder that sets :attr:`max_inputs` ("max_len"); None: fixed (a pretrained table).
    max_inputs_option: ClassVar[str | None] = None

    @property
    def max_inputs(self) -> int | None:
        """The most tokens one source may hold (a Transformer's position table); None: no limit (RNNs, images).
        The data must cut its sources to it: ``data.max_length`` is checked against it when training starts."""
        return None

    def forward(self, x: Tensor) -> Code:  # pragma: no cover - abstract
        raise NotImplementedError
