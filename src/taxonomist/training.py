"""One training recipe for every path that makes a bundle: ``train`` and ``tune`` on the command line,
``retrain`` (feedback, the automatic retrain, ``POST /v1/admin/retrain``).

:func:`train_bundle` fits a configuration on the training part, evaluates it on the held-out part, sets its
back-off threshold where the held-out leaves are 90 % precise, keeps its answers on the held-out part as the
drift reference ``serve`` compares served traffic with (photos resolved against the catalogue's folder, as in
training), refits the same configuration on every product, and times each stage. The result saves itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import Catalog, split_catalog

__all__ = ["TrainedBundle", "train_bundle"]

logger = logging.getLogger(__name__)


@contextmanager
def _log_stage(what: str) -> Iterator[None]:
    logger.info("%s", what)
    yield


@dataclass
class TrainedBundle:
    """What :func:`train_bundle` made.

    Attributes:
        model: the fitted classifier (refitted on every product when asked), with its drift reference.
        evaluation: its evaluation on the held-out products (``None`` without a held-out part).
        metrics: what the bundle stores: the held-out metrics and the split.
        back_off: the back-off threshold set from the held-out products (``None``: not asked, or no confidence
            reached 90 % precision).
        seconds: wall seconds per stage (fit, evaluate, drift reference, refit).
    """

    model: Any
    evaluation: Any = None
    metrics: dict[str, Any] = field(default_factory=dict)
    back_off: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | Path, **extra_metrics: Any) -> Path:
        """Save the model as a bundle, its metrics with ``extra_metrics`` (e.g. ``tuning=…``)."""
        return Path(self.model.save(path, metrics={**self.metrics, **extra_metrics}))


def train_bundle(estimator: Any, data: Catalog, *, test_size: float = 0.2, seed: int = 0,
                 split: tuple[Catalog, Catalog | None] | None = None, refit: bool = True, taxonomy: Any = None,
                 back_off: bool = True,
                 stage: Callable[[str], AbstractContextManager[Any]] = _log_stage) -> TrainedBundle:
    """Fit, evaluate, back off, keep a drift reference, refit: the bundle every training path makes.

    Args:
        estimator: an unfitted :class:`~taxonomist.TaxonomyClassifier` (its configuration; cloned, not changed).
        data: every labelled product (what the refit learns from).
        test_size, seed: the held-out split of ``data`` (grouped by title); ``test_size=0``: no held-out part,
            nothing evaluated, the reference from a sample of the training products, no refit.
        split: (train, held-out) chosen by the caller instead (a validation split of a search, reviewed products
            only, ``data`` with pseudo-queries added to the training part); ``held-out`` may be ``None``.
        refit: fit the saved model on all of ``data`` after the evaluation (the stored metrics stay those of the
            evaluation).
        taxonomy: the full taxonomy the labels come from (kept in the bundle).
        back_off: set the model's back-off threshold to the held-out 90 %-precision confidence (``False``: keep
            the estimator's ``min_confidence``).
        stage: a context manager per stage, given what it does in words (the command line shows a spinner).
    """
    from sklearn.base import clone

    from .evaluation import evaluate
    from .monitoring import drift_reference

    seconds: dict[str, float] = {}

    @contextmanager
    def timed(name: str, what: str) -> Iterator[None]:
        t = time.perf_counter()
        with stage(what):
            yield
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t

    if split is not None:
        train, test = split
    elif test_size > 0:
        train, test = split_catalog(data, test_size=test_size, seed=seed)
    else:
        train, test = data, None
    if test is not None and not len(test):
        test = None
    with timed("fit", f"training the {estimator.tier} tier on {len(train):,} products"):
        model = clone(estimator).fit(train, taxonomy=taxonomy)
    ev, threshold = None, None
    metrics: dict[str, Any] = {}
    if test is not None:
        with timed("evaluate", f"evaluating on the {len(test):,} held-out products"):
            ev = evaluate(model, test)
        metrics = {**ev.metrics, "split": {"test_size": test_size, "seed": seed, "n_test": len(test),
                                           "n_train": len(train), "refit": refit}}
        if back_off:
            found = float(ev.metrics["threshold_at_90_precision"])
            if found <= 1.0:
                threshold = model.min_confidence = found
                # shown by the report; the scores above are without back-off
                ev.metrics["back_off_threshold"] = metrics["back_off_threshold"] = found
    what = "the held-out products" if test is not None else "a sample of the training products"
    with timed("drift_reference", f"drift reference: the model's answers on {what}"):
        reference = drift_reference(model, test, train)
    if test is not None and refit:
        with timed("refit", f"refitting on all {len(data):,} products (the held-out ones included)"):
            model = clone(model).fit(data, taxonomy=taxonomy)
    model.drift_reference_ = reference
    logger.info("trained in %s", ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return TrainedBundle(model, ev, metrics, threshold, seconds)
