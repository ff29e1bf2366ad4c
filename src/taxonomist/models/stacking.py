"""Fitting the ensemble by stacking: everything decided on the user's own data, out of fold.

The members are fitted on k - 1 grouped folds and predict the k-th; on these out-of-fold predictions of every
product the temperatures, which members take part with which weights, the prior shift, the calibration and the
cascade threshold are chosen -- never a configuration that does worse than the sparse member alone beyond noise
(:func:`select_stack`). Then the members are refitted on everything (:func:`fit_ensemble` returns the
:class:`~taxonomist.models.ensemble.Ensemble`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from sklearn.model_selection import GroupShuffleSplit

from ..metrics import macro_f1_accuracy
from ..products import Images
from .calibration import fit_temperature, fit_top_label, softmax_with_temperature
from .ensemble import (
    EPS,
    Ensemble,
    EnsembleMembers,
    finetune_texts,
    fused_features,
    paths,
    pool,
    prior_shift,
    rank_score,
)
from .sparse import SparseClassifier
from .zeroshot import TaxonomyScorer

__all__ = ["CASCADE_THRESHOLDS", "CONTEXT_MEMBERS", "PRIOR_SHIFTS", "STACK_TOLERANCE", "calibrate", "fit_ensemble",
           "fit_log_linear", "gain_interval", "group_folds", "select_cascade", "select_stack", "split_for_validation",
           "stacking_summary"]

logger = logging.getLogger(__name__)

_shift = prior_shift  # the function, where a parameter shadows its name

PRIOR_SHIFTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def fit_log_linear(logs: dict[str, np.ndarray], y_index: np.ndarray) -> dict[str, float]:
    """Non-negative weights minimising the NLL of ``pool(logs, w)`` on labels ``y_index`` (convex in w)."""
    names = list(logs)
    L = np.stack([logs[k] for k in names])  # (m, n, C)
    rows = np.arange(L.shape[1])
    true = L[:, rows, y_index]  # (m, n)

    def f(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = np.tensordot(w, L, axes=1)
        lse = np.logaddexp.reduce(z, axis=1)
        p = np.exp(z - lse[:, None])
        nll = float((lse - w @ true).mean())
        grad = (np.einsum("nc,mnc->m", p, L) - true.sum(axis=1)) / L.shape[1]
        return nll, grad

    w0 = np.full(len(names), 1.0 / len(names))
    res = minimize(f, w0, jac=True, method="L-BFGS-B", bounds=[(0.0, 20.0)] * len(names))
    weights = {k: float(v) for k, v in zip(names, res.x, strict=True)}
    logger.info("ensemble weights (validation NLL %.4f): %s", res.fun,
                ", ".join(f"{k}={v:.3f}" for k, v in weights.items()))
    return weights


STACK_TOLERANCE = 0.002
"""How much out-of-fold macro-F1 or accuracy a configuration may lose against the sparse member alone and still
be chosen (when its sum of both is higher)."""
_NLL_ROWS = 5000  # out-of-fold rows the log-linear weights are fitted on (the fit is over rows x classes)


def _candidates(logs: dict[str, np.ndarray], y: np.ndarray, anchor: str, seed: int) -> dict[str, dict[str, float]]:
    """Weightings to score: ``anchor`` alone, and for each set of other members the NLL-fitted log-linear
    weights with the others' weights as fitted, halved and quartered."""
    from itertools import combinations

    rows = _sample(len(y), _NLL_ROWS, seed)
    others = [k for k in logs if k != anchor]
    zero = dict.fromkeys(logs, 0.0)
    fitted = fit_log_linear({anchor: logs[anchor][rows]}, y[rows])
    out = {f"{anchor} only": {**zero, **fitted}}
    for r in range(1, len(others) + 1):
        for subset in combinations(others, r):
            names = (anchor, *subset)
            w = fit_log_linear({k: logs[k][rows] for k in names}, y[rows])
            if all(w[k] == 0 for k in subset):
                continue
            for scale in (1.0, 0.5, 0.25):
                label = " + ".join(names) + ("" if scale == 1.0 else f" (others x{scale})")
                out[label] = {**zero, **{k: (v if k == anchor else v * scale) for k, v in w.items()}}
    return out


