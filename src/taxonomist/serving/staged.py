"""Serving in the cascade's two stages: the products the sparse member is sure of are answered at once (on the
event loop); the others go on to the encoders in a worker thread, the leftovers of many requests pooled into one
encoder pass. Both stages together give what :meth:`~taxonomist.TaxonomyClassifier.predict_products` gives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..classifier import TaxonomyClassifier
from ..models.hierarchy import Prediction, decode
from ..products import ProductBatch

__all__ = ["Pending", "first_stage", "second_stage"]


@dataclass
class Pending:
    """Products :func:`first_stage` left to the second."""

    batch: ProductBatch | None  # the whole call, when nothing was answered (its photos are read); else None
    titles: list[str]
    contexts: list[str]
    sparse_log: np.ndarray | None  # the sparse member's log-probabilities, when the cascade computed them
    top_k: int
    min_confidence: float | None


def first_stage(clf: TaxonomyClassifier, X: Any, top_k: int = 3,
                min_confidence: float | None = None) -> tuple[list[Prediction | None], Pending | None]:
    """The predictions of the first stage (``None`` for each product left to the second) and what is left
    (``None`` when nothing is). The sparse tier answers everything here; an ensemble without a cascade (or one
    that reads photos) leaves everything to the second stage."""
    batch = ProductBatch.from_any([X] if isinstance(X, (str, Mapping)) else X)
    mc = clf.min_confidence if min_confidence is None else min_confidence
    ens = clf.ensemble_
    if ens is None:
        return list(clf.predict_products(batch, top_k=top_k, min_confidence=mc)), None
    titles, contexts = clf.texts(batch)
    split = ens.split_sure((titles, contexts))
    if split is None:
        return [None] * len(titles), Pending(batch, titles, contexts, None, top_k, mc)
    sure, easy, sparse_log = split
    first: list[Prediction | None] = [None] * len(titles)
    easy_idx, hard = np.flatnonzero(easy), np.flatnonzero(~easy)
    for i, p in zip(easy_idx, decode(sure[easy_idx], clf.levels_, top_k=top_k, min_confidence=mc), strict=True):
        first[i] = p
    if not len(hard):
        return first, None
    # (no batch: the cascade's leftovers are text-only, and the sparse log-probabilities are already computed)
    return first, Pending(None, [titles[i] for i in hard], [contexts[i] for i in hard], sparse_log[hard], top_k, mc)


def second_stage(clf: TaxonomyClassifier, pending: Sequence[Pending]) -> list[list[Prediction]]:
    """The second stage for the leftovers of several calls together, in one pass through the encoders: the
    predictions of each one's products, in order."""
    out: list[list[Prediction]] = [[] for _ in pending]
    cascaded = [i for i, p in enumerate(pending) if p.sparse_log is not None]
    whole = [i for i, p in enumerate(pending) if p.sparse_log is None]
    for group in (cascaded, whole):
        if not group:
            continue
        parts = [pending[i] for i in group]
        pairs = ([t for p in parts for t in p.titles], [c for p in parts for c in p.contexts])
        if group is cascaded:
            logs = np.vstack([p.sparse_log for p in parts if p.sparse_log is not None])
            proba = clf.proba_of(pairs, sparse_log=logs, adapt_to_batch=False)[0]
        else:  # their photos read together
            img = [clf.photos(p.batch) for p in parts if p.batch is not None]
            photos = None if not img or img[0] is None else (np.vstack([v for v, _ in img]), np.concatenate([m for _, m in img]))  # type: ignore[misc]
            # several clients' products together: a zero-shot model answers each alone (no catalogue adaptation)
            proba = clf.proba_of(pairs, img=photos, adapt_to_batch=False)[0]
        start = 0
        for i, p in zip(group, parts, strict=True):
            out[i] = decode(proba[start:start + len(p.titles)], clf.levels_, top_k=p.top_k,
                            min_confidence=p.min_confidence)
            start += len(p.titles)
    return out
