"""Zero-shot answers adapted to the catalogue they classify (transduction): no labels, only the catalogue itself.

A shop's products are not spread evenly over Google's or Shopify's thousands of categories: a garden shop sells
pots, a car dealer cars. Classified one at a time, a pot called "Texan Trough" lands in Decor and a "2017
Chevrolet Silverado" among pickup tools; classified together, the catalogue says what kind of shop it is. Three
steps, all unsupervised, over one batch of products (:func:`adapt`):

1. **The catalogue's category prior** by expectation-maximisation (Saerens, Latinne & Decaestecker, 2002): the
   prior is re-estimated as the mean of the products' probabilities and folded back into each product's
   distribution, ``iterations`` times; ``strength`` scales its say, and it is mixed with the uniform prior
   (``smoothing``) so that rare categories are not erased.
2. **Prototypes** (the catalogue's own taxonomy only): each category's confident half of products gives a
   prototype, the mean of their embeddings centred on the catalogue's mean, cross-fitted like the self-training;
   ``prototypes`` weighs each product's similarity to them (at the scorer's temperature) into its logits, so an
   unsure product joins the category whose sure products it resembles.
3. **Self-training**: a TF-IDF logistic regression fitted on the most confident half of each predicted category's
   products (the catalogue's own words: brands, model names, "Trough"), cross-fitted (each half of the catalogue
   answered by the model of the other half, so no product confirms its own pseudo-label); a category's
   probability is multiplied by ``1 + p / floor`` of the model's ``p``, so a category the model never saw keeps its
   zero-shot probability.

How strongly is chosen by the taxonomy: into a general taxonomy of thousands of categories a catalogue uses a small
part, so the prior is strong (``GENERAL``); into the catalogue's own taxonomy every category is meant to be used,
so it is weak (``OWN``). Figures: RESULTS.md, "Zero-shot for a shop without labels".
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax

from ..taxonomy import CategoryPath, parse_path

__all__ = ["GENERAL", "OWN", "Adaptation", "adapt", "allowed_classes"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Adaptation:
    """How a batch of zero-shot answers is adapted to its catalogue."""

    strength: float = 1.0  # exponent of the estimated prior (0: none)
    smoothing: float = 0.5  # share of the uniform prior mixed into the estimate
    iterations: int = 5
    self_train: float = 1.0  # power of the self-trained model's factor 1 + p / floor (0: no self-training)
    confident_share: float = 0.5  # share of each predicted category's products it is fitted on
    floor: float = 0.1  # the self-trained model multiplies a category's probability by 1 + its probability / floor
    min_products: int = 20  # smaller batches are answered as they are
    prototypes: float = 0.0  # weight of the similarity to the catalogue's centred category prototypes (0: none)


GENERAL = Adaptation(strength=1.0, smoothing=0.5)
"""Into Google's or Shopify's taxonomy (thousands of categories, of which a shop uses few)."""
OWN = Adaptation(strength=0.5, smoothing=0.9, prototypes=0.05)
"""Into the catalogue's own taxonomy (every category in use). The prototypes cost the shops in Google's and
Shopify's taxonomies (mean right 0.631 → 0.610), so ``GENERAL`` has none (RESULTS.md, "Zero-shot: the catalogue's
own prototypes")."""


def adapt(proba: np.ndarray, texts: Sequence[str], how: Adaptation = GENERAL,
          allowed: np.ndarray | None = None, embeddings: np.ndarray | None = None,
          temperature: float = 0.03) -> np.ndarray:
    """Leaf probabilities (n, n_classes) of one catalogue's products, adapted to the catalogue (module doc);
    ``texts``: what the self-trained model reads of each product (title and context). ``allowed``: (n, n_classes)
    booleans, the classes each product may take -- a category its shop already gave it: that leaf, or the leaves
    under it (semi-supervised: those products count with their own category in the prior and train the
    self-trained model); ``None``: any. ``embeddings``: the products' embeddings, for the prototypes (with the
    zero-shot scorer's ``temperature``); ``None``: no prototypes."""
    proba = np.asarray(proba, dtype=np.float64)
    n, k = proba.shape
    if allowed is not None:
        allowed = np.asarray(allowed, bool).copy()
        allowed[~allowed.any(axis=1)] = True  # a row that allows nothing constrains nothing
    q = _restrict(proba, allowed)
    if n < how.min_products or k < 2:
        return q
    if how.prototypes > 0 and embeddings is not None:
        proba = _with_prototypes(proba, q, np.asarray(embeddings, np.float64), how, temperature)
        q = _restrict(proba, allowed)
    logp = np.log(np.maximum(proba, 1e-300))
    if how.strength > 0:
        for _ in range(how.iterations):
            prior = (1 - how.smoothing) * q.mean(axis=0) + how.smoothing / k
            q = _restrict(np.exp(log_softmax(logp + how.strength * np.log(prior), axis=1)), allowed)
    if how.self_train > 0:
        labelled = np.zeros(n, bool) if allowed is None else np.asarray(~allowed.all(axis=1), bool)
        q = _restrict(_self_train(q, texts, how, labelled), allowed)
    return q


