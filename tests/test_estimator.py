"""The scikit-learn transformer: Pipeline, clone, get/set_params, transform and inverse_transform."""
from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

import hourglass as hg


def test_autoencoder_in_a_pipeline(tmp_path) -> None:
    X, y = load_digits(return_X_y=True)
    X_train, y_train, X_test, y_test = X[:1200], y[:1200], X[1200:], y[1200:]
    ae = hg.AutoencoderTransformer(n_components=8, max_epochs=15, run_dir=str(tmp_path / "ae"))
    assert clone(ae).get_params() == ae.get_params()
    ae.set_params(lr=3e-3)
    assert ae.get_params()["lr"] == 3e-3
    pipe = Pipeline([("ae", ae), ("clf", LogisticRegression(max_iter=2000))]).fit(X_train, y_train)
    assert pipe.score(X_test, y_test) > 0.8
    codes = pipe.named_steps["ae"].transform(X_test)
    assert codes.shape == (len(X_test), 8)
    back = pipe.named_steps["ae"].inverse_transform(codes)
    assert back.shape == X_test.shape
    error = np.mean((back - X_test) ** 2)
    assert error < np.var(X_test, axis=0).mean(), "reconstructions must beat predicting the mean"


def test_refits_with_one_run_dir_each_get_their_own_run(tmp_path) -> None:
    X = load_digits().data[:200]
    ae = hg.AutoencoderTransformer(n_components=2, max_epochs=1, run_dir=str(tmp_path / "ae"))
    first = ae.fit(X).run_.path
    second = clone(ae).fit(X).run_.path  # as a grid search refits clones that share run_dir
    assert first != second and first.parent.parent == second.parent.parent == tmp_path / "ae"
