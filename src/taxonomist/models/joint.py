"""The joint member: the practitioner's TF-IDF + sentence-embedding SVM as one member of the ensemble.

One-vs-rest linear SVMs (liblinear, the columns fitted as the sparse member's are: :mod:`taxonomist.models.ovr`)
over the sparse member's features with the L2-normalised sentence embedding of the product beside them -- one
linear model that weighs words and meaning together, where the sparse member and the embedding members each see
one of them. It reads the features the sparse member's encoder makes, so it lives beside a sparse member; the
stacking weighs it like the others and keeps it only where it helps out of fold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .ovr import local_tasks, run_tasks
from .sparse import linear_scores

__all__ = ["JointModel"]

_UNKNOWN = -1e3  # the intercept of a class without training examples (it never wins)


class JointModel:
    """Linear SVMs over ``[sparse features, embedding]`` (``C`` as the sparse member's; weights below ``prune``
    dropped from the sparse part)."""

    def __init__(self, C: float = 0.5, prune: float = 1e-3, random_state: int = 0, n_jobs: int | None = None) -> None:
        self.C = C
        self.prune = prune
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: sp.csr_matrix, emb: np.ndarray, y_index: np.ndarray, n_classes: int) -> JointModel:
        """Fit on the products' sparse features ``X``, embeddings ``emb`` and class indices (of ``n_classes``)."""
        if X.shape[0] != len(emb) or len(emb) != len(y_index):
            raise ValueError(f"expected one row of features, embedding and label per product: {X.shape[0]}, "
                             f"{len(emb)}, {len(y_index)}")
        n_features = X.shape[1]
        Z = sp.hstack([X, sp.csr_matrix(np.asarray(emb, np.float64))], format="csr", dtype=np.float64)
        params = {"C": self.C, "class_weight": None, "random_state": self.random_state, "prune": self.prune}
        (coef, intercept), = run_tasks(Z, local_tasks(np.arange(len(y_index)), np.asarray(y_index)), [n_classes],
                                       params, n_jobs=self.n_jobs)
        coef = sp.csc_matrix(coef)
        self.sparse_coef_ = sp.csr_matrix(coef[:, :n_features], dtype=np.float32)
        self.dense_coef_ = np.asarray(coef[:, n_features:].toarray(), np.float32)
        self.intercept_ = np.where(np.isin(np.arange(n_classes), y_index), intercept, _UNKNOWN).astype(np.float32)
        return self

    def decision_function(self, X: sp.csr_matrix, emb: np.ndarray) -> np.ndarray:
        """(products, classes) margins of products with sparse features ``X`` and embeddings ``emb``: the sparse
        part scored as the sparse member scores (:func:`~taxonomist.models.sparse.linear_scores`)."""
        cached = getattr(self, "_weights_t", None)
        if cached is None or cached[0] is not self.sparse_coef_:  # features x classes, made once per fitted weights
            cached = self._weights_t = (self.sparse_coef_, self.sparse_coef_.T.tocsr())
        out = linear_scores(sp.csr_matrix(X, dtype=np.float32), cached[1], self.intercept_)
        out += np.asarray(emb, np.float32) @ self.dense_coef_.T
        return out

    @property
    def known(self) -> np.ndarray:
        """(n_classes,) bool: the classes it saw examples of."""
        return np.asarray(self.intercept_ > _UNKNOWN + 1)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        w = self.sparse_coef_
        return ({"C": self.C, "prune": self.prune, "random_state": self.random_state, "shape": list(w.shape)},
                {"data": w.data, "indices": w.indices, "indptr": w.indptr, "dense": self.dense_coef_,
                 "intercept": self.intercept_})

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> JointModel:
        m = cls(C=float(params["C"]), prune=float(params["prune"]), random_state=int(params["random_state"]))
        shape = tuple(int(v) for v in params["shape"])
        m.sparse_coef_ = sp.csr_matrix((np.asarray(arrays["data"], np.float32), np.asarray(arrays["indices"]),
                                        np.asarray(arrays["indptr"])), shape=shape)
        m.dense_coef_ = np.asarray(arrays["dense"], np.float32)
        m.intercept_ = np.asarray(arrays["intercept"], np.float32)
        if m.dense_coef_.shape[0] != shape[0] or len(m.intercept_) != shape[0]:
            raise ValueError(f"the joint member's arrays disagree: {shape[0]} classes of word weights, "
                             f"{m.dense_coef_.shape[0]} of embedding weights, {len(m.intercept_)} intercepts")
        return m
