"""The default ensemble: sparse tier + nearest neighbours + zero-shot prior (+ embedding head), log-linear.

``log P(c) ∝ Σ_t w_t · log P_t(c)``: each member's calibrated probabilities are pooled geometrically with
non-negative weights, then the top probability gets the same isotonic map as the sparse tier. Everything is
decided on the user's own data by cross-validation (stacking): the members are fitted on k - 1 grouped folds and
predict the k-th, and on these out-of-fold predictions of every product the temperatures, which members take
part with which weights, the prior shift, the calibration and the cascade threshold are chosen -- never a
configuration that does worse than the sparse member alone beyond noise (:func:`select_stack`). Then the members
are refitted on everything. A member that does not know a category (one added to the bundle later) abstains on
it: it gives the category its own best log-probability, so only the members that know the category decide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax
from sklearn.model_selection import GroupShuffleSplit

from ..taxonomy import CategoryPath, parse_path
from .calibration import apply_top_label, fit_temperature, fit_top_label, softmax_with_temperature
from .embed import EmbedHead, NeighbourIndex
from .sparse import SparseClassifier
from .zeroshot import TaxonomyScorer

__all__ = ["MEMBERS", "EnsembleMembers", "FittedEnsemble", "fit_ensemble", "fit_log_linear", "group_folds",
           "macro_f1_accuracy", "pool", "prior_shift", "select_cascade", "select_stack"]

logger = logging.getLogger(__name__)

MEMBERS = ("sparse", "knn", "zeroshot", "embed", "finetune", "image", "fused")
IMAGE_MEMBERS = ("image", "fused")
"""Members that read product photos: ``image`` (late fusion: a head on image features, pooled with the text
members; it abstains on products without a usable image) and ``fused`` (early fusion: one head on the text
embedding concatenated with the image features, zeros and a missing-image flag when there is none)."""
Images = tuple[np.ndarray, np.ndarray]
"""(vectors (n, d), mask (n,)): image features and which products have a usable image."""


def fused_features(emb: np.ndarray, img: Images) -> np.ndarray:
    """Early-fusion input: [text embedding, image features (zeros when missing), 1 - has_image]."""
    vectors, mask = img
    return np.hstack([emb, vectors * mask[:, None], (~mask)[:, None].astype(np.float32)]).astype(np.float32)
_EPS = 1e-4
_ABSTAIN_GAP = 1e-3


def pool(logs: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Log-linear pooling: ``log_softmax(Σ w_t log P_t)``."""
    if not logs:
        raise ValueError("nothing to pool: no member was run")
    total = sum(weights[k] * logs[k] for k in logs if weights.get(k, 0.0) > 0)
    if isinstance(total, int):  # no member with weight
        total = np.zeros_like(next(iter(logs.values())))
    return np.asarray(log_softmax(total, axis=1))


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


def macro_f1_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int,
                      weights: np.ndarray | None = None) -> tuple[float, float]:
    """(macro-F1, accuracy) of label indices, as scikit-learn computes them (macro over the classes that are true
    or predicted at least once, F1 0 where undefined), optionally with row ``weights`` (a bootstrap resample)."""
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    hit = pred == y
    tp = np.bincount(y[hit], weights=w[hit], minlength=n_classes)
    true = np.bincount(y, weights=w, minlength=n_classes)
    said = np.bincount(pred, weights=w, minlength=n_classes)
    seen = (true > 0) | (said > 0)
    f1 = 2 * tp[seen] / (true[seen] + said[seen])
    return float(f1.mean()) if seen.any() else 0.0, float(w[hit].sum() / max(w.sum(), 1e-12))


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
        rng = np.random.default_rng(seed)
        chosen, base = predict(best[0])[best[1]], predict(floor[0])[floor[1]]
        gains = []
        for _ in range(n_boot):
            wts = rng.poisson(1.0, len(y)).astype(np.float64)
            gains.append(sum(macro_f1_accuracy(y, chosen, n_classes, wts))
                         - sum(macro_f1_accuracy(y, base, n_classes, wts)))
        lo, hi = (float(v) for v in np.quantile(gains, [0.1, 0.9]))
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


PRIOR_SHIFTS = (0.0, 0.25, 0.5, 0.75, 1.0)
_SHIFT_MIN_COUNT = 5


