"""The ensemble: sparse tier + nearest neighbours + zero-shot prior (+ embedding, fine-tuned and image heads),
pooled log-linearly.

``log P(c) ∝ Σ_t w_t · log P_t(c)``: each member's calibrated probabilities are pooled geometrically with
non-negative weights, shifted against the class prior, then the top probability gets an isotonic map. An
:class:`Ensemble` owns the fitted members (:class:`EnsembleMembers`), their weights, temperature, top-label map,
prior shift and cascade threshold, and predicts with them; how those are chosen (stacking, out of fold) is
:mod:`taxonomist.models.stacking`. A member that does not know a category (one added to the bundle later)
abstains on it: it gives the category its own best log-probability, so only the members that know the category
decide.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import log_softmax

from ..exceptions import TaxonomistError
from ..products import Images
from ..taxonomy import CategoryPath, format_path, parse_path
from ..text import scrub_pii
from ..vectors import row_blocks
from .calibration import apply_top_label, softmax_with_temperature
from .embed import EmbedHead, NeighbourIndex
from .joint import JointModel
from .sparse import Encoded, SparseClassifier
from .zeroshot import TaxonomyScorer, zero_shot_queries

__all__ = ["EMBEDDING_MEMBERS", "EPS", "IMAGE_MEMBERS", "MEMBERS", "Ensemble", "EnsembleMembers", "add_weighted", "embedded_texts", "finish", "pool", "prior_shift",
           "rank_score"]

logger = logging.getLogger(__name__)

MEMBERS = ("sparse", "knn", "zeroshot", "embed", "joint", "finetune", "image", "fused")
EMBEDDING_MEMBERS = frozenset({"knn", "zeroshot", "embed", "joint", "fused"})
"""Members that read the products' sentence embeddings."""
IMAGE_MEMBERS = ("image", "fused")
"""Members that read product photos: ``image`` (late fusion: a head on image features, pooled with the text
members; it abstains on products without a usable image) and ``fused`` (early fusion: one head on the text
embedding concatenated with the image features, zeros and a missing-image flag when there is none)."""


def fused_features(emb: np.ndarray, img: Images) -> np.ndarray:
    """Early-fusion input: [text embedding, image features (zeros when missing), 1 - has_image]."""
    vectors, mask = img
    return np.hstack([emb, vectors * mask[:, None], (~mask)[:, None].astype(np.float32)]).astype(np.float32)
EPS = 1e-4
_ABSTAIN_GAP = 1e-3


def add_weighted(total: np.ndarray, weight: Any, logs: np.ndarray, scratch: np.ndarray) -> None:
    """``total += weight * logs``, the product made in ``scratch`` (a reused array of ``total``'s shape and type)
    where it has ``total``'s type -- the same values as the plain expression, without a new products x classes
    temporary; otherwise the plain expression (the sum taken at the wider type)."""
    if np.result_type(weight, logs) == total.dtype:
        total += np.multiply(weight, logs, out=scratch)
    else:
        total += weight * logs


