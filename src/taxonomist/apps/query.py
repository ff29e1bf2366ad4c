"""Search-query classification: a short query ("turquoise pillows", "iphone 8 plus 64gb") → a distribution over the
taxonomy's leaves and a path at the level the query supports (a vague query backs off to a parent).

Up to three sources, pooled log-linearly over one class list (a source that does not know a class abstains on it):
- the **product model**: queries scored like very short titles (a trained :class:`TaxonomyClassifier`);
- the **zero-shot** scorer: the query's embedding against every category path (no training data at all);
- a **query model**: a :class:`TaxonomyClassifier` trained on labelled query logs, when a user has them.

Example:
    >>> qc = QueryClassifier(product_model=tx.load("model/"))      # doctest: +SKIP
    >>> qc.classify(["running shoes men"])[0].category              # doctest: +SKIP
    'Footwear > Shoes > Sports Shoes'
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import log_softmax

from ..exceptions import TaxonomistError
from ..models.hierarchy import LevelIndex, Prediction, decode
from ..taxonomy import Taxonomy, format_path

__all__ = ["QueryClassifier"]

logger = logging.getLogger(__name__)

_FLOOR = 1e-6


class QueryClassifier:
    """Classify search queries with a product model, the zero-shot scorer and/or a query model.

    Args:
        product_model: a fitted product classifier (its classes define the class list).
        taxonomy: the taxonomy for the zero-shot source (default: the product model's); with no product model it
            defines the class list (its leaves).
        query_model: a classifier trained on labelled queries (``TaxonomyClassifier().fit(queries_catalog)``).
        weights: pooling weight per source (``product``, ``zeroshot``, ``query``); sources not given are skipped.
        zero_shot: use the zero-shot source (needs the embedding encoder).
        encoder: text encoder of the zero-shot source.
        min_confidence: back off to the deepest ancestor whose probability clears this (vague queries).
    """

    def __init__(self, product_model: Any = None, taxonomy: Taxonomy | None = None, query_model: Any = None,
                 weights: dict[str, float] | None = None, zero_shot: bool = True, encoder: str = "auto",
                 min_confidence: float | None = 0.5) -> None:
        if product_model is None and taxonomy is None and query_model is None:
            raise TaxonomistError("a query classifier needs a product model, a taxonomy or a query model")
        self.product_model = product_model
        self.query_model = query_model
        self.min_confidence = min_confidence
        self.weights = {"product": 1.0, "zeroshot": 0.5, "query": 1.0, **(weights or {})}
        source = product_model if product_model is not None else query_model
        tax = taxonomy or (source.taxonomy_ if source is not None else None)
        if source is not None:
            classes = [str(c) for c in source.classes_]
        else:
            assert tax is not None
            classes = [format_path(p) for p in tax.leaves()]
        self.classes_ = np.asarray(classes, dtype=object)
        self.levels_ = LevelIndex.build(classes)
        self.zeroshot = None
        if zero_shot:
            from ..classifier import TaxonomyClassifier

            # over the class list itself (a product model's leaves), so the sources align column by column
            self.zeroshot = TaxonomyClassifier.from_taxonomy(Taxonomy.from_paths(classes), encoder=encoder)

    @property
    def sources(self) -> list[str]:
        return [name for name, obj in (("product", self.product_model), ("zeroshot", self.zeroshot),
                                       ("query", self.query_model)) if obj is not None and self.weights.get(name, 0) > 0]

    def _aligned_log(self, model: Any, queries: list[str]) -> np.ndarray:
        """``model``'s log-probabilities in this classifier's column order; unknown classes abstain."""
        proba = model.predict_proba(queries)
        pos = {str(c): i for i, c in enumerate(model.classes_)}
        cols = np.array([pos.get(str(c), -1) for c in self.classes_])
        out = np.full((len(queries), len(self.classes_)), np.nan)
        known = cols >= 0
        out[:, known] = np.log(np.maximum(proba[:, cols[known]], _FLOOR))
        if not known.all():  # abstain: the source's best known log-probability
            out[:, ~known] = np.nanmax(out, axis=1, keepdims=True)
        return out

    def predict_proba(self, queries: Sequence[str]) -> np.ndarray:
        """Leaf probabilities (n, n_classes), in ``classes_`` order."""
        if isinstance(queries, str):
            raise TypeError("expected a list of queries, got a single string; wrap it in a list")
        qs = [str(q) for q in queries]
        total = np.zeros((len(qs), len(self.classes_)))
        for name in self.sources:
            model = {"product": self.product_model, "zeroshot": self.zeroshot, "query": self.query_model}[name]
            total += self.weights[name] * self._aligned_log(model, qs)
        return np.asarray(np.exp(log_softmax(total, axis=1)))

    def classify(self, queries: Sequence[str], top_k: int = 5, min_confidence: float | None = None) -> list[Prediction]:
        """A :class:`Prediction` per query: the path at the level the query supports, confidence per level,
        the top-k leaves."""
        mc = self.min_confidence if min_confidence is None else min_confidence
        return decode(self.predict_proba(queries), self.levels_, top_k=top_k, min_confidence=mc)
