"""The default ensemble: sparse tier + nearest neighbours + zero-shot prior (+ embedding head), log-linear.

``log P(c) ∝ Σ_t w_t · log P_t(c)``: each member's calibrated probabilities are pooled geometrically with
non-negative weights fitted by minimising the negative log-likelihood on a grouped validation split (a convex
problem; the weights' sum plays the part of a temperature), then the top probability gets the same isotonic
map as the sparse tier. The members are fitted on the remaining 85 % for that, and refitted on everything
afterwards. A member that does not know a category (one added to the bundle later) abstains on it: it gives the
category its own best log-probability, so only the members that know the category decide for or against it.
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

__all__ = ["MEMBERS", "EnsembleMembers", "FittedEnsemble", "fit_ensemble", "fit_log_linear", "pool", "prior_shift",
           "select_prior_shift", "select_weights"]

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


def select_weights(logs: dict[str, np.ndarray], y_index: np.ndarray, weights: dict[str, float],
                   anchor: str = "sparse", margin: float = 0.002,
                   shift: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Guard the NLL-fitted weights with the validation macro-F1.

    The NLL optimum is the best *probabilities*, not always the best decisions for rare leaves (measured on
    fashion: lower macro-F1 than the sparse tier alone). Candidates: the NLL weights, the same with the other
    members' weights scaled by 1/2 and 1/4, and ``anchor`` alone, each scored with ``shift`` (the prior shift)
    added; the NLL weights are kept unless a candidate beats their validation macro-F1 by more than ``margin``.
    Returns (weights, macro-F1 of each candidate).
    """
    from sklearn.metrics import f1_score

    if anchor not in logs or len(logs) == 1:
        return weights, {}
    cands: dict[str, dict[str, float]] = {"fitted": weights}
    for scale in (0.5, 0.25):
        cands[f"others x{scale}"] = {k: (v if k == anchor else v * scale) for k, v in weights.items()}
    cands[f"{anchor} only"] = {k: (v if k == anchor else 0.0) for k, v in weights.items()}
    add = 0.0 if shift is None else shift
    scores = {name: float(f1_score(y_index, (pool(logs, w) + add).argmax(axis=1), average="macro", zero_division=0))
              for name, w in cands.items()}
    best = max(scores, key=lambda k: scores[k])
    choice = best if scores[best] > scores["fitted"] + margin else "fitted"
    logger.info("ensemble weights on validation (macro-F1): %s -> %s",
                ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), choice)
    return cands[choice], scores


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
    from sklearn.metrics import f1_score

    conf = softmax(sparse_log, axis=1).max(axis=1)
    sparse_pred, ens_pred = sparse_log.argmax(axis=1), final.argmax(axis=1)
    base_f1 = f1_score(y_index, ens_pred, average="macro", zero_division=0)
    base_acc = float((ens_pred == y_index).mean())
    for t in CASCADE_THRESHOLDS:
        if not (conf >= t).any():
            break  # a cascade that never answers is no cascade
        pred = np.where(conf >= t, sparse_pred, ens_pred)
        f1 = f1_score(y_index, pred, average="macro", zero_division=0)
        if f1 >= base_f1 - margin and float((pred == y_index).mean()) >= base_acc - margin:
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


def select_prior_shift(logp: np.ndarray, y_index: np.ndarray, counts: np.ndarray,
                       margin: float = 0.002) -> tuple[float, dict[str, float]]:
    """The logit-adjustment strength (of :data:`PRIOR_SHIFTS`) with the best validation macro-F1; 0 unless
    another beats it by more than ``margin``. With a few validation examples per rare leaf this choice is
    noisy (it picks less shift than the held-out test prefers), hence the fixed default of the classifier."""
    from sklearn.metrics import f1_score

    scores = {f"prior shift {t}": float(f1_score(y_index, (logp + prior_shift(counts, t)).argmax(axis=1),
                                                 average="macro", zero_division=0)) for t in PRIOR_SHIFTS}
    best = max(PRIOR_SHIFTS, key=lambda t: scores[f"prior shift {t}"])
    tau = best if scores[f"prior shift {best}"] > scores["prior shift 0.0"] + margin else 0.0
    logger.info("prior shift on validation (macro-F1): %s -> %s",
                ", ".join(f"{t} {scores[f'prior shift {t}']:.4f}" for t in PRIOR_SHIFTS), tau)
    return tau, scores


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
            p[:, self.image.intercept_[: p.shape[1]] <= -1e3 + 1] = np.nan  # classes it saw no photo of
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