def prior_shift(counts: np.ndarray, tau: float) -> np.ndarray:
    """Logit adjustment for long-tailed classes (Menon et al., ICLR 2021): ``-tau * log prior(c)``, centred.

    Added to pooled log-probabilities it trades a little accuracy on frequent leaves for recall on rare ones,
    which is what macro-F1 rewards. Classes without training examples (added to a bundle later) get 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    out = np.zeros(len(counts))
    has = counts > 0
    if tau == 0.0 or not has.any():
        return out
    # a leaf with one or two examples would get the largest push while its members' scores are the least
    # reliable: counts are floored at _SHIFT_MIN_COUNT
    floored = np.maximum(counts[has], _SHIFT_MIN_COUNT)
    log_prior = np.log(floored / floored.sum())
    out[has] = -tau * (log_prior - log_prior.mean())
    return out


_shift = prior_shift  # the function, where a parameter shadows its name


class EnsembleMembers:
    """The fitted members over one class list, and how to get each member's log-probabilities."""

    def __init__(self, classes: Sequence[str], members: Sequence[str], knn_k: int = 10) -> None:
        self.classes = [str(c) for c in classes]
        self.members = list(members)
        self.knn_k = knn_k
        self.sparse: SparseClassifier | None = None
        self.knn: NeighbourIndex | None = None
        self.zeroshot: TaxonomyScorer | None = None
        self.head: EmbedHead | None = None
        self.head_temperature = 1.0
        self.finetune: Any = None  # a FineTuner
        self.finetune_temperature = 1.0
        self.image: EmbedHead | None = None
        self.image_temperature = 1.0
        self.fused: EmbedHead | None = None
        self.fused_temperature = 1.0
        self.class_counts = np.zeros(len(self.classes), dtype=np.int64)  # training examples per class

    def fit(self, pairs: tuple[list[str], list[str]], emb: np.ndarray, y: np.ndarray, sparse: SparseClassifier,
            encoder: Any, sparse_temperature: float | None = None, finetuned: Any = None,
            zeroshot: TaxonomyScorer | None = None, img: Images | None = None) -> EnsembleMembers:
        """Fit the members on these products; a fine-tuned model is trained beforehand and passed in, and a
        zero-shot scorer already built over the same classes can be reused (it learns nothing from products)."""
        n = len(self.classes)
        self.class_counts = np.bincount(y, minlength=n).astype(np.int64)
        self.sparse = sparse.fit(pairs, [self.classes[i] for i in y]) if "sparse" in self.members else None
        if self.sparse is not None:
            # the sparse tier may have seen fewer classes than the ensemble (a split): realign its columns
            self._sparse_cols = np.array([self.classes.index(str(c)) for c in self.sparse.classes_])
            if sparse_temperature is not None:
                self.sparse.temperature_ = sparse_temperature
        if "knn" in self.members:
            self.knn = NeighbourIndex(k=self.knn_k).fit(emb, y, n)
        if "zeroshot" in self.members:
            self.zeroshot = zeroshot or TaxonomyScorer().build([parse_path(c) for c in self.classes], encoder)
        if "embed" in self.members:
            self.head = EmbedHead().fit(emb, y, n)
        if "finetune" in self.members:
            if finetuned is None:
                raise ValueError("the finetune member needs a fine-tuned model")
            self.finetune = finetuned
        if set(self.members) & set(IMAGE_MEMBERS):
            if img is None:
                raise ValueError("the image members need image features")
            vectors, mask = img
            if "image" in self.members:
                if mask.sum() < 2 or len(np.unique(y[mask])) < 2:
                    raise ValueError("the image member needs products of at least 2 categories with a usable image")
                self.image = EmbedHead().fit(vectors[mask], y[mask], n)
            if "fused" in self.members:
                self.fused = EmbedHead().fit(fused_features(emb, img), y, n)
        return self

    def logs(self, pairs: tuple[list[str], list[str]], emb: np.ndarray | None,
             active: set[str] | None = None, img: Images | None = None) -> dict[str, np.ndarray]:
        """Each member's log-probabilities (n, n_classes); members abstain on classes they do not know, and the
        image member on products without a usable image (a constant row: no say in the pooled result).

        ``active``: only these members (all when ``None``); ``emb`` may be ``None`` when no active member
        needs embeddings, ``img`` when no image member is active.
        """
        n_classes = len(self.classes)
        out: dict[str, np.ndarray] = {}

        def use(member: str) -> bool:
            return active is None or member in active

        def padded_log(proba: np.ndarray) -> np.ndarray:
            """Floored log-probabilities; columns of classes added after the member was fitted are unknown."""
            p = np.log(np.maximum(proba, _EPS))
            return np.pad(p, ((0, 0), (0, n_classes - p.shape[1])), constant_values=np.nan)

        if self.sparse is not None and use("sparse"):
            p = np.full((len(pairs[0]), n_classes), np.nan)
            p[:, self._sparse_cols] = np.log(np.maximum(self.sparse.predict_proba(pairs), _EPS))
            out["sparse"] = p
        if self.knn is not None and use("knn"):
            assert emb is not None, "the knn member needs embeddings"
            p = padded_log(self.knn.predict_proba(emb))
            # classes with no stored neighbour (added without examples) are unknown to this member
            p[:, np.bincount(self.knn.labels_, minlength=n_classes) == 0] = np.nan
            out["knn"] = p
        if self.zeroshot is not None and use("zeroshot"):
            assert emb is not None, "the zeroshot member needs embeddings"
            out["zeroshot"] = self.zeroshot.log_proba(emb)
        if self.head is not None and use("embed"):
            assert emb is not None, "the embed member needs embeddings"
            s = self.head.decision_function(emb)
            out["embed"] = padded_log(softmax_with_temperature(s, self.head_temperature))
        if self.finetune is not None and use("finetune"):
            s = self.finetune.logits(finetune_texts(pairs))
            out["finetune"] = padded_log(softmax_with_temperature(s, self.finetune_temperature))
        if self.image is not None and use("image"):
            assert img is not None, "the image member needs image features"
            p = padded_log(softmax_with_temperature(self.image.decision_function(img[0]), self.image_temperature))
            p[:, ~self.image.known[: p.shape[1]]] = np.nan  # classes it saw no photo of
            p[~img[1]] = 0.0  # no usable image: a constant row abstains
            out["image"] = p
        if self.fused is not None and use("fused"):
            assert emb is not None and img is not None, "the fused member needs embeddings and image features"
            s = self.fused.decision_function(fused_features(emb, img))
            out["fused"] = padded_log(softmax_with_temperature(s, self.fused_temperature))
        for k, v in out.items():
            # abstain: an unknown class gets the member's best known log-probability (a hair less, so that a
            # member alone still prefers the classes it knows when nothing else decides)
            if np.isnan(v).any():
                best = np.nanmax(v, axis=1, keepdims=True) - _ABSTAIN_GAP
                out[k] = np.where(np.isnan(v), best, v)
        return out


