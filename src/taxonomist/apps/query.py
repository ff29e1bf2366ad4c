"""Search-query classification: a short query ("turquoise pillows", "iphone 8 plus 64gb") → a distribution over the
taxonomy's leaves and a path at the level the query supports (a vague query backs off to a parent).

Up to three sources, pooled log-linearly over one class list (a source labelled more coarsely votes for whole
subtrees; a class a source never saw counts as its least likely one):
- the **product model**: queries scored like very short titles (a trained :class:`TaxonomyClassifier`);
- the **zero-shot** scorer: the query's embedding against every category path (no training data at all);
- a **query model**: a :class:`TaxonomyClassifier` trained on labelled query logs, when a user has them (its
  labels may stop at any level: "Apparel" is enough).

Queries are shorter than titles: :func:`pseudo_queries` turns a catalogue's titles into query-shaped training rows
(last word, last two words, title without its first word, a random span), which a product model can be trained on
besides the titles (``taxonomist train --pseudo-queries``).

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
from ..taxonomy import Taxonomy, format_path, parse_path

__all__ = ["QueryClassifier", "pseudo_queries", "with_pseudo_queries"]

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
            from ..encoders.transformer import pick_encoder

            # over the class list itself (a product model's leaves), so the sources align column by column; a list
            # of queries is not a catalogue (no adaptation to the batch) and a query is no product title (no name
            # coverage): the plain zero-shot scorer, with the encoder chosen by script as before
            self.zeroshot = TaxonomyClassifier.from_taxonomy(
                Taxonomy.from_paths(classes), encoder=pick_encoder(classes) if encoder == "auto" else encoder,
                min_confidence=None, lexical=0.0, adapt=None)

    @property
    def sources(self) -> list[str]:
        return [name for name, obj in (("product", self.product_model), ("zeroshot", self.zeroshot),
                                       ("query", self.query_model)) if obj is not None and self.weights.get(name, 0) > 0]

    def _aligned_log(self, model: Any, queries: list[str]) -> np.ndarray:
        """``model``'s log-probabilities in this classifier's column order. A leaf takes the model's probability of
        the same path, else the summed probability of the model's classes below it, else that of the model's
        deepest class above it (a query log labelled at a coarser level votes for the whole subtree); a leaf the
        model never saw gets the model's lowest log-probability of the query (what a log that never had the class
        says about it)."""
        proba = model.predict_proba(queries)
        theirs = [parse_path(str(c)) for c in model.classes_]
        mapping = np.zeros((len(theirs), len(self.classes_)))
        known = np.zeros(len(self.classes_), dtype=bool)
        for j, c in enumerate(self.classes_):
            mine = parse_path(str(c))
            below = [i for i, t in enumerate(theirs) if t[: len(mine)] == mine]
            if not below:
                above = [i for i, t in enumerate(theirs) if mine[: len(t)] == t]
                below = [max(above, key=lambda i: len(theirs[i]))] if above else []
            if below:
                mapping[below, j] = 1.0
                known[j] = True
        out = np.full((len(queries), len(self.classes_)), np.nan)
        out[:, known] = np.log(np.maximum(np.asarray(proba) @ mapping[:, known], _FLOOR))
        if not known.all():  # a class the source never saw: as likely as the least likely class it knows
            out[:, ~known] = np.nanmin(out, axis=1, keepdims=True)
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


def pseudo_queries(titles: Sequence[str], categories: Sequence[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Query-shaped training rows from product titles, each with its product's category: the last word (usually
    the product type), the last two words, the title without its first word (usually the brand), and one random
    span of 1-3 words. Titles of one word give none.

    Example:
        >>> pseudo_queries(["Nike Men Red Running Shoes"], ["Footwear > Shoes"])[0][:3]
        ['shoes', 'running shoes', 'men red running shoes']
    """
    import random

    rng = random.Random(seed)
    out_t: list[str] = []
    out_c: list[str] = []
    for title, cat in zip(titles, categories, strict=True):
        words = str(title).lower().split()
        if len(words) < 2:
            continue
        i, n = rng.randrange(len(words)), rng.randint(1, 3)
        for q in dict.fromkeys((words[-1], " ".join(words[-2:]), " ".join(words[1:]), " ".join(words[i:i + n]))):
            out_t.append(q)
            out_c.append(cat)
    return out_t, out_c


def with_pseudo_queries(catalog: Any, seed: int = 0) -> Any:
    """``catalog`` plus its :func:`pseudo_queries` as extra rows (title and category only), to train a product
    model that also reads search queries well."""
    import pandas as pd

    from ..catalog import Catalog

    df = catalog.frame
    titles, cats = pseudo_queries(df["title"].tolist(), df["category"].tolist(), seed=seed)
    extra = pd.DataFrame({c: ("" if c != "row" else 0) for c in df.columns}, index=range(len(titles)))
    extra["title"], extra["category"] = titles, cats  # row 0: not from the file
    frame = pd.concat([df, extra.astype(df.dtypes.to_dict())], ignore_index=True)
    out = Catalog(frame, catalog.attribute_columns, catalog.report, catalog.sep)
    out.base_dir = catalog.base_dir
    return out
