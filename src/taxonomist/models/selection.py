"""Choosing the ensemble on out-of-fold predictions: the members' log-linear weights and the prior shift
(:func:`select_stack`: never worse than the anchor member alone beyond noise), the paired bootstrap that says
whether a gain is noise (:func:`gain_interval`), the calibration (:func:`calibrate`) and the cascade threshold
(:func:`select_cascade`). :mod:`taxonomist.models.stacking` makes the predictions these choose on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.optimize import minimize

from ..metrics import macro_f1_accuracy
from ..vectors import row_blocks
from .calibration import fit_temperature, fit_top_label, softmax_with_temperature
from .ensemble import add_weighted, prior_shift, rank_score

__all__ = ["CASCADE_THRESHOLDS", "PRIOR_SHIFTS", "STACK_TOLERANCE", "calibrate", "fit_log_linear", "gain_interval",
           "TEMPERATURE_ROWS", "sample_rows", "temperature_rows", "select_cascade", "select_stack", "stacking_summary"]

logger = logging.getLogger(__name__)

_shift = prior_shift  # the function, where a parameter shadows its name

TEMPERATURE_ROWS = 10_000
"""Out-of-fold rows each temperature (and the final calibration) is fitted on, at most."""
_TEMPERATURE_CELLS = 2**24
"""... and at most this many rows × classes (float64 temporaries of 128 MB each), but never fewer than 2,000 rows."""


def temperature_rows(n_classes: int) -> int:
    """How many out-of-fold rows a temperature is fitted on at ``n_classes`` classes: :data:`TEMPERATURE_ROWS`, fewer
    where the classes are many (thousands of leaves), never fewer than 2,000."""
    return max(2_000, min(TEMPERATURE_ROWS, _TEMPERATURE_CELLS // max(1, n_classes)))

PRIOR_SHIFTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def fit_log_linear(logs: dict[str, np.ndarray], y_index: np.ndarray, rows: np.ndarray | None = None) -> dict[str, float]:
    """Non-negative weights minimising the NLL of ``pool(logs, w)`` on labels ``y_index`` (convex in w); with
    ``rows``, on those rows of ``logs`` (``y_index`` their labels), copied once into the stack the fit reads."""
    names = list(logs)
    n = len(next(iter(logs.values()))) if rows is None else len(rows)
    L = np.empty((len(names), n, *logs[names[0]].shape[1:]), dtype=np.result_type(*(logs[k] for k in names)))  # (m, n, C)
    for i, k in enumerate(names):
        L[i] = logs[k] if rows is None else logs[k][rows]
    rows = np.arange(L.shape[1])
    true = L[:, rows, y_index]  # (m, n)

    def f(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = np.tensordot(w, L, axes=1)  # (rows, classes) float64, then its exponentials, then the probabilities
        top = z.max(axis=1, keepdims=True)
        z -= top
        np.exp(z, out=z)  # one exponential per cell (logaddexp.reduce took two, pairwise)
        s = z.sum(axis=1, keepdims=True)
        lse = (top + np.log(s))[:, 0]
        z /= s
        nll = float((lse - w @ true).mean())
        grad = (np.einsum("nc,mnc->m", z, L) - true.sum(axis=1)) / L.shape[1]
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

    rows = sample_rows(len(y), _NLL_ROWS, seed)
    others = [k for k in logs if k != anchor]
    zero = dict.fromkeys(logs, 0.0)
    fitted = fit_log_linear({anchor: logs[anchor]}, y[rows], rows)
    out = {f"{anchor} only": {**zero, **fitted}}
    for r in range(1, len(others) + 1):
        for subset in combinations(others, r):
            names = (anchor, *subset)
            w = fit_log_linear({k: logs[k] for k in names}, y[rows], rows)
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
        scratch = np.empty_like(total)  # one products x classes temporary, reused (the stacking's peak memory)
        for k, v in cands[name].items():
            if v > 0:
                add_weighted(total, np.float32(v), logs[k], scratch)
        return {tau: np.asarray((np.add(total, s, out=scratch) if tau else total).argmax(axis=1))
                for tau, s in shifts.items()}

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


def sample_rows(n: int, cap: int, seed: int) -> np.ndarray:
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

    conf = np.concatenate([softmax(sparse_log[rows], axis=1).max(axis=1)  # (a block of rows at a time)
                           for rows in row_blocks(*sparse_log.shape)]) if len(sparse_log) else np.zeros(0)
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


def calibrate(logp: np.ndarray, y: np.ndarray, rank_logp: np.ndarray | None = None,
              seed: int = 0) -> tuple[float, tuple[np.ndarray, np.ndarray] | None]:
    """A final temperature and top-label map for pooled log-probabilities on validation data.

    ``rank_logp``: the pooled scores before the prior shift. The shift picks better leaves for rare classes
    but its top probabilities rank products worse (benchmarks/RESULTS.md, "Ensemble confidence read from the
    unshifted scores"); with ``rank_logp`` the top-label map reads the unshifted probability of the chosen leaf. The
    temperature is fitted on at most :func:`temperature_rows` products (drawn with ``seed``), the map on all."""
    rows = sample_rows(len(y), temperature_rows(logp.shape[1]), seed)
    t = fit_temperature(logp[rows], y[rows])
    scores, hits = [], []
    for block in row_blocks(*logp.shape):  # the probabilities (float64) of a block of rows at a time
        p = softmax_with_temperature(logp[block], t)
        score = rank_score(p, None if rank_logp is None else rank_logp[block], t)
        scores.append(p.max(axis=1) if score is None else score)
        hits.append(p.argmax(axis=1) == y[block])
    return t, fit_top_label(np.concatenate(scores) if scores else np.zeros(0), np.concatenate(hits) if hits else
                            np.zeros(0, dtype=bool))


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
    if "photos" in report:
        ph = report["photos"]
        kept = {k: w for k, w in ph["weights"].items() if w > 0}
        if kept:
            text += (f"; photos pooled in ({ph['chosen']}: {', '.join(f'{k} {w:.2f}' for k, w in kept.items())}): "
                     f"macro-F1 {ph['macro_f1']:.4f}, accuracy {ph['accuracy']:.4f} against "
                     f"{ph['text_macro_f1']:.4f} / {ph['text_accuracy']:.4f} for the text model")
        else:
            tried = "; ".join(f"{k}: {v['macro_f1']:.4f} / {v['accuracy']:.4f}" for k, v in ph["options"].items())
            text += (f"; the photos do not help the text model beyond noise out of fold ({tried or 'no weighting gives them weight'}): "
                     "it predicts from the text alone, from a photo only where a product has no text")
    return {**report, "summary": text}
