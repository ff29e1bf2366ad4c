"""Is the model going stale? Drift signals against a reference kept in the bundle, and live accuracy from reviews.

A :class:`DriftReference` summarises the model's answers on products it did not train on (the held-out split
of ``taxonomist train``): the predicted-category distribution at levels 1 and 2, the confidence histogram, the
mean confidence and back-off share, the share of title words the sparse vocabulary does not know, and the
brands of the training products. A :class:`DriftMonitor` keeps the last served predictions (a rolling window)
and compares them with it (:func:`drift_signals`): population stability index and Jensen-Shannon divergence of
the predicted categories per level and of the confidences, the confidence and back-off shifts, the unknown-word
share and the rate of brands never seen in training. :func:`live_accuracy` turns reviewers' decisions into an
accuracy per week with a confidence interval: the audit sample of confident predictions estimates the
accuracy of what is served without review, the low-confidence items that of the ones a person checks.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ALERTS", "BRAND_KEYS", "DriftMonitor", "DriftReference", "Observation", "drift_signals", "js_divergence",
           "centroid_similarity", "monitor_summary", "served_observations", "verdict",
           "brands", "drift_reference", "live_accuracy", "observations", "psi", "wilson_interval"]

LEVELS = (1, 2)
CONFIDENCE_EDGES = np.linspace(0.0, 1.0, 11)
MIN_WINDOW = 200
"""Predictions the window needs before signals are computed (fewer: every signal is ``None``)."""
BRAND_KEYS = ("brand", "vendor", "marque", "manufacturer")
MAX_BRANDS = 50_000
ALERTS: dict[str, float] = {
    "psi_level_1": 0.25,
    "unknown_word_share_increase": 0.10,
    "mean_confidence_drop": 0.10,
    "confidence_psi": 0.25,
}
"""Alert thresholds: PSI of the level-1 distribution and of the confidence histogram (0.25 is the usual
"significant shift"), the rise of the share of unknown title words and the fall of the mean confidence, both in
absolute terms against the reference. The confidence alerts need a held-out reference (a model's confidences on
its own training products are optimistic: served products would always look less sure). The same figures are
in ``deploy/prometheus/alerts.yml``."""


@dataclass(frozen=True)
class Observation:
    """One served prediction as the monitor keeps it (no product text)."""

    leaf: tuple[str, ...]
    confidence: float
    backed_off: bool = False
    unknown_share: float = float("nan")
    brand: str | None = None


def observations(classifier: Any, records: Sequence[Mapping[str, Any]], predictions: Sequence[Any]) -> list[Observation]:
    """:class:`Observation` of each (product record, :class:`~taxonomist.models.hierarchy.Prediction`) pair."""
    titles = [str(r.get("title") or "") for r in records]
    sparse = classifier.sparse_member if getattr(classifier, "tier", "") != "zeroshot" else None
    unknown = (sparse.encoder_.unknown_word_share(titles) if sparse is not None
               else np.full(len(titles), np.nan))
    return [Observation(tuple(p.leaf), float(p.leaf_confidence), bool(p.backed_off), float(u), _brand(r))
            for r, p, u in zip(records, predictions, unknown, strict=True)]


def brands(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The brands of products (the first of their ``brand`` / ``vendor`` / ``marque`` / ``manufacturer``
    fields that is filled), for :meth:`DriftReference.of`."""
    return [b for r in records if (b := _brand(r)) is not None]


def _brand(record: Mapping[str, Any]) -> str | None:
    for k, v in record.items():
        if str(k).lower() in BRAND_KEYS and v is not None and str(v).strip():
            return str(v).strip().lower()
    return None


