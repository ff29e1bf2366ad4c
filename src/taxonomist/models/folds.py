"""The folds of the ensemble's stacking: grouped splits, the training products as the members read them, the
members fitted on each fold's complement, their temperatures and their out-of-fold log-probabilities.

Each fold's sparse member scores its held-out products as soon as it is fitted and is let go (:class:`HeldOut`):
on Cdiscount each fold's weights are a quarter of a gigabyte, and the three no longer pile up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

from ..products import Images
from ..vectors import row_blocks
from .calibration import fit_temperature, softmax_with_temperature
from .ensemble import EPS, EnsembleMembers, finetune_texts, fused_features
from .ovr import release_workers
from .selection import sample_rows, temperature_rows
from .sparse import Encoded, SparseClassifier
from .zeroshot import TaxonomyScorer

__all__ = ["FoldData", "HeldOut", "TEMPERATURES", "fold_members", "fold_splits", "fold_temperatures", "group_folds",
           "held_out", "joint_temperature", "out_of_fold", "set_temperatures", "split_for_validation",
           "temperature_sample"]

logger = logging.getLogger(__name__)


def split_for_validation(groups: np.ndarray, y: np.ndarray, size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A grouped split (identical titles stay together) into (fit, validation) positions."""
    split = GroupShuffleSplit(n_splits=1, test_size=size, random_state=seed)
    fit_idx, val_idx = next(split.split(np.zeros(len(y)), y, groups))
    return fit_idx, val_idx


