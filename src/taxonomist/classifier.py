"""TaxonomyClassifier: the one model API. It composes the catalogue's fields, a tier and hierarchy decoding.

A product is a mapping with ``title`` and optional ``description``, ``image`` and any attributes; a
:class:`~taxonomist.catalog.Catalog`, a pandas DataFrame, a list of dicts or a list of title strings are all
accepted wherever products are.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from . import __version__
from .bundle import read_bundle, write_bundle
from .catalog import CANONICAL_FIELDS, Catalog, title_groups
from .exceptions import BundleError, NotFittedError, TaxonomistError
from .models.hierarchy import LevelIndex, Prediction, decode
from .models.sparse import SparseClassifier
from .taxonomy import Taxonomy, format_path, parse_path
from .text import normalize_for_sparse

__all__ = ["TaxonomyClassifier", "load"]

logger = logging.getLogger(__name__)

TIERS = ("sparse",)
_NUMERIC_SHARE = 0.9


def _frame(X: Any) -> pd.DataFrame:
    """Products as a frame with at least ``title`` and ``description`` columns (strings)."""
    if isinstance(X, Catalog):
        df = X.frame
    elif isinstance(X, pd.DataFrame):
        df = X
    elif isinstance(X, str):
        raise TypeError("expected a list of products, got a single string; pass [text] or use predict_products([...])")
    elif isinstance(X, Mapping):
        df = pd.DataFrame([X])
    else:
        items = list(X)
        if all(isinstance(i, str) for i in items):
            df = pd.DataFrame({"title": items})
        elif all(isinstance(i, Mapping) for i in items):
            df = pd.DataFrame(items)
        else:
            raise TypeError("expected products as a Catalog, a DataFrame, dicts with a 'title', or title strings")
    if "title" not in df.columns:
        raise TaxonomistError(f"expected products with a 'title' field, found the fields {list(df.columns)}")
    out = df.copy()
    for col in ("title", "description"):
        if col not in out.columns:
            out[col] = ""
        out[col] = out[col].fillna("").astype(str)
    return out


def _is_numeric(values: pd.Series) -> bool:
    v = values[values != ""]
    if v.empty:
        return True
    return bool(pd.to_numeric(v, errors="coerce").notna().mean() >= _NUMERIC_SHARE)


def fingerprint(titles: Iterable[str], labels: Iterable[str]) -> str:
    """A stable digest of the (normalised title, label) rows, order-independent."""
    rows = sorted(f"{normalize_for_sparse(t)}\t{c}" for t, c in zip(titles, labels, strict=True))
    return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()[:16]


def title_hashes(titles: Iterable[str]) -> np.ndarray:
    """64-bit hashes of normalised titles (used to detect evaluation on products seen in training)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(normalize_for_sparse(t).encode(), digest_size=8).digest(), "little", signed=True)
         for t in titles],
        dtype=np.int64,
    )


class TaxonomyClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Classify products into a category taxonomy.

    Args:
        tier: the model tier (the foundation ships ``"sparse"``; transformer tiers come with later releases).
        min_confidence: back off to the deepest ancestor whose probability clears this (``None``: always the leaf).
        C: regularisation of the sparse tier's linear SVM.
        title_weight, context_weight: weights of the title and of description + attributes in the features.
        class_weight: ``None`` or ``"balanced"``.
        use_attributes: use non-numeric attribute columns (brand, colour, ...) as text features.
        calibration: how scores become probabilities (see :class:`~taxonomist.models.SparseClassifier`);
            ``"none"`` skips the second fit, e.g. while tuning (decisions are the same).
        random_state: seed for the calibration split.

    Example:
        >>> clf = TaxonomyClassifier().fit(catalog)                           # doctest: +SKIP
        >>> clf.predict_products([{"title": "Nike running shoes"}], top_k=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        tier: Literal["sparse"] = "sparse",
        min_confidence: float | None = None,
        C: float = 0.5,
        title_weight: float = 1.0,
        context_weight: float = 0.5,
        class_weight: Literal["balanced"] | None = None,
        use_attributes: bool = True,
        calibration: Literal["temperature+isotonic", "temperature", "none"] = "temperature+isotonic",
        random_state: int = 0,
    ) -> None:
        self.tier = tier
        self.min_confidence = min_confidence
        self.C = C
        self.title_weight = title_weight
        self.context_weight = context_weight
        self.class_weight = class_weight
        self.use_attributes = use_attributes
        self.calibration = calibration
        self.random_state = random_state

    # -- inputs -------------------------------------------------------------------------------------------
    def _texts(self, df: pd.DataFrame) -> tuple[list[str], list[str]]:
        cols = ["description"] + [c for c in self.text_attributes_ if c in df.columns]
        titles = df["title"].tolist()
        if len(cols) == 1:
            return titles, df["description"].tolist()
        parts = df[cols].fillna("").astype(str).to_numpy()
        return titles, [" ".join(v for v in row if v) for row in parts]

    def _check(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                "this TaxonomyClassifier is not fitted yet; call fit(catalog) or taxonomist.load(MODEL_DIR)"
            )

    # -- fit ----------------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Sequence[str] | None = None, taxonomy: Taxonomy | None = None) -> TaxonomyClassifier:
        """Fit on products ``X`` with category paths ``y`` (or the catalogue's ``category`` column).

        Args:
            X: a Catalog, DataFrame, list of dicts, or list of titles.
            y: category paths (``"A > B > C"`` strings or tuples); taken from ``X['category']`` when omitted.
            taxonomy: the full taxonomy, when the labels come from one (kept in the bundle for back-off and
                browsing); otherwise the tree is built from the labels.
        """
        if self.tier not in TIERS:
            raise ValueError(f"unknown tier {self.tier!r}; available tiers: {list(TIERS)}")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be between 0 and 1, got {self.min_confidence}")
        df = _frame(X)
        if y is None:
            if "category" not in df.columns:
                raise TaxonomistError("expected labels: pass y=... or products with a 'category' field")
            y = df["category"].tolist()
        labels = [format_path(parse_path(v) if isinstance(v, str) else tuple(v)) for v in y]
        if len(labels) != len(df):
            raise ValueError(f"expected one label per product: {len(df)} products, {len(labels)} labels")
        missing = [i for i, v in enumerate(labels) if not v]
        if missing:
            raise TaxonomistError(f"{len(missing)} products have no category (first at position {missing[0]}); "
                                  "read the catalogue with read_catalog(..., require_labels=True) to skip them")
        if len(set(labels)) < 2:
            raise TaxonomistError(
                f"expected at least 2 categories to learn, found {len(set(labels))}: {sorted(set(labels))}; "
                "a classifier needs examples of several categories"
            )
        extra = [c for c in df.columns if c not in CANONICAL_FIELDS and c != "row"]
        self.text_attributes_ = [c for c in extra if not _is_numeric(df[c].astype(str))] if self.use_attributes else []
        titles, contexts = self._texts(df)
        from .encoders.sparse import SparseTextEncoder

        encoder = SparseTextEncoder(title_weight=self.title_weight, context_weight=self.context_weight)
        self.model_ = SparseClassifier(C=self.C, class_weight=self.class_weight, encoder=encoder,
                                       calibration=self.calibration, random_state=self.random_state)
        logger.info("fitting the %s tier on %d products, %d categories", self.tier, len(df), len(set(labels)))
        self.model_.fit((titles, contexts), labels, groups=title_groups(titles))
        self.classes_ = self.model_.classes_
        self.taxonomy_ = taxonomy if taxonomy is not None else Taxonomy.from_paths(self.classes_)
        self.levels_ = LevelIndex.build(list(self.classes_))
        self.fingerprint_ = fingerprint(titles, labels)
        self.train_title_hashes_ = np.unique(title_hashes(titles))
        self.n_train_ = len(df)
        self.metrics_: dict[str, Any] = {}
        return self

    # -- predict ------------------------------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """Leaf probabilities, shape (n, n_classes), columns in ``classes_`` order."""
        self._check()
        return self.model_.predict_proba(self._texts(_frame(X)))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable leaf path of each product (strings ``"A > B > C"``)."""
        self._check()
        return self.model_.predict(self._texts(_frame(X)))

    def predict_products(
        self,
        X: Any,
        top_k: int = 3,
        min_confidence: float | None = None,
        explain: bool = False,
    ) -> list[Prediction]:
        """Hierarchy-aware predictions with confidences per level, alternatives and back-off.

        Args:
            X: products (a single dict or title string is accepted too).
            top_k: number of alternative leaves.
            min_confidence: overrides the model's ``min_confidence`` for this call.
            explain: attach the features that drove each prediction.
        """
        self._check()
        if isinstance(X, (str, Mapping)):
            X = [X]
        df = _frame(X)
        titles, contexts = self._texts(df)
        proba = self.model_.predict_proba((titles, contexts))
        mc = self.min_confidence if min_confidence is None else min_confidence
        preds = decode(proba, self.levels_, top_k=top_k, min_confidence=mc)
        if explain:
            pos = {c: i for i, c in enumerate(self.classes_)}
            for p, t, c in zip(preds, titles, contexts, strict=True):
                p.explanation = self.model_.explain(t, c, pos[format_path(p.leaf)])
        return preds

    def predict_frame(
        self, df: pd.DataFrame, top_k: int = 3, min_confidence: float | None = None, explain: bool = False
    ) -> pd.DataFrame:
        """Pure pandas-in / pandas-out prediction (the batch path): id, category, confidence, leaf, ...

        Columns: ``id``, ``category`` (the path, backed off when unsure; empty when unclassified),
        ``confidence`` (of that path's deepest node), ``level_confidence``, ``leaf``, ``leaf_confidence``,
        ``backed_off``, ``alternatives`` (top-k leaves), and ``explanation`` when ``explain`` is set.
        """
        preds = self.predict_products(df, top_k=top_k, min_confidence=min_confidence, explain=explain)
        ids = df["id"].astype(str).tolist() if "id" in df.columns else [str(i) for i in range(len(df))]
        out = pd.DataFrame({
            "id": ids,
            "category": [p.category for p in preds],
            "confidence": [round(p.score, 6) for p in preds],
            "level_confidence": [[round(c, 6) for c in p.confidence] for p in preds],
            "leaf": [format_path(p.leaf) for p in preds],
            "leaf_confidence": [round(p.leaf_confidence, 6) for p in preds],
            "backed_off": [p.backed_off for p in preds],
            "alternatives": [[{"category": c, "confidence": round(s, 6)} for c, s in p.alternatives] for p in preds],
        })
        if explain:
            explanations: list[list[dict[str, Any]]] = [
                [{"feature": f, "weight": round(w, 4)} for f, w in (p.explanation or [])] for p in preds
            ]
            out["explanation"] = pd.Series(explanations, index=out.index, dtype=object)
        return out

    def seen_in_training(self, X: Any) -> np.ndarray:
        """Which products have a normalised title that was in the training data."""
        self._check()
        return np.isin(title_hashes(_frame(X)["title"]), self.train_title_hashes_)

    # -- persistence --------------------------------------------------------------------------------------
    def save(self, directory: str | Path, metrics: Mapping[str, Any] | None = None) -> Path:
        """Save as a bundle directory (atomic; safe formats only)."""
        self._check()
        if metrics is not None:
            self.metrics_ = dict(metrics)
        params, arrays, objects = self.model_.get_state()
        arrays["train_title_hashes"] = self.train_title_hashes_
        manifest = {
            "taxonomist_version": __version__,
            "tier": self.tier,
            "config": {k: v for k, v in self.get_params().items()},
            "tier_params": params,
            "text_attributes": self.text_attributes_,
            "labels": [str(c) for c in self.classes_],
            "taxonomy": self.taxonomy_.to_dict(),
            "training_data": {"fingerprint": self.fingerprint_, "n_rows": self.n_train_},
            "metrics": self.metrics_,
        }
        return write_bundle(directory, manifest, {"weights": arrays}, objects)

    @classmethod
    def load(cls, directory: str | Path) -> TaxonomyClassifier:
        """Load a bundle saved by :meth:`save` (verified; never unpickles)."""
        bundle = read_bundle(directory)
        m = bundle.manifest
        try:
            clf = cls(**m["config"])
            if clf.tier not in TIERS:
                raise BundleError(f"{directory} uses the tier {clf.tier!r}, which this taxonomist does not have; upgrade taxonomist")
            arrays = bundle.arrays("weights")
            objects = {name: bundle.json(name) for name in ("vocabulary", "classes")}
            clf.model_ = SparseClassifier.from_state(m["tier_params"], arrays, objects)
            clf.text_attributes_ = list(m["text_attributes"])
            clf.classes_ = clf.model_.classes_
            clf.taxonomy_ = Taxonomy.from_dict(m["taxonomy"])
            clf.levels_ = LevelIndex.build(list(clf.classes_))
            clf.fingerprint_ = m["training_data"]["fingerprint"]
            clf.n_train_ = int(m["training_data"]["n_rows"])
            clf.train_title_hashes_ = arrays["train_title_hashes"]
            clf.metrics_ = dict(m.get("metrics", {}))
            clf.manifest_ = m
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{directory}: the manifest or weights are inconsistent ({type(e).__name__}: {e}); the bundle is damaged") from None
        return clf


def load(directory: str | Path) -> TaxonomyClassifier:
    """Load a model bundle: ``taxonomist.load("model/")``."""
    return TaxonomyClassifier.load(directory)