def summarise(obs: Sequence[Observation]) -> dict[str, Any]:
    """Distributions and shares of a set of observations (what a reference stores and a window is compared on)."""
    n = len(obs)
    levels = {}
    for k in LEVELS:
        counts = Counter(" > ".join(o.leaf[:k]) for o in obs if len(o.leaf) >= k)
        total = sum(counts.values())
        levels[str(k)] = {c: v / total for c, v in sorted(counts.items())} if total else {}
    conf = np.asarray([o.confidence for o in obs], dtype=float)
    hist = np.histogram(np.clip(conf, 0.0, 1.0), bins=CONFIDENCE_EDGES)[0] / max(n, 1)
    unknown = np.asarray([o.unknown_share for o in obs], dtype=float)
    unknown = unknown[~np.isnan(unknown)]
    branded = [o.brand for o in obs if o.brand]
    return {"n": n, "levels": levels, "confidence_hist": [float(h) for h in hist],
            "mean_confidence": float(conf.mean()) if n else float("nan"),
            "back_off_share": float(np.mean([o.backed_off for o in obs])) if n else float("nan"),
            "unknown_word_share": float(unknown.mean()) if len(unknown) else float("nan"),
            "branded_share": len(branded) / n if n else float("nan")}


@dataclass
class DriftReference:
    """What the model's answers looked like on products it did not train on (stored in the bundle)."""

    summary: dict[str, Any]
    brands: list[str] = field(default_factory=list)
    source: str = "held-out"

    @classmethod
    def from_observations(cls, obs: Sequence[Observation], source: str = "held-out",
                          brands: Iterable[str] = ()) -> DriftReference:
        """``brands``: the training products' brands (a product's brand is new when it is not among them)."""
        top = [b for b, _ in Counter(str(b).strip().lower() for b in brands if b and str(b).strip()).most_common(MAX_BRANDS)]
        return cls(summarise(obs), sorted(top), source)

    @classmethod
    def of(cls, classifier: Any, records: Any, source: str = "held-out",
           brands: Iterable[str] = (), max_products: int = 5_000, seed: int = 0) -> DriftReference:
        """The reference of ``classifier`` on ``records`` (product records, or a Catalog: predicted as one, so its
        photos resolve against its folder; a random ``max_products`` of them at most); for a
        model with an embedding index, also the products' mean similarity to their predicted category's
        training centroid (:func:`centroid_similarity`)."""
        catalog = _is_catalog(records)  # a Catalog is predicted as one, so its photos resolve against its folder
        products: Any = records if catalog else list(records)
        if len(products) > max_products:
            pick = np.sort(np.random.default_rng(seed).choice(len(products), max_products, replace=False))
            products = products.subset(pick) if catalog else [products[i] for i in pick]
        records = products.records() if catalog else products
        preds = classifier.predict_products(products, top_k=2)
        ref = cls.from_observations(observations(classifier, records, preds), source, brands)
        sims = centroid_similarity(classifier, [str(r.get("title") or "") for r in records], [p.leaf for p in preds])
        ref.summary["centroid_similarity"] = float(np.mean(sims)) if sims is not None and len(sims) else None
        return ref

    def to_dict(self) -> dict[str, Any]:
        return {"summary": _json_safe(self.summary), "brands": list(self.brands), "source": self.source}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftReference:
        summary = {k: (float("nan") if v is None and k != "levels" else v) for k, v in dict(d["summary"]).items()}
        return cls(summary, [str(b) for b in d.get("brands", [])], str(d.get("source", "held-out")))


def _is_catalog(products: Any) -> bool:
    return callable(getattr(products, "records", None)) and callable(getattr(products, "subset", None))


def drift_reference(classifier: Any, held_out: Any, training: Any) -> DriftReference | None:
    """What a trained model's answers look like on products it did not train on (``held_out``; without them, a
    sample of the ``training`` products, whose confidences are optimistic), kept in its bundle for ``serve`` to
    compare served predictions with; None for a differentially private model (it keeps nothing computed from the
    rows). Each is a Catalog (its photos resolve against its folder) or product records. Used by
    :func:`taxonomist.training.train_bundle`."""
    if getattr(classifier, "dp_epsilon", None) is not None:
        return None
    train_records = training.records() if _is_catalog(training) else training
    return DriftReference.of(classifier, held_out if held_out is not None else training,
                             source="held-out" if held_out is not None else "training sample",
                             brands=brands(train_records))


