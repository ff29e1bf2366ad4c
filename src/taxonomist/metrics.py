"""Scores of confidences against correctness: coverage at a precision, expected calibration error.

Pure functions on arrays, shared by :mod:`taxonomist.evaluation` (which computes them) and
:mod:`taxonomist.report` (which plots them).
"""

from __future__ import annotations

import numpy as np

__all__ = ["coverage_at_precision", "expected_calibration_error"]


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
