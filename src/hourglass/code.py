"""The Code contract between encoders and decoders.

An encoder returns a :class:`Code`; a decoder reads one. Each encoder declares, before any data flows, what
it provides as a :class:`CodeSpec`; each decoder declares what it ``needs`` (field names of ``Code``).
:func:`check_pair` refuses a pair that cannot work when the model is built, with a sentence naming both parts,
instead of a shape error in the middle of training.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, Literal, Union

from torch import Tensor

from hourglass.errors import IncompatiblePairError

#: A GRU state (L, B, H), or an LSTM state (h, c), each (L, B, H).
RNNState = Union[Tensor, tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Posterior:
    """A diagonal Gaussian q(z|x) (Kingma & Welling 2014): ``mu`` and ``logvar``, each (B, D)."""

    mu: Tensor
    logvar: Tensor


@dataclass(frozen=True)
class Code:
    """What an encoder hands a decoder. Only ``vector`` is common to all; the rest is optional.

    - ``vector`` (B, D): the pooled code, the bottleneck.
    - ``memory`` (B, S, Dm) and ``memory_mask`` (B, S), True at real positions: what attention reads.
    - ``tokens`` (B, S) long: the input token id behind each memory position (text encoders), what a copy
      mechanism copies (decoders/pointer.py).
    - ``features``: feature maps (B, C_i, H_i, W_i), highest resolution first, for U-Net skips.
    - ``state``: an initial RNN state.
    - ``posterior``: q(z|x) for variational models; ``vector`` is then a sample from it.
    """

    vector: Tensor | None = None
    memory: Tensor | None = None
    memory_mask: Tensor | None = None
    tokens: Tensor | None = None
    features: tuple[Tensor, ...] = ()
    state: RNNState | None = None
    posterior: Posterior | None = None

    def replace(self, **changes) -> "Code":
        return dataclasses.replace(self, **changes)

    @property
    def batch_size(self) -> int:
        for t in (self.vector, self.memory, *self.features):
            if t is not None:
                return t.shape[0]
        raise ValueError("an empty Code has no batch size")


@dataclass(frozen=True)
class FeatureSpec:
    """One feature map: its channels and its stride relative to the input."""

    channels: int
    stride: int


@dataclass(frozen=True)
class StateSpec:
    """An RNN state: hidden size, layer count (directions folded in) and cell type."""

    hidden: int
    layers: int
    cell: Literal["gru", "lstm"]


@dataclass(frozen=True)
class CodeSpec:
    """What an encoder (or bottleneck) provides, known at build time."""

    vector: int | None = None
    memory: int | None = None
    tokens: int | None = None  # the vocabulary size of ``Code.tokens``
    features: tuple[FeatureSpec, ...] = field(default_factory=tuple)
    state: StateSpec | None = None
    variational: bool = False

    def provided(self) -> list[str]:
        names = []
        if self.vector is not None:
            names.append("vector")
        if self.memory is not None:
            names.append("memory")
        if self.tokens is not None:
            names.append("tokens")
        if self.features:
            names.append("features")
        if self.state is not None:
            names.append("state")
        if self.variational:
            names.append("posterior")
        return names


_MEANING = {
    "vector": "a pooled code vector",
    "memory": "a memory sequence for attention",
    "tokens": "the source token ids behind the memory, to copy from",
    "features": "multi-scale feature maps for skips",
    "state": "an RNN state",
    "posterior": "a posterior (a variational bottleneck)",
}


def describe(names: Iterable[str]) -> str:
    parts = [f"`{n}` ({_MEANING.get(n, n)})" for n in names]
    return " and ".join(parts) if parts else "nothing"


def check_pair(encoder: str, spec: CodeSpec, decoder: str, needs: Iterable[str]) -> None:
    """Raise :class:`IncompatiblePairError` when ``spec`` lacks a field the decoder needs."""
    missing = [n for n in needs if n not in spec.provided()]
    if missing:
        raise IncompatiblePairError(
            f'Decoder "{decoder}" needs {describe(missing)}, but encoder "{encoder}" provides only '
            f"{describe(spec.provided())}. Pair \"{decoder}\" with an encoder that provides "
            f"{', '.join(missing)}, or choose a decoder that reads {', '.join(spec.provided()) or 'it'}."
        )
