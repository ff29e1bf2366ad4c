"""Tiers over frozen transformer embeddings: a nearest-neighbour index and a linear (logistic) head.

* :class:`NeighbourIndex` keeps the labelled training embeddings (float16 in the bundle) and turns the k most
  similar training products into a class distribution (``softmax(similarity / T)`` over the neighbours). It is
  cheap to fit, helps rare leaves (one example is enough to be found) and gives the "3 nearest labelled
  products" explanations.
* :class:`EmbedHead` is a multinomial logistic regression on the embeddings, temperature-calibrated. Alone it
  is well below the sparse tier on product titles (benchmarks/RESULTS.md, "Every tier vs the baselines"), so
  the default ensemble leaves it out; ``members=(..., "embed")`` adds it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["ANN_ABOVE", "EmbedHead", "NeighbourIndex"]

logger = logging.getLogger(__name__)

_UNKNOWN = -1e3  # the intercept (and so, near enough, the score) of a class the head saw no example of
_CHUNK = 512  # queries per similarity block: 512 × 40k training products is 80 MB


ANN_ABOVE = 100_000
"""``search="auto"`` uses an approximate (HNSW) index from this many labelled vectors on, when FAISS is installed."""
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128


class NeighbourIndex:
    """k-nearest labelled neighbours by cosine similarity (embeddings are L2-normalised).

    Args:
        k: neighbours that vote.
        temperature: sharpness of the vote (``exp(similarity / T)``).
        search: ``"exact"`` (every stored vector compared: a matrix product per block of queries), ``"hnsw"``
            (FAISS's HNSW graph over inner products, ``pip install 'taxonomist[ann]'``; built from the stored
            vectors at the first query, never stored in a bundle), or ``"auto"``: HNSW from ``ANN_ABOVE``
            vectors on when FAISS is installed, else exact. Recall against exact search: benchmarks/ann.py.
    """

    def __init__(self, k: int = 10, temperature: float = 0.05, search: str = "auto") -> None:
        self.k = k
        self.temperature = temperature
        self.search = search

    def fit(self, embeddings: np.ndarray, y_index: np.ndarray, n_classes: int) -> NeighbourIndex:
        self.vectors_ = np.asarray(embeddings, dtype=np.float16)
        self.labels_ = np.asarray(y_index, dtype=np.int32)
        self.n_classes_ = int(n_classes)
        return self

    def add(self, embeddings: np.ndarray, y_index: np.ndarray, n_classes: int) -> None:
        """Add labelled vectors (e.g. examples of a new category) without refitting."""
        self.vectors_ = np.vstack([self.vectors_, np.asarray(embeddings, dtype=np.float16)])
        self.labels_ = np.concatenate([self.labels_, np.asarray(y_index, dtype=np.int32)])
        self.n_classes_ = int(n_classes)

    def kneighbors(self, queries: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, indices) of the ``k`` most similar stored vectors, best first."""
        k = min(k or self.k, len(self.labels_))
        q = np.asarray(queries, dtype=np.float32)
        hnsw = self._hnsw()
        if hnsw is not None:
            sims, idx = hnsw.search(np.ascontiguousarray(q), k)
            return sims.astype(np.float32), idx.astype(np.int64)
        sims = np.zeros((len(q), k), np.float32)
        idx = np.zeros((len(q), k), np.int64)
        base: np.ndarray | None = getattr(self, "_base", None)
        if base is None or len(base) != len(self.labels_):
            base = self._base = self.vectors_.astype(np.float32)  # once: float16 matmul is slow on CPUs
        for s in range(0, len(q), _CHUNK):
            S = q[s:s + _CHUNK] @ base.T
            part = np.argpartition(-S, k - 1, axis=1)[:, :k] if k < S.shape[1] else np.tile(np.arange(S.shape[1]), (len(S), 1))
            ps = np.take_along_axis(S, part, 1)
            order = np.argsort(-ps, axis=1)
            idx[s:s + _CHUNK] = np.take_along_axis(part, order, 1)
            sims[s:s + _CHUNK] = np.take_along_axis(ps, order, 1)
        return sims, idx

    def _hnsw(self) -> Any:
        """The approximate index when the search mode asks for one (built once per set of stored vectors)."""
        search = getattr(self, "search", "auto")
        if search not in ("auto", "exact", "hnsw"):
            raise ValueError(f"search must be 'auto', 'exact' or 'hnsw', got {search!r}")
        if search == "exact" or (search == "auto" and len(self.labels_) < ANN_ABOVE):
            return None
        try:
            import faiss
        except ImportError:
            if search == "hnsw":
                raise ImportError("search='hnsw' needs FAISS: pip install 'taxonomist[ann]'") from None
            return None
        built = getattr(self, "_index", None)
        if built is not None and built.ntotal == len(self.labels_):
            return built
        logger.info("building an HNSW index over %d labelled vectors", len(self.labels_))
        index = faiss.IndexHNSWFlat(self.vectors_.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        index.add(np.ascontiguousarray(self.vectors_, dtype=np.float32))
        self._index = index
        return index

    def predict_proba(self, queries: np.ndarray) -> np.ndarray:
        sims, idx = self.kneighbors(queries)
        w = np.exp((sims - sims[:, :1]) / self.temperature)
        P = np.zeros((len(sims), self.n_classes_), np.float64)
        rows = np.repeat(np.arange(len(sims)), sims.shape[1])
        np.add.at(P, (rows, self.labels_[idx].ravel()), w.ravel())
        out: np.ndarray = P / np.maximum(P.sum(axis=1, keepdims=True), 1e-12)
        return out

    def get_state(self, prefix: str = "knn_") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"k": self.k, "temperature": self.temperature, "n_classes": self.n_classes_},
                {f"{prefix}vectors": self.vectors_, f"{prefix}labels": self.labels_})

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str = "knn_") -> NeighbourIndex:
        idx = cls(k=int(params["k"]), temperature=float(params["temperature"]))
        idx.vectors_ = np.asarray(arrays[f"{prefix}vectors"], dtype=np.float16)
        idx.labels_ = np.asarray(arrays[f"{prefix}labels"], dtype=np.int32)
        if len(idx.labels_) != len(idx.vectors_) or (len(idx.labels_) and idx.labels_.min() < 0):
            raise ValueError(f"{prefix}labels: {len(idx.labels_)} class indices (all ≥ 0 expected) for "
                             f"{len(idx.vectors_)} vectors")
        idx.n_classes_ = int(params["n_classes"])
        if idx.labels_.size and int(idx.labels_.max()) >= idx.n_classes_:
            raise ValueError("neighbour labels point past the class list")
        return idx


