"""How a :class:`~taxonomist.TaxonomyClassifier`'s parameters become its models: the parameter checks, the
training labels, the sparse model, the ensemble's members, and the fit of an embedding tier (photos included;
the stacking itself is :mod:`taxonomist.models.stacking`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import TaxonomistError
from .models.ensemble import IMAGE_MEMBERS, MEMBERS, Ensemble, embedded_texts
from .models.sparse import SparseClassifier
from .params import Parameters
from .products import ProductBatch
from .taxonomy import CategoryPath, Taxonomy, format_path, parse_path
from .text import field_text, scrub_pii

__all__ = ["DEFAULT_MEMBERS", "JOINT_UP_TO", "ZERO_SHOT_HIERARCHY", "ZERO_SHOT_LEXICAL", "ZERO_SHOT_MIN_CONFIDENCE",
           "FittedModel", "fit_model", "ensemble_members", "fit_ensemble_tier",
           "labels_of", "sparse_model", "zero_shot_ensemble"]

logger = logging.getLogger(__name__)

ZERO_SHOT_MIN_CONFIDENCE = 0.3
"""A zero-shot model's default back-off threshold (RESULTS.md, "Zero-shot for a shop without labels")."""
ZERO_SHOT_LEXICAL = 2.0
"""Weight of the category-name coverage in a zero-shot model's logits (at temperature 0.03)."""
ZERO_SHOT_HIERARCHY = 0.5
"""Weight of a category's parent's similarity in a zero-shot model's logits (RESULTS.md, "Zero-shot: the parent's
similarity in each leaf's score")."""
DEFAULT_MEMBERS = {"ensemble": ("sparse", "knn", "zeroshot"), "embed": ("embed", "knn"),
                   "finetune": ("sparse", "finetune"), "zeroshot": ("zeroshot",)}
"""Members of each embedding-based tier (see :mod:`taxonomist.models.ensemble`)."""
JOINT_UP_TO = 4_000
"""The default ensemble adds the joint member (:mod:`taxonomist.models.joint`) on catalogues of at most this many
training products: where it helps most (RESULTS.md, "... the joint member on small catalogues") and its four fits
over 384 more values per product cost little."""


def sparse_model(spec: Parameters, calibration: str) -> SparseClassifier:
    """A new, unfitted sparse model with ``spec``'s parameters (a private one with ``dp_epsilon``)."""
    from .encoders.sparse import SparseTextEncoder

    if spec.dp_epsilon is not None:
        from .models.private import N_FEATURES, PrivateLinearClassifier

        hashed = SparseTextEncoder(title_weight=spec.title_weight, context_weight=context_weight(spec),
                                   n_features=N_FEATURES, cjk=True)
        # no seed: DP-SGD's batches and noise must come from fresh entropy, not from a seed others know
        return PrivateLinearClassifier(epsilon=spec.dp_epsilon, delta=spec.dp_delta, encoder=hashed)
    encoder = SparseTextEncoder(title_weight=spec.title_weight, context_weight=context_weight(spec))
    return SparseClassifier(C=spec.C, class_weight=spec.class_weight, encoder=encoder, n_jobs=spec.n_jobs,
                            calibration=calibration, random_state=spec.random_state,  # type: ignore[arg-type]
                            hierarchy=spec.hierarchy, engine=spec.engine, checkpoint=spec.checkpoint,
                            max_problem_rows=spec.max_problem_rows)


DESCRIPTION_CHARS = 300
"""The description cut ``description_chars="auto"`` weighs against the whole description."""
CONTEXT_WEIGHT = 0.5
"""The weight of the description and attributes beside the title (1.0) when nothing else is chosen."""
CONTEXT_WEIGHT_TRIED = 1.0
"""The other weight ``context_weight="auto"`` tries where descriptions are long."""
CHOICE_PRODUCTS = 10_000
"""Products (at most) the choice of ``description_chars`` and ``context_weight`` is made on."""
CHOICE_FOLDS_UP_TO = 4_000
"""Up to this many products the choice is made on 3 grouped folds (every product predicted once), above it on one
80/20 split: on a small catalogue a fifth of it is too few products to tell readings apart, and its fits are cheap."""


