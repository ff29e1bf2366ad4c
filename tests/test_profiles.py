"""Shopper profiles and recommendations: reading events (header or not, bad rows reported), affinity with event
weights and time decay, recommendations vs the baselines, save/load, the CLI and GET /v1/users/...."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import taxonomist as tx
from taxonomist.apps.profiles import (
    ProfileStore,
    evaluate_leave_last_out,
    read_events,
    synthetic_events,
)
from taxonomist.datasets import sample_path

from .test_bad_inputs import run_cli

DAY = 86400
T0 = 1_700_000_000

# a: likes shoes (bought one), glanced at a bag long ago; b: bags; c: shoes + bags
EVENTS = [
    ("a", "s1", "Footwear > Shoes", "pv", T0),
    ("a", "s2", "Footwear > Shoes", "pv", T0 + 60),
    ("a", "s2", "Footwear > Shoes", "buy", T0 + 120),
    ("a", "b1", "Accessories > Bags", "pv", T0 - 60 * DAY),
    ("b", "b1", "Accessories > Bags", "pv", T0),
    ("b", "b2", "Accessories > Bags", "cart", T0 + 10),
    ("c", "s1", "Footwear > Shoes", "pv", T0),
    ("c", "s3", "Footwear > Shoes", "pv", T0 + 5),
    ("c", "b2", "Accessories > Bags", "pv", T0 + 9),
]


@pytest.fixture()
def events_csv(tmp_path) -> str:
    path = tmp_path / "events.csv"
    lines = [",".join(map(str, e)) for e in EVENTS]
    lines += ["d,x1,Footwear > Shoes,teleport,1700000000", ",x1,Footwear > Shoes,pv,1700000000",
              "d,x1,Footwear > Shoes,pv,yesterday-ish", "d,x1,too,few"]
    path.write_text("\n".join(lines) + "\n")  # no header: the documented column order
    return str(path)


def test_reading_events_reports_and_skips_bad_rows(events_csv, tmp_path) -> None:
    ev = read_events(events_csv)
    assert len(ev) == len(EVENTS)
    issues = ev.report.to_dict()["issues"]
    assert {k: v["count"] for k, v in issues.items()} == {
        "malformed_line": 1, "missing_user_item": 1, "unknown_event": 1, "bad_timestamp": 1}
    assert set(ev.frame["event"]) == {"view", "buy", "cart"} and ev.frame["timestamp"].is_monotonic_increasing
    with pytest.raises(tx.CatalogError, match="strict mode"):
        read_events(events_csv, strict=True)
    # a header with other names, ISO dates and millisecond stamps
    hdr = tmp_path / "e.csv"
    hdr.write_text("visitorid,product_id,action,event_time\nu1,p1,purchase,2024-01-02T10:00:00Z\n"
                   "u1,p2,add_to_cart,1704189600000\n")
    ev2 = read_events(hdr)
    assert ev2.frame["timestamp"].tolist() == [1704189600, 1704189600] and ev2.frame["category"].tolist() == ["", ""]
    bad = tmp_path / "b.csv"
    bad.write_text("who,what\n1,2\n")
    with pytest.raises(tx.CatalogError, match="no column for"):
        read_events(bad, header=True)


def test_profiles_weigh_events_and_decay(events_csv) -> None:
    store = ProfileStore.fit(read_events(events_csv), half_life_days=7)
    a = store.profile("a")
    assert a.categories[0][0] == "Footwear > Shoes" and a.categories[0][1] > 0.99  # the old bag view has decayed
    assert a.bought == ["s2"] and a.events == 4 and a.recent_items[0] == "s2"
    assert sum(v for _, v in store.profile("c").categories) == pytest.approx(1.0, abs=1e-3)
    recs = store.recommend("a", k=10)
    assert "s2" not in [r.item for r in recs]  # bought
    assert recs[0].item in ("s1", "s3") and recs[0].category == "Footwear > Shoes"
    assert "s1" not in [r.item for r in store.recommend("a", k=10, exclude_seen=True)]
    pop = store.recommend("a", k=10, mix={"category": 0, "similar": 0, "popular": 1})
    assert all(r.reason == "popular" for r in pop)
    with pytest.raises(KeyError):
        store.profile("nobody")
    with pytest.raises(tx.TaxonomistError, match="unknown recommendation terms"):
        store.recommend("a", mix={"trending": 1.0})


def test_save_load_and_catalogue_items(tmp_path, tiny_encoder_dir) -> None:
    cat = tx.Catalog.from_records([
        {"id": "s1", "title": "Nike Men Red Running Shoes", "category": "Footwear > Shoes"},
        {"id": "s3", "title": "Puma Men Red Running Shoes", "category": "Footwear > Shoes"},
        {"id": "s9", "title": "Adidas Men Black Running Shoes", "category": ""},
        {"id": "b9", "title": "Lavie Women Red Handbag", "category": "Accessories > Bags"},
    ])
    model = tx.TaxonomyClassifier(tier="sparse").fit(pd.DataFrame({"title": ["red shoes", "running shoes", "handbag", "tote bag"],
                                                      "category": ["Footwear > Shoes"] * 2 + ["Accessories > Bags"] * 2}))
    frame = pd.DataFrame(EVENTS, columns=["user", "item", "category", "event", "timestamp"])
    frame.loc[frame["item"] == "s1", "category"] = ""  # filled from the catalogue
    store = ProfileStore.fit(read_events(frame), catalog=cat, model=model, encoder=str(tiny_encoder_dir))
    assert store.embeddings is not None and store.embeddings.shape[0] == len(store.item_ids)
    items = dict(zip(store.item_ids, store.item_category, strict=True))
    assert items["s9"] >= 0 and store.categories[items["s9"]] == "Footwear > Shoes"  # predicted (no events of it)
    assert "b9" in items  # untouched catalogue items are recommendable
    store.save(tmp_path / "p")
    again = ProfileStore.load(tmp_path / "p")
    assert again.profile("c") == store.profile("c")
    assert [r.to_dict() for r in again.recommend("c")] == [r.to_dict() for r in store.recommend("c")]
    with pytest.raises(tx.TaxonomistError, match="not a profile store"):
        ProfileStore.load(tmp_path)


def test_recommender_beats_popularity_on_a_synthetic_log_of_the_sample() -> None:
    cat = tx.read_catalog(sample_path("products"), require_labels=True)
    log = synthetic_events(cat, n_users=150, seed=1)
    assert set(log["event"]) == {"view", "fav", "cart", "buy"} and log["user"].nunique() == 150
    res = evaluate_leave_last_out(read_events(log), catalog=cat, new_items=True)
    assert res["recommender"]["users"] == 150
    assert res["recommender"]["hit_rate@10"] > res["popularity"]["hit_rate@10"]
    for m in res.values():
        assert 0 <= m["ndcg@10"] <= m["hit_rate@10"] <= 1


def test_cli_and_api(events_csv, tmp_path, capsys, monkeypatch, saved_sample_model) -> None:
    code, out = run_cli(["users", "build", events_csv, "-o", str(tmp_path / "p")], capsys, monkeypatch)
    assert code == 0 and "3 user profiles" in out and "skipped 4" in out, out
    code, out = run_cli(["users", "recommend", str(tmp_path / "p"), "a", "-k", "2"], capsys, monkeypatch)
    assert code == 0 and ("s1" in out or "s3" in out)
    code, out = run_cli(["users", "profile", str(tmp_path / "p"), "zz"], capsys, monkeypatch)
    assert code == 1 and "unknown user 'zz'" in out
    code, out = run_cli(["users", "evaluate", events_csv], capsys, monkeypatch)
    assert code == 0 and "popularity" in out and "hit-rate@10" in out
    code, out = run_cli(["users", "synthesize", str(sample_path("products")), "-o", str(tmp_path / "log.csv"),
                         "--users", "5"], capsys, monkeypatch)
    assert code == 0 and len(read_events(tmp_path / "log.csv").frame["user"].unique()) == 5
    from fastapi.testclient import TestClient

    from taxonomist.serving.app import create_app
    from taxonomist.serving.settings import ServeSettings

    settings = ServeSettings(model_dir=saved_sample_model, review_db=tmp_path / "db", profiles_dir=tmp_path / "p")
    with TestClient(create_app(settings)) as c:
        r = c.get("/v1/users/a/profile")
        assert r.status_code == 200 and r.json()["categories"][0]["category"] == "Footwear > Shoes"
        r = c.get("/v1/users/a/recommendations", params={"k": 2})
        assert r.status_code == 200 and len(r.json()["results"]) == 2
        assert np.all([x["item"] != "s2" for x in r.json()["results"]])
        assert c.get("/v1/users/zz/profile").status_code == 404
        assert c.get("/v1/users/a/recommendations", params={"k": 0}).status_code == 422
    settings = ServeSettings(model_dir=saved_sample_model, review_db=tmp_path / "db2")
    with TestClient(create_app(settings)) as c:
        r = c.get("/v1/users/a/profile")
        assert r.status_code == 404 and "taxonomist users build" in r.json()["detail"]
