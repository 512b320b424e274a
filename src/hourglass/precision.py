"""Inference precision: float32, or bfloat16 autocast for the matrix products (``"bf16-mixed"``).

The names are Lightning's ``trainer.precision`` names, so one word means the same in training and decoding.
Under ``"bf16-mixed"`` torch's autocast runs linear layers, matrix products and convolutions in bfloat16 (and
the operations on their outputs then see bfloat16 too); search scores stay float32, as :mod:`hourglass.search`
casts the logits before the log-softmax. ``evaluate`` then computes its loss and perplexity from bfloat16
products too. On CPUs with AVX512-BF16 or AMX, and on recent GPUs, this is the fast path; elsewhere bfloat16 is
emulated and slower, which is why float32 is the default.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ContextManager

from hourglass.errors import ConfigError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("32-true", "bf16-mixed")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f'The precision must be one of {", ".join(PRECISIONS)}, got "{precision}". "bf16-mixed" '
                          "runs the matrix products in bfloat16 (fast on CPUs with AVX512-BF16 or AMX, and on GPUs); "
                          '"32-true" is plain float32.')
    return precision


def autocast(precision: str, device: "torch.device") -> ContextManager:
    """A context in which the model computes at ``precision`` on ``device``."""
    import torch  # here, not at the top: the CLI's option parsing does not import torch

    if check_precision(precision) == "32-true":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def add_precision(parser) -> None:
    """The ``--precision`` option of the commands that run a trained model."""
    parser.add_argument("--precision", choices=PRECISIONS, default="32-true",
                        help='"bf16-mixed": matrix products in bfloat16 (fast on CPUs with AVX512-BF16 or AMX, and '
                             'on GPUs); default "32-true"')
