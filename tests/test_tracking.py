"""MLflow tracking: runs written by train / evaluate / tune --track are read back through the MLflow client."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

import taxonomist as tx
from taxonomist.tracking import flatten_metrics

from .conftest import TINY
from .interrupt import run_and_kill
from .test_bad_inputs import run_cli

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


@pytest.fixture
def catalog_csv(tmp_path):
    rows = [{"id": f"{k}-{i}", "title": f"{t} {w}", "category": c}
            for i, (t, c) in enumerate(TINY) for k, w in enumerate(("", "classic", "new", "blue"))]
    f = tmp_path / "c.csv"
    pd.DataFrame(rows).to_csv(f, index=False)
    return f


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("taxonomist")
    assert exp is not None
    return client.search_runs([exp.experiment_id])


def test_flatten_keeps_numbers_and_names_levels() -> None:
    flat = flatten_metrics({"macro_f1": 0.5, "ok": True, "nan": float("nan"), "name": "x",
                            "levels": [{"level": 2, "accuracy": 0.7}], "top_k_accuracy": {"3": 0.9},
                            "weird>key": 1})
    assert flat == {"macro_f1": 0.5, "ok": 1.0, "level_2.accuracy": 0.7, "top_k_accuracy.3": 0.9, "weird_key": 1.0}


def test_train_and_evaluate_track_metrics_report_bundle_and_tags(catalog_csv, tmp_path, capsys, monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # artifacts go under ./mlruns
    code, out = run_cli(["train", str(catalog_csv), "-o", str(tmp_path / "m"), "--tier", "sparse", "--test-size", "0.25",
                         "--track", "--tracking-uri", uri, "--register", "tiny"], capsys, monkeypatch)
    assert code == 0, out
    assert "MLflow run" in out and "registered as MLflow model 'tiny' version 1" in out
    code, out = run_cli(["evaluate", str(tmp_path / "m"), str(catalog_csv), "--track", "--tracking-uri", uri],
                        capsys, monkeypatch)
    assert code == 0, out
    runs = {r.data.tags["taxonomist.command"]: r for r in _runs(uri)}
    assert set(runs) == {"train", "evaluate"}
    client = MlflowClient(uri)
    train = runs["train"]
    assert train.info.status == "FINISHED"
    manifest = tx.load(tmp_path / "m").manifest_
    assert train.data.metrics["macro_f1"] == pytest.approx(manifest["metrics"]["macro_f1"])
    assert "level_1.accuracy" in train.data.metrics and "hierarchical_f1" in train.data.metrics
    assert train.data.params["tier"] == "sparse" and train.data.params["C"] == "0.5"
    assert train.data.tags["data.fingerprint"] == manifest["training_data"]["fingerprint"]
    assert train.data.tags["taxonomist.version"] == tx.__version__
    names = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {"bundle", "metrics.json", "report.html"} <= names
    bundle_files = {a.path for a in client.list_artifacts(train.info.run_id, "bundle")}
    assert "bundle/manifest.json" in bundle_files
    version = client.get_model_version("tiny", "1")
    assert version.run_id == train.info.run_id
    # the registered version is an MLflow pyfunc model (models from code: nothing pickled), so `mlflow models
    # serve -m models:/tiny/1` and mlflow.pyfunc.load_model work on it
    import mlflow

    assert "model" in names
    mlflow.set_tracking_uri(uri)
    pyfunc = mlflow.pyfunc.load_model("models:/tiny/1")
    answer = pyfunc.predict(pd.DataFrame({"title": ["red cotton shirt", "blue denim jeans"]}))
    assert list(answer["category"]) == list(tx.load(tmp_path / "m").predict(["red cotton shirt", "blue denim jeans"]))
    assert not any(p.suffix in (".pkl", ".pickle") for p in (tmp_path / "mlruns").rglob("*"))
    ev = runs["evaluate"]
    assert ev.data.tags["model.fingerprint"] == manifest["training_data"]["fingerprint"]
    assert 0 < ev.data.metrics["accuracy"] <= 1


def test_tune_tracks_one_nested_run_per_trial(catalog_csv, tmp_path, capsys, monkeypatch) -> None:
    pytest.importorskip("optuna")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["tune", str(catalog_csv), "--trials", "3", "-o", str(tmp_path / "t"),
                         "--track", "--tracking-uri", uri], capsys, monkeypatch)
    assert code == 0, out
    runs = _runs(uri)
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(parent) == 1 and len(children) == 3
    p = parent[0].data
    assert p.metrics["tuned_macro_f1"] >= p.metrics["default_macro_f1"]
    assert {"trial 0", "trial 1", "trial 2"} == {r.info.run_name for r in children}
    assert all("C" in r.data.params for r in children)


def test_register_without_track_is_refused(catalog_csv, tmp_path, capsys, monkeypatch) -> None:
    code, out = run_cli(["train", str(catalog_csv), "-o", str(tmp_path / "m"), "--tier", "sparse", "--register", "x"], capsys, monkeypatch)
    assert code == 1 and "--register needs --track" in out


def test_an_interrupted_tune_resumes_from_its_storage(catalog_csv, tmp_path) -> None:
    """Kill ``taxonomist tune`` after its first finished trial; the same command then carries on the study."""
    optuna = pytest.importorskip("optuna")
    db = tmp_path / "tune.db"
    storage = f"sqlite:///{db}"
    cmd = [sys.executable, "-m", "taxonomist.cli", "tune", str(catalog_csv), "--trials", "200",
           "-o", str(tmp_path / "t"), "--storage", storage]

    def finished() -> int:  # read-only: opening the storage with Optuna would race tune to create its schema
        if not db.exists():
            return 0
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
                (n,) = con.execute("SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')").fetchone()
            return int(n)
        except sqlite3.Error:  # the schema is not created yet, or the file is locked for a moment
            return 0

    run_and_kill(cmd, finished, at=2, interval=0.2)
    before = optuna.load_study(study_name="taxonomist", storage=storage)
    done_before = [t for t in before.trials if t.state.is_finished()]
    assert len(done_before) >= 2
    env = {**os.environ, "COLUMNS": "200"}
    res = subprocess.run([*cmd[:6], "2", *cmd[7:]], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    after = optuna.load_study(study_name="taxonomist", storage=storage)
    finished_after = [t for t in after.trials if t.state.is_finished()]
    assert len(finished_after) == len(done_before) + 2  # the earlier trials kept, two new ones run
    assert [t.params for t in finished_after[: len(done_before)]] == [t.params for t in done_before]
    assert (tmp_path / "t" / "manifest.json").is_file()


def test_tune_survives_another_process_creating_the_same_storage(catalog_csv, tmp_path, monkeypatch) -> None:
    """Two workers (or a watcher) opening one fresh SQLite storage race to create its schema; the loser used to
    fail with ``UNIQUE constraint failed: alembic_version``. The study is opened again instead."""
    optuna = pytest.importorskip("optuna")
    import sqlalchemy.exc

    from taxonomist import tuning

    real = optuna.create_study
    calls = {"n": 0}

    def racing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna, "create_study", racing)
    data = tx.read_catalog(catalog_csv)
    result = tuning.tune(data, n_trials=1, storage=f"sqlite:///{tmp_path / 'race.db'}")
    assert calls["n"] == 2 and len(result.trials) == 1