def context_weight(spec: Parameters) -> float:
    """The weight of the context in ``spec``'s features (:data:`CONTEXT_WEIGHT` for ``"auto"`` when not chosen)."""
    return CONTEXT_WEIGHT if spec.context_weight == "auto" else float(spec.context_weight)


def choose_reading(spec: Parameters, batch: ProductBatch, labels: Sequence[str],
                   columns: Sequence[str]) -> tuple[int | None, float]:
    """(``description_chars``, ``context_weight``): as given when they are numbers (or ``None``); for ``"auto"``:
    where the descriptions are long (median over :data:`DESCRIPTION_CHARS` characters) and the model has a sparse
    member, the sparse member's held-out scores (:func:`reading_scorer`) reading the descriptions whole and cut to
    their first :data:`DESCRIPTION_CHARS` characters, each with the context at :data:`CONTEXT_WEIGHT` and at
    :data:`CONTEXT_WEIGHT_TRIED` beside the title (four readings, the two choices made together). The cut at
    :data:`CONTEXT_WEIGHT`, the cheapest to read, is kept unless another reading raises macro-F1 and accuracy
    together by at least 0.01 with neither falling (then the one that raises them most). ``columns``: the
    attribute columns read as text."""
    chars_auto, weight_auto = spec.description_chars == "auto", spec.context_weight == "auto"
    if not chars_auto and spec.description_chars is not None and (not isinstance(spec.description_chars, int)
                                                                  or spec.description_chars < 1):
        raise ValueError(f"description_chars must be 'auto', None or a number of characters >= 1, got "
                         f"{spec.description_chars!r}")
    chars: int | None = None if chars_auto else spec.description_chars  # type: ignore[assignment]
    weight = context_weight(spec)
    lengths = [len(d) for d in batch.descriptions]
    if (not (chars_auto or weight_auto) or not lengths or float(np.median(lengths)) <= DESCRIPTION_CHARS
            or spec.dp_epsilon is not None
            or "sparse" not in (ensemble_members(spec) if spec.tier != "sparse" else ("sparse",))):
        return chars, weight
    score = reading_scorer(spec, batch, labels, columns)
    if score is None:  # (too few products to hold any out)
        return chars, weight

    # the cheapest reading (the cut, at the usual weight) unless another is clearly better: every prediction
    # reads the whole description at a cost, and the two choices are made together (the whole description may
    # help only when it weighs as much as the title)
    first = (DESCRIPTION_CHARS if chars_auto else chars, weight)
    others = [(c, w) for c in ((DESCRIPTION_CHARS, None) if chars_auto else (chars,))
              for w in ((weight, CONTEXT_WEIGHT_TRIED) if weight_auto else (weight,)) if (c, w) != first]
    scores = {r: score(*r) for r in (first, *others)}

    def gain(r: tuple[int | None, float]) -> float:
        (f, a), (f0, a0) = scores[r], scores[first]
        return (f - f0) + (a - a0) if f >= f0 and a >= a0 else -1.0

    chars, weight = max([r for r in others if gain(r) >= 0.01], key=gain, default=first)

    def name(c: int | None) -> str:
        return "whole" if c is None else f"first {c} characters"

    logger.info("reading the descriptions (held-out macro-F1 / accuracy): %s; chosen: %s at %.2f",
                ", ".join(f"{name(c)} at {w:.2f} {f:.4f} / {a:.4f}" for (c, w), (f, a) in scores.items()),
                name(chars), weight)
    return chars, weight