def group_folds(groups: np.ndarray, y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """The fold (0 .. n_folds - 1) of each product: title groups never straddle two folds, and each category's
    groups are dealt round the folds in turn (in a random order), so a category with two groups has one in
    the training part of every fold and rare categories are spread as evenly as they can be."""
    uniq, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.lexsort((np.random.default_rng(seed).random(len(uniq)), np.asarray(y)[first]))
    fold_of_group = np.empty(len(uniq), dtype=np.int64)
    fold_of_group[order] = np.arange(len(uniq)) % n_folds
    return fold_of_group[inverse.ravel()]


MIN_VALIDATION = 50
UNSEEN = float(np.log(EPS)) - 20.0  # out of fold: a class the fold's members never saw cannot win


def fold_splits(groups: np.ndarray, y: np.ndarray, members: Sequence[str], cv: int, validation_size: float,
                seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, held-out) positions: ``cv`` grouped folds, or one grouped split when ``cv < 2`` or a transformer is
    fine-tuned (trained once, with early stopping on the held-out part)."""
    n_groups = len(np.unique(groups))
    if cv >= 2 and "finetune" not in members and n_groups >= cv:
        folds = group_folds(groups, y, cv, seed)
        out = [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in range(cv)]
    else:
        out = [split_for_validation(groups, y, validation_size, seed)]
    return [(a, b) for a, b in out if len(b) and len(np.unique(y[a])) >= 2]


@dataclass
class FoldData:
    """The training products as the members read them: (titles, contexts), embeddings, class indices, photos."""

    pairs: tuple[list[str], list[str]]
    emb: np.ndarray
    y: np.ndarray
    img: Images | None
    encoded: Encoded | None = None
    """The products' sparse features, made once for the folds and the final fit (``None``: each fit encodes)."""
    embedded: np.ndarray | None = None
    """Which products have an embedding (:func:`embedding_sample`; ``None``: all): the others' rows of ``emb`` are
    zeros, no embedding member learns from them and the out-of-fold decisions are made on the others."""

    def with_embedding(self, idx: np.ndarray) -> np.ndarray:
        """The products of ``idx`` that have an embedding."""
        return idx if self.embedded is None else idx[self.embedded[idx]]

    def predicted(self, split: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """The held-out products of ``split`` that are predicted out of fold: of a class its fit part has, with an
        embedding (in the held-out part's order)."""
        a, b = split
        return self.with_embedding(b[np.isin(self.y[b], self.y[a])])

    def mask(self, idx: np.ndarray) -> np.ndarray | None:
        return None if self.embedded is None else self.embedded[idx]

    def texts(self, idx: np.ndarray) -> tuple[list[str], list[str]]:
        return [self.pairs[0][i] for i in idx], [self.pairs[1][i] for i in idx]

    def features(self, idx: np.ndarray) -> Encoded | None:
        return None if self.encoded is None else self.encoded.rows(idx)

    def sparse_input(self, idx: np.ndarray) -> Any:
        """What the sparse member reads of these products: their features when made once, else their texts."""
        features = self.features(idx)
        return self.texts(idx) if features is None else features

    def rows(self, idx: np.ndarray) -> Images | None:
        return None if self.img is None else (self.img[0][idx], self.img[1][idx])


TEMPERATURES = ("sparse", "head", "joint", "finetune", "image", "fused")


@dataclass
class HeldOut:
    """A fold's sparse member reduced to what the stacking reads of it: its decision scores on the fold's held-out
    products that are predicted out of fold (``rows``, sorted), made as soon as it is fitted, so that its weights
    (a quarter of a gigabyte on Cdiscount) are freed before the next fold is fitted."""

    rows: np.ndarray
    scores: np.ndarray
    temperature: float = 1.0

    def proba(self, idx: np.ndarray) -> np.ndarray:
        """The member's probabilities of the products ``idx`` (a subset of ``rows``), as its ``predict_proba``."""
        return softmax_with_temperature(self.at(idx), self.temperature)

    def at(self, idx: np.ndarray) -> np.ndarray:
        return self.scores[np.searchsorted(self.rows, idx)]


def held_out(part: EnsembleMembers, d: FoldData, split: tuple[np.ndarray, np.ndarray], n_classes: int) -> HeldOut:
    """The decision scores of ``part``'s sparse member on the products of ``split`` predicted out of fold, made by
    the same blocks of rows as :func:`out_of_fold` makes them; its model is then let go (``part.sparse = None``)."""
    sparse = part.sparse
    assert sparse is not None and getattr(sparse, "top_label_", None) is None, "an uncalibrated sparse member"
    keep = d.predicted(split)
    scores: np.ndarray | None = None
    for rows in row_blocks(len(keep), n_classes):
        block = sparse.decision_function(d.sparse_input(keep[rows]))
        if scores is None:  # (in the scores' own dtype: float32 flat, float64 down a tree)
            scores = np.empty((len(keep), block.shape[1]), dtype=block.dtype)
        scores[rows] = block
    part.sparse = None
    if scores is None:
        scores = np.empty((0, len(sparse.classes_)), dtype=np.float32)
    return HeldOut(keep, scores)


def fold_temperatures(parts: list[EnsembleMembers], splits: list[tuple[np.ndarray, np.ndarray]], d: FoldData,
                      zeroshot: TaxonomyScorer | None, n_classes: int, seed: int,
                      held: list[HeldOut] | None = None) -> dict[str, float]:
    """Each member's temperature, on (a sample of) the out-of-fold products of classes their fold saw (the sparse
    member's scores from ``held`` when its fold models are gone)."""
    y, emb, img = d.y, d.emb, d.img
    t = dict.fromkeys(TEMPERATURES, 1.0)
    sample = temperature_sample(splits, d, seed)
    picks = [b[np.isin(b, sample)] for _, b in splits]
    y_t = np.concatenate([y[p] for p in picks])

    def oof_scores(score: Callable[[EnsembleMembers, np.ndarray], np.ndarray]) -> np.ndarray:
        return np.vstack([score(part, p) for part, p in zip(parts, picks, strict=True)])

    if parts[0].sparse is not None or held is not None:
        def sparse_scores(k: int, p: np.ndarray) -> np.ndarray:
            part = parts[k]
            full = np.full((len(p), n_classes), -1e4, dtype=np.float32)
            if held is not None:
                full[:, part.sparse_cols] = held[k].at(p)
                return full
            full[:, part.sparse_cols] = part.sparse.decision_function(d.sparse_input(p))  # type: ignore[union-attr]
            part.sparse.drop_prediction_caches()  # type: ignore[union-attr]  # (one fold's at a time)
            return full
        t["sparse"] = fit_temperature(np.vstack([sparse_scores(k, p) for k, p in enumerate(picks)]), y_t)
    if zeroshot is not None:
        zeroshot.fit_temperature(emb[sample], y[sample])
    if parts[0].head is not None:
        t["head"] = fit_temperature(oof_scores(lambda m, p: m.head.decision_function(emb[p])), y_t)  # type: ignore[union-attr]
    if parts[0].joint is not None:
        t["joint"] = joint_temperature(parts, picks, d, emb)
    if parts[0].finetune is not None:
        t["finetune"] = fit_temperature(oof_scores(lambda m, p: m.finetune.logits(finetune_texts(d.texts(p)))), y_t)
    if parts[0].image is not None and img is not None:
        s = oof_scores(lambda m, p: m.image.decision_function(img[0][p]))  # type: ignore[union-attr]
        # on the products with a photo whose class the fold's image head saw a photo of: a class can be known to
        # a fold only from products without a photo, and the true-class score of its photos is then the -1e3 of
        # an unknown class, which drove the temperature to its bound (a flat, near-chance member)
        has = np.concatenate([img[1][p] & part.image.known[y[p]]  # type: ignore[union-attr]
                              for part, p in zip(parts, picks, strict=True)])
        if has.sum() >= 2:
            t["image"] = fit_temperature(s[has], y_t[has])
    if parts[0].fused is not None and img is not None:
        t["fused"] = fit_temperature(oof_scores(lambda m, p: m.fused.decision_function(  # type: ignore[union-attr]
            fused_features(emb[p], (img[0][p], img[1][p])))), y_t)
    return t


def joint_temperature(parts: list[EnsembleMembers], picks: list[np.ndarray], d: FoldData, emb: np.ndarray) -> float:
    """The joint member's temperature on the out-of-fold products ``picks`` (of each fold), reading ``emb``."""
    scores = np.vstack([part.joint_scores(d.texts(p), emb[p], d.features(p)) for part, p in zip(parts, picks, strict=True)])
    return fit_temperature(scores, np.concatenate([d.y[p] for p in picks]))


def temperature_sample(splits: list[tuple[np.ndarray, np.ndarray]], d: FoldData, seed: int) -> np.ndarray:
    """The out-of-fold products (:meth:`FoldData.predicted`) the temperatures are fitted on: at most
    :func:`~taxonomist.models.selection.temperature_rows`, sorted."""
    held = np.concatenate([d.predicted(split) for split in splits])
    n_classes = int(d.y.max()) + 1 if len(d.y) else 1
    return np.sort(held[sample_rows(len(held), temperature_rows(n_classes), seed)])


def set_temperatures(m: EnsembleMembers, t: Mapping[str, float]) -> None:
    if m.sparse is not None:
        m.sparse.temperature_ = t["sparse"]
    m.head_temperature, m.finetune_temperature, m.joint_temperature = t["head"], t["finetune"], t["joint"]
    m.image_temperature, m.fused_temperature = t["image"], t["fused"]


def out_of_fold(parts: list[EnsembleMembers], splits: list[tuple[np.ndarray, np.ndarray]], d: FoldData,
                n_classes: int, active: set[str] | None = None, held: list[HeldOut] | None = None
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Out-of-fold log-probabilities of every member (of ``active``; the sparse member's from ``held`` when its
    fold models are gone), and the products' classes.

    Decisions are made as the final model is used: on classes with training data. A product whose class its fold
    never saw (a rare leaf whose only examples are in that fold) is left out, and in each fold the classes it
    never saw cannot win; otherwise the weights learn to favour the members that can name a class without
    examples (on BigBasket the zero-shot member was then over-weighted and validation macro-F1 fell well below the
    sparse member's)."""
    y = d.y
    keeps = [d.predicted(split) for split in splits]
    oof: dict[str, np.ndarray] = {}  # (products, classes) float32 per member, filled block by block
    at = 0
    for k_fold, (part, (a, _), keep) in enumerate(zip(parts, splits, keeps, strict=True)):
        unseen = ~np.isin(np.arange(n_classes), y[a])
        sparse_held = held[k_fold] if held is not None and (active is None or "sparse" in active) else None
        for rows in row_blocks(len(keep), n_classes):  # the members' float64 temporaries of a block at a time
            blk = keep[rows]
            for k, v in part.logs(d.texts(blk), d.emb[blk], active, img=d.rows(blk), encoded=d.features(blk),
                                  sparse_proba=None if sparse_held is None else sparse_held.proba(blk)).items():
                v[:, unseen] = UNSEEN
                if k not in oof:
                    oof[k] = np.empty((sum(len(kp) for kp in keeps), n_classes), dtype=np.float32)
                oof[k][at + rows.start:at + rows.start + len(blk)] = v
        if part.sparse is not None:
            part.sparse.drop_prediction_caches()
        at += len(keep)
    return oof, np.concatenate([y[kp] for kp in keeps])


def fold_members(d: FoldData, splits: list[tuple[np.ndarray, np.ndarray]], classes: list[str], members: Sequence[str],
                 knn_k: int, make_sparse: Callable[[], SparseClassifier], encoder: Any, finetuned: Any,
                 zeroshot: TaxonomyScorer | None) -> tuple[list[EnsembleMembers], list[HeldOut] | None]:
    """The members fitted on the products outside each fold (on its embedded ones for the embedding members), and
    -- unless the joint member reads the sparse member's features -- the sparse member's scores on each fold's
    held-out products (:class:`HeldOut`), its fold model let go before the next fold is fitted."""
    from tqdm.auto import tqdm

    y = d.y
    parts: list[EnsembleMembers] = []
    held: list[HeldOut] | None = [] if "sparse" in members and "joint" not in members else None
    X = None if d.encoded is None else d.encoded.X
    each = X is None or X.data.nbytes + X.indices.nbytes > RELEASE_EACH_FOLD_ABOVE
    for split in tqdm(splits, desc=f"fitting the members on {len(splits)} folds", unit="fold",
                      disable=len(splits) < 2 or not logger.isEnabledFor(logging.INFO)):
        a = split[0]
        parts.append(EnsembleMembers(classes, members, knn_k).fit(
            d.texts(a), d.emb[a], y[a], make_sparse(), encoder, finetuned=finetuned, zeroshot=zeroshot,
            img=d.rows(a), encoded=d.features(a), embedded=d.mask(a)))
        if each:  # (idle until the next fold's fit starts new ones: their memory is not kept meanwhile)
            release_workers()
        if held is not None:
            held.append(held_out(parts[-1], d, split, len(classes)))
    release_workers()  # (idle through the stacking)
    return parts, held


RELEASE_EACH_FOLD_ABOVE = 2**26
"""Bytes of the products' sparse features (values and indices) above which the worker processes are stopped after
each fold's fit, not once after the folds: their memory then matters more than restarting them (a second or two per
fold; Cdiscount's features are 194 MB, its peak 142 MB lower for it, 2026-12-05)."""