def finetune_texts(pairs: tuple[Sequence[str], Sequence[str]]) -> list[str]:
    """What the fine-tuned transformer reads: the title, then description + attributes."""
    return [f"{t} | {c}" if c else t for t, c in zip(pairs[0], pairs[1], strict=True)]


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


def _rank_score(p: np.ndarray, rank_logp: np.ndarray | None, temperature: float) -> np.ndarray | None:
    """The unshifted probability of each row's chosen class (``None`` without unshifted scores)."""
    if rank_logp is None:
        return None
    return np.asarray(softmax_with_temperature(rank_logp, temperature)[np.arange(len(p)), p.argmax(axis=1)])


def calibrate(logp: np.ndarray, y: np.ndarray, rank_logp: np.ndarray | None = None,
              seed: int = 0) -> tuple[float, tuple[np.ndarray, np.ndarray] | None]:
    """A final temperature and top-label map for pooled log-probabilities on validation data.

    ``rank_logp``: the pooled scores before the prior shift. The shift picks better leaves for rare classes
    but its top probabilities rank products worse (measured on BigBasket: coverage at 95 % precision 0.28
    against 0.62); with ``rank_logp`` the top-label map reads the unshifted probability of the chosen leaf. The
    temperature is fitted on at most ``_TEMPERATURE_ROWS`` products (drawn with ``seed``), the map on all."""
    rows = _sample(len(y), _TEMPERATURE_ROWS, seed)
    t = fit_temperature(logp[rows], y[rows])
    p = softmax_with_temperature(logp, t)
    score = _rank_score(p, rank_logp, t)
    return t, fit_top_label(p.max(axis=1) if score is None else score, p.argmax(axis=1) == y)


