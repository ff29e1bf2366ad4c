"""deploy/: the Prometheus alert rules (promtool), the Grafana dashboard's queries, and a real Prometheus
scraping a real service and evaluating the drift alert."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

import taxonomist as tx
from taxonomist.monitoring import ALERTS, MIN_WINDOW, DriftReference

from .live_server import KEY, LiveServer, free_port

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "taxonomist-dashboard.json"
GROCERIES = ["basmati rice 5kg", "organic garam masala powder", "toor dal 1 kg", "cold pressed groundnut oil",
             "instant noodles masala", "green tea bags 100", "jaggery powder 500 g", "ragi flour organic"]


def _rules() -> dict[str, dict]:
    return {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}


def test_the_alert_rules_use_the_libraries_thresholds() -> None:
    rules = _rules()
    assert rules["TaxonomistCategoryDrift"]["expr"].endswith(f"> {ALERTS['psi_level_1']}")
    assert rules["TaxonomistUnknownTitleWords"]["expr"].rstrip().endswith(f"> {ALERTS['unknown_word_share_increase']:.2f}")
    assert f"> {ALERTS['mean_confidence_drop']:.2f})" in rules["TaxonomistConfidenceDrop"]["expr"]
    assert f"taxonomist_drift_confidence_psi > {ALERTS['confidence_psi']}" in rules["TaxonomistConfidenceShift"]["expr"]
    for name in ("TaxonomistConfidenceDrop", "TaxonomistConfidenceShift"):  # as the library: held-out references only
        assert "taxonomist_drift_reference_held_out == 1" in rules[name]["expr"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian: apt-get install prometheus)")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], capture_output=True, text=True,
                          cwd=RULES.parent)
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["panels"] and all(p["targets"] for p in dash["panels"])
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def _metric_names(expr: str) -> set[str]:
    return {m for m in re.findall(r"\b(taxonomist_[a-z0-9_]+)", expr)}


def test_the_dashboard_queries_metrics_the_service_exports(saved_sample_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from taxonomist.serving import ServeSettings, create_app

    store = tmp_path / "models"
    shutil.copytree(saved_sample_model, store / "v0001")
    with TestClient(create_app(ServeSettings(model_dir=store, review_db=tmp_path / "r.db"))) as c:
        c.post("/v1/classify", json={"products": [{"title": "red cotton shirt"}]})
        exported = c.get("/metrics").text
    names = set(re.findall(r"^(taxonomist_[a-z0-9_]+)", exported, flags=re.M))
    wanted = set().union(*(_metric_names(e) for e in _dashboard_exprs()))
    assert wanted and wanted <= names, wanted - names
    alert_metrics = set().union(*(_metric_names(r["expr"]) for r in _rules().values()))
    assert alert_metrics <= names, alert_metrics - names


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed (Debian: apt-get install prometheus)")
def test_a_real_prometheus_scrapes_the_service_and_the_drift_alert_fires(saved_sample_model: Path, sample_split,
                                                                         tmp_path: Path) -> None:
    """Served fashion products: no alert; then groceries: TaxonomistCategoryDrift becomes pending (its ``for``
    is 30 minutes) on the PSI Prometheus scraped; every dashboard query runs on the real server."""
    store = tmp_path / "models"
    clf = tx.load(saved_sample_model)
    clf.drift_reference_ = DriftReference.of(clf, sample_split[1].frame.to_dict("records"))
    clf.save(store / "v0001")
    with LiveServer(store, tmp_path / "review.db", tmp_path / "server.log", audit_rate=0.0,
                    monitor_window=MIN_WINDOW) as server:
        port = free_port()
        host = server.url.removeprefix("http://")
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{RULES}']\n"
            f"scrape_configs: [{{job_name: taxonomist, static_configs: [{{targets: ['{host}']}}]}}]\n")
        with (tmp_path / "prometheus.log").open("wb") as log:
            prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=log)
        api = f"http://127.0.0.1:{port}/api/v1"
        # the server has API keys: its drift window counts keyed clients' traffic only (monitor_keyless is off)
        keyed = {"Authorization": f"Bearer {KEY}"}
        try:
            titles = sample_split[1].frame["title"].tolist()[:MIN_WINDOW]
            for k in range(0, MIN_WINDOW, 50):
                httpx.post(f"{server.url}/v1/classify", json={"products": [{"title": t} for t in titles[k:k + 50]]},
                           headers=keyed, timeout=30).raise_for_status()

            def query(expr: str) -> list[dict]:
                r = httpx.get(f"{api}/query", params={"query": expr}, timeout=5)
                assert r.status_code == 200 and r.json()["status"] == "success", (expr, r.text)
                return list(r.json()["data"]["result"])

            def alerts() -> list[dict]:
                return [a for a in httpx.get(f"{api}/alerts", timeout=5).json()["data"]["alerts"]
                        if a["labels"]["alertname"] == "TaxonomistCategoryDrift"]

            deadline = time.monotonic() + 60
            while not query('taxonomist_drift_window_predictions >= 200') and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2.5)  # two more evaluations of the rules on the full window
            calm = query('taxonomist_drift_psi{level="1"}')
            assert calm and float(calm[0]["value"][1]) < ALERTS["psi_level_1"]
            assert alerts() == []
            for k in range(0, MIN_WINDOW, 50):
                products = [{"title": f"{GROCERIES[i % len(GROCERIES)]} pack {i}"} for i in range(k, k + 50)]
                httpx.post(f"{server.url}/v1/classify", json={"products": products}, headers=keyed,
                           timeout=30).raise_for_status()
            deadline = time.monotonic() + 60
            while not alerts() and time.monotonic() < deadline:
                time.sleep(0.5)
            fired = alerts()
            assert fired and fired[0]["state"] == "pending", fired
            assert float(fired[0]["value"]) > ALERTS["psi_level_1"]
            for expr in _dashboard_exprs():
                query(expr)
        finally:
            prom.terminate()
            prom.wait(15)