def allowed_classes(classes: Sequence[CategoryPath], known: Sequence[str | None]) -> np.ndarray | None:
    """(n, n_classes) booleans from the categories a shop already gave its products (``""`` / ``None``: none): the
    leaf itself, or every leaf under an inner category; a category the taxonomy does not have constrains nothing.
    ``None`` when no product has one."""
    if not any(known):
        return None
    cols: dict[CategoryPath, list[int]] = {}
    for j, c in enumerate(classes):
        for d in range(1, len(c) + 1):
            cols.setdefault(tuple(c[:d]), []).append(j)
    out = np.ones((len(known), len(classes)), bool)
    for i, k in enumerate(known):
        hit = cols.get(parse_path(k)) if k else None
        if hit:
            out[i] = False
            out[i, hit] = True
    return out


def _restrict(q: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    if allowed is None:
        return q
    q = np.where(allowed, q, 0.0)
    total = q.sum(axis=1, keepdims=True)
    return np.where(total > 0, q / np.where(total > 0, total, 1.0), allowed / allowed.sum(axis=1, keepdims=True))


def _self_train(q: np.ndarray, texts: Sequence[str], how: Adaptation, labelled: np.ndarray) -> np.ndarray:
    """``labelled``: products whose category the shop gave (always trained on, with their most probable allowed
    class)."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    y = q.argmax(axis=1)
    keep = labelled.copy()
    for idx in _confident(q, ~labelled, how.confident_share).values():
        keep[idx] = True
    if len(np.unique(y[keep])) < 2:
        return q
    try:
        X = hstack([TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)).fit_transform(texts),
                    TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 4)).fit_transform(texts)]
                   ).tocsr()
    except ValueError:  # no words at all (empty titles)
        return q
    # cross-fitted: each half of the catalogue is answered by a model fitted on the other half's products, so that
    # no product confirms its own pseudo-label (which would make every answer certain)
    half = _halves(len(y))
    own = np.zeros_like(q)
    for part in (half, ~half):
        fit = keep & ~part
        if len(np.unique(y[fit])) < 2:
            continue
        with warnings.catch_warnings():  # categories with a single confident product are expected here
            warnings.simplefilter("ignore", UserWarning)
            model = LogisticRegression(C=10.0, max_iter=300).fit(X[fit], y[fit])
        own[np.ix_(part, model.classes_)] = model.predict_proba(X[part])
    logger.info("self-trained on %d of %d products, cross-fitted in two halves", int(keep.sum()), len(y))
    # a category the self-trained model never saw keeps its zero-shot probability (factor 1 + 0): the model
    # raises the categories it knows, and cannot push a product out of a category only it has in the catalogue
    return np.asarray(np.exp(log_softmax(np.log(np.maximum(q, 1e-300)) + how.self_train * np.log1p(own / how.floor),
                                         axis=1)))


def _halves(n: int) -> np.ndarray:
    """A fixed random halving of ``n`` products (cross-fitting)."""
    return np.asarray(np.random.default_rng(0).permutation(n) % 2 == 0)


def _confident(q: np.ndarray, pick: np.ndarray, share: float) -> dict[int, np.ndarray]:
    """Per predicted category, the ``share`` most confident of the products in ``pick`` (at least one)."""
    y, conf = q.argmax(axis=1), q.max(axis=1)
    out = {}
    for c in np.unique(y[pick]):
        idx = np.flatnonzero(pick & (y == c))
        out[int(c)] = idx[np.argsort(-conf[idx], kind="stable")[:max(1, int(np.ceil(share * len(idx))))]]
    return out


def _with_prototypes(proba: np.ndarray, q: np.ndarray, emb: np.ndarray, how: Adaptation,
                     temperature: float) -> np.ndarray:
    """``proba`` with each product's similarity to the other half's centred category prototypes in its logits."""
    e = emb - emb.mean(axis=0)  # centred: the catalogue's common direction says nothing about a category
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    half = _halves(len(q))
    extra = np.zeros_like(q)
    for part in (half, ~half):
        groups = _confident(q, ~part, how.confident_share)
        cats = np.asarray(sorted(groups))
        if not len(cats):
            continue
        protos = np.vstack([e[groups[c]].mean(axis=0) for c in cats])
        protos /= np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), 1e-12)
        extra[np.ix_(part, cats)] = (e[part] @ protos.T) / temperature
    logger.info("prototypes of %d categories from the catalogue's sure products", int((extra != 0).any(axis=0).sum()))
    return np.asarray(np.exp(log_softmax(np.log(np.maximum(proba, 1e-300)) + how.prototypes * extra, axis=1)))