def _rank_score(p: np.ndarray, rank_logp: np.ndarray | None, temperature: float) -> np.ndarray | None:
    """The unshifted probability of each row's chosen class (``None`` without unshifted scores)."""
    if rank_logp is None:
        return None
    return np.asarray(softmax_with_temperature(rank_logp, temperature)[np.arange(len(p)), p.argmax(axis=1)])


def calibrate(logp: np.ndarray, y: np.ndarray,
              rank_logp: np.ndarray | None = None) -> tuple[float, tuple[np.ndarray, np.ndarray] | None]:
    """A final temperature and top-label map for pooled log-probabilities on validation data.

    ``rank_logp``: the pooled scores before the prior shift. The shift picks better leaves for rare classes
    but its top probabilities rank products worse (measured on BigBasket: coverage at 95 % precision 0.28
    against 0.62); with ``rank_logp`` the top-label map reads the unshifted probability of the chosen leaf."""
    t = fit_temperature(logp, y)
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


_MIN_VALIDATION = 50


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
    prior_shift: float | str = 0.5,
    img: Images | None = None,
    cascade: bool = True,
) -> FittedEnsemble:
    """Fit the members on a grouped fit part, fit temperatures, pooling weights and calibration on the held-out
    part, then refit the members on everything (the fine-tuned transformer is trained once, on the fit part).

    Args:
        pairs: (titles, contexts) of the training products; ``emb`` their title embeddings.
        groups: title groups (identical titles stay on one side of the split).
        make_sparse: a new, unfitted sparse member (calibration ``"none"``: the ensemble calibrates).
        prior_shift: logit-adjustment strength (:func:`prior_shift`), or ``"auto"`` to pick it on validation.
        img: image features and mask of the training products (for the ``image`` / ``fused`` members).
        cascade: pick a sparse-confidence threshold above which prediction skips the encoder
            (:func:`select_cascade`; text-only ensembles).
    """
    from .calibration import fit_temperature

    titles, contexts = pairs
    classes, y = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    weights = {m: 1.0 for m in members}
    scores: dict[str, float] = {}
    if prior_shift != "auto" and not (isinstance(prior_shift, (int, float)) and prior_shift >= 0):
        raise ValueError(f"prior_shift must be a number >= 0 or 'auto', got {prior_shift!r}")
    tau = 0.0 if prior_shift == "auto" else float(prior_shift)
    temperature, top_label, sparse_t, head_t, ft_t, img_t, fused_t = 1.0, None, 1.0, 1.0, 1.0, 1.0, 1.0
    cascade_t: float | None = None
    fit_idx, val_idx = split_for_validation(groups, y, validation_size, random_state)
    validate = len(val_idx) >= _MIN_VALIDATION and len(set(y[fit_idx].tolist())) >= 2
    sub = ([titles[i] for i in fit_idx], [contexts[i] for i in fit_idx])
    val = ([titles[i] for i in val_idx], [contexts[i] for i in val_idx])
    finetuned = None
    if "finetune" in members:
        from .finetune import FineTuner

        # fine-tuned once, on the fit part, with early stopping on the validation part; the final model
        # reuses it (refitting a transformer on everything would double the dominant cost)
        tuner = FineTuner(epochs=epochs, max_length=finetune_max_length, seed=random_state)
        if validate:
            finetuned = tuner.fit(encoder, finetune_texts(sub), y[fit_idx], len(classes), finetune_texts(val), y[val_idx])
        else:
            finetuned = tuner.fit(encoder, finetune_texts(pairs), y, len(classes))
    def rows(idx: np.ndarray) -> Images | None:
        return None if img is None else (img[0][idx], img[1][idx])

    if validate:
        part = EnsembleMembers(list(classes), members, knn_k).fit(sub, emb[fit_idx], y[fit_idx], make_sparse(),
                                                                  encoder, finetuned=finetuned, img=rows(fit_idx))
        if part.sparse is not None:
            s = part.sparse.decision_function(val)
            seen = np.isin(y[val_idx], part._sparse_cols)
            col = {c: j for j, c in enumerate(part._sparse_cols)}
            sparse_t = part.sparse.temperature_ = fit_temperature(s[seen], np.array([col[v] for v in y[val_idx][seen]]))
        if part.zeroshot is not None:
            part.zeroshot.fit_temperature(emb[val_idx], y[val_idx])
        if part.head is not None:
            head_t = part.head_temperature = fit_temperature(part.head.decision_function(emb[val_idx]), y[val_idx])
        if part.finetune is not None:
            ft_t = part.finetune_temperature = fit_temperature(part.finetune.logits(finetune_texts(val)), y[val_idx])
        val_img = rows(val_idx)
        if part.image is not None and val_img is not None and val_img[1].sum() >= 2:
            has = val_img[1]
            img_t = part.image_temperature = fit_temperature(part.image.decision_function(val_img[0][has]),
                                                             y[val_idx][has])
        if part.fused is not None and val_img is not None:
            fused_t = part.fused_temperature = fit_temperature(
                part.fused.decision_function(fused_features(emb[val_idx], val_img)), y[val_idx])
        # Weights and calibration are fitted as the final model will be used: on classes with training data.
        # Validation products of a class the fit part lacks (a rare leaf whose only examples were held out)
        # are left out, and so are such classes' columns; otherwise the weights learn to favour the members
        # that can name a class without examples (measured on BigBasket: validation macro-F1 0.469 with the
        # zero-shot member over-weighted, against 0.594 for the sparse member alone).
        known = np.unique(y[fit_idx])
        keep = np.isin(y[val_idx], known)
        remap = np.full(len(classes), -1)
        remap[known] = np.arange(len(known))
        y_val = remap[y[val_idx][keep]]
        logs = {k: v[keep][:, known] for k, v in part.logs(val, emb[val_idx], img=val_img).items()}
        counts = part.class_counts[known]
        weights, scores = select_weights(logs, y_val, fit_log_linear(logs, y_val), shift=_shift(counts, tau))
        pooled = pool(logs, weights)
        if prior_shift == "auto":
            tau, shift_scores = select_prior_shift(pooled, y_val, counts)
            scores.update(shift_scores)
        shifted = pooled + _shift(counts, tau)
        rank = pooled if tau > 0 else None
        if calibration != "none":
            temperature, top_label = calibrate(shifted, y_val, rank)
            if calibration == "temperature":
                top_label = None
        if cascade and "sparse" in logs and img is None and weights.get("sparse", 0) > 0 and len(weights) > 1:
            cascade_t, cascade_scores = select_cascade(logs["sparse"], shifted, y_val)
            scores.update(cascade_scores)
    else:
        logger.warning("too few products (%d held out) to fit the ensemble weights; using equal weights", len(val_idx))
    # the zero-shot scorer depends on the class list only: the one built (and temperature-fitted) above serves
    full = EnsembleMembers(list(classes), members, knn_k).fit(pairs, emb, y, make_sparse(), encoder,
                                                              sparse_temperature=sparse_t, finetuned=finetuned,
                                                              zeroshot=part.zeroshot if validate else None, img=img)
    full.finetune_temperature = ft_t
    full.head_temperature = head_t
    full.image_temperature = img_t
    full.fused_temperature = fused_t
    return FittedEnsemble(full, weights, temperature, top_label, scores, tau, rank_unshifted=tau > 0,
                          cascade=cascade_t)
