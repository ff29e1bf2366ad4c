"""Temperature scaling: one scalar that turns decision scores into calibrated softmax probabilities.

It keeps the arg-max (so accuracy and F1 are the linear model's own) and fits the sharpness on held-out scores
by minimising the negative log-likelihood.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

__all__ = ["fit_temperature", "softmax_with_temperature"]


def softmax_with_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    return np.asarray(softmax(scores / temperature, axis=1))


def fit_temperature(scores: np.ndarray, y_index: np.ndarray) -> float:
    """Temperature T minimising the NLL of ``softmax(scores / T)`` for the true columns ``y_index``."""
    if len(scores) == 0:
        return 1.0
    rows = np.arange(len(scores))

    def nll(log_t: float) -> float:
        return float(-log_softmax(scores / np.exp(log_t), axis=1)[rows, y_index].mean())

    res = minimize_scalar(nll, bounds=(-6.0, 4.0), method="bounded", options={"xatol": 1e-3})
    return float(np.exp(res.x))
