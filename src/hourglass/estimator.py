"""A scikit-learn transformer around an hourglass autoencoder, for dimensionality reduction in a Pipeline.

``AutoencoderTransformer(n_components=8).fit(X).transform(X)`` gives (N, 8) codes; ``inverse_transform`` maps
codes back to feature space. It follows scikit-learn's estimator contract: hyper-parameters are plain
``__init__`` arguments (so ``get_params``, ``set_params`` and ``clone`` work), fitted state ends in ``_``.
Training goes through the same config, Lightning trainer and run directory as ``hourglass train``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted

from hourglass.config import validate


class AutoencoderTransformer(TransformerMixin, BaseEstimator):
    """Features (N, D) are min-max scaled to [0, 1] and read as (N, 1, 1, D) by MLP encoder and decoder."""

    def __init__(
        self,
        n_components: int = 8,
        hidden: tuple[int, ...] = (128,),
        task: str = "autoencoder",
        max_epochs: int = 50,
        lr: float = 1e-3,
        batch_size: int = 64,
        seed: int = 0,
        run_dir: str | None = None,
    ) -> None:
        self.n_components = n_components
        self.hidden = hidden
        self.task = task
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed
        self.run_dir = run_dir

    def _config(self, data_path: Path):
        bottleneck = "variational" if self.task == "vae" else "plain"
        return validate({
            "name": "sklearn-autoencoder",
            "seed": self.seed,
            "data": {"name": "images", "path": str(data_path), "batch_size": self.batch_size, "val_fraction": 0.1},
            "model": {
                "encoder": {"name": "mlp", "hidden": list(self.hidden)},
                "bottleneck": {"name": bottleneck, "dim": self.n_components},
                "decoder": {"name": "mlp", "hidden": list(reversed(self.hidden))},
            },
            "task": {"name": self.task, "loss": "mse"},
            "train": {"max_epochs": self.max_epochs, "lr": self.lr, "progress": False},
        }, "AutoencoderTransformer")

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return np.clip((X - self.min_) / self.range_, 0.0, 1.0).astype(np.float32)

    def fit(self, X, y=None):
        from hourglass.run import Run
        from hourglass.training import train

        X = check_array(X, dtype=np.float64)
        self.min_, self.range_ = X.min(0), np.maximum(X.max(0) - X.min(0), 1e-12)
        self.n_features_in_ = X.shape[1]
        if self.run_dir:  # a new folder per fit: refits (clones in a grid search) never share a run
            Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="fit-" if self.run_dir else "hourglass-sklearn-", dir=self.run_dir))
        np.save(out / "fit_data.npy", self._scale(X).reshape(len(X), 1, 1, -1))
        self.run_ = Run.load(train(self._config(out / "fit_data.npy"), out=str(out / "run")))
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "run_")
        X = check_array(X, dtype=np.float64)
        return self.run_.encode(self._scale(X).reshape(len(X), 1, 1, -1))

    def inverse_transform(self, Z) -> np.ndarray:
        check_is_fitted(self, "run_")
        images = self.run_.decode(check_array(Z, dtype=np.float32))  # (N, 1, 1, D) in [0, 1]
        return images.reshape(len(images), -1) * self.range_ + self.min_
