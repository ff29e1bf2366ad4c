"""TaxonomyClassifier: the one model API. It composes the catalogue's fields, a tier and hierarchy decoding.

A product is a mapping with ``title`` and optional ``description``, ``image`` and any attributes; a
:class:`~taxonomist.catalog.Catalog`, a pandas DataFrame, a list of dicts, a list of title strings or a
:class:`~taxonomist.products.ProductBatch` are all accepted wherever products are (each becomes a
``ProductBatch`` once). The work is done by parts: :mod:`taxonomist.fitting` (the parameters, checked, become a
model), :mod:`taxonomist.prediction` (what a model reads, its probabilities, two-step prediction),
:mod:`taxonomist.explain` and :mod:`taxonomist.persistence`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from .exceptions import NotFittedError, TaxonomistError
from .explain import explain_predictions
from .fitted_parts import FittedParts
from .fitting import (
    ZERO_SHOT_HIERARCHY,
    ZERO_SHOT_LEXICAL,
    ZERO_SHOT_MIN_CONFIDENCE,
    fit_model,
    labels_of,
    zero_shot_ensemble,
)
from .models.hierarchy import LevelIndex, Prediction, decode, predictions_frame
from .models.sparse import SparseClassifier
from .monitoring import DriftReference
from .params import Parameters, check_params
from .persistence import load_classifier, save_classifier
from .prediction import Pending, Reader, complete, defer, ensemble_proba
from .products import Images, ProductBatch
from .review_flags import review_flags, stuffing_flags
from .taxonomy import CategoryPath, Taxonomy, parse_path

__all__ = ["ZERO_SHOT_MIN_CONFIDENCE", "TaxonomyClassifier", "load"]

logger = logging.getLogger(__name__)


class TaxonomyClassifier(Parameters, FittedParts, ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Classify products into a category taxonomy (docs/models.md says how each choice was measured).

    Args:
        tier: ``"ensemble"`` (default: the sparse member + nearest neighbours + a zero-shot prior over a text
            encoder; members, weights, prior shift, calibration and cascade chosen by cross-validation on the
            training data, the sparse tier alone when nothing else helps), ``"sparse"`` (TF-IDF + linear SVM, no
            transformer), ``"embed"`` (a logistic head and neighbours on frozen embeddings), ``"finetune"`` (the
            transformer fine-tuned end to end, pooled with the sparse tier) or ``"zeroshot"`` (:meth:`from_taxonomy`).
        min_confidence: back off to the deepest ancestor whose probability clears this (``None``: always the leaf).
        C: regularisation of the sparse member's linear SVM.
        title_weight, context_weight: weights of the title and of description + attributes in the features.
        description_chars: how much of each description is read: its first N characters, ``None`` all, or
            ``"auto"``: where descriptions are long, all or the first 300, chosen on held-out training data
            (``context_weight="auto"``: 0.5, or 1.0 there when better; ``context_weight_`` says which).
        class_weight: ``None`` or ``"balanced"``.
        use_attributes: read non-numeric attribute columns (brand, colour, ...) as text.
        calibration: how scores become probabilities (:class:`~taxonomist.models.SparseClassifier`); ``"none"``
            skips the second fit, e.g. while tuning (the decisions are the same).
        random_state: seed of the splits and samples.
        encoder: text encoder of the embedding members: ``"auto"`` (``e5-multilingual`` for CJK catalogues, else
            ``minilm-en``), a preset, a local model folder / ONNX file, or a locally cached model name.
        encoder_backend: ``"auto"``, ``"torch"`` or ``"onnx"``.
        max_length: tokens per text for the encoder.
        embed_context: what the embedding members read: ``False`` the title, ``True`` the title with the start
            of its context, ``"auto"`` both compared out of fold (``stacking_["embedding"]`` says which).
        members: ensemble members (default per tier; the ensemble tier adds ``joint`` on catalogues of at most
            4,000 training products) among ``sparse``, ``knn``, ``zeroshot``, ``embed``, ``joint``, ``finetune``,
            ``image``, ``fused``.
        knn_k: neighbours that vote in the ``knn`` member.
        validation_size: share of title groups held out when one split is used (``cv < 2``, or fine-tuning).
        cv: grouped folds of the out-of-fold predictions the ensemble is chosen on (``stacking_``: what and why).
        epochs, finetune_max_length: fine-tuning epochs (the best on validation is kept) and tokens per text.
        prior_shift: logit adjustment against the class prior (rare leaves' recall): ``"auto"`` chosen out of
            fold, or a number (:func:`taxonomist.models.ensemble.prior_shift`).
        image_encoder: read product photos (the ``image`` field): ``"effnet-lite0"``, ``"effnet-lite2"`` or a
            local ``.onnx`` feature extractor; ``None`` (default): text only.
        image_views: views of each photo averaged (1 as it is, 2 + mirrored, 3 + its central 80 %, 4 + that mirrored).
        fusion: ``"late"`` (an image head pooled with the text members) or ``"early"`` (one head on both).
        image_root: the folder relative image paths resolve under and no path may leave (default: the
            catalogue file's folder when given a :class:`Catalog`, else the working folder).
        allow_remote_images: fetch ``http(s)://`` images (off: a server must not fetch arbitrary addresses; on:
            size-limited downloads, 10 s timeout).
        cascade: a text-only ensemble answers from its sparse member alone where it is sure enough (the lowest
            threshold that costs nothing out of fold; ``cascade_``), encoding only the other products.
        dp_epsilon, dp_delta: train the sparse tier with (ε, δ)-differential privacy per training row
            (:class:`~taxonomist.models.private.PrivateLinearClassifier`, docs/privacy.md); ``None``: without.
        n_jobs: worker processes of the sparse member's one-vs-rest fits (``None``: the cores, at most 2; each
            holds a copy of the features below 1 GB and of the rows it fits).
        hierarchy: how the sparse member learns the tree: ``"flat"``, ``"two-level"``, ``"top-down"`` or
            ``"auto"`` (two-level for large problems; :class:`~taxonomist.models.SparseClassifier`).
        engine: where the sparse member's columns are fitted: ``"local"`` or ``"ray"`` (docs/scale.md).
        checkpoint: a folder keeping the sparse member's finished parts, so an interrupted fit resumes.
        max_problem_rows: the most products one local problem of the sparse member trains on (``"auto"``:
            200,000; ``None``: all); above, a sample in its labels' proportions.
        max_embedded: the most training products a text-only ensemble encodes (``None``: all); above, the
            embedding members and the cross-validation learn from a sample per category (categories of at most
            20 products whole) while the sparse member learns from every product.

    Example:
        >>> clf = TaxonomyClassifier().fit(catalog)                           # doctest: +SKIP
        >>> clf.predict_products([{"title": "Nike running shoes"}], top_k=3)  # doctest: +SKIP
    """

    # -- what the model reads -------------------------------------------------------------------------------
    @property
    def reader_(self) -> Reader:
        """What the fitted model reads of each product (:class:`~taxonomist.prediction.Reader`)."""
        return Reader(tuple(self.text_attributes_), getattr(self, "description_chars_", None), self.tier == "zeroshot",
                      self.image_encoder_, self.image_root, self.allow_remote_images)

    def _check(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                "this TaxonomyClassifier is not fitted yet; call fit(catalog) or taxonomist.load(MODEL_DIR)"
            )

    # -- fit ----------------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Sequence[str] | None = None, taxonomy: Taxonomy | None = None) -> TaxonomyClassifier:
        """Fit on products ``X`` with category paths ``y`` (or the catalogue's ``category`` column).

        Args:
            X: a Catalog, DataFrame, list of dicts, list of titles or ProductBatch.
            y: category paths (``"A > B > C"`` strings or tuples); taken from ``X['category']`` when omitted.
            taxonomy: the full taxonomy, when the labels come from one (kept in the bundle for back-off and
                browsing); otherwise the tree is built from the labels.
        """
        spec = Parameters(**self.get_params())  # (a copy: the fit never changes the estimator's parameters)
        check_params(spec)
        batch = ProductBatch.from_any(X)
        labels = labels_of(batch, y)
        fitted = fit_model(spec, batch, labels)
        self.hierarchy_ = fitted.hierarchy  # (resolved: flat, two-level or top-down)
        private = self.dp_epsilon is not None  # nothing computed from the rows outside the DP mechanism is kept
        self.set_fitted(fitted.model, taxonomy, text_attributes=fitted.text_attributes,
                        description_chars=fitted.description_chars,
                        fingerprint="" if private else batch.fingerprint(labels),
                        n_train=0 if private else len(batch),
                        title_hashes=None if private else np.unique(batch.title_hashes()))
        return self

    def set_fitted(self, model: Any, taxonomy: Taxonomy | None, text_attributes: Sequence[str] = (),
                   description_chars: int | None = None, fingerprint: str = "", n_train: int = 0,
                   title_hashes: np.ndarray | None = None,
                   metrics: Mapping[str, Any] | None = None, drift_reference: DriftReference | None = None) -> None:
        """Set the learned attributes: one place for a fitted model, a loaded bundle and a zero-shot model."""
        self.model_ = model
        self.classes_ = np.asarray(model.classes_ if isinstance(model, SparseClassifier) else model.classes, dtype=object)
        self.text_attributes_ = list(text_attributes)
        self.description_chars_ = description_chars
        self.taxonomy_ = taxonomy if taxonomy is not None else Taxonomy.from_paths(self.classes_)
        self.levels_ = LevelIndex.build(list(self.classes_))
        self.fingerprint_ = fingerprint
        self.n_train_ = n_train
        self.train_title_hashes_ = np.zeros(0, dtype=np.int64) if title_hashes is None else title_hashes
        self.metrics_: dict[str, Any] = dict(metrics or {})
        # set by whoever has held-out products (train does)
        self.drift_reference_: DriftReference | None = drift_reference
        if not hasattr(self, "hierarchy_"):
            self.hierarchy_ = getattr(self.sparse_member, "hierarchy_", "flat")

    # -- no training data / new categories ---------------------------------------------------------------
    @classmethod
    def from_taxonomy(
        cls,
        taxonomy: Taxonomy,
        encoder: str = "auto",
        sample_texts: Sequence[str] = (),
        descriptions: Mapping[CategoryPath, str] | None = None,
        examples: Mapping[CategoryPath, Sequence[str]] | None = None,
        temperature: float = 0.03,
        min_confidence: float | None = ZERO_SHOT_MIN_CONFIDENCE,
        encoder_backend: Literal["auto", "torch", "onnx"] = "auto",
        max_length: int = 64,
        lexical: float = ZERO_SHOT_LEXICAL,
        hierarchy: float = ZERO_SHOT_HIERARCHY,
        adapt: Literal["auto", "general", "own"] | None = "auto",
    ) -> TaxonomyClassifier:
        """A zero-shot classifier into ``taxonomy``'s leaves, from the category names alone (no training data).

        Args:
            taxonomy: e.g. ``Taxonomy.builtin("google")`` or ``Taxonomy.load("categories.txt")``.
            encoder: ``"auto"``: ``e5-multilingual`` when ``sample_texts`` (some products' titles with their
                descriptions) are not English or are CJK (they are classified into an English taxonomy too).
            descriptions, examples: optional text, and example titles (few-shot), per category.
            temperature: softmax temperature over the categories' cosine similarities.
            min_confidence: back off to the deepest category whose probability clears it (``None``: always a leaf).
            lexical: weight of the share of a category's own name the title contains (so that "Boots" wins over
                "Boot Liners" for a boot; :func:`~taxonomist.models.zeroshot.name_coverage`); 0: embeddings alone.
            hierarchy: weight of the similarity to a category's parent in its score; 0: its own vector alone.
            adapt: adapt each batch of products to its catalogue (:mod:`taxonomist.models.transduction`):
                ``"general"`` (a shop in a taxonomy of thousands of categories), ``"own"`` (the catalogue's own
                taxonomy), ``"auto"`` (general for Google's and Shopify's taxonomies), ``None`` (each product alone).
        """
        clf = cls(tier="zeroshot", encoder=encoder, min_confidence=min_confidence, encoder_backend=encoder_backend,
                  max_length=max_length, use_attributes=False, embed_context=True)
        clf.set_fitted(zero_shot_ensemble(taxonomy, encoder, sample_texts, descriptions, examples, temperature,
                                          encoder_backend, max_length, lexical, adapt, hierarchy), taxonomy)
        return clf

    def add_category(
        self, path: str | Sequence[str], description: str | None = None, examples: Sequence[str] = ()
    ) -> None:
        """Add a category to a fitted model without retraining (embedding tiers).

        The new category is scored by the zero-shot member from its path (and ``description``), and by the
        nearest-neighbour member from ``examples`` when given; members that never saw it abstain on it.
        """
        self._check()
        ens = self.ensemble_
        if ens is None:
            raise TaxonomistError("adding a category without retraining needs an embedding tier; this model is "
                                  "'sparse' -- train the ensemble tier, or retrain with examples of the category")
        new = parse_path(path) if isinstance(path, str) else tuple(path)
        ens.add_class(new, description, examples)
        self.classes_ = np.asarray(ens.classes, dtype=object)
        self.levels_ = LevelIndex.build(list(self.classes_))
        if new not in self.taxonomy_:
            self.taxonomy_.add(new)

    def stuffing_flags(self, titles: Sequence[str], min_words: int | None = None,
                       min_confidence: float = 0.6) -> list[bool]:
        """Which titles look keyword-stuffed (see :func:`taxonomist.review_flags.stuffing_flags`)."""
        self._check()
        return stuffing_flags(self.sparse_member, titles, min_words, min_confidence)

    def review_flags(self, titles: Sequence[str]) -> list[str | None]:
        """Why a person should look at each product whatever the model's confidence: ``"keyword_stuffing"``,
        ``"unrecognised"`` or ``None`` (see :func:`taxonomist.review_flags.review_flags`)."""
        self._check()
        return review_flags(self.sparse_member, titles)

    # -- predict ------------------------------------------------------------------------------------------
    def predict_proba(self, X: Any, modality: str = "all") -> np.ndarray:
        """Leaf probabilities, shape (n, n_classes), columns in ``classes_`` order.

        ``modality`` (models fitted with photos): ``"text"`` or ``"image"`` scores one modality alone."""
        self._check()
        batch = ProductBatch.from_any(X)
        reader = self.reader_
        return self.proba_of(reader.texts(batch), reader.photos(batch), modality)[0]

    def proba_of(self, pairs: tuple[list[str], list[str]], img: Images | None = None, modality: str = "all",
                 sparse_log: np.ndarray | None = None, known: Sequence[str | None] | None = None,
                 adapt_to_batch: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Leaf probabilities of products already read (``reader_``), and their embeddings
        when the ensemble computed them (:func:`~taxonomist.prediction.ensemble_proba`); ``known`` as in
        :meth:`predict_products`; ``adapt_to_batch=False``: a zero-shot model answers each product alone, for
        batches that are not one catalogue."""
        if isinstance(self.model_, SparseClassifier):
            return self.model_.predict_proba(pairs), None
        return ensemble_proba(self.model_, pairs, img, modality, sparse_log, known,
                              adapt=adapt_to_batch and self.tier == "zeroshot")

    def predict(self, X: Any) -> np.ndarray:
        """The most probable leaf path of each product (strings ``"A > B > C"``)."""
        self._check()
        if isinstance(self.model_, SparseClassifier):
            return self.model_.predict(self.reader_.texts(X))
        return np.asarray(self.classes_[np.argmax(self.predict_proba(X), axis=1)])

    def predict_products(self, X: Any, top_k: int = 3, min_confidence: float | None = None,
                         explain: bool = False, known: Sequence[str | None] | None = None) -> list[Prediction]:
        """Hierarchy-aware predictions with confidences per level, alternatives and back-off.

        Args:
            X: products (a single dict or title string is accepted too).
            top_k: number of alternative leaves.
            min_confidence: overrides the model's ``min_confidence`` for this call.
            explain: attach the words / n-grams that drove the sparse tier and, for the embedding tiers, the 3
                most similar labelled training products.
            known: (a zero-shot model adapted to its catalogue) the category each product already has, ``""``
                where none: those products keep it -- a leaf, or a leaf under an inner category -- and teach the
                adaptation what the shop sells (semi-supervised).
        """
        self._check()
        batch = ProductBatch.from_any([X] if isinstance(X, (str, Mapping)) else X)
        reader = self.reader_
        pairs = reader.texts(batch)
        mc = self.min_confidence if min_confidence is None else min_confidence
        emb = None
        # a sparse model of thousands of leaves reads them from its beam descent, without the dense matrix
        preds = (self.model_.beam_predictions(pairs, self.levels_, top_k, mc)
                 if isinstance(self.model_, SparseClassifier) else None)
        if preds is None:
            proba, emb = self.proba_of(pairs, img=reader.photos(batch), known=known)
            preds = decode(proba, self.levels_, top_k=top_k, min_confidence=mc)
        if explain:
            explain_predictions(self.sparse_member, self.ensemble_, preds, pairs, emb)
        return preds

    def defer(self, X: Any, top_k: int = 3,
              min_confidence: float | None = None) -> tuple[list[Prediction | None], Pending | None]:
        """The first of two steps of :meth:`predict_products` (staged serving): the predictions of the products
        the sparse member answers alone (``None`` for each other product), and what is left to :meth:`complete`
        (``None`` when nothing is). The sparse tier answers everything here; an ensemble without a cascade (or
        one that reads photos) leaves everything."""
        self._check()
        batch = ProductBatch.from_any([X] if isinstance(X, (str, Mapping)) else X)
        mc = self.min_confidence if min_confidence is None else min_confidence
        ens = self.ensemble_
        if ens is None:
            return list(self.predict_products(batch, top_k=top_k, min_confidence=mc)), None
        return defer(ens, self.reader_, self.levels_, batch, top_k, mc)

    def complete(self, pending: Sequence[Pending]) -> list[list[Prediction]]:
        """The second step for what several :meth:`defer` calls left, in one pass through the encoders: each
        call's predictions, in order (a zero-shot model answers each product alone here)."""
        self._check()
        ens = self.ensemble_
        if ens is None:
            raise TaxonomistError("the sparse tier answers every product in defer(); nothing is left to complete")
        return complete(ens, self.reader_, self.levels_, pending)

    def predict_frame(self, df: pd.DataFrame, top_k: int = 3, min_confidence: float | None = None,
                      explain: bool = False, known: Sequence[str | None] | None = None) -> pd.DataFrame:
        """Pure pandas-in / pandas-out prediction (the batch path): see
        :func:`~taxonomist.models.hierarchy.predictions_frame` for the columns; ``known`` as in
        :meth:`predict_products`."""
        batch = ProductBatch.from_any(df)
        preds = self.predict_products(batch, top_k=top_k, min_confidence=min_confidence, explain=explain, known=known)
        return predictions_frame(preds, batch.ids or [str(i) for i in range(len(batch))], explain)

    def seen_in_training(self, X: Any) -> np.ndarray:
        """Which products have a normalised title that was in the training data."""
        self._check()
        return np.isin(ProductBatch.from_any(X).title_hashes(), self.train_title_hashes_)

    # -- persistence --------------------------------------------------------------------------------------
    def save(self, directory: str | Path, metrics: Mapping[str, Any] | None = None) -> Path:
        """Save as a bundle directory (atomic; safe formats only)."""
        self._check()
        if metrics is not None:
            self.metrics_ = dict(metrics)
        return save_classifier(self, directory)

    @classmethod
    def load(cls, directory: str | Path) -> TaxonomyClassifier:
        """Load a bundle saved by :meth:`save` (verified; never unpickles)."""
        return load_classifier(cls, directory)


def load(directory: str | Path) -> TaxonomyClassifier:
    """Load a model bundle: ``taxonomist.load("model/")``."""
    return TaxonomyClassifier.load(directory)
