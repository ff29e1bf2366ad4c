"""Category-aware search: FTS5 + embeddings fused by rank, the category boost and filter, the index folder, the
CLI and POST /v1/search."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import taxonomist as tx
from taxonomist.apps import SearchIndex
from taxonomist.apps.search import category_mass, elasticsearch_boost
from taxonomist.datasets import sample_path

from .conftest import TINY
from .test_bad_inputs import run_cli


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory, tiny_encoder_dir) -> SearchIndex:
    rows = [{"id": f"p{i}", "title": t, "category": c, "description": "cotton" if "Shirt" in t else ""}
            for i, (t, c) in enumerate(TINY)]
    rows.append({"id": "u1", "title": "Levis Women Blue Bootcut Jeans", "category": ""})  # unlabelled
    cat = tx.Catalog.from_frame(pd.DataFrame(rows))
    model = tx.TaxonomyClassifier(tier="sparse").fit(pd.DataFrame({"title": [t for t, _ in TINY], "category": [c for _, c in TINY]}))
    return SearchIndex.build(cat, tmp_path_factory.mktemp("s") / "index", model=model, encoder=str(tiny_encoder_dir))


def test_full_text_finds_words_in_title_and_body(tiny_index) -> None:
    hits = tiny_index.search("jeans", mode="bm25", k=50)
    assert hits and all("Jeans" in h.title for h in hits)
    assert all(h.bm25_rank is not None and h.vector_rank is None for h in hits)
    assert {h.id for h in tiny_index.search("cotton", mode="bm25", k=50)} == {
        f"p{i}" for i, (t, _) in enumerate(TINY) if "Shirt" in t}
    # FTS syntax in a query is searched for as words, not run as an expression
    assert tiny_index.search('jeans" OR title:*', mode="bm25")
    assert tiny_index.search("!!!", mode="bm25") == []
    # the unlabelled product got the model's category
    u1 = next(h for h in tiny_index.search("bootcut", mode="bm25"))
    assert u1.id == "u1" and u1.category == "Apparel > Bottomwear > Jeans"
    assert tiny_index.meta["categories"] == {"label": len(TINY), "predicted": 1, "none": 0}


def test_hybrid_fuses_both_rankings(tiny_index) -> None:
    vec = tiny_index.search("blue jeans", mode="vector", k=5)
    assert len(vec) == 5 and all(h.vector_rank is not None for h in vec)
    hyb = tiny_index.search("blue jeans", k=len(tiny_index))
    assert len(hyb) == len(tiny_index)  # every product is among the embedding candidates
    scores = [h.score for h in hyb]
    assert scores == sorted(scores, reverse=True)
    both = [h for h in hyb if h.bm25_rank and h.vector_rank]
    assert both and both[0].score > max(h.score for h in hyb if not h.bm25_rank)


def test_category_boost_and_filter(tiny_index) -> None:
    scores = {"Apparel > Topwear > Tshirts": 0.9, "Apparel > Bottomwear > Jeans": 0.1}
    mass = category_mass(scores)
    assert mass[("Apparel",)] == pytest.approx(1.0) and mass[("Apparel", "Topwear")] == pytest.approx(0.9)
    plain = tiny_index.search("men blue", mode="bm25", k=len(tiny_index))
    boosted = tiny_index.search("men blue", mode="bm25", k=len(tiny_index), category_scores=scores, boost=5.0)
    assert {h.id for h in plain} == {h.id for h in boosted}
    assert boosted[0].category == "Apparel > Topwear > Tshirts" or not any(
        h.category == "Apparel > Topwear > Tshirts" for h in plain)
    assert all(h.category_mass is not None for h in boosted)
    tshirt_rank = lambda hits: min(i for i, h in enumerate(hits) if "Tshirts" in h.category)  # noqa: E731
    assert tshirt_rank(boosted) <= tshirt_rank(plain)
    only = tiny_index.search("men", k=50, category="Apparel > Topwear")
    assert only and all(h.category.startswith("Apparel > Topwear") for h in only)
    assert tiny_index.search("men", k=50, category="Electronics") == []
    clauses = elasticsearch_boost(scores, min_mass=0.5)
    assert clauses[0] == {"term": {"category_path": {"value": "Apparel", "boost": 2.0}}}
    assert {c["term"]["category_path"]["value"] for c in clauses} == {
        "Apparel", "Apparel > Topwear", "Apparel > Topwear > Tshirts"}


def test_bad_queries_and_folders(tiny_index, tmp_path) -> None:
    for q in ("", "   "):
        with pytest.raises(tx.TaxonomistError, match="empty"):
            tiny_index.search(q)
    with pytest.raises(tx.TaxonomistError, match="mode must be"):
        tiny_index.search("jeans", mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(tx.TaxonomistError, match="not a search index"):
        SearchIndex.load(tmp_path)
    (tmp_path / "stuff.txt").write_text("x")
    cat = tx.Catalog.from_records([{"title": "Blue jeans", "category": "A > B"}])
    with pytest.raises(tx.TaxonomistError, match="not a search index"):
        SearchIndex.build(cat, tmp_path, encoder=None)
    idx = SearchIndex.build(cat, tmp_path / "an index #1?", encoder=None)  # URI characters in the path
    assert idx.embeddings is None and idx.search("jeans")[0].title == "Blue jeans"  # hybrid falls back to full text
    with pytest.raises(tx.TaxonomistError, match="no embeddings"):
        idx.search("jeans", mode="vector")
    with pytest.raises(tx.TaxonomistError, match="already holds a search index"):
        SearchIndex.build(cat, tmp_path / "an index #1?", encoder=None)
    again = SearchIndex.build(tx.Catalog.from_records([{"title": "Red shoes", "category": "A > C"}]),
                              tmp_path / "an index #1?",
                              encoder=None, overwrite=True)
    assert len(again) == 1 and again.search("shoes")[0].category == "A > C"


def test_chinese_titles_are_searchable_by_word(tmp_path) -> None:
    cat = tx.read_catalog(sample_path("reviews_zh"), require_labels=True)
    idx = SearchIndex.build(cat, tmp_path / "zh", encoder=None)
    hits = idx.search("手机", k=10)
    assert len(hits) == 10 and np.mean([h.category == "手机" for h in hits]) >= 0.5


def test_cli_and_api(tmp_path, capsys, monkeypatch, saved_sample_model) -> None:
    code, out = run_cli(["search", "build", str(sample_path("products")), "-o", str(tmp_path / "idx"),
                         "--encoder", "none"], capsys, monkeypatch)
    assert code == 0 and "3,176 products" in out, out
    code, out = run_cli(["search", "query", str(tmp_path / "idx"), "black watch", "--model", str(saved_sample_model),
                         "-k", "3"], capsys, monkeypatch)
    assert code == 0 and "Watches" in out, out
    code, out = run_cli(["search", "build", str(sample_path("products")), "-o", str(tmp_path / "idx"),
                         "--encoder", "none"], capsys, monkeypatch)
    assert code == 1 and "--overwrite" in out
    from fastapi.testclient import TestClient

    from taxonomist.serving.app import create_app
    from taxonomist.serving.settings import ServeSettings

    settings = ServeSettings(model_dir=saved_sample_model, review_db=tmp_path / "db", search_dir=tmp_path / "idx")
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/search", json={"query": "black watch", "k": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["results"]) == 5 and body["query_category"]["path"][0] == "Accessories"
        assert all("Watches" in h["category"] for h in body["results"])
        assert c.post("/v1/search", json={"query": "  "}).status_code == 422
        assert c.post("/v1/search", json={"query": "x", "k": 0}).status_code == 422
        assert c.post("/v1/search", json={"query": "x", "mode": "vector"}).status_code == 400  # built without embeddings
        assert c.post("/v1/search", json={"query": "black", "category": "Footwear"}).json()["results"][0][
            "category"].startswith("Footwear")
    settings = ServeSettings(model_dir=saved_sample_model, review_db=tmp_path / "db2")
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/search", json={"query": "watch"})
        assert r.status_code == 404 and "taxonomist search build" in r.json()["detail"]
