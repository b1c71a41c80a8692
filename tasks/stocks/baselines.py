"""Tabular baselines on the last day's scaled features (one row per stock and day), from scikit-learn:
ridge regression, an MLP, and HistGradientBoosting (the LightGBM stand-in of Qlib's tables). They are fitted
on the training rows by the evaluation (they have nothing for Lightning to train) and score the test rows."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

DEFAULTS: dict[str, dict[str, Any]] = {
    "ridge": {"alpha": 1.0},
    "mlp": {"hidden_layer_sizes": (64, 32), "alpha": 1e-3, "max_iter": 50, "early_stopping": True},
    "hgb": {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 31, "early_stopping": True},
}


def make_estimator(arch: str, seed: int, **kwargs: Any) -> Any:
    """A scikit-learn regressor for ``arch`` with the zoo's defaults, overridden by ``kwargs``."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.neural_network import MLPRegressor

    params = {**DEFAULTS[arch], **kwargs}
    if arch == "ridge":
        return Ridge(**params)
    if arch == "mlp":
        return MLPRegressor(random_state=seed, **params)
    return HistGradientBoostingRegressor(random_state=seed, **params)


class TabularBaseline(nn.Module):
    """Holds a baseline's estimator for the task flow; it has no parameters for Lightning."""

    def __init__(self, arch: str, seed: int, kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.arch, self.estimator = arch, make_estimator(arch, seed, **kwargs)

    def fit(self, x: np.ndarray, y: np.ndarray) -> TabularBaseline:
        ok = np.isfinite(y)
        self.estimator.fit(x[ok], y[ok])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(x), dtype=np.float64)
