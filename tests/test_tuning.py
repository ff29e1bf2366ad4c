from __future__ import annotations

import json

import pandas as pd
import pytest

import taxonomist as tx
from taxonomist import tuning
from taxonomist.tuning import DEFAULTS, tune

from .conftest import TINY
from .test_bad_inputs import run_cli

pytest.importorskip("optuna")


@pytest.fixture
def small_catalog() -> tx.Catalog:
    rows = [{"id": f"{k}-{i}", "title": f"{t} {w}", "category": c}
            for i, (t, c) in enumerate(TINY) for k, w in enumerate(("", "classic", "new"))]
    return tx.Catalog.from_frame(pd.DataFrame(rows), require_labels=True)


def test_tune_is_seeded_resumable_and_starts_from_the_defaults(small_catalog, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    first = tune(small_catalog, n_trials=3, storage=storage, seed=1)
    assert first.n_trials == 3
    assert first.trials[0]["number"] == 0 and {k: first.trials[0][k] for k in DEFAULTS} == DEFAULTS
    assert first.default_score is not None and first.best_score >= first.default_score
    again = tune(small_catalog, n_trials=2, storage=storage, seed=1)  # same study: picks up where it stopped
    assert again.n_trials == 5
    assert again.best_score >= first.best_score
    assert {t["state"] for t in again.trials} <= {"complete", "pruned"}
    other = tune(small_catalog, n_trials=3, seed=1)  # in memory, same seed: the same trials
    assert [t["C"] for t in other.trials] == [t["C"] for t in first.trials]
    model = first.model().fit(small_catalog)
    assert model.C == pytest.approx(first.best_params["C"])


def test_unknown_metric_and_missing_optuna(small_catalog, monkeypatch) -> None:
    with pytest.raises(tx.TaxonomistError, match="unknown metric 'f2'"):
        tune(small_catalog, n_trials=1, metric="f2")
    monkeypatch.setattr(tuning, "is_optuna_available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install 'taxonomist\[tune\]'"):
        tune(small_catalog, n_trials=1)


def test_tune_cli_saves_the_best_model(small_catalog, tmp_path, capsys, monkeypatch) -> None:
    f = tmp_path / "c.csv"
    small_catalog.frame.drop(columns=["row"]).to_csv(f, index=False)
    code, out = run_cli(["tune", str(f), "--trials", "3", "-o", str(tmp_path / "m"),
                         "--storage", f"sqlite:///{tmp_path / 't.db'}"], capsys, monkeypatch)
    assert code == 0, out
    assert "best trials by validation macro_f1" in out and "default" in out and "tuned" in out
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["metrics"]["tuning"]["n_trials"] == 3
    assert tx.load(tmp_path / "m").C == pytest.approx(manifest["metrics"]["tuning"]["best_params"]["C"])
    # issue 35: a tuned bundle had no drift reference (/v1/monitor asked for a retrain); the validation split's
    assert manifest["drift_reference"]["source"] == "held-out"


def test_tune_an_embedding_tier_searches_its_pooling_knobs(small_catalog, tiny_encoder_dir) -> None:
    result = tune(small_catalog, n_trials=3, seed=0, tier="ensemble", encoder=str(tiny_encoder_dir))
    assert result.tier == "ensemble" and result.trials[0]["prior_shift"] == "auto" and result.trials[0]["knn_k"] == 10
    assert {"prior_shift", "knn_k", "C"} <= set(result.best_params)
    model = result.model(encoder=str(tiny_encoder_dir))
    assert model.tier == "ensemble" and model.knn_k == result.best_params["knn_k"]
    with pytest.raises(tx.TaxonomistError, match="tuning: tier must be one of"):
        tune(small_catalog, n_trials=1, tier="finetune")
