"""Scores of confidences against correctness: coverage at a precision, expected calibration error.

Pure functions on arrays (and macro-F1 / accuracy of label indices, as scikit-learn computes them, fast enough
for bootstraps), shared by :mod:`taxonomist.evaluation` (which computes them) and
:mod:`taxonomist.report` (which plots them).
"""

from __future__ import annotations

import numpy as np

__all__ = ["coverage_at_precision", "expected_calibration_error", "macro_f1_accuracy"]


def coverage_at_precision(confidence: np.ndarray, correct: np.ndarray, precision: float) -> tuple[float, float]:
    """Largest share of items that can be kept (most confident first) with at least ``precision``.

    Returns:
        (coverage, threshold): the share kept and the confidence a kept item must reach (1.01 when no
        threshold reaches the precision).
    """
    if len(confidence) == 0:
        return 0.0, 1.01
    order = np.argsort(-confidence, kind="stable")
    conf, corr = confidence[order], correct[order].astype(float)
    prec = np.cumsum(corr) / np.arange(1, len(corr) + 1)
    # a cut is only valid between distinct confidence values (ties are kept or dropped together)
    last_of_tie = np.r_[conf[1:] != conf[:-1], True]
    ok = np.flatnonzero((prec >= precision) & last_of_tie)
    if len(ok) == 0:
        return 0.0, 1.01
    k = int(ok[-1])
    return (k + 1) / len(conf), float(conf[k])


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    if len(confidence) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(float(correct[m].mean()) - float(confidence[m].mean()))
    return float(ece)


def macro_f1_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int,
                      weights: np.ndarray | None = None) -> tuple[float, float]:
    """(macro-F1, accuracy) of label indices, as scikit-learn computes them (macro over the classes that are true
    or predicted at least once, F1 0 where undefined), optionally with row ``weights`` (a bootstrap resample)."""
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    hit = pred == y
    tp = np.bincount(y[hit], weights=w[hit], minlength=n_classes)
    true = np.bincount(y, weights=w, minlength=n_classes)
    said = np.bincount(pred, weights=w, minlength=n_classes)
    seen = (true > 0) | (said > 0)
    f1 = 2 * tp[seen] / (true[seen] + said[seen])
    return float(f1.mean()) if seen.any() else 0.0, float(w[hit].sum() / max(w.sum(), 1e-12))
