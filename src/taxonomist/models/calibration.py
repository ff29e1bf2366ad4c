"""Temperature scaling: one scalar that turns decision scores into calibrated softmax probabilities.

It keeps the arg-max (so accuracy and F1 are the linear model's own) and fits the sharpness on held-out scores
by minimising the negative log-likelihood.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from .hierarchy import top_leaves

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


def fit_top_label(confidence: np.ndarray, correct: np.ndarray, min_samples: int = 200) -> tuple[np.ndarray, np.ndarray] | None:
    """Isotonic map from top-1 confidence to top-1 accuracy ("top-label calibration").

    A single temperature cannot fix a model that is under-confident on hard products and over-confident on easy
    ones at the same time (seen on 600-class catalogues); a monotone map of the top probability can. Returns the
    map's knots ``(x, y)`` for :func:`apply_top_label`, or ``None`` with fewer than ``min_samples`` points.
    """
    if len(confidence) < min_samples:
        return None
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(confidence, correct.astype(float))
    return np.asarray(iso.X_thresholds_, dtype=np.float64), np.asarray(iso.y_thresholds_, dtype=np.float64)


def top_label_rescale(top: np.ndarray, second: np.ndarray, others: np.ndarray, knots: tuple[np.ndarray, np.ndarray],
                      score: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The top-label map of rows whose top probability is ``top``, runner-up ``second`` and the rest ``others``:
    the new top probability and the factor that rescales every other class (see :func:`apply_top_label`)."""
    x, y = knots
    src = top if score is None else np.asarray(score, dtype=np.float64)
    # isotonic maps are flat in places; a sliver of the original confidence keeps the map strictly increasing,
    # so products keep their confidence ranking (coverage at a precision depends on it)
    new_top = np.interp(src, x, y) * (1.0 - 1e-6) + src * 1e-6
    # keep the winner: new_top >= second * (1 - new_top) / (1 - top)  <=>  new_top >= second / (1 - top + second)
    floor = second / np.maximum(1.0 - top + second, 1e-12)
    new_top = np.clip(np.maximum(new_top, floor + 1e-9), 0.0, 1.0)  # strictly above: no tie can flip the arg-max
    new_top = np.where(others > 0, new_top, 1.0)  # nothing to give the rest to: the row stays one-hot
    rest = np.where(others > 0, (1.0 - new_top) / np.maximum(others, 1e-300), 0.0)
    return new_top, rest


def apply_top_label(proba: np.ndarray, knots: tuple[np.ndarray, np.ndarray],
                    score: np.ndarray | None = None) -> np.ndarray:
    """Replace each row's top probability by the isotonic map's value and rescale the others to sum to 1.

    ``score``: what the map reads per row (default: the top probability itself), e.g. the unshifted probability
    of the chosen class when the arg-max comes from prior-shifted scores. The arg-max never changes: the new top
    probability is kept at least as large as the rescaled runner-up.
    """
    proba = np.asarray(proba, dtype=np.float64)  # float32 cannot hold the margin that keeps the winner strictly first
    n = len(proba)
    if n == 0 or proba.shape[1] < 2:
        return proba
    rows = np.arange(n)
    # rows renormalised in float64 first: a float32 softmax sums to 1 only within ~1e-7, and rescaling the others
    # by 1 - top magnified that into sums of 0.999-1.002 when the top was near 1
    proba = proba / proba.sum(axis=1, keepdims=True)
    order = top_leaves(proba, 2)  # (the two best columns, without sorting every one of thousands)
    top, second = proba[rows, order[:, 0]], proba[rows, order[:, 1]]
    # the others' mass is the row's sum less the top, not 1 - top: exact however the row was rounded
    new_top, rest = top_label_rescale(top, second, proba.sum(axis=1) - top, knots, score)
    out = np.asarray(proba * rest[:, None])
    out[rows, order[:, 0]] = new_top
    return out