def centroid_similarity(classifier: Any, titles: Sequence[str], leaves: Sequence[Sequence[str]]) -> np.ndarray | None:
    """Cosine similarity of each title's embedding to the centroid of its (predicted) leaf's training
    embeddings, for a model whose ensemble keeps them (the neighbour member); ``None`` for other models. Products
    unlike anything the model was trained on sit far from every centroid."""
    knn = getattr(getattr(classifier, "model_", None), "knn", None)
    encoder = getattr(classifier, "encoder_", None)
    if knn is None or encoder is None or not len(titles):
        return None
    from .taxonomy import format_path

    vectors = np.asarray(knn.vectors_, dtype=np.float32)
    centroids = np.zeros((int(knn.n_classes_), vectors.shape[1]), dtype=np.float32)
    np.add.at(centroids, knn.labels_, vectors)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    index = {str(c): i for i, c in enumerate(classifier.classes_)}
    emb = np.asarray(encoder.encode(list(titles)), dtype=np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    rows = np.asarray([index.get(format_path(tuple(leaf)), -1) for leaf in leaves])
    sims = np.full(len(titles), np.nan, dtype=np.float32)
    ok = rows >= 0
    sims[ok] = (emb[ok] * centroids[rows[ok]]).sum(axis=1)
    return sims[ok]


def _json_safe(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}


def _aligned(ref: Mapping[str, float], cur: Mapping[str, float], eps: float) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(set(ref) | set(cur))
    p = np.maximum(np.asarray([ref.get(k, 0.0) for k in keys], dtype=float), eps)
    q = np.maximum(np.asarray([cur.get(k, 0.0) for k in keys], dtype=float), eps)
    return p / p.sum(), q / q.sum()


def psi(reference: Mapping[str, float], current: Mapping[str, float], eps: float = 1e-4) -> float:
    """Population stability index of ``current`` against ``reference`` (both: category -> share); a category
    absent on one side counts as ``eps``. Usual reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant."""
    if not reference or not current:
        return float("nan")
    p, q = _aligned(reference, current, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_divergence(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence in bits (0: the same distribution, 1: disjoint)."""
    if not reference or not current:
        return float("nan")
    p, q = _aligned(reference, current, 1e-12)
    m = (p + q) / 2
    return float(max(0.0, 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))))


def drift_signals(reference: DriftReference, obs: Sequence[Observation]) -> dict[str, Any]:
    """Each signal of ``obs`` against the reference, and the alerts that fire (:data:`ALERTS`); every signal is
    ``None`` below :data:`MIN_WINDOW` observations."""
    ref, n = reference.summary, len(obs)
    out: dict[str, Any] = {"n": n, "reference": reference.source, "alerts": []}
    if n < MIN_WINDOW:
        out["note"] = f"{n} predictions in the window; signals need at least {MIN_WINDOW}"
        return out
    cur = summarise(obs)
    hist = {str(i): v for i, v in enumerate(ref["confidence_hist"])}
    cur_hist = {str(i): v for i, v in enumerate(cur["confidence_hist"])}
    out.update({
        "psi": {f"level_{k}": psi(ref["levels"].get(str(k), {}), cur["levels"].get(str(k), {})) for k in LEVELS},
        "js": {f"level_{k}": js_divergence(ref["levels"].get(str(k), {}), cur["levels"].get(str(k), {})) for k in LEVELS},
        "confidence_psi": psi(hist, cur_hist),
        "mean_confidence": {"current": cur["mean_confidence"], "reference": ref["mean_confidence"]},
        "back_off_share": {"current": cur["back_off_share"], "reference": ref["back_off_share"]},
        "unknown_word_share": {"current": cur["unknown_word_share"], "reference": ref["unknown_word_share"]},
    })
    known = set(reference.brands)
    branded = [o.brand.strip().lower() for o in obs if o.brand and o.brand.strip()]
    out["new_brand_rate"] = (sum(b not in known for b in branded) / len(branded)) if known and branded else None
    out["grew"], out["shrank"] = _movers(ref["levels"].get("1", {}), cur["levels"].get("1", {}))
    alerts = out["alerts"]
    if out["psi"]["level_1"] > ALERTS["psi_level_1"]:
        alerts.append(f"PSI {out['psi']['level_1']:.2f} on level 1 (alert above {ALERTS['psi_level_1']})")
    rise = cur["unknown_word_share"] - ref["unknown_word_share"]
    if rise > ALERTS["unknown_word_share_increase"]:
        alerts.append(f"unknown title words {ref['unknown_word_share']:.0%} -> {cur['unknown_word_share']:.0%}")
    if reference.source != "held-out":
        out["note"] = ("the reference is the model's answers on its training products (no held-out split): "
                       "confidence signals are shown but raise no alert")
    else:
        drop = ref["mean_confidence"] - cur["mean_confidence"]
        if drop > ALERTS["mean_confidence_drop"]:
            alerts.append(f"mean confidence {ref['mean_confidence']:.2f} -> {cur['mean_confidence']:.2f}")
        if out["confidence_psi"] > ALERTS["confidence_psi"]:
            alerts.append(f"confidence histogram PSI {out['confidence_psi']:.2f} (alert above {ALERTS['confidence_psi']})")
    finite: dict[str, Any] = _finite(out)
    return finite


def _movers(ref: Mapping[str, float], cur: Mapping[str, float], k: int = 5) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``k`` categories whose share grew most, and the ``k`` that shrank most."""
    delta = sorted(((cur.get(c, 0.0) - ref.get(c, 0.0), c) for c in set(ref) | set(cur)), reverse=True)

    def row(c: str) -> dict[str, Any]:
        return {"category": c, "reference": ref.get(c, 0.0), "current": cur.get(c, 0.0)}

    return [row(c) for d, c in delta[:k] if d > 0], [row(c) for d, c in delta[::-1][:k] if d < 0]


def _finite(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class DriftMonitor:
    """The last ``window`` served predictions against a reference (thread-safe)."""

    def __init__(self, reference: DriftReference | None, window: int = 5_000) -> None:
        self.reference = reference
        self._window: deque[Observation] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.version: str | None = None

    def observe(self, obs: Iterable[Observation]) -> None:
        with self._lock:
            self._window.extend(obs)

    def follow(self, version: str, reference: DriftReference | None) -> None:
        """The served model's version: when it changes, the window starts again against its reference."""
        with self._lock:
            if version != self.version:
                self.version, self.reference = version, reference
                self._window.clear()

    def signals(self) -> dict[str, Any]:
        with self._lock:
            obs = list(self._window)
        if self.reference is None:
            return {"n": len(obs), "alerts": [], "note": "the model has no drift reference (trained before drift "
                    "monitoring existed, or without held-out products): retrain it to monitor drift"}
        return drift_signals(self.reference, obs)


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def live_accuracy(items: Iterable[Mapping[str, Any]], by_top_level: bool = False) -> list[dict[str, Any]]:
    """Accuracy per ISO week from decided review items (``status`` accepted or corrected, ``decided_at`` in Unix
    seconds, ``reason``, ``category``): the audit sample (``sample: "audit"``, an unbiased estimate for the
    predictions served without review) apart from the items queued because the model was unsure
    (``sample: "reviewed"``); each with its 95 % Wilson interval, and per top-level category when asked."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for it in items:
        if it.get("status") not in ("accepted", "corrected") or it.get("decided_at") is None:
            continue
        week = dt.datetime.fromtimestamp(float(it["decided_at"]), tz=dt.timezone.utc).strftime("%G-W%V")
        sample = "audit" if it.get("reason") == "audit" else "reviewed"
        top = str(it.get("category", "")).split(" > ")[0] if by_top_level else ""
        right = groups.setdefault((week, sample, top), [0, 0])
        right[0] += it["status"] == "accepted"
        right[1] += 1
    rows = []
    for (week, sample, top), (k, n) in sorted(groups.items()):
        lo, hi = wilson_interval(k, n)
        row = {"week": week, "sample": sample, "n": n, "accuracy": k / n, "low": lo, "high": hi}
        if by_top_level:
            row["top_level"] = top
        rows.append(row)
    return rows


def served_observations(rows: Iterable[Mapping[str, Any]]) -> list[Observation]:
    """:class:`Observation` of served-prediction records (:meth:`ReviewStore.served`)."""
    from .taxonomy import parse_path

    return [Observation(tuple(parse_path(r["leaf"])) if r["leaf"] else (), float(r["confidence"]),
                        bool(r["backed_off"]), float("nan") if r.get("unknown_share") is None else float(r["unknown_share"]),
                        r.get("brand")) for r in rows]


def monitor_summary(reference: DriftReference | None, served: Sequence[Mapping[str, Any]],
                    decided: Sequence[Mapping[str, Any]] = (), examples: int = 10, classifier: Any = None,
                    max_embedded: int = 2_000) -> dict[str, Any]:
    """What ``taxonomist monitor`` reports over a time range: the drift signals of all served predictions and of
    each day (days with fewer than :data:`MIN_WINDOW` have their volume only), the versions served, the products
    least like the training data, the live accuracy per week, and a one-line verdict. With the served
    ``classifier`` and a reference that has it, also the similarity of (at most ``max_embedded``) served titles
    to their category's training centroid (reported, no alert: no threshold has been measured for it)."""
    obs = served_observations(served)
    overall = drift_signals(reference, obs) if reference is not None else {"n": len(obs), "alerts": []}
    ref_sim = reference.summary.get("centroid_similarity") if reference is not None else None
    if ref_sim is not None and not math.isnan(ref_sim) and classifier is not None and len(obs) >= MIN_WINDOW:
        pick = np.sort(np.random.default_rng(0).choice(len(served), min(len(served), max_embedded), replace=False))
        sims = centroid_similarity(classifier, [str(served[i]["title"]) for i in pick], [obs[i].leaf for i in pick])
        if sims is not None and len(sims):
            overall["centroid_similarity"] = {"current": float(np.mean(sims)),
                                              "reference": float(ref_sim),
                                              "n": int(len(sims))}
    days: dict[str, list[int]] = {}
    for i, r in enumerate(served):
        days.setdefault(dt.datetime.fromtimestamp(float(r["created"]), tz=dt.timezone.utc).strftime("%Y-%m-%d"), []).append(i)
    daily = [{"day": d, **(drift_signals(reference, [obs[i] for i in idx]) if reference is not None else {"n": len(idx)})}
             for d, idx in sorted(days.items())]
    unknown = _each_title_once(sorted((r for r in served if r.get("unknown_share") is not None),
                                      key=lambda r: -float(r["unknown_share"])))
    unsure = _each_title_once(sorted(served, key=lambda r: float(r["confidence"])))
    keep = ("title", "leaf", "confidence", "unknown_share", "model_version")
    weekly = live_accuracy(decided)
    return {"n": len(obs), "signals": overall, "daily": daily,
            "versions": dict(Counter(str(r["model_version"]) for r in served)),
            "most_unknown_words": [{k: r.get(k) for k in keep} for r in unknown[:examples]],
            "least_confident": [{k: r.get(k) for k in keep} for r in unsure[:examples]],
            "live_accuracy": weekly, "live_accuracy_by_top_level": live_accuracy(decided, by_top_level=True),
            "verdict": verdict(overall, weekly, reference is not None)}


def _each_title_once(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``rows`` with each title's first row only (a product served many times is one example)."""
    seen: set[str] = set()
    out = []
    for r in rows:
        t = str(r.get("title"))
        if t not in seen:
            seen.add(t)
            out.append(r)
    return out


def verdict(signals: Mapping[str, Any], weekly: Sequence[Mapping[str, Any]], has_reference: bool = True) -> str:
    """One line: retrain or not, and why (the alerts; the audit sample's accuracy, first week to last)."""
    audit = [w for w in weekly if w["sample"] == "audit"]
    trend = (f"live accuracy (audit sample) {audit[0]['accuracy']:.2f} -> {audit[-1]['accuracy']:.2f}"
             if len(audit) >= 2 else "")
    if not has_reference:
        return "no drift reference in this model (retrain it with taxonomist train to monitor drift)" + (
            f"; {trend}" if trend else "")
    if signals.get("n", 0) < MIN_WINDOW:
        return (f"not enough served predictions to judge ({signals.get('n', 0)}; at least {MIN_WINDOW} are needed): "
                "serve more, or widen the period with --since")
    if signals["alerts"]:
        return ("retrain recommended: " + "; ".join([*signals["alerts"], *([trend] if trend else [])])
                + ". Next: review the queued products, then taxonomist retrain MODEL --feedback REVIEW_DB --data "
                  "CATALOG -o NEW_VERSION")
    return (f"no drift beyond the alert thresholds over {signals['n']:,} predictions" + (f"; {trend}" if trend else ""))
