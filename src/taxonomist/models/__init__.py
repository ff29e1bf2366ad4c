"""Classification tiers (sparse, embedding, zero-shot, fine-tune, ensemble) and hierarchy decoding."""

from __future__ import annotations

from .embed import EmbedHead, NeighbourIndex
from .finetune import FineTuner
from .hierarchy import Prediction, decode, level_probabilities
from .sparse import SparseClassifier
from .zeroshot import TaxonomyScorer

__all__ = ["EmbedHead", "FineTuner", "NeighbourIndex", "Prediction", "SparseClassifier", "TaxonomyScorer", "decode",
           "level_probabilities"]
