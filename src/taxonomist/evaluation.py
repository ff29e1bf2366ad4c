"""Honest evaluation: flat, per-level and hierarchical scores, coverage at a precision, calibration.

:func:`evaluate` runs a model on labelled products; :func:`compute_metrics` scores given probabilities. The
result's :attr:`Evaluation.metrics` has stable top-level keys (``accuracy``, ``macro_f1``, ``weighted_f1``,
``hierarchical_f1``, ``top_level_accuracy``, ``coverage_at_95_precision``, ``levels``, ...) so scripts can
compare runs; :meth:`Evaluation.write_html` writes a self-contained report with plots.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from .metrics import coverage_at_precision, expected_calibration_error
from .models.hierarchy import LevelIndex, decode
from .products import ProductBatch
from .report import render_report
from .taxonomy import CategoryPath, format_path, parse_path
from .text import clean_text, scrub_pii

if TYPE_CHECKING:
    from .classifier import TaxonomyClassifier

__all__ = ["Evaluation", "compute_metrics", "coverage_at_precision", "evaluate", "expected_calibration_error"]

logger = logging.getLogger(__name__)


def _prf(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {"accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else 0.0}
    for avg in ("macro", "micro", "weighted"):
        # scikit-learn's convention: macro averages over every class that is true or predicted
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"] = float(p), float(r), float(f)
    return out


def _hierarchical(true: list[CategoryPath], pred: list[CategoryPath]) -> dict[str, float]:
    inter = n_pred = n_true = 0
    for t, p in zip(true, pred, strict=True):
        common = 0
        for a, b in zip(t, p, strict=False):
            if a != b:
                break
            common += 1
        inter += common
        n_pred += len(p)
        n_true += len(t)
    hp = inter / n_pred if n_pred else 0.0
    hr = inter / n_true if n_true else 0.0
    hf = 2 * hp * hr / (hp + hr) if hp + hr else 0.0
    return {"hierarchical_precision": hp, "hierarchical_recall": hr, "hierarchical_f1": hf}


@dataclass
class Evaluation:
    """Scores of one model on one labelled set, plus what the report needs."""

    metrics: dict[str, Any]
    per_class: pd.DataFrame
    confused_pairs: list[tuple[str, str, int]]
    errors: pd.DataFrame
    confidence: np.ndarray = field(repr=False)
    correct: np.ndarray = field(repr=False)
    y_true: list[str] = field(repr=False, default_factory=list)
    y_pred: list[str] = field(repr=False, default_factory=list)
    error_photos: list[dict[str, Any]] = field(repr=False, default_factory=list)
    """Misclassified products with a photo (thumbnail data URI, title, true, predicted, confidence), for the
    report's photo grid; filled for models that use photos."""

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.metrics, indent=2, ensure_ascii=False)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def summary_rows(self) -> list[tuple[str, str]]:
        m = self.metrics
        rows = [
            ("products", f"{m['n']:,}"),
            ("categories (in test / model)", f"{m['n_classes_test']} / {m['n_classes_model']}"),
            ("accuracy", f"{m['accuracy']:.4f}"),
            ("macro F1", f"{m['macro_f1']:.4f}"),
            ("weighted F1", f"{m['weighted_f1']:.4f}"),
            ("hierarchical F1", f"{m['hierarchical_f1']:.4f}"),
            ("top-level accuracy", f"{m['top_level_accuracy']:.4f}"),
            ("top-3 accuracy", f"{m['top_k_accuracy']['3']:.4f}"),
            ("coverage @ 90% precision", f"{m['coverage_at_90_precision']:.4f}"),
            ("coverage @ 95% precision", f"{m['coverage_at_95_precision']:.4f}"),
            ("expected calibration error", f"{m['ece']:.4f}"),
        ]
        for lv in m["levels"]:
            rows.append((f"level {lv['level']} accuracy / macro F1", f"{lv['accuracy']:.4f} / {lv['macro_f1']:.4f}"))
        if m.get("unseen_label_share"):
            rows.append(("test labels unknown to the model", f"{m['unseen_label_share']:.2%}"))
        if m.get("seen_in_training_share") is not None:
            rows.append(("titles seen in training", f"{m['seen_in_training_share']:.2%}"))
        mod = m.get("modalities")
        if mod:
            rows.append(("products with a usable photo", f"{mod['with_image']:,} of {mod['products']:,}"))
            for key, label in (("text", "text members only"), ("image", "image member only (with photo)"),
                               ("fused", "text + image (fused)"), ("fused_with_image", "fused (with photo)")):
                if key in mod:
                    rows.append((f"{label}: accuracy / macro F1",
                                 f"{mod[key]['accuracy']:.4f} / {mod[key]['macro_f1']:.4f}"))
        return rows

    def table(self) -> str:
        width = max(len(k) for k, _ in self.summary_rows())
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self.summary_rows())

    def write_html(self, path: str | Path, title: str = "taxonomist evaluation") -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_report(self, title), encoding="utf-8")
        return out