def select_stack(logs: dict[str, np.ndarray], y: np.ndarray, counts: np.ndarray,
                 prior_shift: float | str = "auto", anchor: str = "sparse", tolerance: float = STACK_TOLERANCE,
                 n_boot: int = 200, seed: int = 0) -> tuple[dict[str, float], float, dict[str, Any]]:
    """Member weights and prior shift chosen on out-of-fold predictions (stacking).

    Every weighting of :func:`_candidates`, with every prior shift (``"auto"``: each of :data:`PRIOR_SHIFTS`;
    a number: that one), is scored by out-of-fold macro-F1 and accuracy. The floor is ``anchor`` (the sparse
    member) alone without shift: the sparse tier. A configuration is admissible when neither score is below the
    floor's by more than ``tolerance``; the admissible one with the highest macro-F1 + accuracy is chosen, and
    kept only when a paired bootstrap over the out-of-fold products (``n_boot`` Poisson resamples) puts its
    gain in macro-F1 + accuracy above zero in 90 % of them -- otherwise the floor (a gain within noise is not
    a gain). Returns (weights, prior shift, report); ``report["fitted_weights"]`` is the NLL weighting of all
    members (what :meth:`~taxonomist.TaxonomyClassifier.add_category` falls back to).
    """
    if anchor not in logs:
        raise ValueError(f"the stacking floor needs the {anchor!r} member")
    n_classes = logs[anchor].shape[1]
    taus = PRIOR_SHIFTS if prior_shift == "auto" else (0.0, float(prior_shift))
    cands = _candidates(logs, y, anchor, seed)
    shifts = {tau: _shift(counts, tau).astype(np.float32) for tau in dict.fromkeys(taus)}

    def predict(name: str) -> dict[float, np.ndarray]:
        """The arg-max of one weighting under each prior shift."""
        total = np.zeros(logs[anchor].shape, dtype=np.float32)
        for k, v in cands[name].items():
            if v > 0:
                total += np.float32(v) * logs[k]
        return {tau: np.asarray((total + s if tau else total).argmax(axis=1)) for tau, s in shifts.items()}

    scores = {(name, tau): macro_f1_accuracy(y, pred, n_classes)
              for name in cands for tau, pred in predict(name).items()}
    floor = (f"{anchor} only", 0.0)
    f0, a0 = scores[floor]
    ok = [k for k, (f, a) in scores.items() if f >= f0 - tolerance and a >= a0 - tolerance]
    best = max(ok, key=lambda k: (round(sum(scores[k]), 10), k == floor))
    lo = hi = 0.0
    if best != floor:
        lo, hi = gain_interval(y, predict(best[0])[best[1]], predict(floor[0])[floor[1]], n_classes, n_boot, seed)
        if lo <= 0:
            logger.info("stacking: %s with prior shift %s gains %.4f (80%% interval %.4f..%.4f): within noise",
                        best[0], best[1], sum(scores[best]) - f0 - a0, lo, hi)
            best = floor
    weights, tau = cands[best[0]], best[1]
    full = cands.get(" + ".join(logs), weights)  # all members, NLL-fitted
    top = sorted(scores, key=lambda k: -sum(scores[k]))[:5]
    report: dict[str, Any] = {
        "anchor": anchor, "chosen": best[0], "prior_shift": tau, "macro_f1": scores[best][0], "accuracy": scores[best][1],
        "floor_macro_f1": f0, "floor_accuracy": a0, "gain_interval_80": [lo, hi],
        "sparse_only": [k for k, v in weights.items() if v > 0] == [anchor],
        "fitted_weights": full,
        "top": [{"members": k[0], "prior_shift": k[1], "macro_f1": scores[k][0], "accuracy": scores[k][1]} for k in top],
    }
    logger.info("stacking: %d configurations scored out of fold; chosen %s, prior shift %s (macro-F1 %.4f, accuracy "
                "%.4f; the sparse member alone %.4f / %.4f)", len(scores), best[0], tau, *scores[best], f0, a0)
    return weights, tau, report


def gain_interval(y: np.ndarray, chosen: np.ndarray, base: np.ndarray, n_classes: int, n_boot: int = 200,
                  seed: int = 0) -> tuple[float, float]:
    """80 % interval of the gain in macro-F1 + accuracy of predictions ``chosen`` over ``base`` (paired
    bootstrap: ``n_boot`` Poisson resamples of the products)."""
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(n_boot):
        wts = rng.poisson(1.0, len(y)).astype(np.float64)
        gains.append(sum(macro_f1_accuracy(y, chosen, n_classes, wts)) - sum(macro_f1_accuracy(y, base, n_classes, wts)))
    lo, hi = np.quantile(gains, [0.1, 0.9])
    return float(lo), float(hi)


