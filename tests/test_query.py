"""Search-query classification: product model + zero-shot + query model pooled, back-off for vague queries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import taxonomist as tx
from taxonomist.apps import QueryClassifier

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


def test_a_query_model_that_knows_fewer_classes_abstains_on_the_others(tiny_model) -> None:
    jeans_and_watches = [(t, c) for t, c in TINY if "Jeans" in c or "Watch" in c]
    qm = tx.TaxonomyClassifier().fit(pd.DataFrame({"title": [t for t, _ in jeans_and_watches],
                                                   "category": [c for _, c in jeans_and_watches]}))
    qc = QueryClassifier(product_model=tiny_model, query_model=qm, zero_shot=False)
    assert qc.sources == ["product", "query"]
    p = qc.predict_proba(["slim jeans"])
    assert p.shape == (1, len(tiny_model.classes_)) and np.isfinite(p).all()
    assert str(qc.classes_[p.argmax()]) == TINY[0][1]


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
