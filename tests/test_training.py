"""The one training recipe every path that makes a bundle calls (taxonomist.training.train_bundle)."""

from __future__ import annotations

import pandas as pd
import pytest

import taxonomist as tx
from taxonomist.datasets import sample_path
from taxonomist.training import train_bundle


@pytest.fixture(scope="module")
def catalog() -> tx.Catalog:
    frame = pd.read_csv(sample_path("products"), dtype=str, keep_default_na=False).head(600)
    return tx.Catalog.from_frame(frame, require_labels=True)


def test_train_bundle_evaluates_backs_off_keeps_a_reference_refits_and_times_each_stage(catalog, tmp_path) -> None:
    estimator = tx.TaxonomyClassifier(tier="sparse")
    result = train_bundle(estimator, catalog, test_size=0.25, seed=0)
    ev = result.evaluation
    assert ev is not None and result.metrics["split"]["n_test"] == ev.metrics["n"]
    assert result.metrics["split"]["n_train"] + ev.metrics["n"] == len(catalog)
    threshold = float(ev.metrics["threshold_at_90_precision"])
    assert result.back_off == threshold == result.model.min_confidence == result.metrics["back_off_threshold"]
    assert estimator.min_confidence is None  # the configuration given is not changed
    assert result.model.drift_reference_.source == "held-out"
    assert list(result.seconds) == ["fit", "evaluate", "drift_reference", "refit"]
    assert result.model.fingerprint_ == tx.TaxonomyClassifier(tier="sparse").fit(catalog).fingerprint_  # refitted on all
    path = result.save(tmp_path / "m", note="x")
    again = tx.load(path)
    assert again.drift_reference_.source == "held-out" and again.metrics_["note"] == "x"
    assert again.min_confidence == threshold


def test_without_a_held_out_part_nothing_is_evaluated_and_the_reference_is_a_training_sample(catalog) -> None:
    result = train_bundle(tx.TaxonomyClassifier(tier="sparse", min_confidence=0.4), catalog, test_size=0)
    assert result.evaluation is None and result.metrics == {} and result.back_off is None
    assert result.model.min_confidence == 0.4
    assert result.model.drift_reference_.source == "training sample"
    assert list(result.seconds) == ["fit", "drift_reference"]