def pool(logs: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Log-linear pooling: ``log_softmax(Σ w_t log P_t)`` (a new array; normalised a block of rows at a time)."""
    if not logs:
        raise ValueError("nothing to pool: no member was run")
    active = [k for k in logs if weights.get(k, 0.0) > 0]
    if not active:  # no member with weight
        return np.asarray(log_softmax(np.zeros_like(next(iter(logs.values()))), axis=1))
    total = weights[active[0]] * logs[active[0]]
    if len(active) > 1:
        scratch = np.empty_like(total)  # one temporary for every member's term
        for k in active[1:]:
            add_weighted(total, weights[k], logs[k], scratch)
    for rows in row_blocks(*total.shape):
        total[rows] = log_softmax(total[rows], axis=1)
    return total


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


class EnsembleMembers:
    """The fitted members over one class list, and how to get each member's log-probabilities."""

    def __init__(self, classes: Sequence[str], members: Sequence[str], knn_k: int = 10) -> None:
        self.classes = [str(c) for c in classes]
        self.members = list(members)
        self.knn_k = knn_k
        self.sparse: SparseClassifier | None = None
        self.sparse_cols = np.zeros(0, dtype=np.int64)  # the ensemble's column of each of the sparse member's classes
        self.knn: NeighbourIndex | None = None
        self.zeroshot: TaxonomyScorer | None = None
        self.head: EmbedHead | None = None
        self.head_temperature = 1.0
        self.joint: JointModel | None = None
        self.joint_temperature = 1.0
        self.finetune: Any = None  # a FineTuner
        self.finetune_temperature = 1.0
        self.image: EmbedHead | None = None
        self.image_temperature = 1.0
        self.fused: EmbedHead | None = None
        self.fused_temperature = 1.0
        self.class_counts = np.zeros(len(self.classes), dtype=np.int64)  # training examples per class

    def fit(self, pairs: tuple[list[str], list[str]], emb: np.ndarray, y: np.ndarray, sparse: SparseClassifier,
            encoder: Any, sparse_temperature: float | None = None, finetuned: Any = None,
            zeroshot: TaxonomyScorer | None = None, img: Images | None = None,
            encoded: Encoded | None = None, embedded: np.ndarray | None = None) -> EnsembleMembers:
        """Fit the members on these products; a fine-tuned model is trained beforehand and passed in, and a
        zero-shot scorer already built over the same classes can be reused (it learns nothing from products).
        ``encoded``: the products' sparse features, made once for every fit over them (else the sparse member
        encodes ``pairs`` itself); ``embedded``: which products have an embedding (the embedding members learn
        from those only; ``None``: all)."""
        n = len(self.classes)
        self.class_counts = np.bincount(y, minlength=n).astype(np.int64)
        self.sparse = (sparse.fit(encoded if encoded is not None else pairs, [self.classes[i] for i in y])
                       if "sparse" in self.members else None)
        if self.sparse is not None:
            # the sparse tier may have seen fewer classes than the ensemble (a split): realign its columns
            self.sparse_cols = np.array([self.classes.index(str(c)) for c in self.sparse.classes_])
            if sparse_temperature is not None:
                self.sparse.temperature_ = sparse_temperature
        e_emb, e_y = (emb, y) if embedded is None else (emb[embedded], y[embedded])
        if "knn" in self.members:
            self.knn = NeighbourIndex(k=self.knn_k).fit(e_emb, e_y, n)
        if "zeroshot" in self.members:
            self.zeroshot = zeroshot or TaxonomyScorer().build([parse_path(c) for c in self.classes], encoder)
        if "embed" in self.members:
            self.head = EmbedHead().fit(e_emb, e_y, n)
        if "joint" in self.members:
            if self.sparse is None:
                raise ValueError("the joint member reads the sparse member's features: add the sparse member")
            X = self.sparse.features(encoded if encoded is not None else pairs)
            self.joint = JointModel(C=self.sparse.C, prune=self.sparse.prune, random_state=self.sparse.random_state,
                                    n_jobs=self.sparse.n_jobs).fit(X if embedded is None else X[embedded], e_emb, e_y, n)
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

    def joint_scores(self, pairs: tuple[list[str], list[str]], emb: np.ndarray, encoded: Encoded | None = None
                     ) -> np.ndarray:
        """The joint member's margins (it reads the sparse member's features: ``encoded``, else of ``pairs``)."""
        assert self.joint is not None and self.sparse is not None, "no joint member"
        return self.joint.decision_function(self.sparse.features(encoded if encoded is not None else pairs), emb)

    def logs(self, pairs: tuple[list[str], list[str]], emb: np.ndarray | None,
             active: set[str] | None = None, img: Images | None = None,
             encoded: Encoded | None = None, sparse_proba: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each member's log-probabilities (n, n_classes); members abstain on classes they do not know, and the
        image member on products without a usable image (a constant row: no say in the pooled result).

        ``active``: only these members (all when ``None``); ``emb`` may be ``None`` when no active member
        needs embeddings, ``img`` when no image member is active; ``encoded``: the products' features by the
        sparse member's encoder (else it encodes ``pairs``); ``sparse_proba``: the sparse member's probabilities
        of these products, already computed (its model may then be gone).
        """
        n_classes = len(self.classes)
        out: dict[str, np.ndarray] = {}

        def use(member: str) -> bool:
            return active is None or member in active

        def padded_log(proba: np.ndarray) -> np.ndarray:
            """Floored log-probabilities; columns of classes added after the member was fitted are unknown."""
            p = np.log(np.maximum(proba, EPS))
            return np.pad(p, ((0, 0), (0, n_classes - p.shape[1])), constant_values=np.nan)

        def unknown(known: np.ndarray) -> np.ndarray:
            """The classes a member saw no example of (those added after it was fitted included)."""
            out = np.ones(n_classes, dtype=bool)
            out[:len(known)] = ~known
            return out

        if (self.sparse is not None or sparse_proba is not None) and use("sparse"):
            p = np.full((len(pairs[0]), n_classes), np.nan)
            p[:, self.sparse_cols] = np.log(np.maximum(sparse_proba if sparse_proba is not None else
                                                       self.sparse.predict_proba(  # type: ignore[union-attr]
                                                           encoded if encoded is not None else pairs), EPS))
            out["sparse"] = p
        if self.knn is not None and use("knn"):
            assert emb is not None, "the knn member needs embeddings"
            p = padded_log(self.knn.predict_proba(emb))
            # classes with no stored neighbour (added without examples) are unknown to this member
            p[:, np.bincount(self.knn.labels_, minlength=n_classes) == 0] = np.nan
            out["knn"] = p
        if self.zeroshot is not None and use("zeroshot"):
            assert emb is not None, "the zeroshot member needs embeddings"
            out["zeroshot"] = self.zeroshot.log_proba(emb, titles=pairs[0])
        if self.head is not None and use("embed"):
            assert emb is not None, "the embed member needs embeddings"
            s = self.head.decision_function(emb)
            out["embed"] = padded_log(softmax_with_temperature(s, self.head_temperature))
        if self.joint is not None and use("joint"):
            assert emb is not None, "the joint member needs embeddings"
            p = padded_log(softmax_with_temperature(self.joint_scores(pairs, emb, encoded), self.joint_temperature))
            p[:, unknown(self.joint.known)] = np.nan
            out["joint"] = p
        if self.finetune is not None and use("finetune"):
            s = self.finetune.logits(finetune_texts(pairs))
            out["finetune"] = padded_log(softmax_with_temperature(s, self.finetune_temperature))
        if self.image is not None and use("image"):
            assert img is not None, "the image member needs image features"
            p = padded_log(softmax_with_temperature(self.image.decision_function(img[0]), self.image_temperature))
            p[:, unknown(self.image.known)] = np.nan  # classes it saw no photo of
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


def rank_score(p: np.ndarray, rank_logp: np.ndarray | None, temperature: float) -> np.ndarray | None:
    """The unshifted probability of each row's chosen class (``None`` without unshifted scores)."""
    if rank_logp is None:
        return None
    return np.asarray(softmax_with_temperature(rank_logp, temperature)[np.arange(len(p)), p.argmax(axis=1)])


def finish(logp: np.ndarray, temperature: float, top_label: tuple[np.ndarray, np.ndarray] | None,
           rank_logp: np.ndarray | None = None) -> np.ndarray:
    p = softmax_with_temperature(logp, temperature)
    return apply_top_label(p, top_label, rank_score(p, rank_logp, temperature)) if top_label is not None else p


def paths(classes: Sequence[str]) -> list[CategoryPath]:
    return [parse_path(c) for c in classes]


def members_state(m: EnsembleMembers) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """(params, arrays, JSON objects) of fitted members, for a bundle (no pickle)."""
    params: dict[str, Any] = {"classes": m.classes, "members": m.members, "knn_k": m.knn_k,
                              "head_temperature": m.head_temperature, "finetune_temperature": m.finetune_temperature,
                              "joint_temperature": m.joint_temperature,
                              "image_temperature": m.image_temperature, "fused_temperature": m.fused_temperature,
                              "class_counts": [int(c) for c in m.class_counts]}
    arrays: dict[str, np.ndarray] = {}
    objects: dict[str, Any] = {}
    if m.sparse is not None:
        sp_params, sp_arrays, sp_objects = m.sparse.get_state()
        params["sparse"] = sp_params
        params["sparse_cols"] = [int(c) for c in m.sparse_cols]
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
    if m.joint is not None:
        params["joint"], a = m.joint.get_state()
        arrays.update({f"joint_{k}": v for k, v in a.items()})
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
        m.sparse_cols = np.asarray(params["sparse_cols"], dtype=np.int64)
    if "knn" in params:
        m.knn = NeighbourIndex.from_state(params["knn"], arrays)
    n = len(m.classes)  # class indices the state holds must name classes (numpy would wrap a negative one)
    for what, idx in (("sparse_cols", m.sparse_cols if m.sparse is not None else None),
                      ("knn_labels", m.knn.labels_ if m.knn is not None else None)):
        if idx is not None and len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{what} holds class indices outside 0..{n - 1}")
    if "zeroshot" in params:
        m.zeroshot = TaxonomyScorer.from_state(params["zeroshot"], arrays)
    if "head" in params:
        m.head = EmbedHead.from_state(params["head"], arrays)
    if "joint" in params:
        if m.sparse is None:
            raise ValueError("the bundle has a joint member but no sparse member to read its features")
        m.joint = JointModel.from_state(params["joint"], {k[6:]: v for k, v in arrays.items() if k.startswith("joint_")})
        m.joint_temperature = float(params.get("joint_temperature", 1.0))
        if m.joint.sparse_coef_.shape[1] != m.sparse.n_features_in_:
            raise ValueError(f"the joint member reads {m.joint.sparse_coef_.shape[1]} features, the sparse member "
                             f"makes {m.sparse.n_features_in_}")
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


def _textless(pairs: tuple[Sequence[str], Sequence[str]]) -> np.ndarray:
    """Which products have neither a title nor a context (a boolean mask)."""
    return np.array([not (t or "").strip() and not (c or "").strip() for t, c in zip(*pairs, strict=True)], dtype=bool)


def embedded_texts(titles: Sequence[str], contexts: Sequence[str], with_context: bool) -> list[str]:
    """What the embedding members encode of each product: the title, or the title with its context (the zero-shot
    query, :func:`~taxonomist.models.zeroshot.zero_shot_queries`)."""
    return zero_shot_queries(titles, contexts) if with_context else list(titles)


@dataclass
class Ensemble:
    """A fitted ensemble: the members, and how they are pooled into one calibrated distribution.

    ``predict_proba`` pools the members' log-probabilities with ``weights``, adds the prior shift, applies the
    ``temperature`` and the top-label map; with a ``cascade`` threshold the sparse member answers alone where it
    is that sure (:meth:`split_sure`) and the encoder runs on the other products only.
    """

    members: EnsembleMembers
    weights: dict[str, float]
    temperature: float = 1.0
    top_label: tuple[np.ndarray, np.ndarray] | None = None
    validation_scores: dict[str, float] = field(default_factory=dict)
    prior_shift: float = 0.0  # logit-adjustment strength (see :func:`prior_shift`)
    rank_unshifted: bool = False  # the top-label map reads the unshifted probability (see selection.calibrate)
    cascade: float | None = None  # sparse member alone where its confidence reaches this (see select_cascade)
    stacking: dict[str, Any] = field(default_factory=dict)  # what cross-validation chose, and why (select_stack)
    encoder: Any = None  # the text encoder the embedding members read
    embed_context: bool = False  # embed the title with its context (zero-shot queries), not the title alone
    image_encoder: Any = None  # the ImageEncoder of the photo members (None: text only)
    image_stats: dict[str, int] = field(default_factory=dict)  # the training products' photos: usable, missing, ...
    neighbour_titles: list[str] = field(default_factory=list)  # the neighbour member's titles (PII scrubbed), its order

    @property
    def classes(self) -> list[str]:
        return self.members.classes

    @property
    def sparse(self) -> SparseClassifier | None:
        return self.members.sparse

    @property
    def knn(self) -> NeighbourIndex | None:
        return self.members.knn

    @property
    def image(self) -> EmbedHead | None:
        return self.members.image

    def embed(self, titles: Sequence[str], contexts: Sequence[str]) -> np.ndarray:
        """The products' embeddings, as the members read them."""
        return np.asarray(self.encoder.encode(embedded_texts(titles, contexts, self.embed_context)), dtype=np.float32)

    @property
    def active(self) -> set[str]:
        """The members with a weight (the others are not run)."""
        return {k for k, w in self.weights.items() if w > 0}

    @property
    def modalities(self) -> tuple[str, ...]:
        """What the ensemble reads, among ``"text"`` and ``"image"`` (the ``fused`` member counts as text, since it
        also reads the text embedding; an image head reads the photos of products without text even when
        cross-validation gave it no weight in the pool)."""
        active = self.active
        photos = "image" in active or self.members.image is not None
        return tuple(m for m, on in (("text", bool(active - {"image"})), ("image", photos)) if on)

    def split_sure(self, pairs: tuple[list[str], list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(sparse member's probabilities, where they reach the cascade threshold, its log-probabilities), or
        ``None`` where the cascade does not apply (no threshold, photos in the pool, a category the sparse member
        does not know, or a product without text that a photo member may read)."""
        m = self.members
        # only while the sparse member knows every class: a category added after fitting (add_class) is unknown
        # to it, and a sure sparse answer would never let the other members name the new category
        knows_all = m.sparse is not None and len(m.sparse_cols) == len(m.classes)
        active = self.active
        if self.cascade is None or not knows_all or "sparse" not in active or active & set(IMAGE_MEMBERS):
            return None
        if m.image is not None and _textless(pairs).any():
            return None  # a product known by its photo alone is classified from it (predict_proba), not the cascade
        from scipy.special import softmax

        sparse_log = m.logs(pairs, None, {"sparse"})["sparse"]
        sure = softmax(sparse_log, axis=1)
        return sure, sure.max(axis=1) >= self.cascade, sparse_log

    def predict_proba(self, pairs: tuple[list[str], list[str]], img: Images | None = None, modality: str = "all",
                      sparse_log: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities and (unless the cascade answered some products from the sparse member) the
        products' embeddings.

        ``sparse_log``: the sparse member's log-probabilities of these products, already computed by the cascade
        (which then does not run again). ``modality``: ``"all"``, or ``"text"`` / ``"image"`` to pool only the
        text members / the image member with their fitted weights (per-modality evaluation)."""
        titles, contexts = pairs
        proba, emb = self._pooled(pairs, img, modality, sparse_log)
        if modality == "all" and img is not None and self.members.image is not None:
            # a product with a usable photo and no text at all is classified from its photo: the pooled weights
            # (chosen for products that have text) may give the photo little or no say
            photo_only = np.flatnonzero(img[1] & _textless(pairs))
            if len(photo_only):
                proba[photo_only] = self._pooled(
                    ([titles[i] for i in photo_only], [contexts[i] for i in photo_only]),
                    (img[0][photo_only], img[1][photo_only]), "image", None)[0]
        return proba, emb

    def _modality_weights(self, modality: str) -> dict[str, float]:
        weights = dict(self.weights)
        if modality == "all":
            return weights
        if modality not in ("text", "image"):
            raise ValueError(f"modality must be 'all', 'text' or 'image', got {modality!r}")
        keep = {k for k in weights if (k == "image") == (modality == "image") and (k != "fused")}
        part = sum(weights[k] for k in keep)
        # one modality's members, scaled to the model's total weight: the pooled scores keep the scale the prior
        # shift and the calibration were fitted for (a lightly weighted member alone would otherwise be swamped
        # by the prior shift)
        if part == 0:  # the stacking switched the modality off: its members with the weights fitted for all
            fitted = self.stacking.get("fitted_weights") or {}
            weights = {k: float(fitted.get(k, 0.0)) or 1.0 if k in keep else v for k, v in weights.items()}
            part = sum(weights[k] for k in keep)
        scale = sum(weights.values()) / part if part > 0 else 0.0
        return {k: (w * scale if k in keep else 0.0) for k, w in weights.items()}

    def _pooled(self, pairs: tuple[list[str], list[str]], img: Images | None, modality: str,
                sparse_log: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        titles, contexts = pairs
        weights = self._modality_weights(modality)
        # members the fitted weights switched off are not run at all (e.g. an ensemble whose validation fell back
        # to the sparse member alone predicts at the sparse tier's speed and never encodes)
        active = {k for k, w in weights.items() if w > 0}
        split = self.split_sure(pairs) if sparse_log is None and modality == "all" else None
        if split is not None:
            sure, easy, sparse_log = split
            if easy.any():
                hard = np.flatnonzero(~easy)
                if len(hard):
                    sure[hard] = self._pooled(([titles[i] for i in hard], [contexts[i] for i in hard]), None,
                                              "all", sparse_log[hard])[0]
                return sure, None
        emb = self.embed(titles, contexts) if active & EMBEDDING_MEMBERS else None
        m = self.members
        if sparse_log is None:
            logs = m.logs(pairs, emb, active, img=img)
        else:  # the sparse member first, as logs() orders it
            logs = {"sparse": sparse_log, **m.logs(pairs, emb, active - {"sparse"}, img=img)}
        if modality == "image" and "image" in logs and m.image is not None and img is not None:
            # alone, the image member chooses among the classes it has photos of (it abstains on the others,
            # which in the fused pool leaves them to the text members)
            unknown = ~m.image.known[: logs["image"].shape[1]]
            logs["image"] = np.where(unknown[None, :] & img[1][:, None], np.log(1e-4), logs["image"])
        pooled = pool(logs, weights)
        rank = pooled if self.rank_unshifted else None
        return finish(pooled + prior_shift(m.class_counts, self.prior_shift), self.temperature, self.top_label,
                      rank), emb

    def add_class(self, path: CategoryPath, description: str | None = None, examples: Sequence[str] = ()) -> None:
        """Add a category without retraining: the zero-shot member scores it from its path (and
        ``description``), the nearest-neighbour member from ``examples`` when given; the others abstain on it."""
        m = self.members
        if not path:
            raise TaxonomistError("expected a category path such as 'Apparel > Topwear > Ponchos', got an empty one")
        if format_path(path) in set(m.classes):
            raise TaxonomistError(f"the model already has the category {format_path(path)!r}")
        if m.zeroshot is None and not (m.knn is not None and examples):
            raise TaxonomistError("this model has no zero-shot member; give example titles of the new category")
        reach = {k for k in ("zeroshot", "knn") if getattr(m, k) is not None and (k != "knn" or examples)}
        if not any(self.weights.get(k, 0) > 0 for k in reach):
            # cross-validation switched off the members that can name a new category: they come back with the
            # weights fitted for all members out of fold (this also changes other products' scores a little)
            fitted = self.stacking.get("fitted_weights") or {k: 1.0 for k in self.weights}
            self.weights = {k: float(fitted.get(k, 0.0)) for k in {*self.weights, *reach}}
            logger.warning("the members that can score a new category were switched off by cross-validation; "
                           "they take part again with weights %s", self.weights)
        m.classes.append(format_path(path))
        m.class_counts = np.append(m.class_counts, 0)  # no training examples: no prior shift
        n = len(m.classes)
        if m.zeroshot is not None:
            m.zeroshot.add_class(path, self.encoder, description, examples)
        if m.knn is not None:
            if examples:
                m.knn.add(self.encoder.encode(list(examples)), np.full(len(examples), n - 1), n)
                self.neighbour_titles = [*self.neighbour_titles, *(scrub_pii(t) for t in examples)]
            else:
                m.knn.n_classes_ = n
        logger.info("added the category %s (%d examples)", format_path(path), len(examples))

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any], dict[str, bytes]]:
        """(params, arrays, JSON objects, raw files) for a bundle (no pickle)."""
        params, arrays, objects = members_state(self.members)
        params.update(weights=self.weights, temperature=self.temperature, encoder=self.encoder.describe(),
                      prior_shift=self.prior_shift, rank_unshifted=self.rank_unshifted, cascade=self.cascade,
                      validation_macro_f1=self.validation_scores, stacking=self.stacking,
                      embed_context=self.embed_context, image_stats=self.image_stats,
                      image_encoder=self.image_encoder.describe() if self.image_encoder is not None else None)
        objects["neighbour_titles"] = self.neighbour_titles
        if self.top_label is not None:
            arrays["ens_top_label_x"], arrays["ens_top_label_y"] = self.top_label
        raw = {"finetune.safetensors": self.members.finetune.to_bytes()} if self.members.finetune is not None else {}
        return params, arrays, objects, raw

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray], objects: dict[str, Any],
                   encoder: Any, finetune_blob: bytes | None = None, image_encoder: Any = None) -> Ensemble:
        """The ensemble :meth:`get_state` described, reading with ``encoder`` (and ``image_encoder``, loaded by the
        caller from ``params["image_encoder"]``); older bundles: no cascade, no stacking report, the shifted top
        probability, titles embedded alone."""
        return cls(
            members=members_from_state(params, arrays, objects, encoder, finetune_blob),
            weights={str(k): float(v) for k, v in params["weights"].items()},
            temperature=float(params["temperature"]),
            top_label=(arrays["ens_top_label_x"], arrays["ens_top_label_y"]) if "ens_top_label_x" in arrays else None,
            validation_scores=dict(params.get("validation_macro_f1") or {}),
            prior_shift=float(params.get("prior_shift", 0.0)),
            rank_unshifted=bool(params.get("rank_unshifted", False)),
            cascade=None if params.get("cascade") is None else float(params["cascade"]),
            stacking=dict(params.get("stacking") or {}),
            encoder=encoder,
            embed_context=bool(params.get("embed_context", False)),
            image_encoder=image_encoder,
            image_stats=dict(params.get("image_stats") or {}),
            neighbour_titles=list(objects.get("neighbour_titles", [])),
        )
