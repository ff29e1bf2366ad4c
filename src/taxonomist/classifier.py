"""TaxonomyClassifier: the one model API. It composes the catalogue's fields, a tier and hierarchy decoding.

A product is a mapping with ``title`` and optional ``description``, ``image`` and any attributes; a
:class:`~taxonomist.catalog.Catalog`, a pandas DataFrame, a list of dicts, a list of title strings or a
:class:`~taxonomist.products.ProductBatch` are all accepted wherever products are (each becomes a
``ProductBatch`` once).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from .exceptions import NotFittedError, TaxonomistError
from .explain import explain_predictions
from .fitting import (
    FitSpec,
    check_params,
    choose_description_chars,
    fit_ensemble_tier,
    labels_of,
    sparse_model,
    zero_shot_ensemble,
)
from .models.ensemble import Ensemble
from .models.hierarchy import LevelIndex, Prediction, decode, predictions_frame
from .models.sparse import SparseClassifier
from .models.tree import resolve_hierarchy
from .monitoring import DriftReference
from .persistence import load_classifier, save_classifier
from .products import Images, ProductBatch
from .review_flags import review_flags, stuffing_flags
from .taxonomy import CategoryPath, Taxonomy, format_path, parse_path
from .text import scrub_pii

__all__ = ["TaxonomyClassifier", "load"]

logger = logging.getLogger(__name__)



ZERO_SHOT_MIN_CONFIDENCE = 0.3
"""A zero-shot model's default back-off threshold (RESULTS.md, "Zero-shot for a shop without labels")."""
ZERO_SHOT_LEXICAL = 2.0
"""Weight of the category-name coverage in a zero-shot model's logits (at temperature 0.03)."""
ZERO_SHOT_HIERARCHY = 0.5
"""Weight of a category's parent's similarity in a zero-shot model's logits (RESULTS.md, "Zero-shot: the parent's
similarity in each leaf's score")."""


class TaxonomyClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Classify products into a category taxonomy.

    Args:
        tier: ``"ensemble"`` (the default: sparse + nearest neighbours + zero-shot prior over a pretrained text
            encoder, which members take part and their weights decided by cross-validation on the training data
            -- the sparse tier alone when the others do not help --, the encoder run only where the sparse member
            is unsure),
            ``"sparse"`` (TF-IDF + linear SVM: fastest, no transformer), ``"embed"`` (a logistic head and
            nearest neighbours on frozen embeddings), ``"finetune"`` (the transformer fine-tuned end to end,
            pooled with the sparse tier) or ``"zeroshot"`` (no training data: see :meth:`from_taxonomy`).
        min_confidence: back off to the deepest ancestor whose probability clears this (``None``: always the leaf).
        C: regularisation of the sparse tier's linear SVM.
        title_weight, context_weight: weights of the title and of description + attributes in the features.
        description_chars: how much of each description the model reads: its first N characters, ``None`` all
            of it, or ``"auto"`` (default): where descriptions are long (median over 300 characters), the whole
            description or its first 300 characters, chosen on a held-out part of the training data by the
            sparse member (the cut kept only when macro-F1 and accuracy both gain; ``description_chars_``).
        class_weight: ``None`` or ``"balanced"``.
        use_attributes: use non-numeric attribute columns (brand, colour, ...) as text features.
        calibration: how scores become probabilities (see :class:`~taxonomist.models.SparseClassifier`);
            ``"none"`` skips the second fit, e.g. while tuning (decisions are the same).
        random_state: seed for the calibration split.
        encoder: text encoder of the embedding tiers: ``"auto"`` (``e5-multilingual`` for CJK catalogues, else
            ``minilm-en``), a preset, a local model folder / ONNX file, or a locally cached model name.
        encoder_backend: ``"auto"``, ``"torch"`` or ``"onnx"``.
        max_length: tokens per text for the encoder.
        embed_context: what the embedding members (neighbours, zero-shot prior, embedding heads) read: ``False``
            the title, ``True`` the title with the beginning of the description and attributes (as a zero-shot
            model does), ``"auto"`` both compared by cross-validation on the training data, the title + context
            kept only when it predicts better beyond noise (members sparse / knn / zeroshot without photos; else
            the title); ``stacking_["embedding"]`` says which.
        members: ensemble members (default per tier, from ``sparse``, ``knn``, ``zeroshot``, ``embed``).
        knn_k: neighbours that vote in the ``knn`` member.
        validation_size: share of title groups held out to fit the ensemble when one split is used (``cv < 2``,
            or a fine-tuned transformer).
        cv: grouped folds of the out-of-fold predictions on which the ensemble decides its member weights, prior
            shift, calibration and cascade (stacking); a configuration that does worse than the sparse member
            alone beyond noise is never chosen, and when no other member helps the model predicts as the sparse
            tier (``stacking_`` says what was chosen and why).
        epochs: fine-tuning epochs (the best on validation macro-F1 is kept).
        finetune_max_length: tokens per text while fine-tuning.
        prior_shift: logit adjustment of the embedding tiers against the class prior (``-tau * log prior``),
            which raises recall on rare leaves; ``"auto"`` (default) chooses it with the members, out of fold, or
            a number fixes it. See :func:`taxonomist.models.ensemble.prior_shift`.
        image_encoder: use product photos (the ``image`` field) in the embedding tiers: ``"effnet-lite0"``,
            ``"effnet-lite2"`` or a local ``.onnx`` feature extractor; ``None`` (default): text only.
        image_views: views of each photo whose features are averaged (test-time augmentation, the same at
            training): 1 the photo as it is (default), 2 with its mirror image, 3 and its central 80 %, 4 and that
            mirrored; each view costs one more pass of the image network.
        fusion: how photos join the text members: ``"late"`` (an image head pooled with the text members,
            weights fitted on validation) or ``"early"`` (one head on text embedding + image features).
        image_root: folder that relative image paths resolve against and that no path may leave (default: the
            catalogue file's folder when fitted on / given a :class:`Catalog`, else the working folder).
        allow_remote_images: fetch ``http(s)://`` image references (off by default: a server must not become a
            fetcher of arbitrary addresses; with it on, downloads are size-limited and time out after 10 s).
        cascade: text-only ensembles answer with their sparse member alone where it is sure enough, and encode
            only the other products; the threshold is the lowest at which the out-of-fold macro-F1 and accuracy
            are no lower than the full ensemble's (none found: the cascade stays off).
        dp_epsilon: train the sparse tier with (ε, δ)-differential privacy per training row
            (:class:`~taxonomist.models.private.PrivateLinearClassifier`: DP-SGD on hashed n-grams, no
            calibration; the bundle keeps no fingerprint, title hashes or row count of the data). For models of
            personal text such as customer messages; ``None`` (the default) trains without.
        dp_delta: δ of that guarantee.
        n_jobs: worker processes of the sparse member's one-vs-rest fits (``None``: all cores, at most 2; each
            worker holds a copy of the features below 1 GB -- larger ones are mapped from one file -- and of the
            rows of the problem it fits, so more workers need more memory).
        hierarchy: how the sparse member learns the taxonomy: ``"flat"`` (one-vs-rest over all leaves),
            ``"two-level"`` (the top-level categories, then the leaves within each), ``"top-down"`` (one problem
            per inner node, each product against its siblings only), or ``"auto"`` (two-level for large
            problems, else flat; see :class:`~taxonomist.models.SparseClassifier`).
        engine: where the sparse member's one-vs-rest columns are fitted: ``"local"`` or ``"ray"`` (Ray tasks on
            the cluster named by ``RAY_ADDRESS``, or a local Ray; the same model).
        checkpoint: a folder (shared storage on a cluster) that keeps the finished parts of the sparse member's
            fit, so an interrupted training resumes where it stopped.
        max_problem_rows: the most products one of the sparse member's local problems trains on (``"auto"``:
            200,000; ``None``: all); above, a sample in its labels' proportions -- see
            :class:`~taxonomist.models.SparseClassifier`.
        max_embedded: the most training products a text-only ensemble encodes (``None``: all): above, its
            embedding members (neighbours, heads) and the cross-validation that weighs the members learn from a
            sample drawn per category -- every product of a category with at most 20 kept, the others in
            proportion --, while the sparse member learns from every product (encoding is most of an ensemble's
            training time on large catalogues).

    Example:
        >>> clf = TaxonomyClassifier().fit(catalog)                           # doctest: +SKIP
        >>> clf.predict_products([{"title": "Nike running shoes"}], top_k=3)  # doctest: +SKIP
    """

    model_: Any  # SparseClassifier (tier "sparse") or Ensemble (the embedding tiers)
    image_encoder_: Any = None  # an ImageEncoder when fitted with photos

    def __init__(
        self,
        tier: Literal["sparse", "ensemble", "embed", "finetune", "zeroshot"] = "ensemble",
        min_confidence: float | None = None,
        C: float = 0.5,
        title_weight: float = 1.0,
        context_weight: float = 0.5,
        description_chars: int | None | Literal["auto"] = "auto",
        class_weight: Literal["balanced"] | None = None,
        use_attributes: bool = True,
        calibration: Literal["temperature+isotonic", "temperature", "none"] = "temperature+isotonic",
        random_state: int = 0,
        encoder: str = "auto",
        encoder_backend: Literal["auto", "torch", "onnx"] = "auto",
        max_length: int = 64,
        embed_context: bool | Literal["auto"] = False,
        members: Sequence[str] | None = None,
        knn_k: int = 10,
        validation_size: float = 0.15,
        epochs: int = 3,
        finetune_max_length: int = 48,
        prior_shift: float | Literal["auto"] = "auto",
        image_encoder: str | None = None,
        image_views: int = 1,
        fusion: Literal["late", "early"] = "late",
        image_root: str | None = None,
        allow_remote_images: bool = False,
        cascade: bool = True,
        cv: int = 3,
        dp_epsilon: float | None = None,
        dp_delta: float = 1e-6,
        n_jobs: int | None = None,
        hierarchy: Literal["flat", "two-level", "top-down", "auto"] = "auto",
        engine: Literal["local", "ray"] = "local",
        checkpoint: str | None = None,
        max_problem_rows: int | Literal["auto"] | None = "auto",
        max_embedded: int | None = 10_000,
    ) -> None:
        self.tier = tier
        self.min_confidence = min_confidence
        self.C = C
        self.title_weight = title_weight
        self.context_weight = context_weight
        self.description_chars = description_chars
        self.class_weight = class_weight
        self.use_attributes = use_attributes
        self.calibration = calibration
        self.random_state = random_state
        self.encoder = encoder
        self.encoder_backend = encoder_backend
        self.max_length = max_length
        self.members = members
        self.knn_k = knn_k
        self.validation_size = validation_size
        self.epochs = epochs
        self.finetune_max_length = finetune_max_length
        self.prior_shift = prior_shift
        self.image_encoder = image_encoder
        self.image_views = image_views
        self.fusion = fusion
        self.image_root = image_root
        self.allow_remote_images = allow_remote_images
        self.cascade = cascade
        self.embed_context = embed_context
        self.cv = cv
        self.dp_epsilon = dp_epsilon
        self.dp_delta = dp_delta
        self.n_jobs = n_jobs
        self.hierarchy = hierarchy
        self.engine = engine
        self.checkpoint = checkpoint
        self.max_problem_rows = max_problem_rows
        self.max_embedded = max_embedded

    # -- what the model reads -------------------------------------------------------------------------------
    def texts(self, X: Any) -> tuple[list[str], list[str]]:
        """What the model reads of each product: (titles, contexts), a context being the description and the
        attribute columns the model was trained with (zero-shot: the columns that say what the product is)."""
        batch = ProductBatch.from_any(X)
        if self.tier == "zeroshot":  # no training to choose attributes: the ones that say what the product is
            return batch.titles, batch.kind_contexts()
        return batch.titles, batch.contexts(self.text_attributes_, getattr(self, "description_chars_", None))

    def photos(self, X: Any) -> Images | None:
        """(vectors, mask) of the products' photos (computed once per :class:`ProductBatch`), or ``None`` when
        the model does not use photos."""
        encoder = getattr(self, "image_encoder_", None)
        if encoder is None:
            return None

        def encode(refs: list[str | bytes | None], root: Path) -> Images:
            batch = encoder.encode(refs, root, allow_remote=self.allow_remote_images)
            return batch.vectors, batch.mask

        root = Path(self.image_root) if self.image_root else None
        return ProductBatch.from_any(X).image_features(encoder.identity, encode, root=root)

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
        spec = FitSpec(**self.get_params())
        check_params(spec)
        batch = ProductBatch.from_any(X)
        labels = labels_of(batch, y)
        self.text_attributes_ = batch.text_columns() if self.use_attributes else []
        self.description_chars_ = choose_description_chars(spec, batch, labels, self.text_attributes_)
        titles, contexts = self.texts(batch)
        logger.info("fitting the %s tier on %d products, %d categories", self.tier, len(batch), len(set(labels)))
        # decided once, on the whole training set: the ensemble's fold fits and its final fit learn the same way
        self.hierarchy_ = resolve_hierarchy(self.hierarchy, sorted(set(labels)), len(batch))
        # (resolved: flat, two-level or top-down)
        spec = dataclasses.replace(spec, hierarchy=self.hierarchy_)  # type: ignore[arg-type]
        model: SparseClassifier | Ensemble
        if self.tier == "sparse":
            model = sparse_model(spec, self.calibration)
            model.fit((titles, contexts), labels, groups=batch.title_groups())
        else:
            fitted = fit_ensemble_tier(spec, batch, titles, contexts, labels)
            model, self.image_encoder_, self.neighbour_titles_ = fitted.ensemble, fitted.image_encoder, fitted.neighbour_titles
            self.image_stats_ = fitted.image_stats
        private = self.dp_epsilon is not None  # nothing computed from the rows outside the DP mechanism is kept
        self.set_fitted(model, taxonomy, text_attributes=self.text_attributes_,
                     description_chars=self.description_chars_,
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

    # -- the fitted model's parts -------------------------------------------------------------------------
    @property
    def sparse_member(self) -> SparseClassifier | None:
        """The sparse model: the sparse tier's model, or the ensemble's sparse member (``None`` without one)."""
        return self.model_ if isinstance(self.model_, SparseClassifier) else self.model_.sparse

    @property
    def ensemble_(self) -> Ensemble | None:
        """The ensemble of an embedding tier (``None`` for the sparse tier)."""
        model = getattr(self, "model_", None)
        return model if isinstance(model, Ensemble) else None

    @property
    def encoder_(self) -> Any:
        """The text encoder of an embedding tier (``None`` for the sparse tier)."""
        return getattr(self.ensemble_, "encoder", None)

    @property
    def weights_(self) -> dict[str, float]:
        """The ensemble members' weights (chosen by cross-validation)."""
        return _ensemble(self).weights

    @property
    def stacking_(self) -> dict[str, Any]:
        """What cross-validation chose for the ensemble, and why (``summary`` says it in one line)."""
        return _ensemble(self).stacking

    @property
    def prior_shift_(self) -> float:
        return _ensemble(self).prior_shift

    @property
    def cascade_(self) -> float | None:
        """The sparse member's confidence above which it answers alone (``None``: the cascade is off)."""
        return _ensemble(self).cascade

    @property
    def modalities(self) -> tuple[str, ...]:
        """What the model reads, among ``"text"`` and ``"image"``."""
        ens = self.ensemble_
        return ("text",) if ens is None else ens.modalities

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
            encoder: ``"auto"`` picks ``e5-multilingual`` when ``sample_texts`` (some products' titles with their
                descriptions) are not in English or are CJK, which also classifies them into an English taxonomy.
            descriptions: optional text per category, embedded with its path.
            examples: optional example titles per category (few-shot).
            temperature: softmax temperature over the categories' cosine similarities.
            min_confidence: back off to the deepest category whose probability clears it (``None``: always a leaf).
            lexical: weight of the share of a category's own name the title contains
                (:func:`~taxonomist.models.zeroshot.name_coverage`), so that "Boots" wins over "Boot Liners" for
                a boot; 0: the embeddings alone.
            hierarchy: weight of the similarity to a category's parent in its score (a leaf name that fits
                several branches goes to the branch the product resembles); 0: the category's own vector alone.
            adapt: adapt each batch of products to its catalogue (:mod:`taxonomist.models.transduction`):
                ``"general"`` (a shop in a taxonomy of thousands of categories), ``"own"`` (the catalogue's own
                taxonomy), ``"auto"`` (general for Google's and Shopify's taxonomies), ``None`` (each product alone).
        """
        leaves = taxonomy.leaves()
        if not leaves:
            raise TaxonomistError("expected a taxonomy with at least one category, found an empty one")
        if adapt == "auto":
            adapt = "general" if taxonomy.kind in ("google", "shopify") else "own"
        clf = cls(tier="zeroshot", encoder=encoder, min_confidence=min_confidence, encoder_backend=encoder_backend,
                  max_length=max_length, use_attributes=False, embed_context=True)
        clf.neighbour_titles_ = []
        clf.set_fitted(zero_shot_ensemble(leaves, encoder, sample_texts, descriptions, examples, temperature,
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
        name = format_path(new)
        if not new:
            raise TaxonomistError("expected a category path such as 'Apparel > Topwear > Ponchos', got an empty one")
        if name in set(self.classes_.tolist()):
            raise TaxonomistError(f"the model already has the category {name!r}")
        ens.add_class(new, description, examples)
        if ens.members.knn is not None and examples:
            self.neighbour_titles_ = [*self.neighbour_titles_, *(scrub_pii(t) for t in examples)]
        self.classes_ = np.asarray(ens.classes, dtype=object)
        self.levels_ = LevelIndex.build(list(self.classes_))
        if new not in self.taxonomy_:
            self.taxonomy_.add(new)
        logger.info("added the category %s (%d examples)", name, len(examples))

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
        return self.proba_of(self.texts(batch), self.photos(batch), modality)[0]

    def proba_of(self, pairs: tuple[list[str], list[str]], img: Images | None = None, modality: str = "all",
                 sparse_log: np.ndarray | None = None, known: Sequence[str | None] | None = None,
                 adapt_to_batch: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Leaf probabilities of products already read (:meth:`texts`, :meth:`photos`), and their embeddings
        when the ensemble computed them; ``sparse_log``: the sparse member's log-probabilities, when the cascade
        already computed them (:mod:`taxonomist.serving.staged`); ``known`` (zero-shot models adapted to their
        catalogue): the category each product already has, ``""`` where none (see :meth:`predict_products`);
        ``adapt_to_batch=False``: answer each product alone, for batches that are not one catalogue (the service
        pools different clients' requests)."""
        if isinstance(self.model_, SparseClassifier):
            return self.model_.predict_proba(pairs), None
        from .encoders.transformer import blas_single_thread

        if img is None and self.image_encoder_ is not None and modality != "text":
            img = (np.zeros((len(pairs[0]), int(self.image_encoder_.dim)), np.float32), np.zeros(len(pairs[0]), bool))
        ens: Ensemble = self.model_
        with blas_single_thread(len(pairs[0])):
            proba, emb = ens.predict_proba(pairs, img, modality, sparse_log)
        zs = ens.members.zeroshot
        if self.tier == "zeroshot" and zs is not None and zs.adaptation and adapt_to_batch:  # adapted to the catalogue
            from .models.transduction import GENERAL, OWN, adapt, allowed_classes
            from .models.zeroshot import zero_shot_queries

            allowed = allowed_classes(zs.classes_, known) if known is not None else None
            proba = adapt(proba, zero_shot_queries(*pairs), GENERAL if zs.adaptation == "general" else OWN, allowed,
                          embeddings=emb, temperature=zs.temperature)
        return proba, emb

    def predict(self, X: Any) -> np.ndarray:
        """The most probable leaf path of each product (strings ``"A > B > C"``)."""
        self._check()
        if isinstance(self.model_, SparseClassifier):
            return self.model_.predict(self.texts(X))
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
        pairs = self.texts(batch)
        mc = self.min_confidence if min_confidence is None else min_confidence
        emb = None
        # a sparse model of thousands of leaves reads them from its beam descent, without the dense matrix
        preds = (self.model_.beam_predictions(pairs, self.levels_, top_k, mc)
                 if isinstance(self.model_, SparseClassifier) else None)
        if preds is None:
            proba, emb = self.proba_of(pairs, img=self.photos(batch), known=known)
            preds = decode(proba, self.levels_, top_k=top_k, min_confidence=mc)
        if explain:
            titles = getattr(self, "neighbour_titles_", [])  # (a sparse model has none)
            explain_predictions(self.sparse_member, self.ensemble_, titles, preds, pairs, emb)
        return preds

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


def _ensemble(clf: TaxonomyClassifier) -> Ensemble:
    ens = clf.ensemble_
    if ens is None:
        raise AttributeError("only the embedding tiers (ensemble, embed, finetune, zeroshot) have an ensemble")
    return ens



def load(directory: str | Path) -> TaxonomyClassifier:
    """Load a model bundle: ``taxonomist.load("model/")``."""
    return TaxonomyClassifier.load(directory)
