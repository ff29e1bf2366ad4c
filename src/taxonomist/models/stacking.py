"""Fitting the ensemble by stacking: everything decided on the user's own data, out of fold.

The members are fitted on k - 1 grouped folds and predict the k-th; on these out-of-fold predictions of every
product the temperatures, which members take part with which weights, the prior shift, the calibration and the
cascade threshold are chosen -- never a configuration that does worse than the sparse member alone beyond noise
(:func:`select_stack`). Then the members are refitted on everything (:func:`fit_ensemble` returns the
:class:`~taxonomist.models.ensemble.Ensemble`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..metrics import macro_f1_accuracy
from ..products import Images
from .ensemble import (
    EMBEDDING_MEMBERS,
    IMAGE_MEMBERS,
    Ensemble,
    EnsembleMembers,
    finetune_texts,
    paths,
    pool,
    prior_shift,
)
from .folds import (
    MIN_VALIDATION,
    TEMPERATURES,
    FoldData,
    HeldOut,
    fold_members,
    fold_splits,
    fold_temperatures,
    group_folds,
    joint_temperature,
    out_of_fold,
    set_temperatures,
    split_for_validation,
    temperature_sample,
)
from .joint import JointModel
from .selection import (
    STACK_TOLERANCE,
    calibrate,
    gain_interval,
    select_cascade,
    select_stack,
    stacking_summary,
)
from .sparse import SparseClassifier
from .zeroshot import TaxonomyScorer

__all__ = ["CONTEXT_MEMBERS", "EMBEDDED_FLOOR", "embedding_sample", "fit_ensemble", "group_folds",
           "split_for_validation"]

logger = logging.getLogger(__name__)

_shift = prior_shift  # the function, where a parameter shadows its name

EMBEDDED_FLOOR = 20
""":func:`embedding_sample` keeps every product of a category with at most this many."""


def embedding_sample(y: np.ndarray, cap: int | None, seed: int) -> np.ndarray | None:
    """Which products an ensemble encodes when there are more than ``cap`` (a boolean mask; ``None``: all of them).

    Per category: all of its products when it has at most :data:`EMBEDDED_FLOOR` (the rare categories are where
    neighbours help most), else the same share ``r`` of each (at least the floor), ``r`` the largest that keeps the
    total within ``cap`` (more than ``cap`` when the categories' floors alone exceed it); drawn at random
    (``seed``) within each category.
    """
    n = len(y)
    if cap is None or n <= cap:
        return None
    counts = np.bincount(y)

    def kept(r: float) -> np.ndarray:
        return np.asarray(np.minimum(counts, np.maximum(EMBEDDED_FLOOR, np.floor(r * counts))), dtype=np.int64)

    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid).sum() <= cap else (lo, mid)
    take = kept(lo)
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    order = np.argsort(y, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    for c in np.flatnonzero(take):
        rows = order[starts[c]:starts[c] + counts[c]]
        mask[rows if take[c] == counts[c] else rng.choice(rows, take[c], replace=False)] = True
    return mask


def _decide(logs: dict[str, np.ndarray], y_oof: np.ndarray, counts: np.ndarray, prior_shift: float | str,
            calibration: str, cascade: bool, seed: int) -> Ensemble:
    """Weights, prior shift, calibration and cascade threshold of the text members chosen on their out-of-fold
    log-probabilities (the returned ensemble has no members yet)."""
    # the floor: the sparse member alone (tiers without one: their first member)
    anchor = "sparse" if "sparse" in logs else next(iter(logs))
    weights, tau, stacking = select_stack(logs, y_oof, counts, prior_shift, anchor=anchor, seed=seed)
    scores = {k: v for k, v in stacking.items() if isinstance(v, float)}
    pooled = pool(logs, weights)
    shifted = pooled + _shift(counts, tau).astype(pooled.dtype)  # (float32: a products × classes matrix)
    rank = pooled if tau > 0 else None
    temperature, top_label = _calibration(shifted, y_oof, rank, calibration, seed)
    cascade_t = None
    if cascade and "sparse" in logs and weights.get("sparse", 0) > 0 and \
            any(w > 0 for k, w in weights.items() if k != "sparse"):
        cascade_t, cascade_scores = select_cascade(logs["sparse"], shifted, y_oof)
        scores.update(cascade_scores)
    return Ensemble(EnsembleMembers([], ()), weights, temperature, top_label, scores, tau, rank_unshifted=tau > 0,
                    cascade=cascade_t, stacking=stacking)


def _calibration(shifted: np.ndarray, y_oof: np.ndarray, rank: np.ndarray | None, calibration: str,
                 seed: int) -> tuple[float, tuple[np.ndarray, np.ndarray] | None]:
    """(temperature, top-label map) of ``calibration`` fitted on the pooled, shifted out-of-fold scores."""
    if calibration == "none":
        return 1.0, None
    temperature, top_label = calibrate(shifted, y_oof, rank, seed=seed)
    return temperature, None if calibration == "temperature" else top_label


def _with_photos(ens: Ensemble, logs: dict[str, np.ndarray], photo_logs: dict[str, np.ndarray], y_oof: np.ndarray,
                 counts: np.ndarray, how: _Choices) -> Ensemble:
    """The text model ``ens`` (decided on the text members' ``logs``) with the photo members pooled in, or the
    text model itself -- unchanged, bit for bit -- where the photos do not help it out of fold.

    The photos are weighed against the text model's own out-of-fold predictions, not the sparse member's. Two
    ways of pooling them in are scored: the text model's pooled, shifted scores as one member beside the photo
    members (:func:`select_stack` with it as the anchor), and every member weighed anew with the photos (as
    without them: where the text is weak, a photo may do better beside some text members than beside the text
    model). The better of them (macro-F1 + accuracy, neither below the text model's by more than the tolerance)
    is kept only when the paired bootstrap puts its gain over the text model above zero in 90 % of the resamples.
    Kept, the calibration is fitted again and the cascade is off (a sure sparse answer would never let the photo
    speak)."""
    n_classes = len(counts)
    text = pool(logs, ens.weights) + _shift(counts, ens.prior_shift).astype(np.float32)
    floor = text.argmax(axis=1)
    f0, a0 = macro_f1_accuracy(y_oof, floor, n_classes)
    beside, _, report = select_stack({"text": text, **photo_logs}, y_oof, counts, 0.0, anchor="text", seed=how.seed)
    options: dict[str, tuple[dict[str, float], float]] = {}
    if not report["sparse_only"]:  # the text model's weights and shift scaled by its weight beside the photos
        a = beside["text"]
        options["the text model + photos"] = ({**{k: a * w for k, w in ens.weights.items()},
                                               **{k: beside[k] for k in photo_logs}}, a * ens.prior_shift)
    every = {**logs, **photo_logs}
    if "sparse" in logs:
        anew, tau, _ = select_stack(every, y_oof, counts, how.prior_shift, anchor="sparse", seed=how.seed)
        if any(anew[k] > 0 for k in photo_logs):
            options["every member weighed anew with photos"] = (anew, tau)

    def predicted(option: tuple[dict[str, float], float]) -> np.ndarray:
        w, t = option
        return np.asarray((pool(every, w) + _shift(counts, t).astype(np.float32)).argmax(axis=1))

    preds = {name: predicted(o) for name, o in options.items()}
    scores = {name: macro_f1_accuracy(y_oof, p, n_classes) for name, p in preds.items()}
    ok = [k for k, (f, a) in scores.items() if f >= f0 - STACK_TOLERANCE and a >= a0 - STACK_TOLERANCE]
    best = max(ok, key=lambda k: sum(scores[k]), default=None)
    lo = hi = 0.0
    if best is not None:
        lo, hi = gain_interval(y_oof, preds[best], floor, n_classes, seed=how.seed)
    photos: dict[str, Any] = {
        "text_macro_f1": f0, "text_accuracy": a0, "gain_interval_80": [lo, hi],
        "options": {k: {"macro_f1": f, "accuracy": a} for k, (f, a) in scores.items()}}
    fitted = {**ens.stacking.get("fitted_weights", {}), **{k: report["fitted_weights"].get(k, 0.0) for k in photo_logs}}
    if best is None or lo <= 0:
        logger.info("photos: no way of pooling them in beats the text model beyond noise out of fold (%s): the "
                    "text model", ", ".join(f"{k} {f:.4f} / {a:.4f}" for k, (f, a) in scores.items()) or "none")
        ens.weights.update(dict.fromkeys(photo_logs, 0.0))
        ens.stacking.update(photos={**photos, "chosen": "text only", "weights": dict.fromkeys(photo_logs, 0.0)},
                            fitted_weights=fitted)
        return ens
    weights, tau = options[best]
    f, a = scores[best]
    logger.info("photos: %s, macro-F1 %.4f, accuracy %.4f out of fold against %.4f / %.4f for the text model",
                best, f, a, f0, a0)
    photos.update(chosen=best, macro_f1=f, accuracy=a, weights={k: weights[k] for k in photo_logs})
    pooled = pool(every, weights)
    shifted = pooled + _shift(counts, tau).astype(pooled.dtype)
    temperature, top_label = _calibration(shifted, y_oof, pooled if tau > 0 else None, how.calibration, how.seed)
    validation = {**ens.validation_scores, "macro_f1": f, "accuracy": a}
    validation.pop("cascade_share", None)
    stacking = {**ens.stacking, "photos": photos, "fitted_weights": fitted, "macro_f1": f, "accuracy": a}
    return Ensemble(EnsembleMembers([], ()), weights, temperature, top_label, validation, tau, rank_unshifted=tau > 0,
                    stacking=stacking)


CONTEXT_MEMBERS = frozenset({"sparse", "knn", "zeroshot", "joint"})
"""Members with which ``fit_ensemble`` can compare title and title + context embeddings (the neighbour index and the
joint member are fitted again per fold on the other embeddings; the other heads on embeddings, the fused photo
head, are not)."""


def _context_logs(parts: list[EnsembleMembers], splits: list[tuple[np.ndarray, np.ndarray]], d: FoldData,
                  alt_emb: np.ndarray, logs: dict[str, np.ndarray], zeroshot: TaxonomyScorer | None, seed: int
                  ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The out-of-fold log-probabilities of the text members of ``logs`` reading the title + context embeddings
    ``alt_emb`` -- the folds' neighbour indexes and joint members fitted again on them, the zero-shot and joint
    temperatures fitted again -- and those temperatures (``{"zeroshot": .., "joint": ..}``; the zero-shot scorer
    keeps its title temperature until :func:`_choose_embedding` decides). The members that read no embedding (the
    sparse member) predict as in ``logs``: their out-of-fold predictions are not made again."""
    n_classes, y = len(parts[0].classes), d.y
    for part, (a, _) in zip(parts, splits, strict=True):
        a = d.with_embedding(a)
        if part.knn is not None:
            part.knn = type(part.knn)(k=part.knn_k).fit(alt_emb[a], y[a], n_classes)
        if part.joint is not None:
            j = part.joint
            part.joint = JointModel(j.C, j.prune, j.random_state, j.n_jobs).fit(
                part.sparse.features(d.sparse_input(a)), alt_emb[a], y[a], n_classes)  # type: ignore[union-attr]
    sample = temperature_sample(splits, d, seed)
    temperatures: dict[str, float] = {}
    title_temperature = zeroshot.temperature if zeroshot is not None else None
    if zeroshot is not None:
        zeroshot.fit_temperature(alt_emb[sample], y[sample])
        temperatures["zeroshot"] = zeroshot.temperature
    if parts[0].joint is not None:
        temperatures["joint"] = joint_temperature(parts, [b[np.isin(b, sample)] for _, b in splits], d, alt_emb)
        for part in parts:
            part.joint_temperature = temperatures["joint"]
    again, _ = out_of_fold(parts, splits, dataclasses.replace(d, emb=alt_emb), n_classes,
                           set(logs) & EMBEDDING_MEMBERS)
    if zeroshot is not None and title_temperature is not None:
        zeroshot.temperature = title_temperature
    return {k: again.get(k, v) for k, v in logs.items()}, temperatures


def _choose_embedding(ens: Ensemble, logs: dict[str, np.ndarray], alt_logs: dict[str, np.ndarray],
                      alt_temperatures: dict[str, float], y_oof: np.ndarray, zeroshot: TaxonomyScorer | None,
                      counts: np.ndarray, how: _Choices) -> tuple[Ensemble, bool, dict[str, np.ndarray]]:
    """The ensemble decided with the title embeddings (``ens``, from the text members' ``logs``) or the one decided
    on the title + context embeddings' out-of-fold log-probabilities ``alt_logs`` (:func:`_context_logs`),
    whichever predicts the out-of-fold products better: the context only when the paired bootstrap puts its gain
    in macro-F1 + accuracy above zero in 90 % of the resamples (the zero-shot scorer then takes its title +
    context temperature). Returns (ensemble, whether it embeds the context, the out-of-fold log-probabilities it
    was decided on)."""
    n_classes, seed = len(counts), how.seed
    alt = _decide(alt_logs, y_oof, counts, how.prior_shift, how.calibration, how.cascade, seed)

    def predicted(lg: dict[str, np.ndarray], e: Ensemble) -> np.ndarray:
        return np.asarray((pool(lg, e.weights) + _shift(counts, e.prior_shift)).argmax(axis=1))

    with_context, with_title = predicted(alt_logs, alt), predicted(logs, ens)
    lo, hi = gain_interval(y_oof, with_context, with_title, n_classes, seed=seed)
    scores = {name: dict(zip(("macro_f1", "accuracy"), macro_f1_accuracy(y_oof, p, n_classes), strict=True))
              for name, p in (("title", with_title), ("title + context", with_context))}
    use = lo > 0
    logger.info("embedding: title + context %s the title alone out of fold (gain in macro-F1 + accuracy, 80%% "
                "interval %.4f..%.4f)", "beats" if use else "does not beat", lo, hi)
    if use and zeroshot is not None:
        zeroshot.temperature = alt_temperatures["zeroshot"]
    chosen = alt if use else ens
    chosen.stacking.update(embedding="title + context" if use else "title", embedding_scores=scores,
                           embedding_gain_interval_80=[lo, hi])
    return chosen, use, alt_logs if use else logs


def _fine_tune(d: FoldData, splits: list[tuple[np.ndarray, np.ndarray]], validate: bool, encoder: Any,
               n_classes: int, epochs: int, max_length: int, seed: int) -> Any:
    """The fine-tuned transformer: trained once, on the fit part, with early stopping on the held-out part; the
    final model reuses it (refitting a transformer on everything would double the dominant cost)."""
    from .finetune import FineTuner

    tuner = FineTuner(epochs=epochs, max_length=max_length, seed=seed)
    if validate:
        (fit_idx, val_idx), = splits
        return tuner.fit(encoder, finetune_texts(d.texts(fit_idx)), d.y[fit_idx], n_classes,
                         finetune_texts(d.texts(val_idx)), d.y[val_idx])
    return tuner.fit(encoder, finetune_texts(d.pairs), d.y, n_classes)


def fit_ensemble(pairs: tuple[list[str], list[str]], labels: Sequence[str], emb: np.ndarray, groups: np.ndarray,
                 members: Sequence[str], encoder: Any, make_sparse: Callable[[], SparseClassifier], knn_k: int = 10,
                 validation_size: float = 0.15, calibration: str = "temperature+isotonic", epochs: int = 3,
                 finetune_max_length: int = 48, random_state: int = 0, prior_shift: float | str = "auto",
                 img: Images | None = None, cascade: bool = True, cv: int = 3, alt_emb: np.ndarray | None = None,
                 embedded: np.ndarray | None = None) -> Ensemble:
    """Decide everything on out-of-fold predictions (stacking), then refit the members on everything.

    The members are fitted ``cv`` times, each time on the products outside one grouped fold, and predict that
    fold; on these out-of-fold predictions of (nearly) every product: each member's temperature, then which
    members take part with which log-linear weights and the prior shift (:func:`select_stack`: never worse than
    the sparse member alone beyond noise), the final calibration and the cascade threshold. With a fine-tuned
    transformer (trained once, on the fit part) or ``cv < 2`` one grouped split of ``validation_size`` is used.

    Args:
        pairs: (titles, contexts) of the training products; ``emb`` their title embeddings.
        groups: title groups (identical titles stay on one side of a split).
        make_sparse: a new, unfitted sparse member (calibration ``"none"``: the ensemble calibrates).
        prior_shift: logit-adjustment strength (:func:`prior_shift`), or ``"auto"`` to choose it out of fold.
        img: image features and mask of the training products (for the ``image`` / ``fused`` members).
        cascade: pick a sparse-confidence threshold above which prediction skips the encoder
            (:func:`select_cascade`; text-only ensembles).
        cv: folds of the out-of-fold predictions.
        alt_emb: the title + context embeddings, compared with ``emb`` out of fold (:func:`_choose_embedding`;
            members within :data:`CONTEXT_MEMBERS`); the ensemble's ``embed_context`` says which it reads.
        embedded: which products were encoded (:func:`embedding_sample`; the others' rows of ``emb`` and
            ``alt_emb`` are not read); ``None``: all. Not with the early-fusion or fine-tuned members (the image
            member learns from every photo).
    """
    classes, y = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    n_classes = len(classes)
    if prior_shift != "auto" and not (isinstance(prior_shift, (int, float)) and prior_shift >= 0):
        raise ValueError(f"prior_shift must be a number >= 0 or 'auto', got {prior_shift!r}")
    if embedded is not None and {"fused", "finetune"} & set(members):
        raise ValueError("the early-fusion and fine-tuned members learn from every product: embedded must be None")
    clock = _Clock()
    # the sparse member's features made once: its vocabulary from every training product (a held-out fold's
    # words get no weight from the fold's fit, only their idf counts them), so each product is tokenised once
    d = FoldData(pairs, emb, y, img, make_sparse().encode(pairs) if "sparse" in members else None, embedded)
    clock.lap("sparse features")
    splits = fold_splits(groups, y, members, cv, validation_size, random_state)
    validate = sum(len(v) for _, v in splits) >= MIN_VALIDATION
    finetuned = (_fine_tune(d, splits, validate, encoder, n_classes, epochs, finetune_max_length, random_state)
                 if "finetune" in members else None)
    # the zero-shot scorer depends on the class list only: built once, for every fold and the final model
    zeroshot = TaxonomyScorer().build(paths(list(classes)), encoder) if "zeroshot" in members else None
    temperatures = dict.fromkeys(TEMPERATURES, 1.0)
    clock.lap("fine-tuning" if finetuned is not None else "")
    if validate:
        parts, held = fold_members(d, splits, list(classes), members, knn_k, make_sparse, encoder, finetuned,
                                    zeroshot)
        clock.lap("folds")
        ens, temperatures = _stack(parts, held, splits, d, zeroshot, alt_emb,
                                   _Choices(prior_shift, calibration, cascade, random_state))
        if ens.embed_context and alt_emb is not None:
            emb = alt_emb
        clock.lap("stacking")
        del parts
    else:
        ens = _equal_weights(members, splits, prior_shift)
    # members the stacking switched off are not refitted, but for the neighbour index, the zero-shot scorer and
    # the image head (cheap; what explanations, add_category and products with a photo but no text use)
    final = [m for m in members if ens.weights.get(m, 0) > 0 or m in ("knn", "zeroshot", "image")
             or (m == "sparse" and ens.weights.get("joint", 0) > 0)]  # (the joint member reads its features)
    ens.members = EnsembleMembers(list(classes), final, knn_k).fit(pairs, emb, y, make_sparse(), encoder,
                                                                  sparse_temperature=temperatures["sparse"],
                                                                  finetuned=finetuned, zeroshot=zeroshot, img=img,
                                                                  encoded=d.encoded, embedded=embedded)
    set_temperatures(ens.members, temperatures)
    clock.lap("final members")
    ens.encoder = encoder
    ens.stacking = stacking_summary({**ens.stacking, "seconds": clock.seconds}, ens.weights)
    return ens


def _equal_weights(members: Sequence[str], splits: list[tuple[np.ndarray, np.ndarray]],
                   prior_shift: float | str) -> Ensemble:
    """The ensemble (no members yet) of a catalogue too small to choose on: every member at weight 1."""
    held_out = sum(len(v) for _, v in splits)
    tau = 0.0 if prior_shift == "auto" else float(prior_shift)
    logger.warning("too few products (%d held out) to fit the ensemble weights; using equal weights", held_out)
    return Ensemble(EnsembleMembers([], ()), {m: 1.0 for m in members}, prior_shift=tau, rank_unshifted=tau > 0,
                    stacking={"folds": len(splits), "oof_products": held_out, "too_few": True})


@dataclass(frozen=True)
class _Choices:
    """How the stacking chooses: the prior shift (``"auto"`` or fixed), the calibration, whether a cascade
    threshold is chosen, the seed of its samples and bootstraps."""

    prior_shift: float | str
    calibration: str
    cascade: bool
    seed: int


def _stack(parts: list[EnsembleMembers], held: list[HeldOut] | None, splits: list[tuple[np.ndarray, np.ndarray]],
           d: FoldData, zeroshot: TaxonomyScorer | None, alt_emb: np.ndarray | None, how: _Choices
           ) -> tuple[Ensemble, dict[str, float]]:
    """The members' temperatures, then the ensemble (no members yet) chosen on their out-of-fold predictions --
    with ``alt_emb``, on the title or the title + context embeddings, whichever predicts better beyond noise
    (``embed_context`` says which). ``parts`` is emptied once every out-of-fold prediction is made: the fold
    models are the largest thing held, and the choices that follow read only their predictions."""
    n_classes = len(parts[0].classes)
    temperatures = fold_temperatures(parts, splits, d, zeroshot, n_classes, how.seed, held)
    for part in parts:
        set_temperatures(part, temperatures)
    for h in held or ():
        h.temperature = temperatures["sparse"]
    logs, y_oof = out_of_fold(parts, splits, d, n_classes, held=held)
    # the text model first, decided as without photos; then the photos, against it (photos alone: their model)
    photo_logs = {k: logs.pop(k) for k in IMAGE_MEMBERS if k in logs} if set(logs) - set(IMAGE_MEMBERS) else {}
    alt = None
    if alt_emb is not None:
        members = [m for m in parts[0].members if m != "image"]
        if not set(members) <= CONTEXT_MEMBERS:
            raise ValueError(f"title and title + context embeddings are compared with the members "
                             f"{sorted(CONTEXT_MEMBERS)} (and the image member) only, got {list(parts[0].members)}")
        alt = _context_logs(parts, splits, d, alt_emb, logs, zeroshot, how.seed)
    parts.clear()  # every out-of-fold prediction is made: the fold models' memory is freed before the choices
    if held is not None:
        held.clear()
    counts = np.bincount(d.y, minlength=n_classes)
    ens = _decide(logs, y_oof, counts, how.prior_shift, how.calibration, how.cascade, how.seed)
    if alt is not None:
        ens, use_context, logs = _choose_embedding(ens, logs, *alt, y_oof, zeroshot, counts, how)
        ens.embed_context = use_context
        if use_context and "joint" in alt[1]:
            temperatures["joint"] = alt[1]["joint"]
    if photo_logs:
        ens = _with_photos(ens, logs, photo_logs, y_oof, counts, how)
    ens.stacking.update(folds=len(splits), oof_products=len(y_oof))
    if d.embedded is not None:
        ens.stacking.update(embedded_products=int(d.embedded.sum()))
    return ens, temperatures


class _Clock:
    """Wall seconds of the stages of an ensemble's fit (``lap(name)`` closes the stage that ran since the last)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        t = time.perf_counter()
        if name:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + t - self._t, 2)
        self._t = t