def finish(logp: np.ndarray, temperature: float, top_label: tuple[np.ndarray, np.ndarray] | None,
           rank_logp: np.ndarray | None = None) -> np.ndarray:
    p = softmax_with_temperature(logp, temperature)
    return apply_top_label(p, top_label, _rank_score(p, rank_logp, temperature)) if top_label is not None else p


def paths(classes: Sequence[str]) -> list[CategoryPath]:
    return [parse_path(c) for c in classes]


def members_state(m: EnsembleMembers) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """(params, arrays, JSON objects) of fitted members, for a bundle (no pickle)."""
    params: dict[str, Any] = {"classes": m.classes, "members": m.members, "knn_k": m.knn_k,
                              "head_temperature": m.head_temperature, "finetune_temperature": m.finetune_temperature,
                              "image_temperature": m.image_temperature, "fused_temperature": m.fused_temperature,
                              "class_counts": [int(c) for c in m.class_counts]}
    arrays: dict[str, np.ndarray] = {}
    objects: dict[str, Any] = {}
    if m.sparse is not None:
        sp_params, sp_arrays, sp_objects = m.sparse.get_state()
        params["sparse"] = sp_params
        params["sparse_cols"] = [int(c) for c in m._sparse_cols]
        arrays.update(sp_arrays)
        objects.update(sp_objects)
    if m.knn is not None:
        params["knn"], a = m.knn.get_state()
        arrays.update(a)
    if m.zeroshot is not None:
        params["zeroshot"], a = m.zeroshot.get_state()
        arrays.update(a)
    if m.head is not None:
        params["head"], a = m.head.get_state()
        arrays.update(a)
    for name in IMAGE_MEMBERS:
        head = getattr(m, name)
        if head is not None:
            params[name], a = head.get_state()
            arrays.update({f"{name}_{k}": v for k, v in a.items()})
    if m.finetune is not None:
        params["finetune"] = {**m.finetune.params(), "n_classes": m.finetune.n_classes_,
                              "history": m.finetune.history_}
    return params, arrays, objects


def members_from_state(params: dict[str, Any], arrays: dict[str, np.ndarray], objects: dict[str, Any],
                       encoder: Any = None, finetune_blob: bytes | None = None) -> EnsembleMembers:
    m = EnsembleMembers(params["classes"], params["members"], int(params["knn_k"]))
    m.head_temperature = float(params["head_temperature"])
    m.finetune_temperature = float(params.get("finetune_temperature", 1.0))
    m.class_counts = np.asarray(params.get("class_counts", [0] * len(m.classes)), dtype=np.int64)
    if "sparse" in params:
        m.sparse = SparseClassifier.from_state(params["sparse"], arrays, objects)
        m._sparse_cols = np.asarray(params["sparse_cols"], dtype=np.int64)
    if "knn" in params:
        m.knn = NeighbourIndex.from_state(params["knn"], arrays)
    if "zeroshot" in params:
        m.zeroshot = TaxonomyScorer.from_state(params["zeroshot"], arrays)
    if "head" in params:
        m.head = EmbedHead.from_state(params["head"], arrays)
    for name in IMAGE_MEMBERS:
        if name in params:
            setattr(m, name, EmbedHead.from_state(params[name], {k[len(name) + 1:]: v for k, v in arrays.items()
                                                                  if k.startswith(f"{name}_head_")}))
            setattr(m, f"{name}_temperature", float(params.get(f"{name}_temperature", 1.0)))
    if "finetune" in params:
        from .finetune import FineTuner

        ft_params = dict(params["finetune"])
        n_classes = int(ft_params.pop("n_classes"))
        history = ft_params.pop("history", [])
        if finetune_blob is None:
            raise ValueError("the bundle lists a fine-tuned member but has no finetune.safetensors")
        m.finetune = FineTuner.from_bytes(ft_params, encoder, n_classes, finetune_blob)
        m.finetune.history_ = history
    return m


@dataclass
class FittedEnsemble:
    """What :func:`fit_ensemble` returns: the members refitted on everything, and how to pool them."""

    members: EnsembleMembers
    weights: dict[str, float]
    temperature: float = 1.0
    top_label: tuple[np.ndarray, np.ndarray] | None = None
    validation_scores: dict[str, float] = field(default_factory=dict)
    prior_shift: float = 0.0  # logit-adjustment strength (see :func:`prior_shift`)
    rank_unshifted: bool = False  # the top-label map reads the unshifted probability (see :func:`calibrate`)
    cascade: float | None = None  # sparse member alone where its confidence reaches this (see select_cascade)
    stacking: dict[str, Any] = field(default_factory=dict)  # what cross-validation chose, and why (select_stack)


