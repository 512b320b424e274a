"""Shared fixtures: tiny configs that train in seconds, and paths to the shared data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hourglass import recipebook

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def tiny(recipe: str = "digits-ae", *overrides: str):
    """A recipe shrunk to train in a few seconds on the digits."""
    base = ["train.max_epochs=2", "train.progress=false", "data.path=digits", "data.limit=300",
            "data.batch_size=32", "model.bottleneck.dim=4"]
    return recipebook.load(recipe, base + list(overrides))


@pytest.fixture(scope="session")
def tiny_config():
    return tiny


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    path = SHARED / "mnist"
    if not path.is_dir():
        pytest.skip("shared MNIST data not available")
    return path
