"""How a fitted model answers: what it reads of each product (:class:`Reader`), an ensemble's leaf probabilities
(:func:`ensemble_proba`), and prediction in two steps -- :func:`defer` answers at once the products the sparse
member is sure of and leaves the others, :func:`complete` answers those left by several calls in one pass through
the encoders (the service's staged serving: :meth:`~taxonomist.TaxonomyClassifier.defer` and
:meth:`~taxonomist.TaxonomyClassifier.complete`). Both steps together give what
:meth:`~taxonomist.TaxonomyClassifier.predict_products` gives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .models.ensemble import Ensemble
from .models.hierarchy import LevelIndex, Prediction, decode
from .products import Images, ProductBatch

__all__ = ["Pending", "Reader", "complete", "defer", "ensemble_proba"]


@dataclass(frozen=True)
class Reader:
    """What a fitted model reads of a product: its title, its context (the description's first
    ``description_chars`` characters and the ``text_attributes`` columns; a zero-shot model: the columns that say
    what the product is) and, with an ``image_encoder``, its photo (relative paths resolved under ``image_root``)."""

    text_attributes: tuple[str, ...] = ()
    description_chars: int | None = None
    zero_shot: bool = False
    image_encoder: Any = None
    image_root: str | None = None
    allow_remote_images: bool = False

    def texts(self, X: Any) -> tuple[list[str], list[str]]:
        """(titles, contexts) of products ``X`` (anything :meth:`ProductBatch.from_any` accepts)."""
        batch = ProductBatch.from_any(X)
        if self.zero_shot:  # no training to choose attributes: the ones that say what the product is
            return batch.titles, batch.kind_contexts()
        return batch.titles, batch.contexts(list(self.text_attributes), self.description_chars)

    def photos(self, X: Any) -> Images | None:
        """(vectors, mask) of the products' photos (computed once per :class:`ProductBatch`), or ``None`` when
        the model does not read photos."""
        encoder = self.image_encoder
        if encoder is None:
            return None

        def encode(refs: list[str | bytes | None], root: Path) -> Images:
            batch = encoder.encode(refs, root, allow_remote=self.allow_remote_images)
            return batch.vectors, batch.mask

        root = Path(self.image_root) if self.image_root else None
        return ProductBatch.from_any(X).image_features(encoder.identity, encode, root=root)


def ensemble_proba(ens: Ensemble, pairs: tuple[list[str], list[str]], img: Images | None = None,
                   modality: str = "all", sparse_log: np.ndarray | None = None,
                   known: Sequence[str | None] | None = None, adapt: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The ensemble's leaf probabilities of products already read, and their embeddings when it computed them.

    ``img``: their photos (``None`` for a model that reads photos: products without one); ``sparse_log``: the
    sparse member's log-probabilities when the cascade already computed them; ``adapt``: a zero-shot model
    adapts the scores to the batch as one catalogue (:mod:`taxonomist.models.transduction`), ``known`` being the
    category each product already has (``""`` where none)."""
    from .encoders.transformer import blas_single_thread

    n = len(pairs[0])
    if img is None and ens.image_encoder is not None and modality != "text":
        img = (np.zeros((n, int(ens.image_encoder.dim)), np.float32), np.zeros(n, bool))
    with blas_single_thread(n):
        proba, emb = ens.predict_proba(pairs, img, modality, sparse_log)
    zs = ens.members.zeroshot
    if adapt and zs is not None and zs.adaptation:
        from .models.transduction import GENERAL, OWN, allowed_classes
        from .models.transduction import adapt as adapt_scores
        from .models.zeroshot import zero_shot_queries

        allowed = allowed_classes(zs.classes_, known) if known is not None else None
        proba = adapt_scores(proba, zero_shot_queries(*pairs), GENERAL if zs.adaptation == "general" else OWN,
                             allowed, embeddings=emb, temperature=zs.temperature)
    return proba, emb


@dataclass
class Pending:
    """Products :func:`defer` left to :func:`complete`."""

    batch: ProductBatch | None  # the whole call, when nothing was answered (its photos are read); else None
    titles: list[str]
    contexts: list[str]
    sparse_log: np.ndarray | None  # the sparse member's log-probabilities, when the cascade computed them
    top_k: int
    min_confidence: float | None


def defer(ens: Ensemble, reader: Reader, levels: LevelIndex, batch: ProductBatch, top_k: int,
          min_confidence: float | None) -> tuple[list[Prediction | None], Pending | None]:
    """The predictions of the products the ensemble's sparse member answers alone (``None`` for each other
    product) and what is left (``None`` when nothing is). An ensemble without a cascade (or one that reads photos)
    leaves everything."""
    titles, contexts = reader.texts(batch)
    split = ens.split_sure((titles, contexts))
    if split is None:
        return [None] * len(titles), Pending(batch, titles, contexts, None, top_k, min_confidence)
    sure, easy, sparse_log = split
    first: list[Prediction | None] = [None] * len(titles)
    easy_idx, hard = np.flatnonzero(easy), np.flatnonzero(~easy)
    for i, p in zip(easy_idx, decode(sure[easy_idx], levels, top_k=top_k, min_confidence=min_confidence), strict=True):
        first[i] = p
    if not len(hard):
        return first, None
    # (no batch: the cascade's leftovers are text-only, and the sparse log-probabilities are already computed)
    return first, Pending(None, [titles[i] for i in hard], [contexts[i] for i in hard], sparse_log[hard], top_k,
                          min_confidence)


def complete(ens: Ensemble, reader: Reader, levels: LevelIndex, pending: Sequence[Pending]) -> list[list[Prediction]]:
    """The predictions of the products several :func:`defer` calls left, in one pass through the encoders: each
    call's, in order. Several clients' products together: a zero-shot model answers each alone (no adaptation to
    the batch as one catalogue)."""
    out: list[list[Prediction]] = [[] for _ in pending]
    cascaded = [i for i, p in enumerate(pending) if p.sparse_log is not None]
    whole = [i for i, p in enumerate(pending) if p.sparse_log is None]
    for group in (cascaded, whole):
        if not group:
            continue
        parts = [pending[i] for i in group]
        pairs = ([t for p in parts for t in p.titles], [c for p in parts for c in p.contexts])
        if group is cascaded:
            logs = np.vstack([p.sparse_log for p in parts if p.sparse_log is not None])
            proba = ensemble_proba(ens, pairs, sparse_log=logs)[0]
        else:  # their photos read together
            img = [reader.photos(p.batch) for p in parts if p.batch is not None]
            photos = None if not img or img[0] is None else (
                np.vstack([v for v, _ in img]), np.concatenate([m for _, m in img]))  # type: ignore[misc]
            proba = ensemble_proba(ens, pairs, img=photos)[0]
        start = 0
        for i, p in zip(group, parts, strict=True):
            out[i] = decode(proba[start:start + len(p.titles)], levels, top_k=p.top_k, min_confidence=p.min_confidence)
            start += len(p.titles)
    return out