def reading_scorer(spec: Parameters, batch: ProductBatch, labels: Sequence[str], columns: Sequence[str]
                   ) -> Callable[[int | None, float], tuple[float, float]] | None:
    """``score(cut, weight)``: the held-out macro-F1 and accuracy of the sparse member reading the first ``cut``
    characters of the descriptions (``None``: whole) and ``columns`` at ``weight`` beside the title -- fitted on
    80 % of the title groups of :data:`CHOICE_PRODUCTS` products at most, scored on the other 20 % (up to
    :data:`CHOICE_FOLDS_UP_TO` products: on 3 grouped folds); ``None`` where too few products can be held out."""
    from .metrics import macro_f1_accuracy
    from .models.folds import fold_splits

    classes, y = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    rng = np.random.default_rng(spec.random_state)
    pool = (np.sort(rng.choice(len(y), CHOICE_PRODUCTS, replace=False)) if len(y) > CHOICE_PRODUCTS
            else np.arange(len(y)))  # each reading tried costs a fit of the sparse member: on a sample at most
    n_folds = 3 if len(pool) <= CHOICE_FOLDS_UP_TO else 1  # (1: one grouped 80/20 split)
    splits = [(pool[a], pool[b]) for a, b in fold_splits(batch.title_groups()[pool], y[pool], (), n_folds, 0.2,
                                                          spec.random_state)]
    if not splits:
        return None
    titles = batch.titles
    index = {c: k for k, c in enumerate(classes)}

    def score(cut: int | None, w: float) -> tuple[float, float]:
        contexts = batch.contexts(columns, cut)
        truth, pred = [], []
        for fit, held in splits:
            model = sparse_model(replace(spec, context_weight=w), "none").fit(
                ([titles[i] for i in fit], [contexts[i] for i in fit]), [labels[i] for i in fit])
            truth.append(y[held])
            pred.append(np.asarray([index[str(p)] for p in model.predict(([titles[i] for i in held],
                                                                           [contexts[i] for i in held]))]))
        return macro_f1_accuracy(np.concatenate(truth), np.concatenate(pred), len(classes))

    return score


def ensemble_members(spec: Parameters, n_products: int | None = None) -> tuple[str, ...]:
    """The members of ``spec``'s ensemble: as given, or the tier's default (+ the joint member on a catalogue of at
    most :data:`JOINT_UP_TO` training products, + the photo member)."""
    members = tuple(spec.members) if spec.members is not None else DEFAULT_MEMBERS[spec.tier]
    if spec.members is None and spec.tier == "ensemble" and n_products is not None and n_products <= JOINT_UP_TO:
        members = (*members, "joint")
    if spec.members is None and spec.image_encoder is not None:
        members = (*members, "image" if spec.fusion == "late" else "fused")
    unknown = [m for m in members if m not in MEMBERS]
    if unknown or not members:
        raise ValueError(f"members must be a non-empty subset of {list(MEMBERS)}, got {list(members)}")
    return members


@dataclass(frozen=True)
class FittedModel:
    """What a fit learned: the model, what it reads of each product, and how its sparse member learns the tree."""

    model: SparseClassifier | Ensemble
    text_attributes: list[str]
    description_chars: int | None
    hierarchy: str  # resolved: flat, two-level or top-down


def fit_model(spec: Parameters, batch: ProductBatch, labels: list[str]) -> FittedModel:
    """The model of ``spec``'s tier fitted on these products (checked parameters: :func:`check_params`)."""
    from .models.tree import resolve_hierarchy
    from .prediction import Reader

    text_attributes = batch.text_columns() if spec.use_attributes else []
    description_chars, weight = choose_reading(spec, batch, labels, text_attributes)
    titles, contexts = Reader(tuple(text_attributes), description_chars).texts(batch)
    logger.info("fitting the %s tier on %d products, %d categories", spec.tier, len(batch), len(set(labels)))
    # decided once, on the whole training set: the ensemble's fold fits and its final fit learn the same way
    spec = replace(spec, context_weight=weight,
                   hierarchy=resolve_hierarchy(spec.hierarchy, sorted(set(labels)), len(batch)))  # type: ignore[arg-type]
    model: SparseClassifier | Ensemble
    if spec.tier == "sparse":
        model = sparse_model(spec, spec.calibration)
        model.fit((titles, contexts), labels, groups=batch.title_groups())
    else:
        model = fit_ensemble_tier(spec, batch, titles, contexts, labels)
    return FittedModel(model, text_attributes, description_chars, spec.hierarchy)


