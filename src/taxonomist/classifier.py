"""TaxonomyClassifier: the one model API. It composes the catalogue's fields, a tier and hierarchy decoding.

A product is a mapping with ``title`` and optional ``description``, ``image`` and any attributes; a
:class:`~taxonomist.catalog.Catalog`, a pandas DataFrame, a list of dicts or a list of title strings are all
accepted wherever products are.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from .bundle import read_bundle, write_bundle
from .catalog import CANONICAL_FIELDS, Catalog, column_key, title_groups
from .exceptions import BundleError, NotFittedError, TaxonomistError
from .models.hierarchy import LevelIndex, Prediction, decode, level_probabilities
from .models.sparse import SparseClassifier
from .models.tree import resolve_hierarchy
from .monitoring import DriftReference
from .taxonomy import CategoryPath, Taxonomy, format_path, parse_path
from .text import clean_text, normalize_for_sparse, scrub_pii
from .version import __version__

__all__ = ["Pending", "TaxonomyClassifier", "load"]

logger = logging.getLogger(__name__)

TIERS = ("sparse", "ensemble", "embed", "finetune", "zeroshot")
DEFAULT_MEMBERS = {"ensemble": ("sparse", "knn", "zeroshot"), "embed": ("embed", "knn"),
                   "finetune": ("sparse", "finetune"), "zeroshot": ("zeroshot",)}
"""Members of each embedding-based tier (see :mod:`taxonomist.models.ensemble`)."""
_NUMERIC_SHARE = 0.9


@dataclass
class Pending:
    """Products :meth:`TaxonomyClassifier.predict_products_staged` left to its second stage."""

    X: Any  # the products as given (when the whole call is left: photos are read from them)
    titles: list[str]
    contexts: list[str]
    sparse_log: np.ndarray | None  # the sparse member's log-probabilities, when the cascade computed them
    top_k: int
    min_confidence: float | None


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


def _text(value: Any) -> str:
    """A field as ``_frame`` / ``_texts`` read it: missing or NaN is empty, anything else ``str``."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


_QUERY_CONTEXT_CHARS = 300
_KIND_FIELDS = frozenset({"type", "product_type", "producttype", "item_type", "tags", "keywords", "product_category",
                          "category_hint", "categories", "subcategory", "sub_category", "article_type", "articletype",
                          "类型", "标签"})


def _kind_of_product(column: object) -> bool:
    """Whether an attribute column says what kind of product it is (type, tags, ...), which a zero-shot model
    reads with the title; colours, sizes, gender or season mislead it (measured: the fashion sample's leaf
    accuracy fell from 0.658 to 0.564 with them)."""
    return column_key(str(column)) in _KIND_FIELDS


def zero_shot_queries(titles: Sequence[str], contexts: Sequence[str]) -> list[str]:
    """What a zero-shot model embeds for each product: the title, then what else the product says (type, tags,
    brand, the beginning of the description), cleaned of markup -- a title alone ("Tide Mini Speaker") is too
    little to place a product among thousands of categories."""
    out = []
    for t, c in zip(titles, contexts, strict=True):
        extra = clean_text(c)[:_QUERY_CONTEXT_CHARS].strip() if c else ""
        out.append(f"{_text(t)} | {extra}" if extra else _text(t))
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


def _stacking_summary(report: Mapping[str, Any], weights: Mapping[str, float]) -> dict[str, Any]:
    """The stacking report with a one-line ``summary`` for people (``taxonomist train`` prints it)."""
    folds, n = report.get("folds", 0), report.get("oof_products", 0)
    if report.get("too_few"):
        return {**report, "summary": f"too few products ({n} out of fold) to cross-validate the ensemble: its "
                                     "members are pooled with equal weights"}
    if not report.get("chosen"):
        return dict(report)
    head = f"cross-validation ({folds} folds, {n:,} out-of-fold products)"
    f, a, f0, a0 = (report[k] for k in ("macro_f1", "accuracy", "floor_macro_f1", "floor_accuracy"))
    if report.get("sparse_only"):
        extra = f", with a prior shift of {report['prior_shift']:g}" if report["prior_shift"] else ""
        anchor = report.get("anchor", "sparse")
        alone = "as the sparse tier" + extra + ", without the encoder" if anchor == "sparse" else f"with its {anchor} member alone{extra}"
        text = (f"{head}: the other members do not help on this catalogue beyond noise; the model predicts {alone} "
                f"(macro-F1 {f:.4f}, accuracy {a:.4f} out of fold)")
    else:
        used = ", ".join(f"{k} {w:.2f}" for k, w in weights.items() if w > 0)
        text = (f"{head}: members {used}, prior shift {report['prior_shift']:g} -- macro-F1 {f:.4f}, accuracy "
                f"{a:.4f} out of fold, against {f0:.4f} / {a0:.4f} for the {report.get('anchor', 'sparse')} member alone")
    return {**report, "summary": text}


