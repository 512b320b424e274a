"""The Transformer token encoder (Vaswani et al. 2017), pre-norm (Xiong et al. 2020; Nguyen & Salazar 2019).

Pre-norm (LayerNorm before each sub-layer, one more after the stack) trains stably without a learning-rate
warm-up as long as post-norm needs. Positions are sinusoidal (Vaswani et al. 2017, sec. 3.5) or learned
(Gehring et al. 2017). :class:`TokenEmbedding` is shared with the Transformer decoder.

The Code holds ``memory`` (B, S, d_model), ``memory_mask`` (B, S) True at real tokens, and ``vector``
(B, d_model), the mean of the memory over real tokens.
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from hourglass._registry import register_encoder
from hourglass.code import Code, CodeSpec
from hourglass.encoders.base import Encoder
from hourglass.errors import ConfigError, DataError
from hourglass.options import Probability, Size

Positions = Literal["sinusoidal", "learned"]


def check_heads(d_model: int, heads: int, role: str) -> None:
    """Multi-head attention splits d_model into ``heads`` equal parts; refuse a split that does not divide."""
    if heads < 1 or d_model % heads:
        divisors = [h for h in range(1, min(d_model, 16) + 1) if d_model % h == 0]
        raise ConfigError(
            f"model.{role}.heads={heads} must divide model.{role}.d_model={d_model}: each head gets "
            f"d_model / heads dimensions. Choose heads among {divisors} or change d_model."
        )


def sinusoids(length: int, dim: int) -> Tensor:
    """(length, dim): PE(p, 2i) = sin(p / 10000^(2i/dim)), PE(p, 2i+1) = cos(...) (Vaswani et al. 2017)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)  # (L, 1)
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (dim/2,)
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: dim // 2])
    return table


class TokenEmbedding(nn.Module):
    """Token embedding scaled by sqrt(d_model), plus positions, then dropout.

    ``forward(tokens (B, T), start=0) -> (B, T, d_model)``; ``start`` is the position of the first token, used
    by a decoder that embeds one new token at a time.
    """

    def __init__(self, *, vocab_size: int, d_model: int, pad_id: int, max_len: int, positions: Positions,
                 dropout: float, role: str) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        nn.init.normal_(self.tokens.weight, std=d_model**-0.5)  # so that the sqrt(d) scale gives unit variance
        with torch.no_grad():
            self.tokens.weight[pad_id].zero_()
        self.scale = math.sqrt(d_model)
        self.max_len, self.role = max_len, role
        if positions == "learned":
            self.learned = nn.Embedding(max_len, d_model)
            nn.init.normal_(self.learned.weight, std=0.02)
        else:
            self.learned = None
            self.register_buffer("table", sinusoids(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, start: int = 0) -> Tensor:
        end = start + tokens.shape[1]
        if end > self.max_len:
            raise DataError(
                f"The transformer {self.role} received a sequence of {end} tokens, but it was built with "
                f"max_len={self.max_len}. Raise model.{self.role}.max_len (learned positions then start "
                f"untrained beyond the old length), or let the data layer truncate longer sentences "
                f"(data.max_length), or lower the search's maximum output length."
            )
        pos = self.learned.weight[start:end] if self.learned is not None else self.table[start:end]  # (T, D)
        return self.dropout(self.tokens(tokens) * self.scale + pos.to(self.tokens.weight.dtype))  # (B, T, D)


@register_encoder("transformer")
class TransformerEncoder(Encoder):
    """A stack of pre-norm self-attention layers over embedded tokens (module docstring)."""

    modality: ClassVar[str] = "tokens"
    max_inputs_option: ClassVar[str | None] = "max_len"

    def __init__(
        self,
        *,
        vocab_size: int,
        pad_id: int,
        d_model: Size = 256,
        heads: Size = 4,
        layers: Size = 3,
        ff: Size = 1024,
        dropout: Probability = 0.1,
        max_len: Size = 512,
        positions: Positions = "sinusoidal",
    ) -> None:
        super().__init__()
        check_heads(d_model, heads, "encoder")
        self.pad_id = pad_id
        self.embedding = TokenEmbedding(vocab_size=vocab_size, d_model=d_model, pad_id=pad_id, max_len=max_len,
                                        positions=positions, dropout=dropout, role="encoder")
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        # Nested tensors (a fast path for padded inference) do not support pre-norm layers.
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)  # pre-norm leaves the last residual stream unnormalized
        self.spec = CodeSpec(vector=d_model, memory=d_model, tokens=vocab_size)

    @property
    def max_inputs(self) -> int:
        return self.embedding.max_len

    def forward(self, tokens: Tensor) -> Code:
        """tokens (B, S) long -> Code with memory (B, S, D), memory_mask (B, S) and vector (B, D)."""
        mask = tokens != self.pad_id  # (B, S)
        x = self.embedding(tokens)  # (B, S, D)
        # A row of padding only (an empty sentence) would softmax over nothing and give NaN: let it see itself.
        ignore = ~mask
        ignore[:, 0] &= mask.any(1)  # (B, S) True where attention must not look
        x = self.norm(self.layers(x, src_key_padding_mask=ignore))  # (B, S, D)
        x = x * mask.unsqueeze(-1)  # padding rows carry no information; zero them for a clean memory
        count = mask.sum(1, keepdim=True).clamp(min=1)  # (B, 1)
        vector = x.sum(1) / count  # (B, D): mean over real tokens
        return Code(vector=vector, memory=x, memory_mask=mask, tokens=tokens)