def fit_ensemble_tier(spec: Parameters, batch: ProductBatch, titles: list[str], contexts: list[str],
                      labels: list[str]) -> Ensemble:
    """The ensemble of an embedding tier fitted on these products (with their photos when it reads them): it
    keeps its image encoder, the training photos' statistics and its neighbour member's titles."""
    from .encoders.transformer import load_text_encoder, pick_encoder
    from .models.stacking import embedding_sample, fit_ensemble

    name = pick_encoder(titles) if spec.encoder == "auto" else spec.encoder
    encoder = load_text_encoder(name, backend=spec.encoder_backend, max_length=spec.max_length)
    logger.info("text encoder: %s (%s)", encoder.name, encoder.identity)
    image_encoder = None
    image_stats: dict[str, int] = {}
    img = None
    members = ensemble_members(spec, len(titles))
    started = time.perf_counter()
    if set(members) & set(IMAGE_MEMBERS):
        from .encoders.image import load_image_encoder

        image_encoder = load_image_encoder(spec.image_encoder or "effnet-lite0", views=spec.image_views)
        photos = image_encoder.encode(batch.images, Path(spec.image_root or batch.root or Path.cwd()),
                                      allow_remote=spec.allow_remote_images)
        img = (photos.vectors, photos.mask)
        image_stats = {"with_image": int(photos.mask.sum()), "without_image": photos.n_missing,
                       "unusable_image": len(photos.errors)}
        logger.info("photos: %d usable, %d products without one, %d unusable (classified from text)",
                    *image_stats.values())
    embedded = None
    if not {"fused", "finetune"} & set(members):  # (these read every product's text embedding)
        embedded = embedding_sample(np.unique(np.asarray(labels, dtype=object), return_inverse=True)[1],
                                    spec.max_embedded, spec.random_state)
    if embedded is not None:
        logger.info("encoding %d of the %d training products (max_embedded), drawn per category",
                    int(embedded.sum()), len(titles))
    emb, alt_emb = _embeddings(spec, encoder, members, titles, contexts, embedded)
    encoding = time.perf_counter() - started  # (the photos' and the texts')
    ensemble = fit_ensemble(
        (titles, contexts), labels, emb,
        batch.title_groups(), members, encoder, lambda: sparse_model(spec, "none"), knn_k=spec.knn_k,
        validation_size=spec.validation_size, calibration=spec.calibration, epochs=spec.epochs,
        finetune_max_length=spec.finetune_max_length, random_state=spec.random_state,
        prior_shift=spec.prior_shift, img=img, cascade=spec.cascade, cv=spec.cv, alt_emb=alt_emb, embedded=embedded,
    )
    ensemble.embed_context = ensemble.embed_context or spec.embed_context is True
    ensemble.stacking["seconds"] = {"encoding": round(encoding, 2), **ensemble.stacking.get("seconds", {})}
    stored = titles if embedded is None else [titles[i] for i in np.flatnonzero(embedded)]  # the index's order
    ensemble.neighbour_titles = [scrub_pii(t) for t in stored] if ensemble.members.knn is not None else []
    ensemble.image_encoder, ensemble.image_stats = image_encoder, image_stats
    return ensemble