STUFFING_MIN_WORDS = 10
"""Titles shorter than this are never flagged as keyword stuffing (:meth:`TaxonomyClassifier.stuffing_flags`)."""

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
        class_weight: ``None`` or ``"balanced"``.
        use_attributes: use non-numeric attribute columns (brand, colour, ...) as text features.
        calibration: how scores become probabilities (see :class:`~taxonomist.models.SparseClassifier`);
            ``"none"`` skips the second fit, e.g. while tuning (decisions are the same).
        random_state: seed for the calibration split.
        encoder: text encoder of the embedding tiers: ``"auto"`` (``e5-multilingual`` for CJK catalogues, else
            ``minilm-en``), a preset, a local model folder / ONNX file, or a locally cached model name.
        encoder_backend: ``"auto"``, ``"torch"`` or ``"onnx"``.
        max_length: tokens per text for the encoder.
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
            worker holds a copy of the features, so more workers need more memory).
        hierarchy: how the sparse member learns the taxonomy: ``"flat"`` (one-vs-rest over all leaves),
            ``"two-level"`` (the top-level categories, then the leaves within each), ``"top-down"`` (one problem
            per inner node, each product against its siblings only), or ``"auto"`` (two-level for large
            problems, else flat; see :class:`~taxonomist.models.SparseClassifier`).
        engine: where the sparse member's one-vs-rest columns are fitted: ``"local"`` or ``"ray"`` (Ray tasks on
            the cluster named by ``RAY_ADDRESS``, or a local Ray; the same model).
        checkpoint: a folder (shared storage on a cluster) that keeps the finished parts of the sparse member's
            fit, so an interrupted training resumes where it stopped.

    Example:
        >>> clf = TaxonomyClassifier().fit(catalog)                           # doctest: +SKIP
        >>> clf.predict_products([{"title": "Nike running shoes"}], top_k=3)  # doctest: +SKIP
    """

    model_: Any  # SparseClassifier (tier "sparse") or EnsembleMembers (the embedding tiers)
    image_encoder_: Any = None  # an ImageEncoder when fitted with photos

    def __init__(
        self,
        tier: Literal["sparse", "ensemble", "embed", "finetune", "zeroshot"] = "ensemble",
        min_confidence: float | None = None,
        C: float = 0.5,
        title_weight: float = 1.0,
        context_weight: float = 0.5,
        class_weight: Literal["balanced"] | None = None,
        use_attributes: bool = True,
        calibration: Literal["temperature+isotonic", "temperature", "none"] = "temperature+isotonic",
        random_state: int = 0,
        encoder: str = "auto",
        encoder_backend: Literal["auto", "torch", "onnx"] = "auto",
        max_length: int = 64,
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
        self.cv = cv
        self.dp_epsilon = dp_epsilon
        self.dp_delta = dp_delta
        self.n_jobs = n_jobs
        self.hierarchy = hierarchy
        self.engine = engine
        self.checkpoint = checkpoint

    # -- inputs -------------------------------------------------------------------------------------------
    def _texts(self, df: pd.DataFrame) -> tuple[list[str], list[str]]:
        cols = ["description"] + [c for c in self.text_attributes_ if c in df.columns]
        if self.tier == "zeroshot":  # no training to choose attributes: the ones that say what the product is
            cols = [*(c for c in df.columns if _kind_of_product(c)), "description"]
        titles = df["title"].tolist()
        if len(cols) == 1:
            return titles, df["description"].tolist()
        parts = df[cols].fillna("").astype(str).to_numpy()
        return titles, [" ".join(v for v in row if v) for row in parts]

    def _texts_of(self, X: Any) -> tuple[list[str], list[str]]:
        """``_texts(_frame(X))``, without building a frame for a list of dicts or titles (the served path)."""
        if isinstance(X, list) and X and all(isinstance(r, str) for r in X):
            return list(X), [""] * len(X)
        if not (isinstance(X, list) and X and all(isinstance(r, Mapping) for r in X) and any("title" in r for r in X)):
            return self._texts(_frame(X))  # anything else, with _frame's checks and errors
        cols = ["description", *self.text_attributes_]
        titles, contexts = [], []
        for r in X:
            titles.append(_text(r.get("title")))
            if self.tier == "zeroshot":
                values = [_text(r.get(c)) for c in (*(c for c in r if _kind_of_product(c)), "description")]
                contexts.append(" ".join(v for v in values if v))
                continue
            values = [_text(r.get(c)) for c in cols]
            contexts.append(values[0] if len(cols) == 1 else " ".join(v for v in values if v))
        return titles, contexts

    def _uses_images(self) -> bool:
        return getattr(self, "image_encoder_", None) is not None

    def _image_refs(self, X: Any, df: pd.DataFrame | None = None) -> tuple[list[str | bytes | None], Path]:
        """Each product's image reference (a path, or the image's bytes) and the root paths resolve against."""
        refs: list[str | bytes | None]
        if isinstance(X, list) and X and all(isinstance(r, Mapping) for r in X):
            refs = [r["image"] if isinstance(r.get("image"), bytes) else str(r["image"]) if r.get("image") else None
                    for r in X]
        elif isinstance(X, list):
            refs = [None] * len(X)
        else:
            frame = df if df is not None else _frame(X)
            refs = ([str(v) if v else None for v in frame["image"].fillna("").astype(str)]
                    if "image" in frame.columns else [None] * len(frame))
        root = self.image_root or getattr(X, "base_dir", None) or Path.cwd()
        return refs, Path(root)

    def _images(self, X: Any, df: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """(vectors, mask) of the products' photos, or ``None`` when the model does not use photos."""
        if not self._uses_images():
            return None
        refs, root = self._image_refs(X, df)
        batch = self.image_encoder_.encode(refs, root, allow_remote=self.allow_remote_images)
        return batch.vectors, batch.mask

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
        if self.image_encoder is not None and self.tier in ("sparse", "zeroshot"):
            raise ValueError(f"photos are used by the ensemble, embed and finetune tiers, not {self.tier!r}; use "
                             "tier='ensemble' (members=['sparse', 'image'] for the sparse tier + photos)")
        if self.fusion not in ("late", "early"):
            raise ValueError(f"fusion must be 'late' or 'early', got {self.fusion!r}")
        if self.dp_epsilon is not None and not (0 < self.dp_epsilon < float("inf")):
            raise ValueError(f"dp_epsilon must be a finite number > 0, got {self.dp_epsilon}; leave it unset "
                             "(None) to train without differential privacy")
        if self.dp_epsilon is not None and self.tier != "sparse":
            raise ValueError(f"differentially private training (dp_epsilon) is offered for the sparse tier, not "
                             f"{self.tier!r}; use tier='sparse'")
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
        logger.info("fitting the %s tier on %d products, %d categories", self.tier, len(df), len(set(labels)))
        # decided once, on the whole training set: the ensemble's fold fits and its final fit learn the same way
        self.hierarchy_ = resolve_hierarchy(self.hierarchy, sorted(set(labels)), len(df))
        if self.tier == "sparse":
            self.model_ = self._sparse(self.calibration)
            self.model_.fit((titles, contexts), labels, groups=title_groups(titles))
            self.classes_ = self.model_.classes_
        elif self.tier == "zeroshot":
            raise TaxonomistError("the zeroshot tier learns nothing from examples; build it with "
                                  "TaxonomyClassifier.from_taxonomy(taxonomy) (CLI: taxonomist classify --taxonomy)")
        else:
            self._fit_ensemble(titles, contexts, labels, X, df)
        self.taxonomy_ = taxonomy if taxonomy is not None else Taxonomy.from_paths(self.classes_)
        self.levels_ = LevelIndex.build(list(self.classes_))
        private = self.dp_epsilon is not None  # nothing computed from the rows outside the DP mechanism is kept
        self.fingerprint_ = "" if private else fingerprint(titles, labels)
        self.train_title_hashes_ = np.zeros(0, dtype=np.int64) if private else np.unique(title_hashes(titles))
        self.n_train_ = 0 if private else len(df)
        self.metrics_: dict[str, Any] = {}
        self.drift_reference_: DriftReference | None = None  # set by whoever has held-out products (train does)
        return self

    def _sparse(self, calibration: str) -> SparseClassifier:
        from .encoders.sparse import SparseTextEncoder

        if self.dp_epsilon is not None:
            from .models.private import N_FEATURES, PrivateLinearClassifier

            hashed = SparseTextEncoder(title_weight=self.title_weight, context_weight=self.context_weight,
                                       n_features=N_FEATURES, cjk=True)
            # no seed: DP-SGD's batches and noise must come from fresh entropy, not from a seed others know
            return PrivateLinearClassifier(epsilon=self.dp_epsilon, delta=self.dp_delta, encoder=hashed)
        encoder = SparseTextEncoder(title_weight=self.title_weight, context_weight=self.context_weight)
        return SparseClassifier(C=self.C, class_weight=self.class_weight, encoder=encoder, n_jobs=self.n_jobs,
                                calibration=calibration, random_state=self.random_state,  # type: ignore[arg-type]
                                hierarchy=getattr(self, "hierarchy_", self.hierarchy),
                                engine=self.engine, checkpoint=self.checkpoint)

    def _members(self) -> tuple[str, ...]:
        from .models.ensemble import MEMBERS

        members = tuple(self.members) if self.members is not None else DEFAULT_MEMBERS[self.tier]
        if self.members is None and self.image_encoder is not None:
            members = (*members, "image" if self.fusion == "late" else "fused")
        unknown = [m for m in members if m not in MEMBERS]
        if unknown or not members:
            raise ValueError(f"members must be a non-empty subset of {list(MEMBERS)}, got {list(members)}")
        return members

    def _load_encoder(self, name: str) -> Any:
        from .encoders.transformer import load_text_encoder

        return load_text_encoder(name, backend=self.encoder_backend, max_length=self.max_length)

    def _embed(self, titles: Sequence[str]) -> np.ndarray:
        return np.asarray(self.encoder_.encode(list(titles)), dtype=np.float32)

    def _fit_ensemble(self, titles: list[str], contexts: list[str], labels: list[str], X: Any = None,
                      df: pd.DataFrame | None = None) -> None:
        from .encoders.transformer import pick_encoder
        from .models.ensemble import IMAGE_MEMBERS, fit_ensemble

        name = pick_encoder(titles) if self.encoder == "auto" else self.encoder
        self.encoder_ = self._load_encoder(name)
        logger.info("text encoder: %s (%s)", self.encoder_.name, self.encoder_.identity)
        self.image_encoder_ = None
        self.image_stats_: dict[str, int] = {}
        img = None
        if set(self._members()) & set(IMAGE_MEMBERS):
            from .encoders.image import load_image_encoder

            self.image_encoder_ = load_image_encoder(self.image_encoder or "effnet-lite0", views=self.image_views)
            refs, root = self._image_refs(X, df)
            batch = self.image_encoder_.encode(refs, root, allow_remote=self.allow_remote_images)
            img = (batch.vectors, batch.mask)
            self.image_stats_ = {"with_image": int(batch.mask.sum()), "without_image": batch.n_missing,
                                 "unusable_image": len(batch.errors)}
            logger.info("photos: %d usable, %d products without one, %d unusable (classified from text)",
                        *self.image_stats_.values())
        fitted = fit_ensemble(
            (titles, contexts), labels, self._embed(titles), title_groups(titles), self._members(), self.encoder_,
            lambda: self._sparse("none"), knn_k=self.knn_k, validation_size=self.validation_size,
            calibration=self.calibration, epochs=self.epochs, finetune_max_length=self.finetune_max_length,
            random_state=self.random_state, prior_shift=self.prior_shift, img=img, cascade=self.cascade, cv=self.cv,
        )
        self.model_ = fitted.members
        self.classes_ = np.asarray(fitted.members.classes, dtype=object)
        self.weights_ = fitted.weights
        self.temperature_ = fitted.temperature
        self.top_label_ = fitted.top_label
        self.validation_scores_ = fitted.validation_scores
        self.prior_shift_ = fitted.prior_shift
        self.rank_unshifted_ = fitted.rank_unshifted
        self.cascade_ = fitted.cascade
        self.stacking_ = _stacking_summary(fitted.stacking, fitted.weights)
        self.neighbour_titles_ = [scrub_pii(t) for t in titles] if fitted.members.knn is not None else []

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
        min_confidence: float | None = None,
        encoder_backend: Literal["auto", "torch", "onnx"] = "auto",
        max_length: int = 64,
    ) -> TaxonomyClassifier:
        """A zero-shot classifier into ``taxonomy``'s leaves, from the category names alone (no training data).

        Args:
            taxonomy: e.g. ``Taxonomy.load("google.txt")``.
            encoder: ``"auto"`` picks ``e5-multilingual`` when ``sample_texts`` (some product titles) or the
                taxonomy are CJK, which also classifies Chinese products into an English taxonomy.
            descriptions: optional text per category, embedded with its path.
            examples: optional example titles per category (few-shot).
            temperature: softmax temperature over the categories' cosine similarities.
        """
        from .encoders.transformer import pick_encoder
        from .models.ensemble import EnsembleMembers
        from .models.zeroshot import TaxonomyScorer

        leaves = taxonomy.leaves()
        if not leaves:
            raise TaxonomistError("expected a taxonomy with at least one category, found an empty one")
        clf = cls(tier="zeroshot", encoder=encoder, min_confidence=min_confidence, encoder_backend=encoder_backend,
                  max_length=max_length, use_attributes=False)
        name = pick_encoder([*sample_texts, *(format_path(p) for p in leaves[:2000])]) if encoder == "auto" else encoder
        clf.encoder_ = clf._load_encoder(name)
        members = EnsembleMembers([format_path(p) for p in leaves], ("zeroshot",))
        members.zeroshot = TaxonomyScorer(temperature).build(leaves, clf.encoder_, descriptions, examples)
        clf.model_ = members
        clf.classes_ = np.asarray(members.classes, dtype=object)
        clf.weights_, clf.temperature_, clf.top_label_, clf.prior_shift_ = {"zeroshot": 1.0}, 1.0, None, 0.0
        clf.neighbour_titles_ = []
        clf.text_attributes_ = []
        clf.taxonomy_ = taxonomy
        clf.levels_ = LevelIndex.build(list(clf.classes_))
        clf.fingerprint_ = ""
        clf.n_train_ = 0
        clf.train_title_hashes_ = np.zeros(0, dtype=np.int64)
        clf.metrics_ = {}
        clf.drift_reference_ = None
        return clf

    def add_category(
        self, path: str | Sequence[str], description: str | None = None, examples: Sequence[str] = ()
    ) -> None:
        """Add a category to a fitted model without retraining (embedding tiers).

        The new category is scored by the zero-shot member from its path (and ``description``), and by the
        nearest-neighbour member from ``examples`` when given; members that never saw it abstain on it.
        """
        self._check()
        if isinstance(self.model_, SparseClassifier):
            raise TaxonomistError("adding a category without retraining needs an embedding tier; this model is "
                                  "'sparse' -- train with --tier ensemble, or retrain with examples of the category")
        new = parse_path(path) if isinstance(path, str) else tuple(path)
        name = format_path(new)
        if not new:
            raise TaxonomistError("expected a category path such as 'Apparel > Topwear > Ponchos', got an empty one")
        if name in set(self.classes_.tolist()):
            raise TaxonomistError(f"the model already has the category {name!r}")
        m = self.model_
        if m.zeroshot is None and not (m.knn is not None and examples):
            raise TaxonomistError("this model has no zero-shot member; give example titles of the new category")
        reach = {k for k in ("zeroshot", "knn") if getattr(m, k) is not None and (k != "knn" or examples)}
        if not any(self.weights_.get(k, 0) > 0 for k in reach):
            # cross-validation switched off the members that can name a new category: they come back with the
            # weights fitted for all members out of fold (this also changes other products' scores a little)
            fitted = getattr(self, "stacking_", {}).get("fitted_weights") or {k: 1.0 for k in self.weights_}
            self.weights_ = {k: float(fitted.get(k, 0.0)) for k in {*self.weights_, *reach}}
            logger.warning("the members that can score a new category were switched off by cross-validation; "
                           "they take part again with weights %s", self.weights_)
        m.classes.append(name)
        m.class_counts = np.append(m.class_counts, 0)  # no training examples: no prior shift
        n = len(m.classes)
        if m.zeroshot is not None:
            m.zeroshot.add_class(new, self.encoder_, description, examples)
        if m.knn is not None:
            if examples:
                m.knn.add(self.encoder_.encode(list(examples)), np.full(len(examples), n - 1), n)
                self.neighbour_titles_ = [*self.neighbour_titles_, *(scrub_pii(t) for t in examples)]
            else:
                m.knn.n_classes_ = n
        self.classes_ = np.asarray(m.classes, dtype=object)
        self.levels_ = LevelIndex.build(list(self.classes_))
        if new not in self.taxonomy_:
            self.taxonomy_.add(new)
        logger.info("added the category %s (%d examples)", name, len(examples))

    def _sparse_member(self) -> SparseClassifier | None:
        """The sparse model: the sparse tier's model, or the ensemble's sparse member (``None`` without one)."""
        return self.model_ if isinstance(self.model_, SparseClassifier) else self.model_.sparse

    def stuffing_flags(self, titles: Sequence[str], min_words: int = STUFFING_MIN_WORDS,
                       min_confidence: float = 0.6) -> list[bool]:
        """Which titles look keyword-stuffed: with at least ``min_words`` words, whose first and second halves
        the sparse member places, each with top-level confidence ``min_confidence`` or more, under two
        different top-level categories ("sandal ... watch wallet handbag belt"). Such products are queued for
        review rather than trusted; an ordinary title's halves agree."""
        self._check()
        sparse = self._sparse_member()
        words = [clean_text(t).split() for t in titles]
        long = [i for i, w in enumerate(words) if len(w) >= min_words]
        out = [False] * len(titles)
        if sparse is None or not long:
            return out
        halves = [" ".join(words[i][: len(words[i]) // 2]) for i in long] + \
                 [" ".join(words[i][len(words[i]) // 2:]) for i in long]
        top = level_probabilities(sparse.predict_proba((halves, [""] * len(halves))),
                                  LevelIndex.build(list(sparse.classes_)))[0]
        first, second = top[: len(long)], top[len(long):]
        for j, i in enumerate(long):
            a, b = int(first[j].argmax()), int(second[j].argmax())
            out[i] = a != b and first[j, a] >= min_confidence and second[j, b] >= min_confidence
        return out

    def review_flags(self, titles: Sequence[str]) -> list[str | None]:
        """Why a person should look at each product whatever the model's confidence: ``"keyword_stuffing"``
        (:meth:`stuffing_flags`), ``"unrecognised"`` (no word of the title is in the sparse member's vocabulary:
        gibberish or another language; its near-zero margin must not put it first in the review queue), or
        ``None``."""
        stuffed = self.stuffing_flags(titles)
        sparse = self._sparse_member()
        known = sparse.encoder_.known_words(titles) if sparse is not None else np.ones(len(titles), dtype=bool)
        return ["keyword_stuffing" if s else ("unrecognised" if not k and str(t or "").strip() else None)
                for s, k, t in zip(stuffed, known, titles, strict=True)]

    # -- predict ------------------------------------------------------------------------------------------
    def _proba(self, titles: list[str], contexts: list[str], img: tuple[np.ndarray, np.ndarray] | None = None,
               modality: str = "all", sparse_log: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Leaf probabilities and (for the embedding tiers, unless the cascade answered some products from the
        sparse member) the products' embeddings.

        ``sparse_log``: the sparse member's log-probabilities of these products, already computed by the cascade
        (which then does not run again).

        ``modality``: ``"all"``, or ``"text"`` / ``"image"`` to pool only the text members / the image member
        with their fitted weights (per-modality evaluation)."""
        if isinstance(self.model_, SparseClassifier):
            return self.model_.predict_proba((titles, contexts)), None
        from .encoders.transformer import blas_single_thread

        with blas_single_thread(len(titles)):
            proba, emb = self._proba_members(titles, contexts, img, modality, sparse_log)
            if modality == "all" and img is not None and getattr(self.model_, "image", None) is not None:
                # a product with a usable photo and no text at all is classified from its photo: the pooled
                # weights (chosen for products that have text) may give the photo little or no say
                photo_only = np.flatnonzero(img[1] & np.array([not (t or "").strip() and not (c or "").strip()
                                                               for t, c in zip(titles, contexts, strict=True)]))
                if len(photo_only):
                    proba[photo_only] = self._proba_members(
                        [titles[i] for i in photo_only], [contexts[i] for i in photo_only],
                        (img[0][photo_only], img[1][photo_only]), "image", None)[0]
            return proba, emb

    def _proba_members(self, titles: list[str], contexts: list[str], img: tuple[np.ndarray, np.ndarray] | None,
                       modality: str, sparse_log: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        from .models.ensemble import IMAGE_MEMBERS, finish, pool, prior_shift

        weights = dict(self.weights_)
        if modality != "all":
            if modality not in ("text", "image"):
                raise ValueError(f"modality must be 'all', 'text' or 'image', got {modality!r}")
            keep = {k for k in weights if (k == "image") == (modality == "image") and (k != "fused")}
            part = sum(weights[k] for k in keep)
            # one modality's members, scaled to the model's total weight: the pooled scores keep the scale the
            # prior shift and the calibration were fitted for (a lightly weighted member alone would otherwise
            # be swamped by the prior shift)
            if part == 0:  # the stacking switched the modality off: its members with the weights fitted for all
                fitted = getattr(self, "stacking_", {}).get("fitted_weights") or {}
                weights = {k: float(fitted.get(k, 0.0)) or 1.0 if k in keep else v for k, v in weights.items()}
                part = sum(weights[k] for k in keep)
            scale = sum(weights.values()) / part if part > 0 else 0.0
            weights = {k: (w * scale if k in keep else 0.0) for k, w in weights.items()}
        # members the fitted weights switched off are not run at all (e.g. an ensemble whose validation fell back
        # to the sparse member alone predicts at the sparse tier's speed and never encodes)
        active = {k for k, w in weights.items() if w > 0}
        split = self._cascade_split(titles, contexts) if sparse_log is None and modality == "all" else None
        if split is not None:
            sure, easy, sparse_log = split
            if easy.any():
                hard = np.flatnonzero(~easy)
                if len(hard):
                    sure[hard] = self._proba_members([titles[i] for i in hard], [contexts[i] for i in hard], None,
                                                     "all", sparse_log[hard])[0]
                return sure, None
        emb = None
        if active & {"knn", "zeroshot", "embed", "fused"}:
            emb = self._embed(zero_shot_queries(titles, contexts) if self.tier == "zeroshot" else titles)
        if img is None and active & set(IMAGE_MEMBERS):
            img = (np.zeros((len(titles), int(self.image_encoder_.dim)), np.float32), np.zeros(len(titles), bool))
        if sparse_log is None:
            logs = self.model_.logs((titles, contexts), emb, active, img=img)
        else:  # the sparse member first, as logs() orders it
            logs = {"sparse": sparse_log, **self.model_.logs((titles, contexts), emb, active - {"sparse"}, img=img)}
        if modality == "image" and "image" in logs and self.model_.image is not None and img is not None:
            # alone, the image member chooses among the classes it has photos of (it abstains on the others,
            # which in the fused pool leaves them to the text members)
            unknown = ~self.model_.image.known[: logs["image"].shape[1]]
            logs["image"] = np.where(unknown[None, :] & img[1][:, None], np.log(1e-4), logs["image"])
        shift = prior_shift(self.model_.class_counts, self.prior_shift_)
        pooled = pool(logs, weights)
        rank = pooled if getattr(self, "rank_unshifted_", False) else None
        return finish(pooled + shift, self.temperature_, self.top_label_, rank), emb

    def _cascade_split(self, titles: list[str], contexts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(sparse member's probabilities, where they reach the cascade threshold, its log-probabilities), or
        ``None`` where the cascade does not apply (no threshold, photos in the pool, or a category the sparse
        member does not know)."""
        from .models.ensemble import IMAGE_MEMBERS

        threshold = getattr(self, "cascade_", None)
        active = {k for k, w in self.weights_.items() if w > 0}
        # only while the sparse member knows every class: a category added after fitting (add_category) is
        # unknown to it, and a sure sparse answer would never let the other members name the new category
        knows_all = self.model_.sparse is not None and len(self.model_._sparse_cols) == len(self.classes_)
        if threshold is None or not knows_all or "sparse" not in active or active & set(IMAGE_MEMBERS):
            return None
        from scipy.special import softmax

        sparse_log = self.model_.logs((titles, contexts), None, {"sparse"})["sparse"]
        sure = softmax(sparse_log, axis=1)
        return sure, sure.max(axis=1) >= threshold, sparse_log

    def predict_proba(self, X: Any, modality: str = "all") -> np.ndarray:
        """Leaf probabilities, shape (n, n_classes), columns in ``classes_`` order.

        ``modality`` (models fitted with photos): ``"text"`` or ``"image"`` scores one modality alone."""
        self._check()
        df = _frame(X)
        return self._proba(*self._texts(df), img=self._images(X, df), modality=modality)[0]

    def predict(self, X: Any) -> np.ndarray:
        """The most probable leaf path of each product (strings ``"A > B > C"``)."""
        self._check()
        if isinstance(self.model_, SparseClassifier):
            return self.model_.predict(self._texts(_frame(X)))
        return np.asarray(self.classes_[np.argmax(self.predict_proba(X), axis=1)])

    @property
    def modalities(self) -> tuple[str, ...]:
        """What the model reads, among ``"text"`` and ``"image"`` (members with a weight: the ``fused`` member
        counts as text, since it also reads the text embedding; an image head reads the photos of products without
        text even when cross-validation gave it no weight in the pool)."""
        if isinstance(getattr(self, "model_", None), SparseClassifier) or not hasattr(self, "weights_"):
            return ("text",)
        active = {k for k, w in self.weights_.items() if w > 0}
        photos = "image" in active or getattr(self.model_, "image", None) is not None
        return tuple(m for m, on in (("text", bool(active - {"image"})), ("image", photos)) if on)

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
            explain: attach the words / n-grams that drove the sparse tier and, for the embedding tiers, the 3
                most similar labelled training products.
        """
        self._check()
        if isinstance(X, (str, Mapping)):
            X = [X]
        titles, contexts = self._texts_of(X)
        proba, emb = self._proba(titles, contexts, img=self._images(X))
        mc = self.min_confidence if min_confidence is None else min_confidence
        preds = decode(proba, self.levels_, top_k=top_k, min_confidence=mc)
        if explain:
            sparse = self._sparse_member()
            if sparse is not None:
                pos = {str(c): i for i, c in enumerate(sparse.classes_)}
                for p, t, c in zip(preds, titles, contexts, strict=True):
                    j = pos.get(format_path(p.leaf))
                    p.explanation = sparse.explain(t, c, j) if j is not None else []
            knn = None if isinstance(self.model_, SparseClassifier) else self.model_.knn
            if knn is not None and emb is None:
                emb = self._embed(titles)
            if knn is not None and emb is not None and len(emb):
                sims, idx = knn.kneighbors(emb, k=3)
                for p, srow, irow in zip(preds, sims, idx, strict=True):
                    p.neighbours = [(self.neighbour_titles_[i], str(self.classes_[knn.labels_[i]]), round(float(v), 4))
                                    for v, i in zip(srow, irow, strict=True)]
        return preds

    def predict_products_staged(
        self, X: Any, top_k: int = 3, min_confidence: float | None = None
    ) -> tuple[list[Prediction | None], Pending | None]:
        """:meth:`predict_products` in the cascade's two stages, for a server that answers the products the
        sparse member is sure of at once and sends the others on to a worker thread.

        Returns the predictions of the first stage (``None`` for each product left to the second) and what is
        left (``None`` when nothing is), for :meth:`predict_pending` -- which takes the leftovers of many calls at
        once, so the encoders see them as one batch. The sparse tier answers everything in the first stage; an
        ensemble without a cascade (or one that reads photos) leaves everything to the second. Both stages
        together give what :meth:`predict_products` gives.
        """
        self._check()
        if isinstance(X, (str, Mapping)):
            X = [X]
        mc = self.min_confidence if min_confidence is None else min_confidence
        if isinstance(self.model_, SparseClassifier):
            return list(self.predict_products(X, top_k=top_k, min_confidence=mc)), None
        titles, contexts = self._texts_of(X)
        split = self._cascade_split(titles, contexts)
        if split is None:
            return [None] * len(titles), Pending(X, titles, contexts, None, top_k, mc)
        sure, easy, sparse_log = split
        first: list[Prediction | None] = [None] * len(titles)
        easy_idx, hard = np.flatnonzero(easy), np.flatnonzero(~easy)
        for i, p in zip(easy_idx, decode(sure[easy_idx], self.levels_, top_k=top_k, min_confidence=mc), strict=True):
            first[i] = p
        if not len(hard):
            return first, None
        return first, Pending(None, [titles[i] for i in hard], [contexts[i] for i in hard], sparse_log[hard], top_k, mc)

    def predict_pending(self, pending: Sequence[Pending]) -> list[list[Prediction]]:
        """The second stage of :meth:`predict_products_staged`, for the leftovers of several calls together: the
        predictions of each one's products, in order."""
        self._check()
        out: list[list[Prediction]] = [[] for _ in pending]
        cascaded = [i for i, p in enumerate(pending) if p.sparse_log is not None]
        # whole calls (no cascade) given as lists of product dicts pool too (their photos read together); anything
        # else (a frame, a list of titles) goes alone
        whole = [i for i, p in enumerate(pending) if p.sparse_log is None and isinstance(p.X, list)
                 and all(isinstance(r, Mapping) for r in p.X)]
        for group in (cascaded, whole):
            if not group:
                continue
            parts = [pending[i] for i in group]
            titles = [t for p in parts for t in p.titles]
            contexts = [c for p in parts for c in p.contexts]
            if group is cascaded:  # one pass through the encoders for all of them
                logs = np.vstack([p.sparse_log for p in parts if p.sparse_log is not None])
                proba = self._proba(titles, contexts, sparse_log=logs)[0]
            else:
                proba = self._proba(titles, contexts, img=self._images([r for p in parts for r in p.X]))[0]
            start = 0
            for i, p in zip(group, parts, strict=True):
                out[i] = decode(proba[start:start + len(p.titles)], self.levels_, top_k=p.top_k,
                                min_confidence=p.min_confidence)
                start += len(p.titles)
        for i, p in enumerate(pending):
            if i not in cascaded and i not in whole:
                out[i] = self.predict_products(p.X, top_k=p.top_k, min_confidence=p.min_confidence)
        return out

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
            if any(p.neighbours is not None for p in preds):
                neighbours = [[{"title": t, "category": c, "similarity": v} for t, c, v in (p.neighbours or [])]
                              for p in preds]
                out["neighbours"] = pd.Series(neighbours, index=out.index, dtype=object)
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
        raw: dict[str, bytes] = {}
        if isinstance(self.model_, SparseClassifier):
            params, arrays, objects = self.model_.get_state()
        else:
            from .models.ensemble import members_state

            params, arrays, objects = members_state(self.model_)
            params.update(weights=self.weights_, temperature=self.temperature_, encoder=self.encoder_.describe(),
                          prior_shift=self.prior_shift_, rank_unshifted=getattr(self, "rank_unshifted_", False),
                          cascade=getattr(self, "cascade_", None),
                          image_encoder=self.image_encoder_.describe() if self._uses_images() else None,
                          image_stats=getattr(self, "image_stats_", {}),
                          validation_macro_f1=getattr(self, "validation_scores_", {}),
                          stacking=getattr(self, "stacking_", {}))
            if self.top_label_ is not None:
                arrays["ens_top_label_x"], arrays["ens_top_label_y"] = self.top_label_
            objects["neighbour_titles"] = self.neighbour_titles_
            if self.model_.finetune is not None:
                raw["finetune.safetensors"] = self.model_.finetune.to_bytes()
        arrays["train_title_hashes"] = self.train_title_hashes_
        manifest = {
            "taxonomist_version": __version__,
            "tier": self.tier,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()},
            "tier_params": params,
            "text_attributes": self.text_attributes_,
            "labels": [str(c) for c in self.classes_],
            "objects": sorted(objects),
            "taxonomy": self.taxonomy_.to_dict(),
            "training_data": {"fingerprint": self.fingerprint_, "n_rows": self.n_train_},
            "metrics": self.metrics_,
        }
        reference = getattr(self, "drift_reference_", None)
        if reference is not None:
            manifest["drift_reference"] = reference.to_dict()
        return write_bundle(directory, manifest, {"weights": arrays}, objects, raw=raw)

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
            objects = {name: bundle.json(name) for name in m.get("objects", ("vocabulary", "classes"))}
            if clf.tier == "sparse":
                kind: type[SparseClassifier] = SparseClassifier
                if m["tier_params"].get("kind") == "private":
                    from .models.private import PrivateLinearClassifier

                    kind = PrivateLinearClassifier
                clf.model_ = kind.from_state(m["tier_params"], arrays, objects)
                clf.classes_ = clf.model_.classes_
            else:
                blob = bundle.raw("finetune.safetensors") if "finetune.safetensors" in m["files"] else None
                clf._load_members(m["tier_params"], arrays, objects, blob)
            member = clf._sparse_member() if clf.tier != "zeroshot" else None
            clf.hierarchy_ = getattr(member, "hierarchy_", "flat")
            clf.text_attributes_ = list(m["text_attributes"])
            clf.taxonomy_ = Taxonomy.from_dict(m["taxonomy"])
            clf.levels_ = LevelIndex.build(list(clf.classes_))
            clf.fingerprint_ = m["training_data"]["fingerprint"]
            clf.n_train_ = int(m["training_data"]["n_rows"])
            clf.train_title_hashes_ = arrays["train_title_hashes"]
            clf.metrics_ = dict(m.get("metrics", {}))
            clf.drift_reference_ = DriftReference.from_dict(m["drift_reference"]) if m.get("drift_reference") else None
            clf.manifest_ = m
        except BundleError:
            raise
        except TypeError as e:
            if "unexpected keyword argument" in str(e):
                raise BundleError(
                    f"{directory} was saved by taxonomist {m.get('taxonomist_version', '?')} with options this "
                    f"taxonomist {__version__} does not know ({e}); upgrade taxonomist to load it") from None
            raise BundleError(f"{directory}: the manifest or weights are inconsistent (TypeError: {e}); the bundle is damaged") from None
        except (KeyError, ValueError) as e:
            raise BundleError(f"{directory}: the manifest or weights are inconsistent ({type(e).__name__}: {e}); the bundle is damaged") from None
        return clf

    def _load_members(self, params: dict[str, Any], arrays: dict[str, np.ndarray], objects: dict[str, Any],
                      finetune_blob: bytes | None = None) -> None:
        from .models.ensemble import members_from_state

        enc = params["encoder"]
        self.encoder_ = self._load_encoder(enc["name"])
        self.model_ = members_from_state(params, arrays, objects, self.encoder_, finetune_blob)
        self.classes_ = np.asarray(self.model_.classes, dtype=object)
        self.weights_ = {str(k): float(v) for k, v in params["weights"].items()}
        self.temperature_ = float(params["temperature"])
        self.prior_shift_ = float(params.get("prior_shift", 0.0))
        self.rank_unshifted_ = bool(params.get("rank_unshifted", False))  # older bundles: the shifted top
        self.cascade_ = None if params.get("cascade") is None else float(params["cascade"])  # older bundles: none
        self.stacking_ = dict(params.get("stacking") or {})  # older bundles: one validation split, no report
        self.top_label_ = (arrays["ens_top_label_x"], arrays["ens_top_label_y"]) if "ens_top_label_x" in arrays else None
        self.neighbour_titles_ = list(objects.get("neighbour_titles", []))
        self.image_encoder_ = None
        self.image_stats_ = dict(params.get("image_stats") or {})
        img_enc = params.get("image_encoder")
        if img_enc:
            from .encoders.image import load_image_encoder

            self.image_encoder_ = load_image_encoder(img_enc["name"], views=int(img_enc.get("views", 1)))
            if self.image_encoder_.identity != img_enc["identity"]:
                logger.warning("the bundle was trained with the image encoder %s but %s is installed",
                               img_enc["identity"], self.image_encoder_.identity)
        if self.encoder_.identity != enc["identity"]:
            logger.warning("the bundle was trained with the encoder %s but %s is installed; its embeddings may differ "
                           "(reinstall the version named in the bundle's manifest for identical results)",
                           enc["identity"], self.encoder_.identity)

def load(directory: str | Path) -> TaxonomyClassifier:
    """Load a model bundle: ``taxonomist.load("model/")``."""
    return TaxonomyClassifier.load(directory)