def _error_photos(model: Any, batch: ProductBatch, y: list[str], proba: np.ndarray, has: np.ndarray,
                  limit: int = 24) -> list[dict[str, Any]]:
    """Thumbnails (JPEG data URIs, 96 px) of up to ``limit`` misclassified products that have a photo."""
    import base64
    import io

    from .images import ImageError, load_image

    classes = np.asarray(model.classes_, dtype=object)
    pred = classes[proba.argmax(axis=1)]
    wrong = np.flatnonzero((pred != np.asarray(y, dtype=object)) & has)
    refs, root = batch.images, Path(getattr(model, "image_root", None) or batch.root or Path.cwd())
    out: list[dict[str, Any]] = []
    for i in wrong[:limit]:
        try:
            im = load_image(str(refs[i]), root)
        except ImageError:
            continue
        im.thumbnail((96, 96))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
        out.append({"src": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
                    "title": batch.titles[i], "true": y[i], "predicted": str(pred[i]),
                    "confidence": float(proba[i].max())})
    return out


def _by_modality(model: Any, batch: ProductBatch, has: np.ndarray, y: list[str],
                 mc: float | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Fused probabilities, and macro-F1 / accuracy of the text members alone, the image member alone and the
    fused model, side by side (image-only and "fused, with a photo" on the products that have a usable photo)."""
    classes = list(model.classes_)
    out: dict[str, Any] = {"products": len(y), "with_image": int(has.sum())}
    fused = None
    for modality in (*model.modalities, "all"):
        proba = model.predict_proba(batch, modality=modality)  # (the photos are read once, for all three)
        rows = has if modality == "image" else np.ones(len(y), bool)
        if rows.any():
            m = compute_metrics([y[i] for i in np.flatnonzero(rows)], proba[rows], classes, min_confidence=mc).metrics
            out["fused" if modality == "all" else modality] = {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}
        if modality == "all":
            fused = proba
            if has.any():
                m = compute_metrics([y[i] for i in np.flatnonzero(has)], proba[has], classes, min_confidence=mc).metrics
                out["fused_with_image"] = {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}
    assert fused is not None
    return fused, out


def compute_metrics(
    y_true: Sequence[str],
    proba: np.ndarray,
    classes: Sequence[str],
    min_confidence: float | None = None,
    titles: Sequence[str] | None = None,
) -> Evaluation:
    """Score leaf probabilities ``proba`` (n, n_classes) against true paths ``y_true``."""
    y_true = [format_path(parse_path(y)) for y in y_true]
    if len(y_true) != len(proba):
        raise ValueError(f"expected one label per prediction: {len(y_true)} labels, {len(proba)} predictions")
    if len(y_true) == 0:
        raise ValueError("expected at least one labelled product to evaluate, found none")
    classes = list(classes)
    index = LevelIndex.build(classes)
    best = np.argmax(proba, axis=1)
    y_pred = [classes[i] for i in best]
    conf = proba[np.arange(len(best)), best].astype(float)
    correct = np.asarray(y_true) == np.asarray(y_pred)
    metrics: dict[str, Any] = {"n": len(y_true), "n_classes_model": len(classes), "n_classes_test": len(set(y_true))}
    metrics.update(_prf(y_true, y_pred))
    true_paths, pred_paths = [parse_path(y) for y in y_true], [parse_path(y) for y in y_pred]
    depth = max(max(len(p) for p in true_paths), index.depth)
    levels = []
    for d in range(1, depth + 1):
        t = [format_path(p[:d]) for p in true_paths]
        p = [format_path(q[:d]) for q in pred_paths]
        lv = {"level": d, **_prf(t, p), "n_classes": len(set(t))}
        levels.append(lv)
    metrics["levels"] = levels
    metrics["top_level_accuracy"] = levels[0]["accuracy"]
    decoded = decode(proba, index, top_k=1, min_confidence=min_confidence)
    metrics.update(_hierarchical(true_paths, [p.path for p in decoded]))
    if min_confidence is not None:
        backed = np.array([p.backed_off for p in decoded])
        metrics["min_confidence"] = min_confidence
        metrics["backed_off_share"] = float(backed.mean())
        metrics["accuracy_not_backed_off"] = float(correct[~backed].mean()) if (~backed).any() else 0.0
    order = np.argsort(-proba, axis=1)
    pos = {c: i for i, c in enumerate(classes)}
    true_idx = np.array([pos.get(y, -1) for y in y_true])
    metrics["top_k_accuracy"] = {
        str(k): float(np.mean([(ti in order[i, :k]) for i, ti in enumerate(true_idx)])) for k in (1, 3, 5)
    }
    for target in (0.90, 0.95):
        cov, thr = coverage_at_precision(conf, correct, target)
        metrics[f"coverage_at_{round(target * 100)}_precision"] = cov
        metrics[f"threshold_at_{round(target * 100)}_precision"] = thr
    metrics["ece"] = expected_calibration_error(conf, correct)
    metrics["mean_confidence"] = float(conf.mean())
    metrics["unseen_label_share"] = float(np.mean(true_idx < 0))

    labels = sorted(set(y_true))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = pd.DataFrame({"category": labels, "support": s, "precision": p, "recall": r, "f1": f})
    per_class = per_class.sort_values(["f1", "support"], ascending=[True, False]).reset_index(drop=True)
    pairs = Counter((t, q) for t, q, c in zip(y_true, y_pred, correct, strict=True) if not c)
    confused = [(t, q, n) for (t, q), n in pairs.most_common(20)]
    wrong = np.flatnonzero(~correct).tolist()
    errors = pd.DataFrame({
        "title": [scrub_pii(clean_text(titles[i]))[:160] if titles is not None else "" for i in wrong],
        "true": [y_true[i] for i in wrong],
        "predicted": [y_pred[i] for i in wrong],
        "confidence": conf[wrong],
    })
    return Evaluation(metrics, per_class, confused, errors, conf, correct, list(y_true), y_pred)


def evaluate(
    model: TaxonomyClassifier,
    X: Any,
    y: Sequence[str] | None = None,
    min_confidence: float | None = None,
    attributes: Sequence[str] = (),
) -> Evaluation:
    """Evaluate a fitted model on labelled products (a Catalog, DataFrame or dicts with ``category``).

    Also reports the share of products whose normalised title was in the model's training data: a high share
    means the scores are inflated (evaluate on held-out products). ``attributes`` (``color``, ``gender``,
    ``age_group``): how they are read from the products' words where the products have their column
    (:func:`taxonomist.attributes.score`, in ``metrics["attributes"]``).

    Example:
        >>> ev = evaluate(model, test_catalog)   # doctest: +SKIP
        >>> ev.metrics["macro_f1"]               # doctest: +SKIP
    """
    batch = ProductBatch.from_any(X)
    if y is None:
        if batch.labels is None:
            raise ValueError("expected labelled products: a 'category' field or y=...")
        y = batch.labels
    mc = model.min_confidence if min_confidence is None else min_confidence
    img = model.reader_.photos(batch) if "image" in getattr(model, "modalities", ()) else None
    if img is not None:
        proba, per_modality = _by_modality(model, batch, img[1], list(y), mc)
    else:
        proba, per_modality = model.predict_proba(batch), None
    ev = compute_metrics(list(y), proba, list(model.classes_), min_confidence=mc, titles=batch.titles)
    if per_modality is not None and img is not None:
        ev.metrics["modalities"] = per_modality
        ev.error_photos = _error_photos(model, batch, list(y), proba, img[1])
    if attributes:
        from .attributes import score

        ev.metrics["attributes"] = score(batch, attributes, ev.y_pred, model.taxonomy_.kind)
    seen = model.seen_in_training(batch)
    ev.metrics["seen_in_training_share"] = float(seen.mean())
    if seen.mean() > 0.05:
        logger.warning(
            "%.1f%% of these products have a title the model was trained on: the scores are inflated; "
            "evaluate on held-out products (taxonomist train keeps a held-out split)", 100 * seen.mean()
        )
    return ev
