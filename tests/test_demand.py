"""Category demand: series per category and period, backtest-chosen ETS / seasonal naive against naive, the
too-short verdict, the HTML report, the CLI and POST /v1/demand/forecast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import taxonomist as tx
from taxonomist.apps.demand import backtest, category_series, forecast_demand, smape
from taxonomist.apps.profiles import read_events

from .test_bad_inputs import run_cli

T0 = 1_700_006_400 - 1_700_006_400 % 86400  # a midnight


def orders(days: int = 70, seed: int = 0) -> pd.DataFrame:
    """Two categories with a strong weekly pattern (weekends x3), one flat and noisy."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(days):
        for cat, lam in (("Apparel > Shoes", 30 if d % 7 in (5, 6) else 10), ("Apparel > Bags", 20 if d % 7 == 0 else 6),
                         ("Home > Lamps", 4)):
            rows += [("u", "i", cat, "buy", T0 + d * 86400 + 600 + j) for j in range(rng.poisson(lam))]
    rows.append(("u", "i", "Home > Lamps", "buy", T0 + days * 86400 - 600))  # the log reaches the last day's end
    rows.append(("u", "i", "Apparel > Shoes", "buy", T0 - 90 * 86400))  # a stray event far before the rest
    return pd.DataFrame(rows, columns=["user", "item", "category", "event", "timestamp"])


def test_smape_and_series() -> None:
    assert smape(np.array([0, 10]), np.array([0, 10])) == 0.0
    assert smape(np.array([10.0]), np.array([0.0])) == pytest.approx(2.0)
    ev = read_events(orders())
    s = category_series(ev)
    assert len(s) == 70 and s.index[0].start_time == pd.Timestamp(T0, unit="s")  # the stray event is left out
    top = category_series(ev, level=1)
    assert list(top.columns) == ["Apparel", "Home"] and (top["Apparel"] == s["Apparel > Bags"] + s["Apparel > Shoes"]).all()
    weeks = category_series(ev, freq="W")
    assert 9 <= len(weeks) <= 11 and weeks.index[0].end_time > pd.Timestamp(T0, unit="s")
    with pytest.raises(tx.TaxonomistError, match="no view events"):
        category_series(ev, event="view")
    with pytest.raises(tx.TaxonomistError, match="freq must be"):
        category_series(ev, freq="M")  # type: ignore[arg-type]


def test_weekly_pattern_is_found_and_beats_naive(tmp_path) -> None:
    rep = forecast_demand(read_events(orders()), horizon=7, origins=3)
    by = {f.category: f for f in rep.forecasts}
    shoes = by["Apparel > Shoes"]
    assert shoes.chosen in ("ets", "seasonal_naive") and shoes.beats_naive
    assert set(shoes.errors) == {"naive", "ets", "seasonal_naive"}
    assert shoes.forecast is not None and len(shoes.forecast) == 7 and (shoes.forecast >= 0).all()
    assert "majority of categories" in rep.verdict() and "beats" in rep.verdict()
    y = category_series(read_events(orders()))["Apparel > Shoes"].to_numpy()
    assert backtest(y, "seasonal_naive", 7, 3, 7)["smape"] < backtest(y, "naive", 7, 3, 7)["smape"]
    page = rep.to_html()
    assert page.count("<img") == 3 and "Apparel &gt; Shoes" in page and "naive_smape" in page


def test_short_logs_say_so() -> None:
    rep = forecast_demand(read_events(orders(days=12)), horizon=7, origins=3)
    assert all(f.chosen is None and f.beats_naive is None for f in rep.forecasts)
    assert rep.verdict().startswith("The data is too short to tell: 12 days")
    assert "too short" in rep.to_html()


def test_cli_and_api(tmp_path, capsys, monkeypatch, saved_sample_model) -> None:
    path = tmp_path / "orders.csv"
    orders().to_csv(path, index=False)
    code, out = run_cli(["demand", str(path), "-o", str(tmp_path / "d.html"), "--horizon", "7"], capsys, monkeypatch)
    assert code == 0 and "Apparel > Shoes" in out and "majority" in out, out
    assert (tmp_path / "d.html").read_text().startswith("<!doctype html>")
    code, out = run_cli(["demand", str(path), "--freq", "Q"], capsys, monkeypatch)
    assert code == 1 and "freq must be" in out
    from fastapi.testclient import TestClient

    from taxonomist.serving.app import create_app
    from taxonomist.serving.settings import ServeSettings

    events = [{"category": c, "event": e, "timestamp": int(t)}
              for _, _, c, e, t in orders(days=40).itertuples(index=False)]
    with TestClient(create_app(ServeSettings(model_dir=saved_sample_model, review_db=tmp_path / "db"))) as c:
        r = c.post("/v1/demand/forecast", json={"events": events, "horizon": 7})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["periods"] == 40 and len(body["categories"]) == 3
        assert len(body["categories"][0]["forecast"]) == 7
        bad = c.post("/v1/demand/forecast", json={"events": [*events[:5], {"category": "x", "event": "teleport",
                                                                            "timestamp": 1}]})
        assert bad.status_code == 422 and "unknown_event" not in bad.text and "not view / fav / cart / buy" in bad.text
        assert c.post("/v1/demand/forecast", json={"events": []}).status_code == 422
        assert c.post("/v1/demand/forecast", json={"events": events[:3], "freq": "Y"}).status_code == 422
        for ts in (1e30, 10**15, -5, "9999999-01-01"):  # not an order date: refused, not guessed
            r = c.post("/v1/demand/forecast", json={"events": [*events[:5], {"category": "x", "timestamp": ts}]})
            assert r.status_code == 422, (ts, r.status_code)