_MIN_VALIDATION = 50
_TEMPERATURE_ROWS = 10_000  # out-of-fold rows each temperature is fitted on
_UNSEEN = float(np.log(_EPS)) - 20.0  # out of fold: a class the fold's members never saw cannot win


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
) -> FittedEnsemble:
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
    """
    from tqdm.auto import tqdm

    from .calibration import fit_temperature

    titles, contexts = pairs
    classes, y = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    n_classes = len(classes)
    weights = {m: 1.0 for m in members}
    scores: dict[str, float] = {}
    stacking: dict[str, Any] = {}
    if prior_shift != "auto" and not (isinstance(prior_shift, (int, float)) and prior_shift >= 0):
        raise ValueError(f"prior_shift must be a number >= 0 or 'auto', got {prior_shift!r}")
    tau = 0.0 if prior_shift == "auto" else float(prior_shift)
    temperature, top_label, sparse_t, head_t, ft_t, img_t, fused_t = 1.0, None, 1.0, 1.0, 1.0, 1.0, 1.0
    cascade_t: float | None = None
    splits = _splits(groups, y, members, cv, validation_size, random_state)
    validate = sum(len(v) for _, v in splits) >= _MIN_VALIDATION

    def texts(idx: np.ndarray) -> tuple[list[str], list[str]]:
        return [titles[i] for i in idx], [contexts[i] for i in idx]

    def rows(idx: np.ndarray) -> Images | None:
        return None if img is None else (img[0][idx], img[1][idx])

    finetuned = None
    if "finetune" in members:
        from .finetune import FineTuner

        # fine-tuned once, on the fit part, with early stopping on the held-out part; the final model reuses it
        # (refitting a transformer on everything would double the dominant cost)
        tuner = FineTuner(epochs=epochs, max_length=finetune_max_length, seed=random_state)
        if validate:
            (fit_idx, val_idx), = splits
            finetuned = tuner.fit(encoder, finetune_texts(texts(fit_idx)), y[fit_idx], n_classes,
                                  finetune_texts(texts(val_idx)), y[val_idx])
        else:
            finetuned = tuner.fit(encoder, finetune_texts(pairs), y, n_classes)
    # the zero-shot scorer depends on the class list only: built once, for every fold and the final model
    zeroshot = TaxonomyScorer().build(paths(list(classes)), encoder) if "zeroshot" in members else None
    if validate:
        parts = [EnsembleMembers(list(classes), members, knn_k).fit(texts(a), emb[a], y[a], make_sparse(), encoder,
                                                                   finetuned=finetuned, zeroshot=zeroshot, img=rows(a))
                 for a, _ in tqdm(splits, desc=f"fitting the members on {len(splits)} folds", unit="fold",
                                  disable=len(splits) < 2 or not logger.isEnabledFor(logging.INFO))]
        # each member's temperature, on (a sample of) the out-of-fold products of classes their fold saw
        held = np.concatenate([b[np.isin(y[b], y[a])] for a, b in splits])
        sample = np.sort(held[_sample(len(held), _TEMPERATURE_ROWS, random_state)])
        picks = [b[np.isin(b, sample)] for _, b in splits]
        y_t = np.concatenate([y[p] for p in picks])

        def oof_scores(score: Callable[[EnsembleMembers, np.ndarray], np.ndarray]) -> np.ndarray:
            return np.vstack([score(part, p) for part, p in zip(parts, picks, strict=True)])

        if parts[0].sparse is not None:
            def sparse_scores(part: EnsembleMembers, p: np.ndarray) -> np.ndarray:
                full = np.full((len(p), n_classes), -1e4)
                full[:, part._sparse_cols] = part.sparse.decision_function(texts(p))  # type: ignore[union-attr]
                return full
            sparse_t = fit_temperature(oof_scores(sparse_scores), y_t)
        if zeroshot is not None:
            zeroshot.fit_temperature(emb[sample], y[sample])
        if parts[0].head is not None:
            head_t = fit_temperature(oof_scores(lambda m, p: m.head.decision_function(emb[p])), y_t)  # type: ignore[union-attr]
        if parts[0].finetune is not None:
            ft_t = fit_temperature(oof_scores(lambda m, p: m.finetune.logits(finetune_texts(texts(p)))), y_t)
        if parts[0].image is not None and img is not None:
            s = oof_scores(lambda m, p: m.image.decision_function(img[0][p]))  # type: ignore[union-attr]
            # on the products with a photo whose class the fold's image head saw a photo of: a class can be known
            # to a fold only from products without a photo, and the true-class score of its photos is then the
            # -1e3 of an unknown class, which drove the temperature to its bound (a flat, near-chance member)
            has = np.concatenate([img[1][p] & part.image.known[y[p]]  # type: ignore[union-attr]
                                  for part, p in zip(parts, picks, strict=True)])
            if has.sum() >= 2:
                img_t = fit_temperature(s[has], y_t[has])
        if parts[0].fused is not None and img is not None:
            fused_t = fit_temperature(oof_scores(lambda m, p: m.fused.decision_function(  # type: ignore[union-attr]
                fused_features(emb[p], (img[0][p], img[1][p])))), y_t)
        # out-of-fold log-probabilities of every member. Decisions are made as the final model is used: on
        # classes with training data. A product whose class its fold never saw (a rare leaf whose only examples
        # are in that fold) is left out, and in each fold the classes it never saw cannot win; otherwise the
        # weights learn to favour the members that can name a class without examples (measured on BigBasket:
        # validation macro-F1 0.469 with the zero-shot member over-weighted, against 0.594 for the sparse member).
        oof: dict[str, list[np.ndarray]] = {}
        y_parts = []
        for part, (a, b) in zip(parts, splits, strict=True):
            if part.sparse is not None:
                part.sparse.temperature_ = sparse_t
            part.head_temperature, part.finetune_temperature = head_t, ft_t
            part.image_temperature, part.fused_temperature = img_t, fused_t
            keep = b[np.isin(y[b], y[a])]
            unseen = ~np.isin(np.arange(n_classes), y[a])
            for k, v in part.logs(texts(keep), emb[keep], img=rows(keep)).items():
                v[:, unseen] = _UNSEEN
                oof.setdefault(k, []).append(v.astype(np.float32))
            y_parts.append(y[keep])
        logs = {k: np.vstack(v) for k, v in oof.items()}
        y_oof = np.concatenate(y_parts)
        counts = np.bincount(y, minlength=n_classes)
        # the floor: the sparse member alone (tiers without one: their first member)
        anchor = "sparse" if "sparse" in logs else next(iter(logs))
        weights, tau, stacking = select_stack(logs, y_oof, counts, prior_shift, anchor=anchor, seed=random_state)
        stacking.update(folds=len(splits), oof_products=len(y_oof))
        scores = {k: v for k, v in stacking.items() if isinstance(v, float)}
        pooled = pool(logs, weights)
        shifted = pooled + _shift(counts, tau)
        rank = pooled if tau > 0 else None
        if calibration != "none":
            temperature, top_label = calibrate(shifted, y_oof, rank, seed=random_state)
            if calibration == "temperature":
                top_label = None
        if cascade and "sparse" in logs and img is None and weights.get("sparse", 0) > 0 and \
                any(w > 0 for k, w in weights.items() if k != "sparse"):
            cascade_t, cascade_scores = select_cascade(logs["sparse"], shifted, y_oof)
            scores.update(cascade_scores)
        del logs, parts
    else:
        held_out = sum(len(v) for _, v in splits)
        stacking = {"folds": len(splits), "oof_products": held_out, "too_few": True}
        logger.warning("too few products (%d held out) to fit the ensemble weights; using equal weights", held_out)
    # members the stacking switched off are not refitted, but for the neighbour index, the zero-shot scorer and
    # the image head (cheap; what explanations, add_category and products with a photo but no text use)
    final = [m for m in members if weights.get(m, 0) > 0 or m in ("knn", "zeroshot", "image")]
    full = EnsembleMembers(list(classes), final, knn_k).fit(pairs, emb, y, make_sparse(), encoder,
                                                            sparse_temperature=sparse_t, finetuned=finetuned,
                                                            zeroshot=zeroshot, img=img)
    full.finetune_temperature = ft_t
    full.head_temperature = head_t
    full.image_temperature = img_t
    full.fused_temperature = fused_t
    return FittedEnsemble(full, weights, temperature, top_label, scores, tau, rank_unshifted=tau > 0,
                          cascade=cascade_t, stacking=stacking)
