"""Why a model placed a product where it did: the n-grams that drove the sparse model's score of the leaf, and
the most similar labelled training products (ensembles with a neighbour member)."""

from __future__ import annotations

import numpy as np

from .models.ensemble import Ensemble
from .models.hierarchy import Prediction
from .models.sparse import SparseClassifier
from .taxonomy import format_path

__all__ = ["explain_predictions"]


def explain_predictions(sparse: SparseClassifier | None, ens: Ensemble | None, preds: list[Prediction], pairs: tuple[list[str], list[str]], emb: np.ndarray | None,
                        neighbours: int = 3) -> None:
    """Attach to each prediction the ``sparse`` model's n-grams behind its leaf (``explanation``) and the
    ``neighbours`` nearest training products of the ensemble's neighbour member (``neighbours``: their titles,
    categories and similarities); ``emb``: the products' embeddings when the ensemble
    computed them."""
    if sparse is not None:
        pos = {str(c): i for i, c in enumerate(sparse.classes_)}
        for p, t, c in zip(preds, *pairs, strict=True):
            j = pos.get(format_path(p.leaf))
            p.explanation = sparse.explain(t, c, j) if j is not None else []
    knn = ens.members.knn if ens is not None else None
    if ens is None or knn is None:
        return
    if emb is None:
        emb = ens.embed(*pairs)
    if len(emb):
        sims, idx = knn.kneighbors(emb, k=neighbours)
        for p, srow, irow in zip(preds, sims, idx, strict=True):
            p.neighbours = [(ens.neighbour_titles[i], ens.classes[knn.labels_[i]], round(float(v), 4))
                            for v, i in zip(srow, irow, strict=True)]
