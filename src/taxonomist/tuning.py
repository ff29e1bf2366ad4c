"""Hyper-parameter search with Optuna: seeded, resumable (SQLite storage), pruned, default vs tuned side by side.

The search runs on a grouped split of the catalogue (the same split as ``taxonomist train``): each trial fits on
the training part and is scored on the validation part. Trial 0 is always the default configuration, so the
table shows what tuning gained. Each trial first fits on half of the training part and reports that score, so the
median pruner can stop a hopeless configuration before its full fit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .catalog import Catalog, split_catalog
from .classifier import TaxonomyClassifier
from .evaluation import evaluate
from .exceptions import TaxonomistError

if TYPE_CHECKING:
    import optuna

__all__ = ["DEFAULTS", "TuneResult", "is_optuna_available", "tune"]

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {"C": 0.5, "context_weight": 0.5, "class_weight": "none", "use_attributes": True,
                            "description_chars": "auto"}
TIER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sparse": DEFAULTS,
    # the embedding tiers add the knobs of their pooling: prior shift (logit adjustment) and neighbours per vote
    "ensemble": {**DEFAULTS, "prior_shift": "auto", "knn_k": 10},
    "embed": {**DEFAULTS, "prior_shift": "auto", "knn_k": 10},
}
METRICS = ("macro_f1", "accuracy", "weighted_f1", "hierarchical_f1", "top_level_accuracy")


def _result(study: optuna.Study, complete: list[optuna.trial.FrozenTrial], defaults: dict[str, Any], metric: str,
            tier: str, train: Catalog, valid: Catalog) -> TuneResult:
    """The search's outcome: the best trial, the default configuration's score (trial 0), every trial."""
    import optuna

    default = next((t for t in complete if t.params == defaults), None)
    trials = [
        {"number": t.number, "state": t.state.name.lower(), "value": t.value, **t.params,
         "seconds": t.duration.total_seconds() if t.duration else None}
        for t in study.trials
    ]
    return TuneResult(
        metric=metric, tier=tier, best_params=dict(study.best_params), best_score=float(study.best_value),
        default_score=float(default.value) if default is not None and default.value is not None else None,
        n_trials=len(study.trials),
        n_pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        trials=trials,
        train=train,
        valid=valid,
    )


def _open_study(attempts: int = 5, **kwargs: Any) -> optuna.Study:
    """``optuna.create_study``, tried again when another process is creating the same storage at that moment.

    Several workers started on one fresh SQLite (or other RDB) storage race to create its schema; the losers get
    an ``IntegrityError`` (``alembic_version``) or "database is locked". Once the winner is done the storage opens.
    """
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            return optuna.create_study(**kwargs)
        except (IntegrityError, OperationalError) as err:
            if attempt == attempts - 1:
                raise
            logger.info("the tuning storage is being created by another process (%s); opening it again",
                        type(err).__name__)
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def is_optuna_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("optuna") is not None


def _model_params(params: dict[str, Any]) -> dict[str, Any]:
    p = dict(params)
    p["class_weight"] = None if p.get("class_weight") in (None, "none") else p["class_weight"]
    if p.get("description_chars") == "whole":
        p["description_chars"] = None
    return p


def _suggest(trial: optuna.Trial, tier: str) -> dict[str, Any]:
    params = {
        "C": trial.suggest_float("C", 0.05, 2.0, log=True),  # above ~2 liblinear stops converging on titles
        "context_weight": trial.suggest_float("context_weight", 0.0, 1.0),
        "class_weight": trial.suggest_categorical("class_weight", ["none", "balanced"]),
        "use_attributes": trial.suggest_categorical("use_attributes", [True, False]),
        # searched like the others ("auto" chooses inside each trial's fit, at the cost of two more fits)
        "description_chars": trial.suggest_categorical("description_chars", ["auto", "whole", 300]),
    }
    if tier != "sparse":
        # "auto": chosen out of fold with the members (the default); a number fixes it
        params["prior_shift"] = trial.suggest_categorical("prior_shift", ["auto", 0.0, 0.25, 0.5, 0.75, 1.0])
        params["knn_k"] = trial.suggest_int("knn_k", 3, 30, log=True)
    return params


@dataclass
class TuneResult:
    """What a search found: the best parameters, its score next to the default's, and every trial."""

    metric: str
    best_params: dict[str, Any]
    best_score: float
    default_score: float | None
    n_trials: int
    n_pruned: int
    trials: list[dict[str, Any]] = field(default_factory=list)
    tier: str = "sparse"
    train: Catalog | None = field(default=None, repr=False)
    valid: Catalog | None = field(default=None, repr=False)
    """The split every trial was fitted (``train``) and scored (``valid``) on."""

    def model(self, **overrides: Any) -> TaxonomyClassifier:
        """An unfitted classifier with the best parameters."""
        return TaxonomyClassifier(**{"tier": self.tier, **_model_params(self.best_params), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "tier": self.tier, "best_params": self.best_params, "best_score": self.best_score,
            "default_score": self.default_score, "n_trials": self.n_trials, "n_pruned": self.n_pruned,
        }


def tune(catalog: Catalog, n_trials: int = 20, timeout: float | None = None, metric: str = "macro_f1",
         valid_size: float = 0.2, seed: int = 0, storage: str | None = None, study_name: str = "taxonomist",
         callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
         tier: str = "sparse", encoder: str = "auto") -> TuneResult:
    """Search C, the context weight, class weighting and attribute use (and, for the embedding tiers, the prior
    shift and the neighbours per vote), maximising ``metric`` on validation.

    Args:
        catalog: a labelled catalogue.
        n_trials: trials to run in this call (a resumed study keeps its earlier trials).
        timeout: stop starting new trials after this many seconds.
        metric: one of ``macro_f1``, ``accuracy``, ``weighted_f1``, ``hierarchical_f1``, ``top_level_accuracy``.
        valid_size: share of title groups held out for scoring.
        seed: seeds the split and the sampler.
        storage: an Optuna storage URL (``sqlite:///tune.db``) to make the search resumable; in memory if ``None``.
        study_name: the study's name inside the storage.
        callbacks: Optuna callbacks called after each trial (the CLI's progress bar).
        tier: ``sparse`` (default), ``ensemble`` or ``embed``; an embedding tier encodes the catalogue once (the
            embedding cache serves every later trial).
        encoder: text encoder of the embedding tiers.
    """
    if not is_optuna_available():
        raise ImportError("tuning needs Optuna: pip install 'taxonomist[tune]'") from None
    import optuna

    if metric not in METRICS:
        raise TaxonomistError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    if tier not in TIER_DEFAULTS:
        raise TaxonomistError(f"tuning: tier must be one of {list(TIER_DEFAULTS)}, got {tier!r}", options=("tier",))
    defaults = TIER_DEFAULTS[tier]
    extra: dict[str, Any] = {"tier": tier, "encoder": encoder} if tier != "sparse" else {}
    train, valid = split_catalog(catalog, test_size=valid_size, seed=seed)
    half = train.subset(np.random.default_rng(seed).permutation(len(train))[: max(len(train) // 2, 2)])

    def score(params: dict[str, Any], data: Catalog) -> float:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        model = TaxonomyClassifier(**_model_params(params), **extra, calibration="none", random_state=seed)
        with warnings.catch_warnings():
            # a large C may stop liblinear short of convergence: the trial is scored as fitted (its score says
            # whether that matters) instead of printing one warning per class
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(data)
        return float(evaluate(model, valid).metrics[metric])

    def objective(trial: optuna.Trial) -> float:
        params = _suggest(trial, tier)
        if half.frame["category"].nunique() >= 2:
            trial.report(score(params, half), step=0)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return score(params, train)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(
        study_name=study_name, storage=storage, load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    if not study.trials:
        study.enqueue_trial(defaults)  # trial 0: the defaults, the baseline the search must beat
    study.optimize(objective, n_trials=n_trials, timeout=timeout, callbacks=callbacks or [], gc_after_trial=True)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise TaxonomistError("no tuning trial completed; give more trials or a longer timeout",
                              options=("trials", "timeout"))
    return _result(study, complete, defaults, metric, tier, train, valid)