def _sample(n: int, cap: int, seed: int) -> np.ndarray:
    """At most ``cap`` of ``n`` positions, sorted (all of them when ``n <= cap``)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


CASCADE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)


def select_cascade(sparse_log: np.ndarray, final: np.ndarray, y_index: np.ndarray,
                   margin: float = 0.0) -> tuple[float | None, dict[str, float]]:
    """The lowest threshold t such that answering with the sparse member alone wherever its (calibrated) top
    probability reaches t — and encoding only the other products — keeps the validation macro-F1 and accuracy
    within ``margin`` of the full ensemble's. ``None`` when no threshold does.

    The transformer is the ensemble's cost; the sparse member is already right, and sure, on most products, so a
    cascade spends the encoder where the ensemble can still change the answer.
    Returns (threshold, {"cascade_share": share of validation products the sparse member answers at it}).
    """
    from scipy.special import softmax

    conf = softmax(sparse_log, axis=1).max(axis=1)
    sparse_pred, ens_pred = sparse_log.argmax(axis=1), final.argmax(axis=1)
    n_classes = final.shape[1]
    base_f1, base_acc = macro_f1_accuracy(y_index, ens_pred, n_classes)
    for t in CASCADE_THRESHOLDS:
        if not (conf >= t).any():
            break  # a cascade that never answers is no cascade
        pred = np.where(conf >= t, sparse_pred, ens_pred)
        f1, acc = macro_f1_accuracy(y_index, pred, n_classes)
        if f1 >= base_f1 - margin and acc >= base_acc - margin:
            share = float((conf >= t).mean())
            logger.info("cascade: the sparse member answers alone at confidence >= %.2f (%.0f%% of validation "
                        "products; macro-F1 %.4f vs %.4f for the full ensemble)", t, 100 * share, f1, base_f1)
            return t, {"cascade_share": share}
    logger.info("cascade: off (no threshold keeps the validation macro-F1 within %.3f)", margin)
    return None, {}


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


def calibrate(logp: np.ndarray, y: np.ndarray, rank_logp: np.ndarray | None = None,
              seed: int = 0) -> tuple[float, tuple[np.ndarray, np.ndarray] | None]:
    """A final temperature and top-label map for pooled log-probabilities on validation data.

    ``rank_logp``: the pooled scores before the prior shift. The shift picks better leaves for rare classes
    but its top probabilities rank products worse (benchmarks/RESULTS.md, "Ensemble confidence read from the
    unshifted scores"); with ``rank_logp`` the top-label map reads the unshifted probability of the chosen leaf. The
    temperature is fitted on at most ``_TEMPERATURE_ROWS`` products (drawn with ``seed``), the map on all."""
    rows = _sample(len(y), _TEMPERATURE_ROWS, seed)
    t = fit_temperature(logp[rows], y[rows])
    p = softmax_with_temperature(logp, t)
    score = rank_score(p, rank_logp, t)
    return t, fit_top_label(p.max(axis=1) if score is None else score, p.argmax(axis=1) == y)


_MIN_VALIDATION = 50
_TEMPERATURE_ROWS = 10_000  # out-of-fold rows each temperature is fitted on
_UNSEEN = float(np.log(EPS)) - 20.0  # out of fold: a class the fold's members never saw cannot win


def _splits(groups: np.ndarray, y: np.ndarray, members: Sequence[str], cv: int, validation_size: float,
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


def stacking_summary(report: Mapping[str, Any], weights: Mapping[str, float]) -> dict[str, Any]:
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
    if "embedding" in report:
        other = "title" if report["embedding"] != "title" else "title + context"
        o = report["embedding_scores"][other]
        text += (f"; embeddings of the {report['embedding']} (with the {other}: {o['macro_f1']:.4f} / "
                 f"{o['accuracy']:.4f})")
    return {**report, "summary": text}


@dataclass
class _Data:
    """The training products as the members read them: (titles, contexts), embeddings, class indices, photos."""

    pairs: tuple[list[str], list[str]]
    emb: np.ndarray
    y: np.ndarray
    img: Images | None

    def texts(self, idx: np.ndarray) -> tuple[list[str], list[str]]:
        return [self.pairs[0][i] for i in idx], [self.pairs[1][i] for i in idx]

    def rows(self, idx: np.ndarray) -> Images | None:
        return None if self.img is None else (self.img[0][idx], self.img[1][idx])


_TEMPERATURES = ("sparse", "head", "finetune", "image", "fused")


def _fold_temperatures(parts: list[EnsembleMembers], splits: list[tuple[np.ndarray, np.ndarray]], d: _Data,
                       zeroshot: TaxonomyScorer | None, n_classes: int, seed: int) -> dict[str, float]:
    """Each member's temperature, on (a sample of) the out-of-fold products of classes their fold saw."""
    y, emb, img = d.y, d.emb, d.img
    t = dict.fromkeys(_TEMPERATURES, 1.0)
    sample = _temperature_sample(splits, y, seed)
    picks = [b[np.isin(b, sample)] for _, b in splits]
    y_t = np.concatenate([y[p] for p in picks])

    def oof_scores(score: Callable[[EnsembleMembers, np.ndarray], np.ndarray]) -> np.ndarray:
        return np.vstack([score(part, p) for part, p in zip(parts, picks, strict=True)])

    if parts[0].sparse is not None:
        def sparse_scores(part: EnsembleMembers, p: np.ndarray) -> np.ndarray:
            full = np.full((len(p), n_classes), -1e4)
            full[:, part.sparse_cols] = part.sparse.decision_function(d.texts(p))  # type: ignore[union-attr]
            return full
        t["sparse"] = fit_temperature(oof_scores(sparse_scores), y_t)
    if zeroshot is not None:
        zeroshot.fit_temperature(emb[sample], y[sample])
    if parts[0].head is not None:
        t["head"] = fit_temperature(oof_scores(lambda m, p: m.head.decision_function(emb[p])), y_t)  # type: ignore[union-attr]
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


def _temperature_sample(splits: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray, seed: int) -> np.ndarray:
    """The out-of-fold products (of classes their fold saw) the temperatures are fitted on: at most
    ``_TEMPERATURE_ROWS``, sorted."""
    held = np.concatenate([b[np.isin(y[b], y[a])] for a, b in splits])
    return np.sort(held[_sample(len(held), _TEMPERATURE_ROWS, seed)])


def _set_temperatures(m: EnsembleMembers, t: Mapping[str, float]) -> None:
    if m.sparse is not None:
        m.sparse.temperature_ = t["sparse"]
    m.head_temperature, m.finetune_temperature = t["head"], t["finetune"]
    m.image_temperature, m.fused_temperature = t["image"], t["fused"]


def _out_of_fold(parts: list[EnsembleMembers], splits: list[tuple[np.ndarray, np.ndarray]], d: _Data,
                 n_classes: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Out-of-fold log-probabilities of every member, and the products' classes.

    Decisions are made as the final model is used: on classes with training data. A product whose class its fold
    never saw (a rare leaf whose only examples are in that fold) is left out, and in each fold the classes it
    never saw cannot win; otherwise the weights learn to favour the members that can name a class without
    examples (on BigBasket the zero-shot member was then over-weighted and validation macro-F1 fell well below the
    sparse member's)."""
    y = d.y
    oof: dict[str, list[np.ndarray]] = {}
    y_parts = []
    for part, (a, b) in zip(parts, splits, strict=True):
        keep = b[np.isin(y[b], y[a])]
        unseen = ~np.isin(np.arange(n_classes), y[a])
        for k, v in part.logs(d.texts(keep), d.emb[keep], img=d.rows(keep)).items():
            v[:, unseen] = _UNSEEN
            oof.setdefault(k, []).append(v.astype(np.float32))
        y_parts.append(y[keep])
    return {k: np.vstack(v) for k, v in oof.items()}, np.concatenate(y_parts)


def _decide(logs: dict[str, np.ndarray], y_oof: np.ndarray, counts: np.ndarray, prior_shift: float | str,
            calibration: str, cascade: bool, with_images: bool, seed: int) -> Ensemble:
    """Weights, prior shift, calibration and cascade threshold chosen on out-of-fold log-probabilities (the
    returned ensemble has no members yet)."""
    # the floor: the sparse member alone (tiers without one: their first member)
    anchor = "sparse" if "sparse" in logs else next(iter(logs))
    weights, tau, stacking = select_stack(logs, y_oof, counts, prior_shift, anchor=anchor, seed=seed)
    scores = {k: v for k, v in stacking.items() if isinstance(v, float)}
    pooled = pool(logs, weights)
    shifted = pooled + _shift(counts, tau)
    rank = pooled if tau > 0 else None
    temperature, top_label = 1.0, None
    if calibration != "none":
        temperature, top_label = calibrate(shifted, y_oof, rank, seed=seed)
        if calibration == "temperature":
            top_label = None
    cascade_t = None
    if cascade and "sparse" in logs and not with_images and weights.get("sparse", 0) > 0 and \
            any(w > 0 for k, w in weights.items() if k != "sparse"):
        cascade_t, cascade_scores = select_cascade(logs["sparse"], shifted, y_oof)
        scores.update(cascade_scores)
    return Ensemble(EnsembleMembers([], ()), weights, temperature, top_label, scores, tau, rank_unshifted=tau > 0,
                    cascade=cascade_t, stacking=stacking)


CONTEXT_MEMBERS = frozenset({"sparse", "knn", "zeroshot"})
"""Members with which ``fit_ensemble`` can compare title and title + context embeddings (the others that read
embeddings -- heads on them, the fused photo head -- would have to be fitted again per fold)."""


def _choose_embedding(parts: list[EnsembleMembers], splits: list[tuple[np.ndarray, np.ndarray]], d: _Data,
                      alt_emb: np.ndarray, logs: dict[str, np.ndarray], y_oof: np.ndarray, ens: Ensemble,
                      zeroshot: TaxonomyScorer | None, counts: np.ndarray, prior_shift: float | str,
                      calibration: str, cascade: bool, seed: int) -> tuple[Ensemble, bool]:
    """The ensemble decided with the title embeddings (``ens``, from ``logs``) or the one decided again with the
    title + context embeddings ``alt_emb`` -- the folds' neighbour indexes rebuilt on them and the zero-shot
    temperature refitted -- whichever predicts the out-of-fold products better: the context only when the paired
    bootstrap puts its gain in macro-F1 + accuracy above zero in 90 % of the resamples. Returns (ensemble, whether
    it embeds the context)."""
    n_classes, y = len(counts), d.y
    title_temperature = zeroshot.temperature if zeroshot is not None else None
    for part, (a, _) in zip(parts, splits, strict=True):
        if part.knn is not None:
            part.knn = type(part.knn)(k=part.knn_k).fit(alt_emb[a], y[a], n_classes)
    if zeroshot is not None:
        sample = _temperature_sample(splits, y, seed)
        zeroshot.fit_temperature(alt_emb[sample], y[sample])
    alt_logs, _ = _out_of_fold(parts, splits, _Data(d.pairs, alt_emb, y, d.img), n_classes)
    alt = _decide(alt_logs, y_oof, counts, prior_shift, calibration, cascade, False, seed)

    def predicted(lg: dict[str, np.ndarray], e: Ensemble) -> np.ndarray:
        return np.asarray((pool(lg, e.weights) + _shift(counts, e.prior_shift)).argmax(axis=1))

    with_context, with_title = predicted(alt_logs, alt), predicted(logs, ens)
    lo, hi = gain_interval(y_oof, with_context, with_title, n_classes, seed=seed)
    scores = {name: dict(zip(("macro_f1", "accuracy"), macro_f1_accuracy(y_oof, p, n_classes), strict=True))
              for name, p in (("title", with_title), ("title + context", with_context))}
    use = lo > 0
    logger.info("embedding: title + context %s the title alone out of fold (gain in macro-F1 + accuracy, 80%% "
                "interval %.4f..%.4f)", "beats" if use else "does not beat", lo, hi)
    if not use and zeroshot is not None and title_temperature is not None:
        zeroshot.temperature = title_temperature
    chosen = alt if use else ens
    chosen.stacking.update(embedding="title + context" if use else "title", embedding_scores=scores,
                           embedding_gain_interval_80=[lo, hi])
    return chosen, use


def _fine_tune(d: _Data, splits: list[tuple[np.ndarray, np.ndarray]], validate: bool, encoder: Any,
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


def fit_ensemble(
    pairs: tuple[list[str], list[str]],
    labels: Sequence[str],
    emb: np.ndarray,
    groups: np.ndarray,
    members: Sequence[str],
    encoder: Any,
    make_sparse: Callable[[], SparseClassifier],
    knn_k: int = 10,
    validation_size: float = 0.15,
    calibration: str = "temperature+isotonic",
    epochs: int = 3,
    finetune_max_length: int = 48,
    random_state: int = 0,
    prior_shift: float | str = "auto",
    img: Images | None = None,
    cascade: bool = True,
    cv: int = 3,
    alt_emb: np.ndarray | None = None,
) -> Ensemble:
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
        alt_emb: the products' title + context embeddings, to be compared with ``emb`` out of fold
            (:func:`_choose_embedding`; members within :data:`CONTEXT_MEMBERS` only); the ensemble's
            ``embed_context`` says which it reads.
    """
    from tqdm.auto import tqdm

    classes, y = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    n_classes = len(classes)
    if prior_shift != "auto" and not (isinstance(prior_shift, (int, float)) and prior_shift >= 0):
        raise ValueError(f"prior_shift must be a number >= 0 or 'auto', got {prior_shift!r}")
    d = _Data(pairs, emb, y, img)
    clock = _Clock()
    splits = _splits(groups, y, members, cv, validation_size, random_state)
    validate = sum(len(v) for _, v in splits) >= _MIN_VALIDATION
    finetuned = (_fine_tune(d, splits, validate, encoder, n_classes, epochs, finetune_max_length, random_state)
                 if "finetune" in members else None)
    # the zero-shot scorer depends on the class list only: built once, for every fold and the final model
    zeroshot = TaxonomyScorer().build(paths(list(classes)), encoder) if "zeroshot" in members else None
    temperatures = dict.fromkeys(_TEMPERATURES, 1.0)
    clock.lap("fine-tuning" if finetuned is not None else "")
    if validate:
        parts = [EnsembleMembers(list(classes), members, knn_k).fit(d.texts(a), emb[a], y[a], make_sparse(), encoder,
                                                                   finetuned=finetuned, zeroshot=zeroshot, img=d.rows(a))
                 for a, _ in tqdm(splits, desc=f"fitting the members on {len(splits)} folds", unit="fold",
                                  disable=len(splits) < 2 or not logger.isEnabledFor(logging.INFO))]
        clock.lap("folds")
        temperatures = _fold_temperatures(parts, splits, d, zeroshot, n_classes, random_state)
        for part in parts:
            _set_temperatures(part, temperatures)
        logs, y_oof = _out_of_fold(parts, splits, d, n_classes)
        counts = np.bincount(y, minlength=n_classes)
        ens = _decide(logs, y_oof, counts, prior_shift, calibration, cascade, img is not None, random_state)
        if alt_emb is not None:
            if not set(members) <= CONTEXT_MEMBERS or img is not None:
                raise ValueError(f"title and title + context embeddings are compared with the members "
                                 f"{sorted(CONTEXT_MEMBERS)} only, got {list(members)}")
            ens, use_context = _choose_embedding(parts, splits, d, alt_emb, logs, y_oof, ens, zeroshot, counts,
                                                 prior_shift, calibration, cascade, random_state)
            if use_context:
                emb = alt_emb
            ens.embed_context = use_context
        ens.stacking.update(folds=len(splits), oof_products=len(y_oof))
        clock.lap("stacking")
        del parts, logs
    else:
        held_out = sum(len(v) for _, v in splits)
        tau = 0.0 if prior_shift == "auto" else float(prior_shift)
        ens = Ensemble(EnsembleMembers([], ()), {m: 1.0 for m in members}, prior_shift=tau, rank_unshifted=tau > 0,
                       stacking={"folds": len(splits), "oof_products": held_out, "too_few": True})
        logger.warning("too few products (%d held out) to fit the ensemble weights; using equal weights", held_out)
    # members the stacking switched off are not refitted, but for the neighbour index, the zero-shot scorer and
    # the image head (cheap; what explanations, add_category and products with a photo but no text use)
    final = [m for m in members if ens.weights.get(m, 0) > 0 or m in ("knn", "zeroshot", "image")]
    ens.members = EnsembleMembers(list(classes), final, knn_k).fit(pairs, emb, y, make_sparse(), encoder,
                                                                  sparse_temperature=temperatures["sparse"],
                                                                  finetuned=finetuned, zeroshot=zeroshot, img=img)
    _set_temperatures(ens.members, temperatures)
    clock.lap("final members")
    ens.encoder = encoder
    ens.stacking = stacking_summary({**ens.stacking, "seconds": clock.seconds}, ens.weights)
    return ens


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
