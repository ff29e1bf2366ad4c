"""The sparse tier: TF-IDF features into a one-vs-rest linear SVM, calibrated on a held-out split.

Chosen by measurement (benchmarks/RESULTS.md): LinearSVC on word + char TF-IDF is the strongest plain
text classifier on product titles. Its margins become probabilities by temperature scaling, then a monotone
(isotonic) map of the top probability, both fitted on a grouped held-out split; neither changes a decision
(BigBasket held-out ECE 0.090 with the temperature alone, 0.038 with the map). The weights are pruned
(|w| < ``prune``) and kept sparse: a 600-class bundle is ~20 MB instead of ~340 MB dense float32.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import GroupShuffleSplit
from sklearn.utils.validation import check_is_fitted

from ..encoders.sparse import SparseTextEncoder
from ..exceptions import NotFittedError
from .beam import BeamResult, beam_descent, beam_predictions
from .calibration import apply_top_label, fit_temperature, fit_top_label, softmax_with_temperature
from .hierarchy import LevelIndex, Prediction
from .node_weights import NodeWeights, node_major_weights
from .ovr import CSR_BYTES_PER_VALUE, Task, capped, local_tasks, mapped_rows, run_tasks
from .tree import DEFAULT_LOCAL_TEMPERATURE, LocalTree, local_tree, resolve_hierarchy, split_depth

__all__ = ["Encoded", "SparseClassifier", "TextPairs"]

logger = logging.getLogger(__name__)

TextPairs = tuple[Sequence[str], Sequence[str]]
"""(titles, contexts): the title and the description + attributes text of each product."""


@dataclass(frozen=True)
class Encoded:
    """Products already turned into features by a fitted :class:`~taxonomist.encoders.sparse.SparseTextEncoder`
    (``encoder``): what :meth:`SparseClassifier.fit` and its predictions accept instead of texts, so that the folds
    of a cross-validation and the final model tokenise each product once. ``X`` is float64 CSR (liblinear's type)."""

    encoder: Any
    X: sp.csr_matrix

    def rows(self, idx: np.ndarray) -> Encoded:
        return Encoded(self.encoder, self.X[idx])

    def __len__(self) -> int:
        return int(self.X.shape[0])


def as_pairs(X: Any) -> TextPairs:
    if isinstance(X, Encoded):
        raise TypeError("this model reads texts, not features encoded for a sparse member")
    if isinstance(X, tuple) and len(X) == 2:
        return X[0], X[1]
    if isinstance(X, str):
        raise TypeError("expected a list of texts or (titles, contexts), got a single string; wrap it in a list")
    titles = list(X)
    return titles, [""] * len(titles)


def linear_scores(X: sp.csr_matrix, coef_t: sp.csr_matrix, intercept: np.ndarray) -> np.ndarray:
    """``X @ coef.T + intercept`` with the pruned weights kept sparse (``coef_t`` is features × classes, CSR).

    Only the weight rows of features present in ``X`` are densified, each once: as fast as a dense weight matrix,
    without holding one (600 classes × 150k features would be 350 MB). The vocabulary is cut into fixed ranges of
    at most ``_DENSE_BUDGET`` (feature, class) cells, so thousands of classes over long descriptions stay bounded,
    and a product's score is summed range by range in the same order whatever else is in its batch: the same bits
    served alone or in a batch. (Blocks of products instead densified a common feature's weights once per block:
    several times the work on long texts.)
    """
    X = sp.csr_matrix(X)
    n_classes = coef_t.shape[1]
    span = max(1, _DENSE_BUDGET // max(1, n_classes))  # features of the vocabulary per range
    cols, inverse = _present(X.indices, coef_t.shape[0])
    compact = sp.csr_matrix((X.data, inverse, X.indptr), shape=(X.shape[0], len(cols)))
    cuts = np.unique(np.searchsorted(cols, np.arange(0, coef_t.shape[0] + span, span)))
    out = np.empty((X.shape[0], n_classes), dtype=np.float32)
    out[:] = intercept
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        part = compact if (a, b) == (0, len(cols)) else compact[:, a:b]
        out += np.asarray(part @ coef_t[cols[a:b]].toarray())
    return out


def _present(indices: np.ndarray, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct features of ``indices``, sorted; each index's position among them, int32): ``np.unique`` for a
    few products, a mask over the vocabulary for many (no sort of millions of indices; the same result)."""
    if len(indices) * 16 < n_features:
        cols, inverse = np.unique(indices, return_inverse=True)
        return cols, inverse.astype(np.int32).ravel()
    present = np.zeros(n_features, dtype=bool)
    present[indices] = True
    position = np.cumsum(present, dtype=np.int32)
    position -= 1
    return np.flatnonzero(present), position[indices]


_DENSE_BUDGET = 2**25
"""Cells (features present × classes) of the weights :func:`linear_scores` densifies at once: 128 MB of float32."""


MAX_CALIBRATION_ROWS = 20_000
"""Most products held out to fit the calibration (the split holds ``calibration_size`` of them up to this)."""
REFIT_ABOVE_SHARE = 0.05
"""``refit="auto"``: the model is fitted again on every product only when the calibration split held out more
than this share of them; below it (catalogues of 400k products and more) the model fitted on the rest is kept:
one fit instead of two."""
_CALIBRATION_BLOCK = 2_000
"""Held-out products whose class probabilities are computed together when the calibration is fitted."""
BEAM_ABOVE = 2_000
"""Tree models with more edges than this predict by beam descent (``beam="auto"``)."""
BEAM_WIDTH = 5


MAX_PROBLEM_ROWS = 200_000
"""``max_problem_rows="auto"``: the most products one local problem trains on (benchmarks/RESULTS.md, "A million
products")."""
FEATURES_IN_MEMORY_UP_TO = 2**30
"""Bytes of float64 training features kept in memory; larger ones are mapped from a temporary file."""


def plan_tasks(tree: LocalTree | None, y: np.ndarray, n_classes: int, rows: np.ndarray | None = None,
               max_rows: int | None = None, seed: int = 0
               ) -> tuple[list[tuple[int, np.ndarray, np.ndarray]], list[Task], list[int]]:
    """The fit of label indices ``y`` as one-vs-rest tasks: (problems as (node, rows, local labels), tasks, each
    problem's number of columns) -- one problem over all classes when flat (``tree`` None), else one per node.
    ``rows``: the rows of X that ``y`` labels (default: all of them, in order); ``max_rows``: a problem of more
    rows trains on a sample of them (:func:`~taxonomist.models.ovr.capped`, drawn with ``seed``)."""
    if tree is None:
        problems = [(0, np.arange(len(y)), y)]
        sizes = [n_classes]
    else:
        problems = tree.problems(y)
        sizes = [int(tree.sizes[node]) for node, _r, _l in problems]
    if rows is not None:
        problems = [(node, rows[r], local) for node, r, local in problems]
    if max_rows is not None:
        problems = [(node, *capped(r, local, max_rows, seed=(seed, node))) for node, r, local in problems]
    tasks = [t for p, (_node, rows, local) in enumerate(problems) for t in local_tasks(rows, local, problem=p)]
    return problems, tasks, sizes


def _in_memory(first: sp.csr_matrix, n: int) -> bool:
    """Whether the float64 features of ``n`` products, estimated from a first block of them, fit in memory."""
    return bool(CSR_BYTES_PER_VALUE * first.nnz / max(1, first.shape[0]) * n <= FEATURES_IN_MEMORY_UP_TO)


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
        hierarchy: ``"flat"``: one-vs-rest over all classes (each problem sees every product); ``"top-down"``:
            one local problem per inner node of the class paths (each product trains only against its siblings,
            so the cost grows with the tree's depth and branching instead of the number of leaves), decoded
            softly -- a class's probability is the product of its path's local probabilities, each level's
            softmax temperature fitted on the calibration split; ``"two-level"``: the same with two stages -- one
            problem over the categories at one depth (the top level, or deeper where that costs less to fit:
            :func:`split_depth`), then one flat problem over the leaves under each; ``"auto"``: two-level when the flat fit would be large (classes × products above
            ``TOP_DOWN_ABOVE``) and the classes have more than one level, else flat (``hierarchy_`` says which).
        engine: where the one-vs-rest columns are fitted: ``"local"`` (worker processes) or ``"ray"`` (Ray tasks;
            the same model). See :func:`taxonomist.models.ovr.run_tasks`.
        checkpoint: a folder that keeps each finished part of the fit, so an interrupted fit resumes.
        refit: after calibrating on the held-out split, fit again on every product (``True``), keep the model
            fitted on the rest (``False``), or ``"auto"``: refit unless the split was at most
            ``REFIT_ABOVE_SHARE`` of the products (the split holds at most ``MAX_CALIBRATION_ROWS``, so a large
            catalogue is fitted once). ``refitted_`` says which.
        max_problem_rows: the most products one local problem trains on; above, a sample of them in its
            labels' own proportions, each label keeping at least ``max_problem_rows / (2 × labels)`` (all of its
            products when it has fewer): the first stage of a two-level fit over a million products, or a flat
            fit, then costs a bounded time and memory (liblinear copies a problem's rows, 16 bytes per stored
            value, once per worker) -- and some accuracy (benchmarks/RESULTS.md, "A million products").
            ``"auto"``: ``MAX_PROBLEM_ROWS``; ``None``: every product.
        beam: how a tree model predicts: ``0`` scores every edge (exact); ``k`` descends level by level into
            each product's ``k`` most probable nodes only (:func:`~taxonomist.models.beam.beam_descent`; cost grows with
            depth, not classes; :meth:`predict` enters a node whose children are all leaves only when it could
            hold a better leaf than the best one found); ``"auto"``: exact up to ``BEAM_ABOVE`` edges, else
            ``BEAM_WIDTH``.

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
        hierarchy: Literal["flat", "two-level", "top-down", "auto"] = "flat",
        engine: Literal["local", "ray"] = "local",
        checkpoint: str | None = None,
        beam: int | Literal["auto"] = "auto",
        refit: bool | Literal["auto"] = "auto",
        max_problem_rows: int | Literal["auto"] | None = "auto",
    ) -> None:
        self.C = C
        self.class_weight = class_weight
        self.calibration = calibration
        self.calibration_size = calibration_size
        self.prune = prune
        self.encoder = encoder
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.hierarchy = hierarchy
        self.engine = engine
        self.checkpoint = checkpoint
        self.beam = beam
        self.refit = refit
        self.max_problem_rows = max_problem_rows

    def _max_rows(self) -> int | None:
        m = self.max_problem_rows
        if m == "auto":
            return MAX_PROBLEM_ROWS
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 2):
            raise ValueError(f"max_problem_rows must be 'auto', None or an integer of at least 2, got {m!r}")
        return None if m is None else int(m)

    def _run_tasks(self, X: sp.csr_matrix, tasks: list[Task], sizes: list[int]) -> list[tuple[sp.csr_matrix, np.ndarray]]:
        params = {"C": self.C, "class_weight": self.class_weight, "random_state": self.random_state, "prune": self.prune}
        return run_tasks(X, tasks, sizes, params, n_jobs=self.n_jobs, engine=self.engine, checkpoint=self.checkpoint)

    def fit(self, X: Any, y: Sequence[str], groups: Sequence[int] | np.ndarray | None = None) -> SparseClassifier:
        """Fit on texts ``X`` (or :class:`Encoded` products: their encoder is then this model's) and labels ``y``;
        ``groups`` (e.g. title groups) keep duplicates together in the calibration split."""
        n = len(X) if isinstance(X, Encoded) else len(as_pairs(X)[0])
        y_arr = np.asarray([str(v) for v in y], dtype=object)
        if len(y_arr) != n:
            raise ValueError(f"expected one label per product: {n} products, {len(y_arr)} labels")
        self.classes_, y_idx = np.unique(y_arr, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"expected at least 2 categories to learn, found {len(self.classes_)}: {list(self.classes_)}")
        self.hierarchy_ = resolve_hierarchy(self.hierarchy, list(self.classes_), n)
        self.split_depth_ = split_depth(list(self.classes_), np.bincount(y_idx)) if self.hierarchy_ == "two-level" else 1
        self.tree_ = local_tree(self.hierarchy_, list(self.classes_), self.split_depth_)
        self.level_temperatures_ = (np.full(self.tree_.n_levels, DEFAULT_LOCAL_TEMPERATURE)
                                    if self.tree_ is not None else None)
        self._max_rows()
        if not isinstance(X, Encoded):
            encoder, Xs, blocks = self._encode(X)
            if Xs is None:
                self.encoder_ = encoder
                with tempfile.TemporaryDirectory(prefix="taxonomist-features-", ignore_cleanup_errors=True) as folder:
                    Xs = mapped_rows(blocks, encoder.n_features_out_, folder)
                    logger.info("training features: %d products, %d stored values, mapped from a temporary file",
                                Xs.shape[0], Xs.nnz)
                    return self._fit_on_features(Xs, y_idx, groups)
            X = Encoded(encoder, Xs)
        self.encoder_ = X.encoder
        return self._fit_on_features(X.X, y_idx, groups)

    def encode(self, X: Any) -> Encoded | None:
        """The products' features for :meth:`fit` and the predictions of this model and of models fitted on a part
        of them (the encoder fitted here on all of them, unfitted itself); ``None`` when they would not fit in
        memory (then each fit encodes its own products)."""
        encoder, Xs, _ = self._encode(X)
        return None if Xs is None else Encoded(encoder, Xs)

    def _encode(self, X: Any) -> tuple[Any, sp.csr_matrix | None, Iterator[sp.csr_matrix]]:
        """(a new encoder fitted on the texts ``X``, their features as float64 CSR -- liblinear's type, made once:
        the fits index its rows instead of holding copies of them -- or ``None`` when they would not fit in memory,
        and then their blocks of features to map from a file)."""
        titles, contexts = as_pairs(X)
        encoder = clone(self.encoder) if self.encoder is not None else SparseTextEncoder()
        encoder.fit(titles, contexts)
        blocks = encoder.transform_blocks(titles, contexts)
        first = next(blocks)
        if _in_memory(first, len(titles)):
            return encoder, sp.csr_matrix(sp.vstack([first, *blocks], format="csr", dtype=np.float64)), iter(())
        return encoder, None, itertools.chain([first], blocks)

    def features(self, X: Any) -> sp.csr_matrix:
        """The products' features: given (:class:`Encoded` by this model's encoder), or computed from texts."""
        if isinstance(X, Encoded):
            if X.encoder is not self.encoder_:
                raise ValueError("these products were encoded by another encoder than this model's")
            return X.X.astype(np.float32)  # as the encoder's own transform gives them
        return self.encoder_.transform(*as_pairs(X))

    def _fit_on_features(self, Xs: sp.csr_matrix, y_idx: np.ndarray, groups: Sequence[int] | np.ndarray | None
                      ) -> SparseClassifier:
        """The fit on the products' features ``Xs`` (float64) and label indices."""
        n = Xs.shape[0]
        self.temperature_ = 1.0
        self.top_label_: tuple[np.ndarray, np.ndarray] | None = None
        if self.calibration not in ("temperature", "temperature+isotonic", "none"):
            raise ValueError(f"calibration must be 'temperature', 'temperature+isotonic' or 'none', got {self.calibration!r}")
        self.refitted_ = True
        fitted: tuple[sp.csr_matrix, np.ndarray] | None = None
        if self.calibration != "none" and n >= 20:
            g = np.asarray(groups) if groups is not None else np.arange(n)
            share = min(self.calibration_size, MAX_CALIBRATION_ROWS / len(np.unique(g)))
            split = GroupShuffleSplit(n_splits=1, test_size=share, random_state=self.random_state)
            fit_idx, cal_idx = next(split.split(Xs, y_idx, g))
            coef, intercept = self._fit_model(Xs, y_idx[fit_idx], rows=fit_idx)
            if self.refit is False or (self.refit == "auto" and len(cal_idx) <= REFIT_ABOVE_SHARE * n):
                fitted, self.refitted_ = (coef, intercept), False
            if len(cal_idx) > MAX_CALIBRATION_ROWS:  # enough to fit a temperature and a monotone map; bounded memory
                rng = np.random.default_rng(self.random_state)
                cal_idx = np.sort(rng.choice(cal_idx, MAX_CALIBRATION_ROWS, replace=False))
            scores = linear_scores(Xs[cal_idx].astype(np.float32), coef.T.tocsr(), intercept)  # as predict scores
            seen = np.isin(y_idx[cal_idx], np.unique(y_idx[fit_idx]))
            y_seen = y_idx[cal_idx][seen]
            scores = scores[seen]
            if self.tree_ is not None:
                self.level_temperatures_ = self.tree_.fit_temperatures(scores, y_seen)
                logger.info("calibration: level temperatures %s fitted on %d held-out products",
                            np.round(self.level_temperatures_, 4).tolist(), int(seen.sum()))
            else:
                self.temperature_ = fit_temperature(scores, y_seen)
                logger.info("calibration: temperature %.4f fitted on %d held-out products", self.temperature_, int(seen.sum()))
            if self.calibration == "temperature+isotonic":
                self.top_label_ = fit_top_label(*self._top_probability(scores, y_seen))
        if fitted is None:
            fitted = self._fit_model(Xs, y_idx)
        else:
            logger.info("kept the model fitted on %d products (%d held out for calibration: one fit)",
                        n - len(cal_idx), len(cal_idx))
        self.coef_, self.intercept_ = fitted
        self.drop_prediction_caches()  # (cut again from these weights when first needed)
        self.n_features_in_ = Xs.shape[1]
        return self

    def _top_probability(self, scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each product's top calibrated probability and whether its class is ``y``, from its margins: the class
        log-probabilities (tree) and the softmax computed ``_CALIBRATION_BLOCK`` rows at a time -- a block of
        20,000 held-out products × 5,000 classes is 800 MB of float64 per temporary."""
        tops, hits = [], []
        for a in range(0, len(scores), _CALIBRATION_BLOCK):
            block = scores[a:a + _CALIBRATION_BLOCK]
            if self.tree_ is not None and self.level_temperatures_ is not None:
                block = self.tree_.log_proba(block, self.level_temperatures_)
            p = softmax_with_temperature(block, self.temperature_)
            tops.append(p.max(axis=1))
            hits.append(p.argmax(axis=1) == y[a:a + _CALIBRATION_BLOCK])
        return np.concatenate(tops), np.concatenate(hits)

    def _fit_model(self, X: sp.csr_matrix, y: np.ndarray, rows: np.ndarray | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
        """(coef, intercept): one row per class (flat) or per edge of the local tree (top-down), fitted on
        ``rows`` of X (default: all) with labels ``y``."""
        tree = self.tree_
        problems, tasks, sizes = plan_tasks(tree, y, len(self.classes_), rows, self._max_rows(), self.random_state)
        fitted = self._run_tasks(X, tasks, sizes)
        if tree is None:  # one problem over every class
            (coef, intercept), = fitted
            return coef, intercept
        blocks: list[sp.csr_matrix] = []
        intercept = np.zeros(tree.n_edges, dtype=np.float32)  # a node's only child: log-probability 0
        by_node = {node: f for (node, _r, _l), f in zip(problems, fitted, strict=True)}
        for n, (start, size) in enumerate(zip(tree.starts, tree.sizes, strict=True)):
            if n in by_node:
                w, b = by_node[n]
                blocks.append(w)
                intercept[start:start + size] = b
            else:  # one child, or no training row under the node (its classes are all unseen here)
                blocks.append(sp.csr_matrix((int(size), X.shape[1]), dtype=np.float32))
                if size > 1:
                    intercept[start:start + size] = -1e3
        return sp.vstack(blocks, format="csr"), intercept

    def _check(self) -> None:
        try:
            check_is_fitted(self, "coef_")
        except Exception:
            raise NotFittedError(
                "this SparseClassifier is not fitted yet; call fit(X, y) or load a trained bundle first"
            ) from None

    def decision_function(self, X: Any) -> np.ndarray:
        self._check()
        beam = self._beam(X)
        if beam is not None:
            return beam.log_proba()
        scores = linear_scores(self.features(X), self._weights_t(), self.intercept_)
        tree = getattr(self, "tree_", None)
        return tree.log_proba(scores, self.level_temperatures_) if tree is not None else scores

    def drop_prediction_caches(self) -> None:
        """Forget the weights cut for prediction (transposed; node by node for a beam): they are cut again on the
        next prediction. For models that predict once (the folds of a cross-validation), whose caches would
        otherwise add up (benchmarks/RESULTS.md, "The ensemble's training cost")."""
        self._coef_t: sp.csr_matrix | None = None
        self._node_weights: NodeWeights | None = None

    def _weights_t(self) -> sp.csr_matrix:
        """The weights as features × classes (or edges), CSR with sorted indices: built once, kept."""
        coef_t: sp.csr_matrix | None = getattr(self, "_coef_t", None)
        if coef_t is None:
            coef_t = self._coef_t = self.coef_.T.tocsr()
        if not coef_t.has_sorted_indices:  # (the beam's node-major weights read each feature's edges in order)
            coef_t.sort_indices()
        return coef_t

    def _beam(self, X: Any, exact_top: int | None = None) -> BeamResult | None:
        """The beam descent's compact result for these products, or ``None`` when this model scores every class;
        ``exact_top``: see :func:`~taxonomist.models.beam.beam_descent`."""
        tree, width = getattr(self, "tree_", None), self._beam_width()
        if tree is None or not width:
            return None
        weights: NodeWeights | None = getattr(self, "_node_weights", None)
        if weights is None:  # (cut from the weights once, kept)
            weights = self._node_weights = node_major_weights(tree, self._weights_t())
        assert self.level_temperatures_ is not None
        return beam_descent(tree, self.features(X), weights, self.intercept_,
                            self.level_temperatures_, width, exact_top)

    def beam_predictions(self, X: Any, index: LevelIndex, top_k: int = 3,
                         min_confidence: float | None = None) -> list[Prediction] | None:
        """The hierarchy-aware predictions of :func:`~taxonomist.models.hierarchy.decode` over
        :meth:`predict_proba`, read from the beam's compact result (:func:`~taxonomist.models.beam.beam_predictions`);
        ``None`` when this model does not predict by beam descent."""
        self._check()
        beam = self._beam(X)
        if beam is None:
            return None
        return beam_predictions(beam, index, self.temperature_, self.top_label_, top_k, min_confidence)

    def _beam_width(self) -> int:
        """The beam of :meth:`decision_function` (0: every edge scored)."""
        tree = getattr(self, "tree_", None)
        beam = getattr(self, "beam", "auto")
        if tree is None:
            return 0
        if beam == "auto":
            return BEAM_WIDTH if tree.n_edges > BEAM_ABOVE else 0
        return int(beam)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated probabilities, shape (n, n_classes), columns in ``classes_`` order."""
        proba = softmax_with_temperature(self.decision_function(X), self.temperature_)
        return apply_top_label(proba, self.top_label_) if self.top_label_ is not None else proba

    def predict(self, X: Any) -> np.ndarray:
        self._check()
        beam = self._beam(X, exact_top=1)  # (the best leaf is the whole beam's, with fewer nodes scored)
        best = beam.top(1)[0][:, 0] if beam is not None else np.argmax(self.decision_function(X), axis=1)
        return np.asarray(self.classes_[best])

    def explain(self, title: str, context: str, class_index: int, top: int = 5) -> list[tuple[str, float]]:
        """The features that pushed one product towards one class, with their contribution to the score."""
        self._check()
        x = self.encoder_.transform([title], [context]).tocsr()
        w = self._class_weights(class_index)
        contrib = x.data * w[x.indices]
        order = np.argsort(-contrib)[:top]
        names: Any = self.encoder_.names_of(title, context) if self.encoder_.n_features is not None else self._feature_names()
        return [(str(names[x.indices[i]]), float(contrib[i])) for i in order if contrib[i] > 0]

    def _class_weights(self, class_index: int) -> np.ndarray:
        """The weight of each feature towards one class: its row of ``coef_`` (flat), or the sum of the rows of
        the edges on its path, each divided by its level's temperature (top-down)."""
        tree = getattr(self, "tree_", None)
        if tree is None:
            return np.asarray(self.coef_[[class_index]].toarray()).ravel()
        edges = tree.class_edges[class_index]
        assert self.level_temperatures_ is not None
        scale = 1.0 / self.level_temperatures_[tree.level[edges]]
        return np.asarray(self.coef_[edges].T @ scale).ravel()

    def _feature_names(self) -> np.ndarray:
        if getattr(self, "_names_cache", None) is None:
            self._names_cache = np.asarray(self.encoder_.feature_names())
        return self._names_cache

    # -- safe persistence ----------------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        self._check()
        enc_params, enc_arrays, vocab = self.encoder_.get_state()
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "encoder"}
        params.update(temperature_=self.temperature_, encoder=enc_params, hierarchy_=self.hierarchy_,
                      split_depth_=self.split_depth_)
        # stored transposed (features × classes, CSR): the layout scoring uses, so loading converts nothing
        coef_t = self._weights_t()
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
        if getattr(self, "tree_", None) is not None:
            arrays["level_temperatures"] = np.asarray(self.level_temperatures_, dtype=np.float64)
        return params, arrays, {"vocabulary": vocab, "classes": [str(c) for c in self.classes_]}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray], objects: dict[str, Any]) -> SparseClassifier:
        p = dict(params)
        temperature = float(p.pop("temperature_"))
        p.pop("hierarchy_", None)
        p.pop("split_depth_", None)
        encoder = SparseTextEncoder.from_state(p.pop("encoder"), arrays, objects["vocabulary"])
        clf = cls(**p)
        clf.encoder_ = encoder
        clf.classes_ = np.asarray(objects["classes"], dtype=object)
        n_features, n_classes = (int(v) for v in arrays["coef_t_shape"])
        clf._coef_t = sp.csr_matrix((arrays["coef_t_data"], arrays["coef_t_indices"], arrays["coef_t_indptr"]),
                                    shape=(n_features, n_classes))
        # index bounds and pointer order checked before anything reads them: out-of-range or negative indices
        # (a bundle edited and re-hashed) would read memory out of bounds in the scoring kernels
        clf._coef_t.check_format(full_check=True)
        clf.coef_ = clf._coef_t.T  # a CSC view, classes × features, as scikit-learn lays coef_ out
        shape = (n_classes, n_features)
        clf.intercept_ = np.asarray(arrays["intercept"], dtype=np.float32)
        clf.temperature_ = temperature
        clf.top_label_ = (arrays["top_label_x"], arrays["top_label_y"]) if "top_label_x" in arrays else None
        clf.n_features_in_ = shape[1]
        clf.hierarchy_ = str(params.get("hierarchy_", clf.hierarchy))
        clf.split_depth_ = int(params.get("split_depth_", 1))
        clf.tree_ = local_tree(clf.hierarchy_, list(clf.classes_), clf.split_depth_)
        clf.level_temperatures_ = None
        rows = len(clf.classes_)
        if clf.tree_ is not None:  # the tree is rebuilt from the class paths; the bundle keeps its temperatures
            rows = clf.tree_.n_edges
            clf.level_temperatures_ = np.asarray(arrays["level_temperatures"], dtype=np.float64)
            if len(clf.level_temperatures_) != clf.tree_.n_levels:
                raise ValueError(f"{len(clf.level_temperatures_)} level temperatures for a tree of {clf.tree_.n_levels} levels")
        if shape[0] != rows or shape[1] != encoder.n_features_out_:
            what = "edges of the class tree" if clf.tree_ is not None else "classes"
            raise ValueError(f"weights of shape {shape} do not match {rows} {what} and {encoder.n_features_out_} features")
        return clf
