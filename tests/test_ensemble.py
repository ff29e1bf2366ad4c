"""Embedding tiers: zero-shot scoring, log-linear pooling, neighbours, the ensemble model end to end,
adding a category without retraining; tiny random encoder for the mechanics, the real encoders for quality."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import taxonomist as tx
from taxonomist.exceptions import TaxonomistError
from taxonomist.metrics import macro_f1_accuracy
from taxonomist.models.embed import NeighbourIndex
from taxonomist.models.ensemble import pool
from taxonomist.models.folds import group_folds
from taxonomist.models.selection import fit_log_linear, select_cascade, select_stack
from taxonomist.models.zeroshot import TaxonomyScorer

from .conftest import TINY, synonym_catalog
from .test_bad_inputs import run_cli


def _unit(*v: float) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_top_down_scoring_is_a_hierarchical_softmax() -> None:
    classes = [("A", "x"), ("A", "y"), ("B", "z")]
    nodes = [("A",), ("B",), ("A", "x"), ("A", "y"), ("B", "z")]
    vecs = np.vstack([_unit(1, 0, 0), _unit(0, 1, 0), _unit(1, 0, 1), _unit(1, 0, -1), _unit(0, 1, 0)])

    def scorer(decoding: str) -> TaxonomyScorer:
        s = TaxonomyScorer(temperature=0.1, decoding=decoding)
        s.classes_ = classes
        s._set_nodes(nodes, vecs)
        return s

    s = scorer("top-down")
    q = np.vstack([_unit(1, 0, 0.9), _unit(0, 1, 0)])
    p = s.predict_proba(q)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0].argmax() == 0 and p[1].argmax() == 2
    # P(A > x) = P(A) * P(x | A), each a softmax over siblings
    S = q @ s.vectors_.T / 0.1
    pos = {n: i for i, n in enumerate(s.nodes_)}
    pa = np.exp(S[0, pos[("A",)]]) / (np.exp(S[0, pos[("A",)]]) + np.exp(S[0, pos[("B",)]]))
    px = np.exp(S[0, pos[("A", "x")]]) / (np.exp(S[0, pos[("A", "x")]]) + np.exp(S[0, pos[("A", "y")]]))
    assert p[0, 0] == pytest.approx(pa * px, rel=1e-6)
    flat = scorer("flat").predict_proba(q)
    assert flat.shape == p.shape and flat[1].argmax() == 2


def test_log_linear_weights_follow_the_informative_member() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    good = np.full((400, 5), 0.05)
    good[np.arange(400), y] = 0.8
    noise = rng.dirichlet(np.ones(5), 400)
    w = fit_log_linear({"good": np.log(good), "noise": np.log(noise)}, y)
    assert w["good"] > 0.5 and w["noise"] < 0.1
    pooled = pool({"good": np.log(good), "noise": np.log(noise)}, w)
    np.testing.assert_allclose(np.exp(pooled).sum(axis=1), 1.0)
    rows = np.sort(rng.choice(400, 150, replace=False))  # some rows, read in place: the same weights as their copy
    logs = {"good": np.log(good).astype(np.float32), "noise": np.log(noise).astype(np.float32)}
    assert fit_log_linear(logs, y[rows], rows) == fit_log_linear({k: v[rows] for k, v in logs.items()}, y[rows])


def _member_logs(n: int, k: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels, a sparse member right on 70 % of products, and two others: one confidently wrong everywhere,
    one right exactly where the sparse member is wrong (it adds information)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    right = rng.random(n) < 0.7
    sparse = np.full((n, k), 0.1)
    sparse[right, y[right]] = 0.6
    sparse[~right, (y[~right] + 1) % k] = 0.45
    wrong = np.full((n, k), 0.01)
    wrong[np.arange(n), (y + 1) % k] = 0.97
    fixer = np.full((n, k), 0.2)
    fixer[~right, y[~right]] = 0.9
    return y, {"sparse": np.log(sparse), "wrong": np.log(wrong), "fixer": np.log(fixer)}


def test_stacking_keeps_the_sparse_member_alone_when_the_others_only_hurt() -> None:
    y, logs = _member_logs(600, 4, 1)
    weights, tau, report = select_stack({"sparse": logs["sparse"], "knn": logs["wrong"]}, y, np.bincount(y))
    assert weights["knn"] == 0 and weights["sparse"] > 0 and tau == 0.0
    assert report["sparse_only"] and report["chosen"] == "sparse only"
    assert report["macro_f1"] == pytest.approx(report["floor_macro_f1"])


def test_stacking_takes_a_member_that_adds_information() -> None:
    y, logs = _member_logs(600, 4, 2)
    weights, _, report = select_stack(logs, y, np.bincount(y), prior_shift=0.0)
    assert weights["fixer"] > 0 and weights["wrong"] == 0 and not report["sparse_only"]
    assert report["accuracy"] > report["floor_accuracy"] + 0.2 and report["gain_interval_80"][0] > 0
    assert set(report["fitted_weights"]) == {"sparse", "wrong", "fixer"}


def test_stacking_refuses_a_gain_within_noise() -> None:
    y, logs = _member_logs(60, 4, 3)
    rng = np.random.default_rng(3)
    # a member that changes a single decision: out-of-fold scores that close are noise, not a gain
    nudge = np.zeros_like(logs["sparse"])
    i = int(np.flatnonzero(logs["sparse"].argmax(axis=1) != y)[0])
    nudge[i, y[i]] = 5.0
    noisy = {"sparse": logs["sparse"], "knn": logs["sparse"] + nudge + rng.normal(0, 1e-3, nudge.shape)}
    weights, _, report = select_stack(noisy, y, np.bincount(y), prior_shift=0.0)
    assert report["sparse_only"] and weights["knn"] == 0


def test_fast_macro_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 30, 500), rng.integers(0, 35, 500)
    f1, acc = macro_f1_accuracy(y, pred, 35)
    assert f1 == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert acc == pytest.approx(accuracy_score(y, pred))


def test_group_folds_keep_groups_together_and_spread_each_category() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 300, 1000)
    y = groups % 37  # a group has one category
    folds = group_folds(groups, y, 5, seed=0)
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    for c in np.unique(y):  # a category's groups go round the folds: no fold holds two before all hold one
        per_fold = [len(np.unique(groups[(y == c) & (folds == f)])) for f in range(5)]
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)
    assert np.bincount(folds).min() > 150


def test_neighbour_index_votes_and_roundtrips() -> None:
    vecs = np.vstack([_unit(1, 0), _unit(0.9, 0.1), _unit(0, 1)])
    idx = NeighbourIndex(k=2).fit(vecs, np.array([0, 0, 1]), 3)
    p = idx.predict_proba(_unit(0, 1)[None])
    assert p.shape == (1, 3) and p[0].argmax() == 1
    params, arrays = idx.get_state()
    again = NeighbourIndex.from_state(params, arrays)
    np.testing.assert_allclose(again.predict_proba(vecs), idx.predict_proba(vecs), atol=1e-3)


@pytest.fixture(scope="module")
def tiny_ensemble(tiny_encoder_dir) -> tx.TaxonomyClassifier:
    df = pd.DataFrame({"title": [t for t, _ in TINY] * 3, "category": [c for _, c in TINY] * 3})
    return tx.TaxonomyClassifier(tier="ensemble", encoder=str(tiny_encoder_dir)).fit(df)


def test_ensemble_fits_predicts_explains_and_roundtrips(tiny_ensemble, tmp_path) -> None:
    clf = tiny_ensemble
    titles = [t for t, _ in TINY]
    p = clf.predict_proba(titles)
    assert p.shape == (len(TINY), 6)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert (clf.predict(titles) == np.array([c for _, c in TINY])).mean() >= 0.9
    assert set(clf.weights_) == {"sparse", "knn", "zeroshot", "joint"}  # (a small catalogue: the joint member too)
    pred = clf.predict_products(["Levis Men Blue Slim Jeans"], explain=True)[0]
    assert pred.explanation and pred.neighbours and len(pred.neighbours) == 3
    title, category, sim = pred.neighbours[0]
    assert title == "Levis Men Blue Slim Jeans" and category == "Apparel > Bottomwear > Jeans" and sim > 0.99
    frame = clf.predict_frame(pd.DataFrame({"title": titles[:3]}), explain=True)
    assert {"explanation", "neighbours"} <= set(frame.columns)
    loaded = tx.load(clf.save(tmp_path / "m"))
    np.testing.assert_allclose(loaded.predict_proba(titles), p, atol=2e-3)  # vectors are kept as float16


def test_add_category_without_retraining(tiny_ensemble, tmp_path) -> None:
    clf = tx.load(tiny_ensemble.save(tmp_path / "m"))
    clf.model_.cascade = 0.0  # a cascade that would answer everything from the sparse member...
    examples = ["Wooden chess set folding board", "Magnetic travel chess set"]
    clf.add_category("Accessories > Games > Chess Sets", examples=examples)  # ...stands aside for a new category
    assert "Accessories > Games > Chess Sets" in clf.classes_
    assert list(clf.predict(examples)) == ["Accessories > Games > Chess Sets"] * 2
    assert clf.predict(["Levis Men Blue Slim Jeans"])[0] == "Apparel > Bottomwear > Jeans"
    again = tx.load(clf.save(tmp_path / "m2"))
    assert list(again.predict(examples)) == ["Accessories > Games > Chess Sets"] * 2
    with pytest.raises(TaxonomistError, match="already has"):
        again.add_category("Accessories > Games > Chess Sets")


def test_sparse_tier_cannot_add_categories(tiny_model) -> None:
    with pytest.raises(TaxonomistError, match="needs an embedding tier"):
        tiny_model.add_category("A > New")


def test_unknown_member_is_refused(tiny_encoder_dir) -> None:
    df = pd.DataFrame({"title": [t for t, _ in TINY], "category": [c for _, c in TINY]})
    with pytest.raises(ValueError, match="members must be"):
        tx.TaxonomyClassifier(tier="ensemble", encoder=str(tiny_encoder_dir), members=["magic"]).fit(df)


def test_cli_train_ensemble_add_category_and_classify(tiny_encoder_dir, tmp_path, capsys, monkeypatch) -> None:
    f = tmp_path / "cat.csv"
    pd.DataFrame({"title": [t for t, _ in TINY] * 3, "category": [c for _, c in TINY] * 3}).to_csv(f, index=False)
    model = tmp_path / "model"
    code, out = run_cli(["train", str(f), "-o", str(model), "--tier", "ensemble", "--encoder", str(tiny_encoder_dir),
                         "--test-size", "0"], capsys, monkeypatch)
    assert code == 0, out
    assert "too few products (24 out of fold) to cross-validate" in out  # train says what the stacking did
    code, out = run_cli(["add-category", str(model), "Accessories > Games > Chess Sets", "--example",
                         "Wooden chess set"], capsys, monkeypatch)
    assert code == 0 and "7 categories" in out, out
    code, out = run_cli(["predict", str(model), "--text", "Wooden chess set", "--explain"], capsys, monkeypatch)
    assert code == 0 and "Chess Sets" in out and "like:" in out, out
    tax = tmp_path / "tax.txt"
    tax.write_text("\n".join(sorted({c for _, c in TINY})) + "\n")
    code, out = run_cli(["classify", "--taxonomy", str(tax), "--encoder", str(tiny_encoder_dir), "--text",
                         "Nike running shoes", "-o", str(tmp_path / "zs.csv"), "--save", str(tmp_path / "zs"),
                         "--min-confidence", "0"], capsys, monkeypatch)
    assert code == 0, out
    assert pd.read_csv(tmp_path / "zs.csv")["category"].iloc[0] in {c for _, c in TINY}
    assert tx.load(tmp_path / "zs").tier == "zeroshot"
    code, out = run_cli(["train", str(f), "-o", str(model), "--tier", "magic"], capsys, monkeypatch)
    assert code == 1 and "--tier must be" in out


# -- the real packaged encoders --------------------------------------------------------------------------
def test_zero_shot_into_the_sample_taxonomy_beats_majority(sample_split) -> None:
    train, test = sample_split
    zs = tx.TaxonomyClassifier.from_taxonomy(tx.Taxonomy.from_paths(sorted(set(train.frame["category"]))),
                                             sample_texts=train.frame["title"].tolist())
    assert zs.encoder_.name == "minilm-en+e5-multilingual"  # English: both encoders
    y = test.frame["category"].to_numpy()
    pred = zs.predict(test)
    top = lambda v: np.array([s.split(" > ")[0] for s in v])  # noqa: E731
    majority_top = pd.Series(top(y)).value_counts(normalize=True).iloc[0]
    assert (top(pred) == top(y)).mean() > majority_top + 0.3
    assert (pred == y).mean() > 0.3  # majority leaf is ~0.07 on this sample


def test_zero_shot_reads_the_type_tags_and_description_not_only_the_title() -> None:
    """A branded title says little ("Tide Mini Speaker" went to Marine Speakers, 0.90): the product's type, tags
    and description are read with it; colours, sizes and the like are not (they mislead a zero-shot model)."""
    tax = tx.Taxonomy.from_paths(["Food > Beverages > Tea & Infusions", "Apparel > Hair Accessories > Wig Caps",
                                  "Food > Cooking Oils", "Food > Olives", "Furniture > Tables"])
    zs = tx.TaxonomyClassifier.from_taxonomy(tax, encoder="minilm-en")
    products = [{"title": "Kalamata Estate EVOO 500 ml", "Type": "Olive oil",
                 "description": "<p>Cold-pressed extra virgin olive oil, for salads and cooking.</p>", "colour": "Green"},
                {"title": "Misty Peak Sencha 100 g", "Tags": "tea, green tea", "size": "100 g",
                 "description": "Japanese loose-leaf green tea, first flush."}]
    expected = ["Food > Cooking Oils", "Food > Beverages > Tea & Infusions"]
    assert [p.category for p in zs.predict_products(products)] == expected
    frame = pd.DataFrame(products)
    assert list(zs.predict(frame)) == expected
    from taxonomist.models.zeroshot import zero_shot_queries

    queries = zero_shot_queries(*zs.reader_.texts(frame.fillna("")))
    assert queries[0].startswith("Kalamata Estate EVOO 500 ml | Olive oil Cold-pressed") and "Green" not in queries[0]


def test_zero_shot_chinese_products_into_an_english_taxonomy() -> None:
    tax = tx.Taxonomy.from_paths(["Apparel > Bottomwear > Jeans", "Apparel > Topwear > Tshirts",
                                  "Footwear > Shoes > Sports Shoes", "Accessories > Watches > Watches",
                                  "Personal Care > Lips > Lipstick"])
    products = ["男士修身蓝色牛仔裤", "女士运动跑步鞋", "男士不锈钢石英手表", "哑光口红 持久不脱色"]
    zs = tx.TaxonomyClassifier.from_taxonomy(tax, sample_texts=products)
    assert zs.encoder_.name == "e5-multilingual"
    assert list(zs.predict(products)) == ["Apparel > Bottomwear > Jeans", "Footwear > Shoes > Sports Shoes",
                                          "Accessories > Watches > Watches", "Personal Care > Lips > Lipstick"]


def test_finetune_tier_trains_saves_safetensors_and_reloads(tiny_encoder_dir, tmp_path) -> None:
    df = pd.DataFrame({"title": [t for t, _ in TINY] * 3, "category": [c for _, c in TINY] * 3})
    clf = tx.TaxonomyClassifier(tier="finetune", encoder=str(tiny_encoder_dir), epochs=2).fit(df)
    assert set(clf.weights_) == {"sparse", "finetune"}
    history = clf.model_.members.finetune.history_
    assert len(history) == 2 and history[1]["loss"] < history[0]["loss"]
    path = clf.save(tmp_path / "m")
    assert (path / "finetune.safetensors").is_file()
    loaded = tx.load(path)
    titles = [t for t, _ in TINY]
    np.testing.assert_allclose(loaded.predict_proba(titles), clf.predict_proba(titles), atol=2e-3)
    # the fine-tuned weights are used, not the base encoder's: the logits differ from a fresh head's
    assert loaded.model_.members.finetune.logits(titles[:2]).shape == (2, 6)


@pytest.mark.parametrize("decoding", ["flat", "top-down"])
def test_scorer_builds_from_an_encoder_and_grows(tiny_encoder_dir, decoding: str) -> None:
    from taxonomist.encoders import load_text_encoder

    enc = load_text_encoder(str(tiny_encoder_dir))
    classes = sorted({tuple(c.split(" > ")) for _, c in TINY})
    s = TaxonomyScorer(decoding=decoding).build(classes, enc, examples={classes[0]: ["Levis Men Blue Slim Jeans"]})
    assert len(s.nodes_) == len({c[:d] for c in classes for d in (1, 2, 3)})
    q = enc.encode([t for t, _ in TINY])
    np.testing.assert_allclose(s.predict_proba(q).sum(axis=1), 1.0, rtol=1e-6)
    s.add_class(("Toys", "Games", "Chess"), enc, description="board games", examples=["Wooden chess set"])
    assert s.predict_proba(q).shape == (len(TINY), len(classes) + 1)
    params, arrays = s.get_state()
    again = TaxonomyScorer.from_state(params, arrays)
    np.testing.assert_allclose(again.predict_proba(q), s.predict_proba(q), atol=1e-2)


def test_when_cross_validation_finds_no_help_the_ensemble_is_the_sparse_tier(tiny_encoder_dir, monkeypatch) -> None:
    """The random tiny encoder's neighbours and zero-shot scores are noise: stacking must keep the sparse member
    alone, say so, and the model must then predict exactly as that member, without encoding anything."""
    rng = np.random.default_rng(0)
    words = {c: c.split(" > ")[-1].lower() for _, c in TINY}
    rows = [(f"{w} {rng.choice(['red', 'blue', 'soft', 'big', 'new'])} {i}", c)
            for i in range(40) for c, w in words.items()]
    df = pd.DataFrame(rows, columns=["title", "category"])
    clf = tx.TaxonomyClassifier(encoder=str(tiny_encoder_dir)).fit(df)
    assert clf.stacking_["sparse_only"] and "do not help" in clf.stacking_["summary"]
    assert clf.stacking_["folds"] == 3 and clf.stacking_["oof_products"] == len(df)
    assert {k for k, w in clf.weights_.items() if w > 0} == {"sparse"} and clf.prior_shift_ == 0.0
    assert clf.model_.members.head is None  # members switched off are not refitted (but for knn and zeroshot)

    def boom(*a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("encoded although cross-validation kept the sparse member alone")

    monkeypatch.setattr(clf.encoder_, "encode", boom)
    titles = [f"{w} green" for w in words.values()]
    sparse = clf.model_.sparse.predict_proba((titles, [""] * len(titles)))
    assert (clf.predict_proba(titles).argmax(axis=1) == sparse.argmax(axis=1)).all()


def test_members_switched_off_by_the_weights_are_not_run(tiny_ensemble, tmp_path, monkeypatch) -> None:
    clf = tx.load(tiny_ensemble.save(tmp_path / "m"))
    clf.model_.weights = {"sparse": 1.0, "knn": 0.0, "zeroshot": 0.0}

    def boom(*a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("encoded although no active member needs embeddings")

    monkeypatch.setattr(clf.encoder_, "encode", boom)
    assert clf.predict(["Levis Men Blue Slim Jeans"])[0] == "Apparel > Bottomwear > Jeans"


def test_top_label_map_can_read_another_score_and_keeps_the_argmax() -> None:
    from taxonomist.models.calibration import apply_top_label

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=200)
    score = rng.uniform(size=200)  # e.g. the unshifted probability of the chosen class
    knots = (np.array([0.0, 0.5, 1.0]), np.array([0.1, 0.6, 0.95]))
    out = apply_top_label(p, knots, score)
    assert (out.argmax(axis=1) == p.argmax(axis=1)).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    top = out.max(axis=1)
    free = top > np.sort(out, axis=1)[:, -2] * 1.0001  # rows where the winner floor did not bind
    order = np.argsort(score[free])
    assert (np.diff(top[free][order]) >= -1e-9).all()  # confidence ranks products by the given score


def test_cascade_threshold_keeps_validation_scores() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    sure = rng.random(400) < 0.7  # the sparse member: right and sure on 70 %, unsure and often wrong elsewhere
    sparse = np.full((400, 4), 0.05)
    sparse[sure, y[sure]] = 0.95
    sparse[~sure, (y[~sure] + 1) % 4] = 0.4
    final = np.full((400, 4), 0.1)
    final[np.arange(400), y] = 0.7  # the full ensemble is right everywhere
    t, scores = select_cascade(np.log(sparse), np.log(final), y)
    assert t is not None and 0.5 < t <= 0.95 and scores["cascade_share"] == pytest.approx(sure.mean())
    wrong = np.full((400, 4), 0.01)
    wrong[np.arange(400), (y + 1) % 4] = 0.97  # sure and wrong: no threshold is safe
    assert select_cascade(np.log(wrong), np.log(final), y) == (None, {})


def test_cascade_skips_the_encoder_for_sure_products(tiny_ensemble, tmp_path, monkeypatch) -> None:
    clf = tx.load(tiny_ensemble.save(tmp_path / "m"))
    assert "cascade" in clf.get_params() and clf.cascade
    titles = [t for t, _ in TINY]
    full = tx.load(tmp_path / "m")
    full.model_.cascade = None
    clf.model_.cascade = 0.0  # every product is sure enough: the sparse member answers everything
    calls: list[int] = []
    real = clf.encoder_.encode
    monkeypatch.setattr(clf.encoder_, "encode", lambda texts, **k: calls.append(len(texts)) or real(texts, **k))
    p = clf.predict_proba(titles)
    assert calls == [] and p.shape == full.predict_proba(titles).shape
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    clf.model_.cascade = 1.01  # nobody is sure: the full ensemble for everything, as without a cascade
    np.testing.assert_allclose(clf.predict_proba(titles), full.predict_proba(titles), atol=1e-6)
    assert calls and sum(calls) == len(set(titles))
    from scipy.special import softmax

    sure = softmax(clf.model_.members.logs((titles, [""] * len(titles)), None, {"sparse"})["sparse"], axis=1).max(axis=1)
    clf.model_.cascade = float(np.median(sure))  # some of each: only the unsure ones are encoded
    calls.clear()
    preds = clf.predict_products(titles, top_k=2)
    assert 0 < sum(calls) < len(titles) and len(preds) == len(titles)
    again = tx.load(clf.save(tmp_path / "m2"))
    assert again.cascade_ == clf.cascade_


def test_staged_prediction_equals_predict_products(tiny_ensemble, tmp_path, monkeypatch) -> None:
    from scipy.special import softmax

    clf = tx.load(tiny_ensemble.save(tmp_path / "m"))
    titles = [t for t, _ in TINY]
    sure = softmax(clf.model_.members.logs((titles, [""] * len(titles)), None, {"sparse"})["sparse"], axis=1).max(axis=1)
    calls: list[int] = []
    real = clf.encoder_.encode
    monkeypatch.setattr(clf.encoder_, "encode", lambda texts, **k: calls.append(len(texts)) or real(texts, **k))
    half = float(np.median(sure))
    for t, answered_first in ((0.0, len(titles)), (1.01, 0), (half, int((sure >= half).sum())), (None, 0)):
        clf.model_.cascade = t
        want = clf.predict_products(titles, top_k=2)
        calls.clear()
        # two calls (another request's products, with other options), their leftovers predicted together
        first_a, left_a = clf.defer(titles, top_k=2)
        first_b, left_b = clf.defer(titles[:3], top_k=1, min_confidence=0.99)
        assert calls == []  # the first stage never encodes
        assert sum(p is not None for p in first_a) == answered_first
        assert (left_a is None) == (answered_first == len(titles))
        pending = [x for x in (left_a, left_b) if x is not None]
        later = clf.complete(pending)
        assert len(later) == len(pending)
        if t is not None and t < 1:  # the cascade's leftovers of both calls went through the encoder at once
            assert len(calls) <= 1
        rest_a = iter(later[0] if left_a is not None else [])
        got = [p if p is not None else next(rest_a) for p in first_a]
        same_predictions(got, want)
        rest_b = iter(later[-1] if left_b is not None else [])
        got_b = [p if p is not None else next(rest_b) for p in first_b]
        want_b = clf.predict_products(titles[:3], top_k=1, min_confidence=0.99)
        same_predictions(got_b, want_b)
    # no cascade, products as dicts (as the server sends them): two calls' products go through the encoder at once
    clf.model_.cascade = None
    calls.clear()
    a, b = [{"title": t} for t in titles[:4]], [{"title": t} for t in titles[4:7]]
    (_, left_a), (_, left_b) = clf.defer(a, top_k=2), clf.defer(b, top_k=1)
    got_a, got_b = clf.complete([left_a, left_b])
    assert len(calls) == 1
    same_predictions(got_a, clf.predict_products(a, top_k=2))
    same_predictions(got_b, clf.predict_products(b, top_k=1))


def same_predictions(got, want) -> None:
    """Same paths and alternatives; scores equal up to float noise (a batch of other size can encode in another
    precision)."""
    assert [(p.category, [c for c, _ in p.alternatives]) for p in got] == \
        [(p.category, [c for c, _ in p.alternatives]) for p in want]
    np.testing.assert_allclose([s for p in got for _, s in p.alternatives],
                               [s for p in want for _, s in p.alternatives], atol=1e-4)


def test_embedding_members_can_read_the_description_and_attributes_with_the_title(tiny_encoder_dir, tmp_path,
                                                                                   monkeypatch) -> None:
    """``embed_context=True``: the neighbour and zero-shot members embed "title | description, attributes" (as a
    zero-shot model does), in training and in prediction, and a saved model keeps reading that way; a bundle
    saved before the option existed embeds titles, as it was trained."""
    from taxonomist.encoders import transformer

    seen: list[str] = []
    real = transformer.TextEncoder.encode

    def spy(self, texts, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.extend(texts)
        return real(self, texts, *a, **k)

    monkeypatch.setattr(transformer.TextEncoder, "encode", spy)
    df = pd.DataFrame({"title": [t for t, _ in TINY] * 3, "category": [c for _, c in TINY] * 3,
                       "description": ["cotton stretch fabric"] * (3 * len(TINY))})
    clf = tx.TaxonomyClassifier(tier="ensemble", encoder=str(tiny_encoder_dir), embed_context=True,
                                cascade=False).fit(df)
    assert "Levis Men Blue Slim Jeans | cotton stretch fabric" in seen
    assert "Levis Men Blue Slim Jeans" not in seen
    seen.clear()
    loaded = tx.load(clf.save(tmp_path / "m"))
    loaded.predict_products([{"title": "Nike Men Running Sports Shoes", "description": "mesh upper"}])
    assert seen == ["Nike Men Running Sports Shoes | mesh upper"]

    titles_only = tx.TaxonomyClassifier(tier="ensemble", encoder=str(tiny_encoder_dir), cascade=False).fit(df)
    path = titles_only.save(tmp_path / "old")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["tier_params"].pop("embed_context") is False
    manifest["config"].pop("embed_context")
    (path / "manifest.json").write_text(json.dumps(manifest))
    seen.clear()
    tx.load(path).predict_products([{"title": "Nike Men Running Sports Shoes", "description": "mesh upper"}])
    assert seen == ["Nike Men Running Sports Shoes"]


def test_auto_compares_title_and_title_plus_context_embeddings_out_of_fold(tiny_encoder_dir, tmp_path) -> None:
    """``embed_context="auto"``: cross-validation compares the two embeddings on the user's data; the context is
    kept only when it helps beyond noise, the stacking report says which and with what scores, and the saved
    model embeds what it was fitted on. Products with no context are embedded once, by title."""
    rows = [(t, c) for t, c in TINY] * 4
    df = pd.DataFrame({"title": [t for t, _ in rows], "category": [c for _, c in rows],
                       "description": [f"{c.split(' > ')[-1]} item number {i}" for i, (_, c) in enumerate(rows)]})
    clf = tx.TaxonomyClassifier(tier="ensemble", encoder=str(tiny_encoder_dir), embed_context="auto").fit(df)
    report = clf.stacking_
    assert report["embedding"] in ("title", "title + context")
    assert set(report["embedding_scores"]) == {"title", "title + context"}
    assert clf.model_.embed_context is (report["embedding"] == "title + context")
    assert "embeddings of the" in report["summary"]
    loaded = tx.load(clf.save(tmp_path / "m"))
    assert loaded.model_.embed_context is clf.model_.embed_context and loaded.embed_context == "auto"
    np.testing.assert_allclose(loaded.predict_proba(df.head(6)), clf.predict_proba(df.head(6)), atol=2e-3)

    titles_only = tx.TaxonomyClassifier(tier="ensemble", encoder=str(tiny_encoder_dir), embed_context="auto")
    titles_only.fit(df.drop(columns="description"))
    assert "embedding" not in titles_only.stacking_ and titles_only.model_.embed_context is False
    with pytest.raises(ValueError, match="embed_context"):
        tx.TaxonomyClassifier(tier="ensemble", embed_context="yes").fit(df)


def test_cli_train_embed_chooses_what_the_embedding_members_read(tiny_encoder_dir, tmp_path, capsys,
                                                                 monkeypatch) -> None:
    f = tmp_path / "cat.csv"
    pd.DataFrame({"title": [t for t, _ in TINY] * 4, "category": [c for _, c in TINY] * 4,
                  "description": "cotton"}).to_csv(f, index=False)
    for embed, stored in (("context", True), ("title", False)):
        code, out = run_cli(["train", str(f), "-o", str(tmp_path / embed), "--encoder", str(tiny_encoder_dir),
                             "--test-size", "0", "--embed", embed], capsys, monkeypatch)
        assert code == 0, out
        assert tx.load(tmp_path / embed).model_.embed_context is stored
    code, out = run_cli(["train", str(f), "-o", str(tmp_path / "x"), "--embed", "everything"], capsys, monkeypatch)
    assert code != 0 and "everything" in out


@pytest.mark.parametrize("tier", ["ensemble", "sparse"])
def test_retraining_a_zero_shot_model_names_the_categories_it_has_no_label_of(tiny_encoder_dir, tmp_path,
                                                                                tier) -> None:
    """Issue 36: `retrain` from a zero-shot bundle dropped from 170 categories to 85 (those with labels), silently.
    The categories without a label are named (keeping them through the zero-shot member cost accuracy: see
    retrain.py)."""
    from taxonomist.retrain import retrain

    from .conftest import TINY

    categories = sorted({c for _, c in TINY})
    zs = tx.TaxonomyClassifier.from_taxonomy(tx.Taxonomy.from_paths(categories), encoder=str(tiny_encoder_dir))
    zs.save(tmp_path / "v0001")
    products = TINY * 3
    shop = pd.DataFrame({"id": [str(i) for i in range(len(products))], "title": [t for t, _ in products]})
    # people reviewed the jeans, T-shirts and watches only: three of the six categories have labels
    reviewed = [(i, c) for i, (_, c) in enumerate(products) if c.endswith(("Jeans", "Tshirts", "Watches"))]
    feedback = [{"product": {"id": str(i), "title": products[i][0]}, "category": c} for i, c in reviewed]
    result = retrain(tmp_path / "v0001", feedback, tx.Catalog.from_frame(shop), tmp_path / "v0002",
                     accept_above=1.0, tier=tier)
    new = tx.load(tmp_path / "v0002")
    unlabelled = sorted(set(categories) - {c for _, c in reviewed})
    assert sorted(new.classes_) == sorted({c for _, c in reviewed})
    assert sorted(result.stats["categories_without_labels"]) == unlabelled


def test_the_ensemble_fit_encodes_each_product_once_for_the_sparse_member(tiny_encoder_dir, monkeypatch) -> None:
    """Issue 33 row 4: the sparse member's vocabulary was learnt and every product tokenised again in each of the
    three folds, their out-of-fold predictions, the temperatures and the final fit (on Chinese reviews most of the
    folds' time went to jieba)."""
    from taxonomist.encoders.sparse import SparseTextEncoder

    fits, rows = [], []
    fit, transform = SparseTextEncoder.fit, SparseTextEncoder.transform

    def counted_fit(self, titles, contexts=None):  # noqa: ANN001, ANN202
        fits.append(len(titles))
        return fit(self, titles, contexts)

    def counted_transform(self, titles, contexts=None):  # noqa: ANN001, ANN202
        rows.append(len(titles))
        return transform(self, titles, contexts)

    monkeypatch.setattr(SparseTextEncoder, "fit", counted_fit)
    monkeypatch.setattr(SparseTextEncoder, "transform", counted_transform)
    df = pd.DataFrame({"title": [f"{t} {i}" for i in range(4) for t, _ in TINY], "category": [c for _, c in TINY] * 4})
    clf = tx.TaxonomyClassifier(tier="ensemble", encoder=str(tiny_encoder_dir), cascade=False).fit(df)
    assert clf.stacking_["folds"] == 3
    assert fits == [len(df)] and sum(rows) == len(df)


def test_a_sparse_member_reads_encoded_products_as_it_reads_their_texts(tiny_model) -> None:
    from taxonomist.models.sparse import Encoded, SparseClassifier

    titles = [t for t, _ in TINY]
    labels = [c for _, c in TINY]
    member = SparseClassifier(calibration="none")
    encoded = member.encode((titles, [""] * len(titles)))
    assert isinstance(encoded, Encoded) and len(encoded) == len(titles)
    from_features = SparseClassifier(calibration="none").fit(encoded, labels)
    from_texts = SparseClassifier(calibration="none").fit(titles, labels)
    np.testing.assert_array_equal(from_features.predict_proba(encoded.rows(np.arange(3))),
                                  from_texts.predict_proba(titles[:3]))
    np.testing.assert_array_equal(from_features.predict_proba(titles), from_texts.predict_proba(titles))
    with pytest.raises(ValueError, match="another encoder"):
        from_texts.predict_proba(encoded)


def test_embedding_sample_keeps_rare_categories_whole_and_the_others_in_proportion() -> None:
    from taxonomist.models.stacking import EMBEDDED_FLOOR, embedding_sample

    y = np.repeat(np.arange(4), [5, 30, 400, 2000])
    assert embedding_sample(y, None, 0) is None and embedding_sample(y, len(y), 0) is None
    mask = embedding_sample(y, 600, 0)
    kept = np.bincount(y[mask], minlength=4)
    assert kept[0] == 5 and kept[1] >= EMBEDDED_FLOOR and mask.sum() <= 600
    assert abs(kept[3] / kept[2] - 5) < 0.2  # the large ones at the same rate
    np.testing.assert_array_equal(mask, embedding_sample(y, 600, 0))


def test_a_large_catalogue_encodes_a_sample_and_its_sparse_member_learns_from_all(tiny_encoder_dir,
                                                                                  monkeypatch) -> None:
    """Issue 33 row 4: every training product was encoded, 285 of the 455 s of the default's training on 42,000
    Chinese reviews. With ``max_embedded`` the embedding members and the stacking learn from a sample per
    category, the sparse member from every product."""
    from taxonomist.encoders.transformer import TextEncoder

    encoded: list[int] = []
    encode = TextEncoder.encode

    def counted(self, texts, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        encoded.append(len(texts))
        return encode(self, texts, *a, **k)

    monkeypatch.setattr(TextEncoder, "encode", counted)
    df = pd.DataFrame({"title": [f"{t} {i}" for i in range(12) for t, _ in TINY], "category": [c for _, c in TINY] * 12})
    clf = tx.TaxonomyClassifier(encoder=str(tiny_encoder_dir), max_embedded=150).fit(df)
    assert encoded[0] == clf.stacking_["embedded_products"] <= 150 < len(df)
    assert clf.stacking_["oof_products"] <= 150
    assert clf.model_.members.class_counts.sum() == len(df)  # what the sparse member was fitted on
    assert len(clf.model_.members.knn.labels_) == clf.stacking_["embedded_products"] == len(clf.neighbour_titles_)
    assert len(clf.model_.members.sparse.classes_) == 6
    with pytest.raises(ValueError, match="max_embedded"):
        tx.TaxonomyClassifier(max_embedded=0).fit(df)


def test_cli_train_max_embedded(tiny_encoder_dir, tmp_path, capsys, monkeypatch) -> None:
    f = tmp_path / "cat.csv"
    pd.DataFrame({"title": [f"{t} {i}" for i in range(12) for t, _ in TINY],
                  "category": [c for _, c in TINY] * 12}).to_csv(f, index=False)
    base = ["train", str(f), "--tier", "ensemble", "--encoder", str(tiny_encoder_dir), "--test-size", "0"]
    code, out = run_cli([*base, "-o", str(tmp_path / "m"), "--max-embedded", "150"], capsys, monkeypatch)
    assert code == 0, out
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["config"]["max_embedded"] == 150
    assert tx.load(tmp_path / "m").stacking_["embedded_products"] <= 150
    code, out = run_cli([*base, "-o", str(tmp_path / "x"), "--max-embedded", "lots"], capsys, monkeypatch)
    assert code == 1 and "--max-embedded must be none or a number of at least 1, got 'lots'" in out


def test_a_sparse_model_predicts_the_same_after_dropping_its_prediction_caches(tiny_model) -> None:
    titles = [t for t, _ in TINY]
    sparse = tiny_model.sparse_member
    before = sparse.predict_proba(titles)
    sparse.drop_prediction_caches()
    assert sparse._coef_t is None  # noqa: SLF001
    np.testing.assert_array_equal(sparse.predict_proba(titles), before)


def test_the_joint_member_reads_words_and_meaning_in_one_model_and_roundtrips(tmp_path) -> None:
    """Issue 33: the practitioner's TF-IDF + sentence-embedding SVM as a member (over the sparse member's features
    beside the MiniLM embedding). Where titles name their category in words the training products seldom used, it
    beats the sparse member out of fold; a saved bundle predicts the same."""
    df = synonym_catalog(n_per=60)
    train, test = df.iloc[::2].reset_index(drop=True), df.iloc[1::2].reset_index(drop=True)
    model = tx.TaxonomyClassifier(tier="ensemble", members=["sparse", "joint"], encoder="minilm-en").fit(train)
    st = model.stacking_
    assert model.weights_["joint"] > 0 and st["macro_f1"] > st["floor_macro_f1"] + 0.05, st["summary"]
    assert model.model_.members.joint_temperature != 1.0
    model.save(tmp_path / "m")
    again = tx.load(tmp_path / "m")
    np.testing.assert_array_equal(again.predict_proba(test), model.predict_proba(test))
    with pytest.raises(ValueError, match="add the sparse member"):
        tx.TaxonomyClassifier(tier="ensemble", members=["knn", "joint"], encoder="minilm-en").fit(train)


def test_the_default_ensemble_adds_the_joint_member_on_small_catalogues_only() -> None:
    from taxonomist.fitting import JOINT_UP_TO, ensemble_members
    from taxonomist.params import Parameters

    assert ensemble_members(Parameters(tier="ensemble"), JOINT_UP_TO) == ("sparse", "knn", "zeroshot", "joint")
    assert ensemble_members(Parameters(tier="ensemble"), JOINT_UP_TO + 1) == ("sparse", "knn", "zeroshot")
    assert ensemble_members(Parameters(tier="ensemble", members=["sparse", "knn"]), 10) == ("sparse", "knn")
    assert "joint" not in ensemble_members(Parameters(tier="embed"), 10)


def test_the_fold_models_sparse_weights_are_freed_once_scored_with_the_same_out_of_fold_predictions(
        sample_split, monkeypatch) -> None:
    """On Cdiscount the three fold models' sparse weights (a quarter of a gigabyte each) were all held until the
    stacking's choices were made. Each fold's sparse member now scores its held-out products as soon as it is
    fitted and is let go; the temperatures and out-of-fold predictions read those scores, bit for bit what the
    models would have given."""
    from taxonomist.fitting import sparse_model
    from taxonomist.models import folds
    from taxonomist.params import Parameters
    from taxonomist.products import ProductBatch

    batch = ProductBatch.from_any(sample_split[0])
    pairs = (batch.titles, batch.contexts([], None))
    classes, y = np.unique(np.asarray(batch.labels, dtype=object), return_inverse=True)
    emb = np.random.default_rng(0).normal(size=(len(y), 8)).astype(np.float32)

    def make_sparse():
        return sparse_model(Parameters(), "none")

    d = folds.FoldData(pairs, emb, y, None, make_sparse().encode(pairs))
    splits = folds.fold_splits(batch.title_groups(), y, ["sparse", "knn"], 3, 0.15, 0)
    parts, held = folds.fold_members(d, splits, list(classes), ["sparse", "knn"], 5, make_sparse, None, None, None)
    assert held is not None and all(p.sparse is None for p in parts)  # the weights are gone

    original = folds.held_out

    def keeping(part, d, split, n_classes):  # the same scores, the model kept to compare with
        model = part.sparse
        out = original(part, d, split, n_classes)
        part.sparse = model
        return out

    monkeypatch.setattr(folds, "held_out", keeping)
    parts, held = folds.fold_members(d, splits, list(classes), ["sparse", "knn"], 5, make_sparse, None, None,
                                         None)
    n = len(classes)
    t = folds.fold_temperatures(parts, splits, d, None, n, 0)
    assert folds.fold_temperatures(parts, splits, d, None, n, 0, held) == t
    for part, h in zip(parts, held, strict=True):
        part.sparse.temperature_ = h.temperature = t["sparse"]
    by_models, y_oof = folds.out_of_fold(parts, splits, d, n)
    by_scores, y_held = folds.out_of_fold(parts, splits, d, n, held=held)
    np.testing.assert_array_equal(y_oof, y_held)
    assert by_models.keys() == by_scores.keys() == {"sparse", "knn"}
    for k in by_models:
        np.testing.assert_array_equal(by_models[k], by_scores[k])
