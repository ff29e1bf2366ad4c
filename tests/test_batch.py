"""Batch jobs: sharded, resumable, the same function on the local process pool and on Ray Data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

import taxonomist as tx
from taxonomist.batch import list_shards, predict_batch, read_output, run_job

from .conftest import sample_path
from .interrupt import run_and_kill
from .test_bad_inputs import run_cli


def _shards(folder, frame: pd.DataFrame, n: int, kind: str = "parquet") -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(frame)), n)):
        p = folder / f"shard-{i:03d}.{kind}"
        chunk = frame.iloc[part].drop(columns=["category"], errors="ignore")
        chunk.to_parquet(p, index=False) if kind == "parquet" else chunk.to_csv(p, index=False)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def products() -> pd.DataFrame:
    return pd.read_csv(sample_path("products"), dtype=str, keep_default_na=False).head(600)


def test_local_job_equals_the_direct_function_and_resumes(products, saved_sample_model, tmp_path) -> None:
    _shards(tmp_path / "in", products, 4)
    (tmp_path / "in" / "_SUCCESS").write_text("")  # markers and hidden files are not shards
    assert len(list_shards(tmp_path / "in")) == 4
    res = run_job("predict", saved_sample_model, tmp_path / "in", tmp_path / "out", num_workers=2, batch_size=64)
    assert res.ok and res.n_processed == 4 and res.rows == len(products)
    got = read_output(tmp_path / "out")
    clf = tx.load(saved_sample_model)
    frame = tx.Catalog.from_frame(products.drop(columns=["category"])).frame
    want = predict_batch(clf, frame, model_version=saved_sample_model.name)
    pdt.assert_frame_equal(got, want)
    assert set(got.columns) >= {"id", "category", "confidence", "level_confidence", "model_version"}
    again = run_job("predict", saved_sample_model, tmp_path / "in", tmp_path / "out", num_workers=2)
    assert again.n_done_before == 4 and again.n_processed == 0
    with pytest.raises(tx.TaxonomistError, match="different job .*top_k.*overwrite=True"):
        run_job("predict", saved_sample_model, tmp_path / "in", tmp_path / "out", top_k=5)
    redo = run_job("predict", saved_sample_model, tmp_path / "in", tmp_path / "out", top_k=5, overwrite=True,
                   num_workers=1)
    assert redo.n_processed == 4 and len(read_output(tmp_path / "out")["alternatives"][0]) == 5
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("keep me")
    with pytest.raises(tx.TaxonomistError, match="exists and is not empty"):
        run_job("predict", saved_sample_model, tmp_path / "in", tmp_path / "other")
    with pytest.raises(tx.TaxonomistError, match="not a taxonomist batch output"):
        run_job("predict", saved_sample_model, tmp_path / "in", tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "mine.txt").read_text() == "keep me"


def test_bad_rows_and_bad_shards_are_reported_not_fatal(products, saved_sample_model, tmp_path) -> None:
    _shards(tmp_path / "in", products.head(100), 2, kind="csv")
    (tmp_path / "in" / "shard-002.csv").write_text("id,title\n1,Red Cotton Tshirt\n2,\n3,Blue Jeans,extra,fields\n")
    (tmp_path / "in" / "shard-003.parquet").write_bytes(b"PAR1 this is not parquet")
    res = run_job("predict", saved_sample_model, tmp_path / "in", tmp_path / "out", num_workers=1)
    assert res.n_processed == 3 and res.rows == 101 and res.skipped_rows == 2
    assert [f["shard"].rsplit("/", 1)[-1] for f in res.failures] == ["shard-003.parquet"]
    assert "could not be read as Parquet" in res.failures[0]["error"]
    lines = " ".join(next(i["lines"] for i in res.issues if i["shard"].endswith("shard-002.csv")))
    assert "row 2" in lines and "row 3" in lines
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert sorted(manifest["completed"]) == ["0", "1", "2"]  # the failed shard is retried by the next run
    strict = run_job("predict", saved_sample_model, tmp_path / "in", tmp_path / "strict", num_workers=1,
                     read={"strict": True})
    assert {f["shard"].rsplit("/", 1)[-1] for f in strict.failures} == {"shard-002.csv", "shard-003.parquet"}
    assert "row 3" in next(f["error"] for f in strict.failures if f["shard"].endswith("shard-002.csv"))


def test_a_killed_job_resumes_to_the_uninterrupted_output(products, saved_sample_model, tmp_path) -> None:
    frame = pd.concat([products] * 4, ignore_index=True)
    frame["id"] = [str(i) for i in range(len(frame))]
    _shards(tmp_path / "in", frame, 24)
    cmd = [sys.executable, "-m", "taxonomist.cli", "predict", str(saved_sample_model), str(tmp_path / "in"),
           "-o", str(tmp_path / "out"), "--num-workers", "1", "--batch-size", "16"]
    manifest = tmp_path / "out" / "_manifest.json"

    def done() -> int:
        try:
            return len(json.loads(manifest.read_text())["completed"])
        except (OSError, ValueError, KeyError):
            return 0

    run_and_kill(cmd, done, at=2, interval=0.02)
    killed_at = len(json.loads(manifest.read_text())["completed"])
    assert 2 <= killed_at < 24
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resumed: {killed_at} of 24 shards were already done" in res.stdout
    assert not list((tmp_path / "out").glob(".*.tmp"))
    full = run_job("predict", saved_sample_model, tmp_path / "in", tmp_path / "full", num_workers=1, batch_size=16)
    assert full.rows == len(frame)
    pdt.assert_frame_equal(read_output(tmp_path / "out"), read_output(tmp_path / "full"))


def test_embed_job_writes_normalised_vectors(products, tiny_encoder_dir, saved_sample_model, tmp_path) -> None:
    _shards(tmp_path / "in", products.head(40), 2)
    res = run_job("embed", str(tiny_encoder_dir), tmp_path / "in", tmp_path / "out", num_workers=1)
    assert res.ok and res.rows == 40
    got = read_output(tmp_path / "out")
    vectors = np.stack(got["embedding"].to_numpy())
    assert vectors.shape == (40, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert got["id"].tolist() == products.head(40)["id"].tolist()
    with pytest.raises(tx.TaxonomistError, match="sparse-tier bundle without a text encoder"):
        run_job("embed", saved_sample_model, tmp_path / "in", tmp_path / "out2")
    with pytest.raises(tx.TaxonomistError, match="not a taxonomist bundle folder"):
        run_job("predict", tiny_encoder_dir, tmp_path / "in", tmp_path / "out3")


def test_cli_predict_job_and_its_errors(products, saved_sample_model, tmp_path, capsys, monkeypatch) -> None:
    _shards(tmp_path / "in", products.head(60), 3)
    code, out = run_cli(["predict", str(saved_sample_model), str(tmp_path / "in"), "-o", str(tmp_path / "p.csv")],
                        capsys, monkeypatch)
    assert code == 1 and "give -o a folder name" in out
    code, out = run_cli(["predict", str(saved_sample_model), str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                         "--engine", "spark"], capsys, monkeypatch)
    assert code == 1 and "engine must be one of local, ray, got 'spark' (command line: --engine local|ray)" in out
    code, out = run_cli(["predict", str(saved_sample_model), str(tmp_path / "in"), "-o", str(tmp_path / "out")],
                        capsys, monkeypatch)
    assert code == 0, out
    assert "60 rows from 3 shards written" in out
    assert len(read_output(tmp_path / "out")) == 60


def test_ray_job_matches_local_and_reports_a_malformed_shard(products, saved_sample_model, tmp_path, ray_local) -> None:
    _shards(tmp_path / "in", products.head(300), 3)
    local = run_job("predict", saved_sample_model, tmp_path / "in", tmp_path / "local", num_workers=2)
    ray = run_job("predict", saved_sample_model, tmp_path / "in", tmp_path / "ray", engine="ray", num_workers=2)
    assert local.ok and ray.ok and ray.rows == 300
    pdt.assert_frame_equal(read_output(tmp_path / "ray"), read_output(tmp_path / "local"))
    assert ray_local.is_initialized()  # a running Ray is used, not stopped
    (tmp_path / "in" / "shard-009.csv").write_text("id,title\n1,Red Cotton Tshirt\n2,Blue,Jeans,x\n")
    (tmp_path / "in" / "shard-010.parquet").write_bytes(b"not parquet at all")
    bad = run_job("predict", saved_sample_model, tmp_path / "in", tmp_path / "ray2", engine="ray", num_workers=2,
                  read={"strict": True})
    assert bad.n_processed == 3
    errors = {f["shard"].rsplit("/", 1)[-1]: f["error"] for f in bad.failures}
    assert set(errors) == {"shard-009.csv", "shard-010.parquet"}
    assert "row 2" in errors["shard-009.csv"] and "Parquet" in errors["shard-010.parquet"]