class EmbedHead:
    """Multinomial logistic regression on embeddings (scikit-learn, lbfgs); probabilities over all classes."""

    def __init__(self, C: float = 10.0, max_iter: int = 300, class_weight: str | None = None) -> None:
        self.C = C
        self.max_iter = max_iter
        self.class_weight = class_weight

    def fit(self, embeddings: np.ndarray, y_index: np.ndarray, n_classes: int) -> EmbedHead:
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight)
        lr.fit(np.asarray(embeddings, np.float32), y_index)
        self.coef_ = np.zeros((n_classes, embeddings.shape[1]), np.float32)
        self.intercept_ = np.full(n_classes, _UNKNOWN, np.float32)
        present = lr.classes_
        if len(present) == 2:  # scikit-learn stores one row for two classes
            self.coef_[present[1]], self.intercept_[present[1]] = lr.coef_[0], lr.intercept_[0]
            self.coef_[present[0]], self.intercept_[present[0]] = 0.0, 0.0
        else:
            self.coef_[present], self.intercept_[present] = lr.coef_, lr.intercept_
        return self

    def decision_function(self, embeddings: np.ndarray) -> np.ndarray:
        return np.asarray(embeddings, np.float32) @ self.coef_.T + self.intercept_

    @property
    def known(self) -> np.ndarray:
        """(n_classes,) bool: the classes the head saw examples of (the others never win)."""
        return np.asarray(self.intercept_ > _UNKNOWN + 1)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"C": self.C, "max_iter": self.max_iter, "class_weight": self.class_weight},
                {"head_coef": self.coef_, "head_intercept": self.intercept_})

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> EmbedHead:
        head = cls(**params)
        head.coef_ = np.asarray(arrays["head_coef"], np.float32)
        head.intercept_ = np.asarray(arrays["head_intercept"], np.float32)
        return head
