"""Differentially private training of the message router: hashed features, DP-SGD, the accountant, bundles."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import taxonomist as tx
from taxonomist.apps import MessageRouter
from taxonomist.datasets import sample_path
from taxonomist.encoders.sparse import SparseTextEncoder
from taxonomist.models.private import (
    PrivateLinearClassifier,
    clipped_residuals,
    noise_multiplier,
    spent_epsilon,
)

from .test_bad_inputs import run_cli


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    return pd.read_csv(sample_path("reviews_zh"), dtype=str, keep_default_na=False)


def test_hashed_features_learn_nothing_from_the_data() -> None:
    a = SparseTextEncoder(n_features=2**10, cjk=True).fit(["红色 T恤 男"], [""])
    b = SparseTextEncoder(n_features=2**10, cjk=True).fit(["完全 不同 的 数据", "other words"], ["", ""])
    x = a.transform(["红色 T恤 男", "blue jeans"], ["", ""])
    assert x.shape == (2, 2**11)
    assert (x != b.transform(["红色 T恤 男", "blue jeans"], ["", ""])).nnz == 0
    params, arrays, vocab = a.get_state()
    assert arrays == {} and vocab == {}
    assert (SparseTextEncoder.from_state(params, arrays, vocab).transform(["红色 T恤 男"], [""]) != x[0]).nnz == 0
    names = a.names_of("红色 T恤 男")
    assert set(names) == set(x[0].indices) and "w:红色" in names.values()
    with pytest.raises(ValueError, match="names_of"):
        a.feature_names()


def test_each_messages_gradient_is_clipped_to_the_bound() -> None:
    rng = np.random.default_rng(0)
    x = sp.random(30, 40, density=0.3, random_state=0, format="csr", dtype=np.float32) * 5
    W, b = rng.normal(size=(4, 40)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    y = rng.integers(0, 4, 30)
    clip = 0.7
    g = clipped_residuals(x, y, W, b, clip)
    xd = x.toarray()
    for i in range(30):  # the per-message gradient of the cross-entropy: (p - y) outer [x, 1]
        z = xd[i] @ W.T + b
        p = np.exp(z - z.max())
        p /= p.sum()
        p[y[i]] -= 1
        full = np.outer(p, np.append(xd[i], 1.0))
        clipped = np.outer(g[i], np.append(xd[i], 1.0))
        norm = np.linalg.norm(full)
        assert np.linalg.norm(clipped) <= clip * (1 + 1e-5)
        np.testing.assert_allclose(clipped, full * min(1.0, clip / norm), rtol=1e-4, atol=1e-6)


def test_the_noise_meets_the_budget_by_opacus_accountant() -> None:
    sigma = noise_multiplier(3.0, 1e-6, 0.02, 500)
    assert sigma > 0.5
    assert spent_epsilon(sigma, 1e-6, 0.02, 500) <= 3.0 + 1e-6
    assert spent_epsilon(sigma * 0.8, 1e-6, 0.02, 500) > 3.0  # less noise spends more
    assert noise_multiplier(math.inf, 1e-6, 0.02, 500) == 0.0


def test_private_model_learns_without_noise_and_spends_its_budget_with(reviews) -> None:
    texts, labels = reviews["title"].tolist(), reviews["category"].tolist()
    clean = PrivateLinearClassifier(epsilon=math.inf, epochs=20, batch_size=32).fit(texts, labels)
    assert (clean.predict(texts) == np.asarray(labels)).mean() > 0.9
    private = PrivateLinearClassifier(epsilon=2.0, epochs=5, batch_size=64, random_state=1).fit(texts, labels)
    again = PrivateLinearClassifier(epsilon=2.0, epochs=5, batch_size=64, random_state=1).fit(texts, labels)
    assert private.privacy()["epsilon"] <= 2.0 + 1e-6 and private.noise_multiplier_ > 0
    np.testing.assert_array_equal(private.coef_.toarray(), again.coef_.toarray())  # a seed reproduces
    fresh = PrivateLinearClassifier(epsilon=2.0, epochs=5, batch_size=64).fit(texts, labels)
    other = PrivateLinearClassifier(epsilon=2.0, epochs=5, batch_size=64).fit(texts, labels)
    assert not np.array_equal(fresh.coef_.toarray(), other.coef_.toarray())  # by default the noise is fresh
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        PrivateLinearClassifier(epsilon=0).fit(texts, labels)
    with pytest.raises(ValueError, match="hashed encoder"):
        PrivateLinearClassifier(encoder=SparseTextEncoder()).fit(texts, labels)


def test_classifier_bundle_keeps_nothing_of_the_rows_outside_the_mechanism(reviews, tmp_path) -> None:
    clf = tx.TaxonomyClassifier(tier="sparse", dp_epsilon=4.0).fit(reviews[["title", "category"]])
    assert clf.fingerprint_ == "" and len(clf.train_title_hashes_) == 0 and clf.n_train_ == 0
    clf.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["tier_params"]["kind"] == "private"
    assert manifest["tier_params"]["privacy_"]["epsilon"] <= 4.0 + 1e-6
    assert "vocabulary" not in json.dumps(manifest["tier_params"]["encoder"])
    back = tx.load(tmp_path / "m")
    assert type(back.model_) is PrivateLinearClassifier
    texts = reviews["title"].tolist()[:20]
    np.testing.assert_allclose(back.predict_proba(texts), clf.predict_proba(texts), atol=1e-6)
    explained = back.predict_products(texts[:1], explain=True)[0].explanation
    assert all(name.startswith(("w:", "c:")) for name, _ in explained)
    with pytest.raises(ValueError, match="sparse tier"):
        tx.TaxonomyClassifier(tier="ensemble", dp_epsilon=1.0).fit(reviews[["title", "category"]])
    with pytest.raises(ValueError, match="finite number"):
        tx.TaxonomyClassifier(tier="sparse", dp_epsilon=math.inf).fit(reviews[["title", "category"]])


def test_router_splits_the_budget_over_its_models_and_records_it(reviews, tmp_path) -> None:
    router = MessageRouter.fit(reviews["title"].tolist(), reviews["category"].tolist(), reviews["sentiment"].tolist(),
                               dp_epsilon=3.0)
    p = router.privacy
    assert p is not None and set(p["models"]) == {"category", "sentiment"}
    assert all(m["epsilon"] <= 1.5 + 1e-6 for m in p["models"].values()) and p["epsilon"] <= 3.0 + 1e-6
    router.save(tmp_path / "r")
    assert MessageRouter.load(tmp_path / "r").privacy == json.loads(json.dumps(p))
    assert router.route(["手机屏幕坏了，很失望"])[0].queue == "general"


def test_cli_messages_train_with_a_privacy_budget(tmp_path, capsys, monkeypatch) -> None:
    code, out = run_cli(["messages", "train", str(sample_path("reviews_zh")), "-o", str(tmp_path / "r"),
                         "--sentiment-column", "sentiment", "--dp-epsilon", "3"], capsys, monkeypatch)
    assert code == 0, out
    spent = re.search(r"differential privacy per message: epsilon ([0-9.]+), delta 1\.0e-06 for the router", out)
    assert spent and 2.9 <= float(spent.group(1)) <= 3.0, out
    code, out = run_cli(["messages", "train", str(sample_path("reviews_zh")), "-o", str(tmp_path / "x"),
                         "--dp-epsilon", "3", "--tier", "ensemble"], capsys, monkeypatch)
    assert code == 1 and "--dp-epsilon trains the sparse tier only" in out
