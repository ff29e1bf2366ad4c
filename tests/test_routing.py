"""After-sales message routing on the bundled Chinese reviews: category + sentiment -> queue by rules."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import taxonomist as tx
from taxonomist.apps import MessageRouter, RoutingRule, load_rules
from taxonomist.datasets import sample_path

from .test_bad_inputs import run_cli


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    return pd.read_csv(sample_path("reviews_zh"), dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def router(reviews) -> MessageRouter:
    rules = [RoutingRule(category="手机", sentiment="negative", queue="phones-escalation"),
             RoutingRule(sentiment="negative", queue="complaints")]
    return MessageRouter.fit(reviews["title"].tolist(), reviews["category"].tolist(), reviews["sentiment"].tolist(),
                             rules=rules)


def test_rules_pick_the_first_match_and_fall_back_to_the_default(router) -> None:
    routes = router.route(["手机屏幕坏了，很失望", "这本书写得很好，值得一看", "衣服质量太差了，退货"])
    assert [r.category for r in routes] == ["手机", "书籍", "衣服"]
    assert [r.sentiment for r in routes] == ["negative", "positive", "negative"]
    assert [(r.queue, r.rule) for r in routes] == [("phones-escalation", 1), ("general", None), ("complaints", 2)]
    assert 0 < routes[0].category_confidence <= 1 and routes[0].issue_type is None
    with pytest.raises(TypeError, match="wrap it in a list"):
        router.route("一条消息")


def test_rules_that_can_never_match_are_refused(router) -> None:
    with pytest.raises(tx.TaxonomistError, match="not in the category model's taxonomy"):
        MessageRouter(router.category_model, router.sentiment_model, rules=[RoutingRule(category="汽车", queue="x")])
    with pytest.raises(tx.TaxonomistError, match="sentiment 'angry' is not predicted"):
        MessageRouter(router.category_model, router.sentiment_model, rules=[RoutingRule(sentiment="angry", queue="x")])


def test_rule_files_and_save_load(router, tmp_path) -> None:
    (tmp_path / "r.csv").write_text("category,issue_type,sentiment,queue\n书籍,*,*,books\n", encoding="utf-8")
    assert load_rules(tmp_path / "r.csv") == [RoutingRule(category="书籍", queue="books")]
    (tmp_path / "r.json").write_text(json.dumps([{"sentiment": "negative", "queue": "q"}]))
    assert load_rules(tmp_path / "r.json")[0].sentiment == "negative"
    (tmp_path / "bad.csv").write_text("category,priority,queue\n书籍,high,books\n", encoding="utf-8")
    with pytest.raises(tx.TaxonomistError, match="expected the fields"):
        load_rules(tmp_path / "bad.csv")
    router.save(tmp_path / "router")
    again = MessageRouter.load(tmp_path / "router")
    msgs = ["手机屏幕坏了，很失望", "这本书写得很好"]
    assert [r.to_dict() for r in again.route(msgs)] == [r.to_dict() for r in router.route(msgs)]
    with pytest.raises(tx.TaxonomistError, match="not a message router folder"):
        MessageRouter.load(tmp_path)


def test_cli_and_api(router, tmp_path, capsys, monkeypatch, saved_sample_model) -> None:
    code, out = run_cli(["messages", "train", str(sample_path("reviews_zh")), "-o", str(tmp_path / "r"),
                         "--sentiment-column", "sentiment"], capsys, monkeypatch)
    assert code == 0, out
    assert "category" in out and "sentiment" in out and "router saved" in out
    code, out = run_cli(["messages", "route", str(tmp_path / "r"), "手机屏幕坏了，很失望"], capsys, monkeypatch)
    assert code == 0 and "手机" in out and "negative" in out
    code, out = run_cli(["messages", "train", str(sample_path("reviews_zh")), "-o", str(tmp_path / "x"),
                         "--sentiment-column", "mood"], capsys, monkeypatch)
    assert code == 1 and "column 'mood' not found" in out
    from fastapi.testclient import TestClient

    from taxonomist.serving.app import create_app
    from taxonomist.serving.settings import ServeSettings

    settings = ServeSettings(model_dir=saved_sample_model, review_db=tmp_path / "db", api_keys=["k"],
                             router_dir=tmp_path / "r")
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/messages/route", json={"messages": ["手机屏幕坏了，很失望"]})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["category"] == "手机"
    settings = ServeSettings(model_dir=saved_sample_model, review_db=tmp_path / "db2", api_keys=["k"])
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/messages/route", json={"messages": ["x"]}).status_code == 404
