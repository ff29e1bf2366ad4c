"""The sparse tier: TF-IDF features into a one-vs-rest linear SVM, calibrated on a held-out split.

Chosen by measurement (benchmarks/RESULTS.md): LinearSVC on word + char TF-IDF is the strongest plain
text classifier on product titles. Its margins become probabilities by temperature scaling, then a monotone
(isotonic) map of the top probability, both fitted on a grouped held-out split; neither changes a decision
(BigBasket held-out ECE 0.090 with the temperature alone, 0.038 with the map). The weights are pruned
(|w| < ``prune``) and kept sparse: a 600-class bundle is ~20 MB instead of ~340 MB dense float32.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GroupShuffleSplit
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted

from ..encoders.sparse import SparseTextEncoder
from ..exceptions import NotFittedError
from .calibration import apply_top_label, fit_temperature, fit_top_label, softmax_with_temperature

__all__ = ["SparseClassifier", "TextPairs"]

logger = logging.getLogger(__name__)

TextPairs = tuple[Sequence[str], Sequence[str]]
"""(titles, contexts): the title and the description + attributes text of each product."""


def _as_pairs(X: Any) -> TextPairs:
    if isinstance(X, tuple) and len(X) == 2:
        return X[0], X[1]
    if isinstance(X, str):
        raise TypeError("expected a list of texts or (titles, contexts), got a single string; wrap it in a list")
    titles = list(X)
    return titles, [""] * len(titles)


def _scores(X: sp.csr_matrix, coef_t: sp.csr_matrix, intercept: np.ndarray) -> np.ndarray:
    """``X @ coef.T + intercept`` with the pruned weights kept sparse (``coef_t`` is features × classes, CSR).

    Only the weight rows of features present in the batch are densified: as fast as a dense weight matrix,
    without holding one (600 classes × 150k features would be 350 MB).
    """
    X = sp.csr_matrix(X)
    cols, inverse = np.unique(X.indices, return_inverse=True)
    compact = sp.csr_matrix((X.data, inverse.astype(np.int32), X.indptr), shape=(X.shape[0], len(cols)))
    scores: np.ndarray = np.asarray(compact @ coef_t[cols].toarray()) + intercept
    return scores


class SparseClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Calibrated linear classifier over :class:`SparseTextEncoder` features.

    ``X`` is a list of titles or a ``(titles, contexts)`` pair of lists.

    Args:
        C: inverse regularisation of the SVM.
        class_weight: ``None`` or ``"balanced"`` (balanced lowered macro-F1 on every catalogue measured).
        calibration: ``"temperature+isotonic"`` (temperature, then a monotone map of the top probability, both
            fitted on a held-out split), ``"temperature"`` only, or ``"none"`` (T = 1).
        calibration_size: share of title groups held out to fit the temperature.
        prune: weights with a smaller magnitude are dropped.
        encoder: a :class:`SparseTextEncoder` to clone (default settings when ``None``).
        n_jobs: parallel one-vs-rest fits (``None``: all cores, at most 2).
        random_state: seed of the calibration split.

    Example:
        >>> clf = SparseClassifier().fit(["red shirt", "blue jeans", "green shirt", "black jeans"] * 3,
        ...                              ["Shirts", "Jeans", "Shirts", "Jeans"] * 3)
        >>> clf.predict(["white shirt"]).tolist()
        ['Shirts']
    """

    def __init__(
        self,
        C: float = 0.5,
        class_weight: Literal["balanced"] | None = None,
        calibration: Literal["temperature", "temperature+isotonic", "none"] = "temperature+isotonic",
        calibration_size: float = 0.15,
        prune: float = 1e-3,
        encoder: SparseTextEncoder | None = None,
        n_jobs: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.C = C
        self.class_weight = class_weight
        self.calibration = calibration
        self.calibration_size = calibration_size
        self.prune = prune
        self.encoder = encoder
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit_linear(self, X: sp.csr_matrix, y: np.ndarray, n_classes: int) -> tuple[sp.csr_matrix, np.ndarray]:
        """Fit one-vs-rest SVMs on label indices ``y``; returns (coef, intercept) for all ``n_classes`` rows."""
        import os

        present = np.unique(y)
        coef = np.zeros((n_classes, X.shape[1]), dtype=np.float32)
        intercept = np.full(n_classes, -1e3, dtype=np.float32)  # classes absent from y never win
        svc = LinearSVC(C=self.C, class_weight=self.class_weight, random_state=self.random_state)
        # Worker processes, not threads: liblinear seeds the C library's global rand() at each fit, so two
        # fits sharing one process interleave their shuffles and the weights stop being reproducible (measured:
        # BigBasket macro-F1 0.5795 -> 0.5793 run to run on threads). Convergence warnings of in-process fits are
        # counted here and logged once; worker processes print their own.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            if len(present) == 2:
                m = svc.fit(X, y)
                w, b = m.coef_[0], m.intercept_[0]
                coef[present[0]], coef[present[1]] = -w, w
                intercept[present[0]], intercept[present[1]] = -b, b
            else:
                n_jobs = self.n_jobs if self.n_jobs is not None else min(2, os.cpu_count() or 1)
                ovr = OneVsRestClassifier(svc, n_jobs=n_jobs if len(present) >= 8 else 1).fit(X, y)
                coef[present] = np.vstack([e.coef_.ravel() for e in ovr.estimators_])
                intercept[present] = np.array([e.intercept_[0] for e in ovr.estimators_])
        not_converged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        for w in caught:
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if not_converged:
            n_problems = 1 if len(present) == 2 else len(present)
            logger.warning(
                "the linear SVM stopped before converging on %d of %d one-vs-rest problems (C=%s); its predictions "
                "are usable, and a smaller C converges faster", not_converged, n_problems, self.C,
            )
        coef[np.abs(coef) < self.prune] = 0.0
        return sp.csr_matrix(coef), intercept

    def fit(self, X: Any, y: Sequence[str], groups: Sequence[int] | np.ndarray | None = None) -> SparseClassifier:
        """Fit on texts ``X`` and labels ``y``; ``groups`` (e.g. title groups) keep duplicates together in the
        calibration split."""
        titles, contexts = _as_pairs(X)
        y_arr = np.asarray([str(v) for v in y], dtype=object)
        if len(y_arr) != len(titles):
            raise ValueError(f"expected one label per product: {len(titles)} products, {len(y_arr)} labels")
        self.classes_, y_idx = np.unique(y_arr, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"expected at least 2 categories to learn, found {len(self.classes_)}: {list(self.classes_)}")
        self.encoder_ = clone(self.encoder) if self.encoder is not None else SparseTextEncoder()
        Xs = self.encoder_.fit_transform(titles, contexts)
        self.temperature_ = 1.0
        self.top_label_: tuple[np.ndarray, np.ndarray] | None = None
        if self.calibration not in ("temperature", "temperature+isotonic", "none"):
            raise ValueError(f"calibration must be 'temperature', 'temperature+isotonic' or 'none', got {self.calibration!r}")
        if self.calibration != "none" and len(titles) >= 20:
            g = np.asarray(groups) if groups is not None else np.arange(len(titles))
            split = GroupShuffleSplit(n_splits=1, test_size=self.calibration_size, random_state=self.random_state)
            fit_idx, cal_idx = next(split.split(Xs, y_idx, g))
            coef, intercept = self._fit_linear(Xs[fit_idx], y_idx[fit_idx], len(self.classes_))
            scores = _scores(Xs[cal_idx], coef.T.tocsr(), intercept)
            seen = np.isin(y_idx[cal_idx], np.unique(y_idx[fit_idx]))
            self.temperature_ = fit_temperature(scores[seen], y_idx[cal_idx][seen])
            logger.info("calibration: temperature %.4f fitted on %d held-out products", self.temperature_, int(seen.sum()))
            if self.calibration == "temperature+isotonic":
                p = softmax_with_temperature(scores[seen], self.temperature_)
                self.top_label_ = fit_top_label(p.max(axis=1), p.argmax(axis=1) == y_idx[cal_idx][seen])
        self.coef_, self.intercept_ = self._fit_linear(Xs, y_idx, len(self.classes_))
        self._coef_t = self.coef_.T.tocsr()
        self.n_features_in_ = Xs.shape[1]
        return self

    def _check(self) -> None:
        try:
            check_is_fitted(self, "coef_")
        except Exception:
            raise NotFittedError(
                "this SparseClassifier is not fitted yet; call fit(X, y) or load a trained bundle first"
            ) from None

    def decision_function(self, X: Any) -> np.ndarray:
        self._check()
        titles, contexts = _as_pairs(X)
        if getattr(self, "_coef_t", None) is None:
            self._coef_t = self.coef_.T.tocsr()
        return _scores(self.encoder_.transform(titles, contexts), self._coef_t, self.intercept_)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated probabilities, shape (n, n_classes), columns in ``classes_`` order."""
        proba = softmax_with_temperature(self.decision_function(X), self.temperature_)
        return apply_top_label(proba, self.top_label_) if self.top_label_ is not None else proba

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes_[np.argmax(self.decision_function(X), axis=1)])

    def explain(self, title: str, context: str, class_index: int, top: int = 5) -> list[tuple[str, float]]:
        """The features that pushed one product towards one class, with their contribution to the score."""
        self._check()
        x = self.encoder_.transform([title], [context]).tocsr()
        w = self.coef_[[class_index]].toarray().ravel()
        contrib = x.data * w[x.indices]
        order = np.argsort(-contrib)[:top]
        names: Any = self.encoder_.names_of(title, context) if self.encoder_.n_features is not None else self._feature_names()
        return [(str(names[x.indices[i]]), float(contrib[i])) for i in order if contrib[i] > 0]

    def _feature_names(self) -> np.ndarray:
        if getattr(self, "_names_cache", None) is None:
            self._names_cache = self.encoder_.feature_names()
        return self._names_cache

    # -- safe persistence ----------------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        self._check()
        enc_params, enc_arrays, vocab = self.encoder_.get_state()
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "encoder"}
        params.update(temperature_=self.temperature_, encoder=enc_params)
        # stored transposed (features × classes, CSR): the layout scoring uses, so loading converts nothing
        coef_t = self._coef_t if getattr(self, "_coef_t", None) is not None else self.coef_.T.tocsr()
        arrays = {
            **enc_arrays,
            "coef_t_data": coef_t.data.astype(np.float32),
            "coef_t_indices": coef_t.indices.astype(np.int32),
            "coef_t_indptr": coef_t.indptr.astype(np.int64),
            "coef_t_shape": np.asarray(coef_t.shape, dtype=np.int64),
            "intercept": self.intercept_.astype(np.float32),
        }
        if self.top_label_ is not None:
            arrays["top_label_x"], arrays["top_label_y"] = self.top_label_
        return params, arrays, {"vocabulary": vocab, "classes": [str(c) for c in self.classes_]}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray], objects: dict[str, Any]) -> SparseClassifier:
        p = dict(params)
        temperature = float(p.pop("temperature_"))
        encoder = SparseTextEncoder.from_state(p.pop("encoder"), arrays, objects["vocabulary"])
        clf = cls(**p)
        clf.encoder_ = encoder
        clf.classes_ = np.asarray(objects["classes"], dtype=object)
        n_features, n_classes = (int(v) for v in arrays["coef_t_shape"])
        clf._coef_t = sp.csr_matrix((arrays["coef_t_data"], arrays["coef_t_indices"], arrays["coef_t_indptr"]),
                                    shape=(n_features, n_classes))
        clf.coef_ = clf._coef_t.T  # a CSC view, classes × features, as scikit-learn lays coef_ out
        shape = (n_classes, n_features)
        clf.intercept_ = np.asarray(arrays["intercept"], dtype=np.float32)
        clf.temperature_ = temperature
        clf.top_label_ = (arrays["top_label_x"], arrays["top_label_y"]) if "top_label_x" in arrays else None
        clf.n_features_in_ = shape[1]
        if shape[0] != len(clf.classes_) or shape[1] != encoder.n_features_out_:
            raise ValueError(f"weights of shape {shape} do not match {len(clf.classes_)} classes and {encoder.n_features_out_} features")
        return clf