def _embeddings(spec: Parameters, encoder: Any, members: Sequence[str], titles: list[str],
                contexts: list[str], embedded: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """(what the embedding members are fitted on, the alternative cross-validation compares it with or ``None``):
    ``embed_context=True`` the title + context, ``False`` the title, ``"auto"`` both when the products have a
    context and the members allow the comparison (else the title). Only the products of ``embedded`` are
    encoded (``None``: all); the others' rows are zeros."""
    from .models.stacking import CONTEXT_MEMBERS

    rows = None if embedded is None else np.flatnonzero(embedded)

    def encode(texts: list[str]) -> np.ndarray:
        if rows is None:
            return np.asarray(encoder.encode(texts), dtype=np.float32)
        some = np.asarray(encoder.encode([texts[i] for i in rows]), dtype=np.float32)
        out = np.zeros((len(texts), some.shape[1]), dtype=np.float32)
        out[rows] = some
        return out

    if spec.embed_context is True:
        return encode(embedded_texts(titles, contexts, True)), None
    emb = encode(embedded_texts(titles, contexts, False))
    if spec.embed_context != "auto" or not set(members) - {"image"} <= CONTEXT_MEMBERS \
            or not set(members) & {"knn", "zeroshot", "joint"}:
        return emb, None
    queries = embedded_texts(titles, contexts, True)
    if queries == [field_text(t) for t in titles]:  # nothing but titles: nothing to compare
        return emb, None
    logger.info("embedding the titles with their context too, to compare both out of fold")
    return emb, encode(queries)


def labels_of(batch: ProductBatch, y: Sequence[Any] | None) -> list[str]:
    """The training products' category paths (``y``, or the batch's ``category`` column), checked."""
    if y is None:
        if batch.labels is None:
            raise TaxonomistError("expected labels: pass y=... or products with a 'category' field")
        y = batch.labels
    labels = [format_path(parse_path(v) if isinstance(v, str) else tuple(v)) for v in y]
    if len(labels) != len(batch):
        raise ValueError(f"expected one label per product: {len(batch)} products, {len(labels)} labels")
    missing = [i for i, v in enumerate(labels) if not v]
    if missing:
        raise TaxonomistError(f"{len(missing)} products have no category (first at position {missing[0]}); "
                              "read the catalogue with read_catalog(..., require_labels=True) to skip them")
    if len(set(labels)) < 2:
        raise TaxonomistError(
            f"expected at least 2 categories to learn, found {len(set(labels))}: {sorted(set(labels))}; "
            "a classifier needs examples of several categories"
        )
    return labels


def zero_shot_ensemble(taxonomy: Taxonomy, encoder: str, sample_texts: Sequence[str],
                       descriptions: Mapping[CategoryPath, str] | None, examples: Mapping[CategoryPath, Sequence[str]] | None,
                       temperature: float, backend: str, max_length: int, lexical: float = 0.0,
                       adapt: str | None = None, hierarchy: float = 0.0) -> Ensemble:
    """The zero-shot member alone over ``taxonomy``'s leaves (no training data), embedding each product with its
    context (:meth:`~taxonomist.TaxonomyClassifier.from_taxonomy` documents the arguments).

    ``encoder="auto"``: :func:`~taxonomist.encoders.transformer.pick_zero_shot_encoder` (e5 when the sample texts
    are not English or are CJK, else MiniLM and e5 together); ``adapt="auto"``: ``"general"`` for Google's and
    Shopify's taxonomies, else ``"own"``."""
    from .encoders.transformer import load_text_encoder, pick_zero_shot_encoder
    from .models.ensemble import EnsembleMembers
    from .models.zeroshot import TaxonomyScorer

    leaves = taxonomy.leaves()
    if not leaves:
        raise TaxonomistError("expected a taxonomy with at least one category, found an empty one")
    if adapt == "auto":
        adapt = "general" if taxonomy.kind in ("google", "shopify") else "own"
    name = pick_zero_shot_encoder(sample_texts, [format_path(p) for p in leaves[:2000]]) if encoder == "auto" else encoder
    text_encoder = load_text_encoder(name, backend=backend, max_length=max_length)  # type: ignore[arg-type]
    members = EnsembleMembers([format_path(p) for p in leaves], ("zeroshot",))
    members.zeroshot = TaxonomyScorer(temperature, lexical=lexical, adaptation=adapt, hierarchy=hierarchy).build(
        leaves, text_encoder, descriptions, examples)
    return Ensemble(members, {"zeroshot": 1.0}, encoder=text_encoder, embed_context=True)
