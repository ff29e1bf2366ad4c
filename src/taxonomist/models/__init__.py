"""Classification tiers and hierarchy decoding. The foundation ships the sparse tier."""

from __future__ import annotations

from .hierarchy import Prediction, decode, level_probabilities
from .sparse import SparseClassifier

__all__ = ["Prediction", "SparseClassifier", "decode", "level_probabilities"]
