"""Search-query classification: product model + zero-shot + query model pooled, back-off for vague queries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import taxonomist as tx
from taxonomist.apps import QueryClassifier
from taxonomist.datasets import sample_path

from .conftest import TINY
from .test_bad_inputs import run_cli


def test_sources_pool_over_one_class_list(tiny_model, tiny_encoder_dir) -> None:
    qc = QueryClassifier(product_model=tiny_model, encoder=str(tiny_encoder_dir))
    assert qc.sources == ["product", "zeroshot"]
    p = qc.predict_proba(["blue jeans", "gold watch"])
    assert p.shape == (2, len(tiny_model.classes_)) and np.allclose(p.sum(axis=1), 1.0)
    assert list(qc.classes_) == [str(c) for c in tiny_model.classes_]
    product_only = QueryClassifier(product_model=tiny_model, zero_shot=False)
    assert product_only.sources == ["product"]
    np.testing.assert_allclose(product_only.predict_proba(["blue jeans"]), tiny_model.predict_proba(["blue jeans"]),
                               atol=1e-5)
    # a vague query backs off to a parent when the threshold asks for it; a leaf when it does not
    strict = product_only.classify(["jeans"], min_confidence=0.999)[0]
    loose = product_only.classify(["jeans"], min_confidence=0.0)[0]
    assert len(strict.path) < len(loose.path) or strict.path == loose.path
    with pytest.raises(TypeError, match="wrap it in a list"):
        qc.predict_proba("jeans")


def test_a_query_model_with_fewer_or_coarser_classes(tiny_model) -> None:
    jeans_and_watches = [(t, c) for t, c in TINY if "Jeans" in c or "Watch" in c]
    qm = tx.TaxonomyClassifier(tier="sparse").fit(pd.DataFrame({"title": [t for t, _ in jeans_and_watches],
                                                   "category": [c for _, c in jeans_and_watches]}))
    qc = QueryClassifier(product_model=tiny_model, query_model=qm, zero_shot=False)
    assert qc.sources == ["product", "query"]
    p = qc.predict_proba(["slim jeans"])
    assert p.shape == (1, len(tiny_model.classes_)) and np.isfinite(p).all()
    assert str(qc.classes_[p.argmax()]) == TINY[0][1]
    # a query log labelled only at the top level votes for whole subtrees; classes it never had are its least likely
    coarse = tx.TaxonomyClassifier(tier="sparse").fit(pd.DataFrame({"title": ["jeans", "denim", "shirt", "tee", "watch", "dial"],
                                                       "category": ["Apparel"] * 4 + ["Accessories"] * 2}))
    qc = QueryClassifier(product_model=tiny_model, query_model=coarse, zero_shot=False, weights={"product": 0.0})
    p = qc.predict_proba(["watch"])[0]
    leaves = [str(c) for c in qc.classes_]
    under = [p[i] for i, c in enumerate(leaves) if c.startswith("Accessories")]
    assert min(under) > max(p[i] for i, c in enumerate(leaves) if c.startswith("Apparel"))
    assert np.allclose(under, under[0])  # no view on which accessory: the same factor for each


def test_pseudo_queries_are_short_title_parts() -> None:
    from taxonomist.apps.query import pseudo_queries

    qs, cats = pseudo_queries(["Nike Men Red Running Shoes", "Watch"], ["Footwear > Shoes", "Accessories > Watches"])
    assert qs[:3] == ["shoes", "running shoes", "men red running shoes"] and set(cats) == {"Footwear > Shoes"}
    assert all(q in "nike men red running shoes" for q in qs)


def test_zero_shot_only_into_a_taxonomy(tiny_encoder_dir) -> None:
    tax = tx.Taxonomy.from_paths([c for _, c in TINY])
    qc = QueryClassifier(taxonomy=tax, encoder=str(tiny_encoder_dir), min_confidence=None)
    assert qc.sources == ["zeroshot"] and len(qc.classes_) == len(tax.leaves())
    assert qc.classify(["jeans"], top_k=2)[0].alternatives[0][0] in {str(c) for c in qc.classes_}
    with pytest.raises(tx.TaxonomistError, match="needs a product model, a taxonomy or a query model"):
        QueryClassifier()


def test_query_cli_and_api(saved_sample_model, tmp_path, capsys, monkeypatch) -> None:
    code, out = run_cli(["query", str(saved_sample_model), "analog watch men", "--no-zero-shot"], capsys, monkeypatch)
    assert code == 0, out
    assert "Watches" in out
    code, out = run_cli(["query", "-", "watch"], capsys, monkeypatch)
    assert code == 1 and "give --taxonomy FILE" in out
    log = tmp_path / "log.csv"
    log.write_text("query,category\nshopper,Accessories\nbag black,Accessories\ntote,Accessories\njeans,Apparel\n"
                   "dress,Apparel\nshirt,Apparel\n")
    code, out = run_cli(["query", str(saved_sample_model), "shopper", "--no-zero-shot", "--query-log", str(log)],
                        capsys, monkeypatch)
    assert code == 0 and "product, query" in out and "Accessories" in out, out
    code, out = run_cli(["train", str(sample_path("products")), "-o", str(tmp_path / "m"), "--tier", "sparse", "--pseudo-queries",
                         "--test-size", "0"], capsys, monkeypatch)
    assert code == 0 and "pseudo-queries from the training titles" in out, out
    from fastapi.testclient import TestClient

    from taxonomist.serving.app import create_app
    from taxonomist.serving.settings import ServeSettings

    settings = ServeSettings(model_dir=saved_sample_model, review_db=tmp_path / "r.db", api_keys=["k"])
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/query/classify", json={"queries": ["analog watch men", "lipstick"], "top_k": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["sources"] == ["product", "zeroshot"] and len(body["results"]) == 2
        assert "Watches" in body["results"][0]["category"] and len(body["results"][0]["distribution"]) == 2
        assert c.post("/v1/query/classify", json={"queries": []}).status_code == 422
        assert c.post("/v1/query/classify", json={"queries": ["x" * 100_000]}).status_code == 422
