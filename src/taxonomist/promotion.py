"""Champion / challenger: a retrained model replaces the serving one only when it is not worse beyond noise.

:func:`compare` scores both models on the same products -- a frozen golden set and reviewed products neither
model trained on -- and takes a paired bootstrap (Poisson weights, the products resampled together for both
models) of the difference in leaf accuracy and in macro-F1. The challenger is refused when the interval of
either difference lies below zero (worse beyond noise); otherwise it is promoted. :func:`auto_retrain` is the
scheduled job: enough new reviewer labels since the serving version was trained -> retrain -> gate -> the next
version folder of the model store (which ``POST /v1/admin/reload`` picks up), or the candidate kept aside.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .catalog import Catalog, read_catalog
from .exceptions import TaxonomistError
from .metrics import macro_f1_accuracy

__all__ = ["AutoRetrainResult", "GateResult", "auto_retrain", "compare", "products_of_feedback"]

logger = logging.getLogger(__name__)

METRICS = ("accuracy", "macro_f1")


@dataclass
class GateResult:
    """The champion and the challenger on the same products, and the decision."""

    promote: bool
    reason: str
    n: int
    champion: dict[str, float]
    challenger: dict[str, float]
    delta: dict[str, dict[str, float]]  # metric -> delta (challenger - champion), low, high
    sources: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(champion: Any, challenger: Any, products: Catalog, n_boot: int = 1000, level: float = 0.95,
            seed: int = 0, sources: Mapping[str, int] | None = None) -> GateResult:
    """Score both models on ``products`` (labelled) and decide: refused when the ``level`` paired bootstrap
    interval of challenger - champion lies below zero for leaf accuracy or macro-F1."""
    if len(products) == 0:
        raise TaxonomistError("the promotion gate needs labelled products to compare the models on (a golden set "
                              "or reviewed products neither model trained on); none were given")
    y = products.frame["category"].astype(str).to_numpy()
    a = np.asarray(champion.predict(products), dtype=object)
    b = np.asarray(challenger.predict(products), dtype=object)
    index = {c: i for i, c in enumerate(sorted(set(y) | set(a) | set(b)))}
    yi, ai, bi = (np.asarray([index[v] for v in arr]) for arr in (y, a, b))
    k = len(index)
    fa, aa = macro_f1_accuracy(yi, ai, k)
    fb, ab = macro_f1_accuracy(yi, bi, k)
    rng = np.random.default_rng(seed)
    deltas = np.empty((n_boot, 2))
    for t in range(n_boot):
        w = rng.poisson(1.0, len(yi)).astype(np.float64)
        f1a, acca = macro_f1_accuracy(yi, ai, k, w)
        f1b, accb = macro_f1_accuracy(yi, bi, k, w)
        deltas[t] = (accb - acca, f1b - f1a)
    lo, hi = np.quantile(deltas, [(1 - level) / 2, 1 - (1 - level) / 2], axis=0)
    point = {"accuracy": ab - aa, "macro_f1": fb - fa}
    delta = {m: {"delta": float(point[m]), "low": float(lo[j]), "high": float(hi[j])} for j, m in enumerate(METRICS)}
    worse = [m for m in METRICS if delta[m]["high"] < 0]
    pct = f"{level:.0%}"
    if worse:
        reason = "refused: worse beyond noise in " + ", ".join(
            f"{m} ({delta[m]['delta']:+.4f}, {pct} interval {delta[m]['low']:+.4f} .. {delta[m]['high']:+.4f})" for m in worse)
    else:
        reason = "promoted: not worse beyond noise (" + ", ".join(
            f"{m} {delta[m]['delta']:+.4f}, {pct} interval {delta[m]['low']:+.4f} .. {delta[m]['high']:+.4f}"
            for m in METRICS) + ")"
    return GateResult(not worse, reason, len(yi), {"accuracy": aa, "macro_f1": fa}, {"accuracy": ab, "macro_f1": fb},
                      delta, dict(sources or {"products": len(yi)}))


def products_of_feedback(feedback: Sequence[Mapping[str, Any]]) -> Catalog:
    """Feedback rows (product as posted + the correct category) as a labelled catalogue; the latest decision
    on a product wins."""
    latest: dict[str, dict[str, Any]] = {}
    for fb in feedback:
        p = dict(fb["product"])
        row = {k: str(v) for k, v in (p.get("attributes") or {}).items()}
        row.update(title=str(p.get("title") or ""), description=str(p.get("description") or ""),
                   category=str(fb["category"]))
        latest[str(p.get("id") or row["title"])] = row
    frame = pd.DataFrame(list(latest.values()), columns=None if latest else ["title", "description", "category"])
    return Catalog.from_frame(frame.fillna(""), require_labels=True)


def _content(cat: Catalog) -> pd.DataFrame:
    """What a product is (text, attributes, label), without the reading bookkeeping (row numbers, ids)."""
    return cat.frame[["title", "description", "category", *cat.attribute_columns]].astype(str)


@dataclass
class AutoRetrainResult:
    action: str  # "skipped" | "promoted" | "refused"
    message: str
    new_labels: int
    version: str | None = None
    gate: GateResult | None = None
    candidate: Path | None = None


def auto_retrain(store: str | Path, feedback: Sequence[Mapping[str, Any]], data: str | Path | Catalog,
                 golden: str | Path | Catalog | None = None, min_new_labels: int = 200, gate_share: float = 0.2,
                 n_boot: int = 1000, seed: int = 0) -> AutoRetrainResult:
    """The scheduled retraining of a model store (a folder of versions; the latest serves).

    New labels are the feedback recorded after the serving version was trained (its bundle records up to when;
    a version from ``taxonomist train`` has seen none). Below ``min_new_labels`` nothing happens. Otherwise a
    ``gate_share`` of the new labels (drawn with ``seed``) is held out, a candidate is retrained from ``data`` +
    the other feedback (:func:`taxonomist.retrain.retrain`), and :func:`compare` decides on the held-out labels
    plus ``golden``: promoted to the store's next version folder, or kept under ``.rejected/`` with its gate
    report.
    """
    from .classifier import TaxonomyClassifier
    from .retrain import retrain
    from .serving.registry import ModelRegistry

    registry = ModelRegistry(store)
    if not registry.is_store:
        raise TaxonomistError(f"{store} is a single bundle; automatic retraining needs a model store (a folder of "
                              "versions v0001, v0002, ...) to add the promoted version to", options=("auto",))
    champion_path = registry.path_of(None)
    champion = TaxonomyClassifier.load(champion_path)
    seen_until = float((champion.metrics_.get("retrained_from") or {}).get("feedback_until", 0.0))
    new = [f for f in feedback if float(f["created"]) > seen_until]
    if len(new) < min_new_labels:
        return AutoRetrainResult("skipped", f"{len(new)} new labels since {champion_path.name} was trained; "
                                 f"retraining needs {min_new_labels}", len(new))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(len(new), max(1, int(round(gate_share * len(new)))), replace=False).tolist())
    held_ids = {id(new[i]) for i in held}
    train_feedback = [f for f in feedback if id(f) not in held_ids]
    reviewed = products_of_feedback([new[i] for i in sorted(held)])
    parts = [_content(reviewed)]
    sources = {"reviewed_held_out": len(reviewed)}
    if golden is not None:
        gold = golden if isinstance(golden, Catalog) else read_catalog(golden, require_labels=True)
        parts.append(_content(gold))
        sources["golden"] = len(gold)
    products = Catalog.from_frame(pd.concat(parts, ignore_index=True).astype(object).fillna(""), require_labels=True)
    staging = Path(store) / f".candidate-{int(time.time() * 1000)}"
    result = retrain(champion_path, train_feedback, data, staging)
    challenger = TaxonomyClassifier.load(result.output)
    gate = compare(champion, challenger, products, n_boot=n_boot, seed=seed, sources=sources)
    # the candidate records what it learned from, so the next run counts only newer labels
    until = max(float(f["created"]) for f in train_feedback) if train_feedback else seen_until
    challenger.metrics_.setdefault("retrained_from", {})["feedback_until"] = max(until, seen_until)
    challenger.metrics_["promotion_gate"] = gate.to_dict()
    challenger.save(staging)
    if gate.promote:
        target = registry.next_version_path()
        os.replace(staging, target)  # one rename: a reload never sees half a version
        logger.info("%s: %s", target.name, gate.reason)
        return AutoRetrainResult("promoted", f"{target.name} {gate.reason}", len(new), target.name, gate, target)
    rejected = Path(store) / ".rejected" / staging.name.removeprefix(".candidate-")
    rejected.parent.mkdir(exist_ok=True)
    shutil.move(str(staging), rejected)
    return AutoRetrainResult("refused", f"{champion_path.name} keeps serving; candidate {gate.reason}; kept at {rejected}",
                             len(new), None, gate, rejected)
