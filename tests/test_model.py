from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import taxonomist as tx
from taxonomist import NotFittedError
from taxonomist.datasets import sample_path
from taxonomist.models import SparseClassifier, decode
from taxonomist.models.hierarchy import LevelIndex, level_probabilities


def test_not_fitted_errors() -> None:
    with pytest.raises(NotFittedError, match="not fitted yet"):
        tx.TaxonomyClassifier(tier="sparse").predict(["x"])
    with pytest.raises(NotFittedError):
        SparseClassifier().predict_proba(["x"])
    from sklearn.exceptions import NotFittedError as SkNotFitted

    assert issubclass(NotFittedError, SkNotFitted)


def test_fit_predict_proba_order(tiny_model) -> None:
    proba = tiny_model.predict_proba(["Levis Men Blue Denim Jeans", "Casio Women Digital Watch"])
    assert proba.shape == (2, len(tiny_model.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert list(tiny_model.classes_) == sorted(tiny_model.classes_)
    pred = tiny_model.predict(["Levis Men Blue Denim Jeans", "Casio Women Digital Watch"])
    assert list(pred) == ["Apparel > Bottomwear > Jeans", "Accessories > Watches > Watches"]
    assert list(tiny_model.classes_[proba.argmax(axis=1)]) == list(pred)
    assert tiny_model.get_params()["C"] == 0.5 and hasattr(tiny_model, "model_")


def test_predict_products_levels_alternatives_and_backoff(tiny_model) -> None:
    [p] = tiny_model.predict_products({"title": "Nike Men Black Running Shoes"}, top_k=3)
    assert p.path == ("Footwear", "Shoes", "Sports Shoes") and not p.backed_off
    assert len(p.confidence) == 3 and p.confidence[0] >= p.confidence[1] >= p.confidence[2]
    assert len(p.alternatives) == 3 and p.alternatives[0][0] == p.category
    [q] = tiny_model.predict_products(["zzz qqq"], min_confidence=0.99)
    assert q.backed_off and len(q.path) < 3
    assert q.to_dict()["backed_off"] is True


def test_explanations_name_title_features(tiny_model) -> None:
    [p] = tiny_model.predict_products(["Titan Men Steel Watch"], explain=True)
    assert p.explanation and any("watch" in f for f, _ in p.explanation)
    assert all(w > 0 for _, w in p.explanation)


def test_decode_backs_off_to_deepest_confident_node() -> None:
    classes = ["A > B > x", "A > B > y", "A > C > z", "D > E > w"]
    index = LevelIndex.build(classes)
    proba = np.array([[0.4, 0.35, 0.2, 0.05]])
    levels = level_probabilities(proba, index)
    np.testing.assert_allclose(levels[0], [[0.95, 0.05]])
    np.testing.assert_allclose(levels[1], [[0.75, 0.2, 0.05]])
    [p] = decode(proba, index, min_confidence=0.7)
    assert p.path == ("A", "B") and p.backed_off and p.leaf == ("A", "B", "x")
    np.testing.assert_allclose(p.confidence, [0.95, 0.75])
    [p] = decode(proba, index, min_confidence=0.9)
    assert p.path == ("A",)
    [p] = decode(proba, index, min_confidence=0.99)
    assert p.path == () and p.confidence == [] and p.score == 0.0
    [p] = decode(proba, index)
    assert p.path == ("A", "B", "x") and not p.backed_off


def test_uneven_depth_leaves_keep_levels_summing_to_one() -> None:
    index = LevelIndex.build(["A", "B > C > D", "B > E"])
    levels = level_probabilities(np.array([[0.2, 0.5, 0.3]]), index)
    for lv in levels:
        np.testing.assert_allclose(lv.sum(), 1.0)


def test_attributes_used_as_context_and_numeric_ones_skipped() -> None:
    df = pd.DataFrame({
        "title": ["item one", "item two", "item three", "item four"] * 6,
        "brand": ["Levis", "Casio", "Levis", "Casio"] * 6,
        "price": ["10", "20", "30", "40"] * 6,
        "category": ["A > Jeans", "A > Watches", "A > Jeans", "A > Watches"] * 6,
    })
    clf = tx.TaxonomyClassifier(tier="sparse").fit(df)
    assert clf.text_attributes_ == ["brand"]
    assert clf.predict([{"title": "item five", "brand": "Casio"}])[0] == "A > Watches"


def test_calibration_is_reasonable_on_real_sample(sample_model, sample_split) -> None:
    ev = tx.evaluate(sample_model, sample_split[1])
    assert ev.metrics["ece"] < 0.08
    assert 0.01 < sample_model.model_.temperature_ < 10
    assert ev.metrics["accuracy"] > 0.9 and ev.metrics["macro_f1"] > 0.6
    assert ev.metrics["seen_in_training_share"] == 0.0


def test_chinese_catalogue_uses_jieba_features() -> None:
    cat = tx.read_catalog(sample_path("reviews_zh"), require_labels=True)
    train, test = tx.split_catalog(cat, test_size=0.25, seed=0)
    clf = tx.TaxonomyClassifier(tier="sparse", use_attributes=False).fit(train)
    assert clf.model_.encoder_.cjk_ is True
    names = clf.model_.encoder_.feature_names()
    assert any(n.startswith("w:") and len(n) >= 4 for n in names)
    ev = tx.evaluate(clf, test)
    assert ev.metrics["accuracy"] > 1.5 / 9  # well above chance on 9 categories with 270 short reviews


def test_input_forms_agree(tiny_model) -> None:
    titles = ["Levis Men Blue Denim Jeans", "Casio Women Digital Watch"]
    a = tiny_model.predict(titles)
    b = tiny_model.predict([{"title": t} for t in titles])
    c = tiny_model.predict(pd.DataFrame({"title": titles}))
    assert list(a) == list(b) == list(c)
    with pytest.raises(TypeError, match="single string"):
        tiny_model.predict("Levis jeans")


def test_cached_char_wb_transform_equals_scikit_learn(sample_catalog) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from taxonomist.encoders.sparse import _CharWbIndex
    from taxonomist.text import normalize_for_sparse

    docs = [normalize_for_sparse(t) for t in sample_catalog.titles[:1500]] + ["a", "ab", "  x  y ", "", "abcd efghij"]
    for ngram_range in ((2, 5), (1, 3), (3, 3)):
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, sublinear_tf=True, lowercase=False,
                              dtype=np.float32).fit(docs[:1000])
        for fast in (_CharWbIndex(vec), _CharWbIndex(vec, codes=False)):  # the batch's words as codes, or one by one
            for _ in range(2):  # one by one, the second pass is served from the word cache
                got = fast.transform(docs)
                want = vec.transform(docs)
                assert (got != want).nnz == 0 or np.allclose(got.toarray(), want.toarray(), rtol=1e-5, atol=1e-6)


def test_words_cut_as_codes_give_the_vocabulary_columns_of_their_char_wb_ngrams() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from taxonomist.encoders.ngram_codes import NgramCodes
    from taxonomist.encoders.sparse import _wb_ngrams

    train = ["a ab abc abcd abcdefgh t-shirt 连衣裙 ünïcödé 👗dress x\u0301y", "zz zzzz ab-cd 10x20cm"]
    words = ["a", "ab", "abcd", "abcdefgh", "abcdefghij", "zzzzzz", "t-shirt", "连衣裙", "👗dress", "x\u0301y",
             "new", "Ω", "q", "\ud800ab", "10x20cm", "ünïcödé", "ab"]
    for lo, hi in ((1, 1), (2, 5), (5, 5), (1, 3), (3, 7), (6, 8)):
        vocab = TfidfVectorizer(analyzer="char_wb", ngram_range=(lo, hi), lowercase=False).fit(train).vocabulary_
        codes = NgramCodes.of(vocab, (lo, hi))
        assert codes is not None
        columns, bounds = codes.cut(words)
        assert bounds[0] == 0 and bounds[-1] == len(columns) and len(bounds) == len(words) + 1
        for k, w in enumerate(words):
            want = sorted(vocab[g] for g in _wb_ngrams(w, lo, hi) if g in vocab)
            assert sorted(columns[bounds[k]:bounds[k + 1]].tolist()) == want, (w, lo, hi)
    assert NgramCodes.of(vocab, (6, 8)).cut([])[1].tolist() == [0]


def test_a_large_batch_s_words_are_not_kept_after_its_call_a_served_request_s_are(sample_catalog) -> None:
    """A training set's words were kept in the char index's cache for the rest of the fit (Cdiscount: 108,648 words,
    tens of MB at the fit's peak) although a batch's words cut as codes cost less to cut again than to hold."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from taxonomist.encoders.sparse import _CharWbIndex
    from taxonomist.text import normalize_for_sparse

    docs = [normalize_for_sparse(t) for t in sample_catalog.titles[:500]]
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), lowercase=False, dtype=np.float32).fit(docs)
    index = _CharWbIndex(vec)
    index.KEEP_WORDS = 100  # the sample's 500 titles stand for a larger batch
    whole = index.transform(docs)
    assert len({w for d in docs for w in d.split()}) > index.KEEP_WORDS and index.cache == {}
    one = index.transform(["red cotton shirt"])  # a served request: its few words kept
    assert set(index.cache) == {"red", "cotton", "shirt"}
    assert (one != vec.transform(["red cotton shirt"])).nnz == 0 or np.allclose(one.toarray(), vec.transform(["red cotton shirt"]).toarray())
    assert (index.transform(docs) != whole).nnz == 0 and set(index.cache) == {"red", "cotton", "shirt"}


def test_char_wb_vocabulary_of_too_many_characters_for_codes_is_cut_word_by_word() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from taxonomist.encoders.ngram_codes import NgramCodes
    from taxonomist.encoders.sparse import _CharWbIndex

    docs = [" ".join(chr(0x4E00 + k) * 2 for k in range(i, i + 50)) for i in range(0, 7_000, 50)]
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=False,
                          dtype=np.float32).fit(docs)
    assert NgramCodes.of(vec.vocabulary_, (2, 5)) is None  # 7,000+ characters: a 5-gram's code needs > 63 bits
    fast = _CharWbIndex(vec)
    assert fast.codes is None
    assert np.allclose(fast.transform(docs).toarray(), vec.transform(docs).toarray(), rtol=1e-5, atol=1e-6)


def test_word_index_and_whole_encoder_equal_scikit_learn(sample_catalog) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    from taxonomist.encoders.sparse import SparseTextEncoder, _WordIndex
    from taxonomist.text import normalize_for_sparse, tokenize

    docs = [normalize_for_sparse(t) for t in sample_catalog.titles[:1500]] + ["a", "  x  y ", "", "连衣裙 红色 夏季"]
    for kw in ({}, {"tokenizer": tokenize, "token_pattern": None},  # the Latin and the CJK word analyzers
               {"ngram_range": (1, 1)}, {"ngram_range": (1, 3)}, {"ngram_range": (2, 3)},
               {"stop_words": ["the", "de"]}, {"preprocessor": str.upper}):  # (these two: the whole analyzer)
        vec = TfidfVectorizer(**{"ngram_range": (1, 2), "sublinear_tf": True, "lowercase": False,
                                 "dtype": np.float32, **kw})
        vec.fit(docs[:1000])
        got, want = _WordIndex(vec).transform(docs), vec.transform(docs)
        np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-5, atol=1e-6)
    # the encoder as a whole (repeated titles, contexts) against scikit-learn's own transforms
    enc = SparseTextEncoder().fit(sample_catalog.titles[:800], sample_catalog.frame["description"].fillna("")[:800])
    titles = list(sample_catalog.titles[800:900]) * 2
    contexts = list(sample_catalog.frame["description"].fillna("")[800:900]) * 2
    fast = enc.transform(titles, contexts)
    slow_blocks = []
    for vec in (enc.word_, enc.char_):
        t = vec.transform([normalize_for_sparse(x) for x in titles]) * enc.title_weight
        c = vec.transform([normalize_for_sparse(x) for x in contexts]) * enc.context_weight
        slow_blocks.append(normalize(t + c))
    np.testing.assert_allclose(fast.toarray(), np.hstack([b.toarray() for b in slow_blocks]), rtol=1e-5, atol=1e-6)


def test_top_label_calibration_keeps_argmax_and_sums(global_seed: int = 0) -> None:
    from taxonomist.models.calibration import apply_top_label, fit_top_label

    rng = np.random.default_rng(global_seed)
    proba = rng.dirichlet(np.full(8, 0.3), size=500)
    conf = proba.max(axis=1)
    correct = rng.random(500) < np.clip(0.2 + 0.5 * conf, 0, 1)  # under-confident low, over-confident high
    knots = fit_top_label(conf, correct)
    assert knots is not None
    out = apply_top_label(proba, knots)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-9)
    assert (out.argmax(axis=1) == proba.argmax(axis=1)).all()
    assert (out >= 0).all()
    # the map is monotone in the original top probability
    order = np.argsort(conf)
    assert np.all(np.diff(np.interp(conf[order], *knots)) >= -1e-12)
    assert fit_top_label(conf[:50], correct[:50]) is None  # too few points: temperature only


def test_convergence_warnings_are_counted_and_logged_once(tiny_frame, caplog, monkeypatch) -> None:
    import logging

    import taxonomist.models.ovr as ovr

    caplog.set_level(logging.WARNING, logger="taxonomist")
    model = SparseClassifier(C=1e4, calibration="none", n_jobs=1)
    real = ovr.LinearSVC
    monkeypatch.setattr(ovr, "LinearSVC", lambda **kw: real(max_iter=1, **kw))
    model.fit(tiny_frame["title"].tolist(), tiny_frame["category"].tolist())
    msgs = [r.getMessage() for r in caplog.records if "stopped before converging" in r.getMessage()]
    assert len(msgs) == 1 and "of 6 one-vs-rest problems" in msgs[0]


def test_training_is_reproducible_with_parallel_one_vs_rest(sample_catalog) -> None:
    top = sample_catalog.frame["category"].value_counts().index[:10]
    subset = sample_catalog.frame[sample_catalog.frame["category"].isin(top)].head(600)
    a = tx.TaxonomyClassifier(tier="sparse", calibration="none").fit(subset).model_.coef_.toarray()
    b = tx.TaxonomyClassifier(tier="sparse", calibration="none").fit(subset).model_.coef_.toarray()
    assert np.array_equal(a, b)


def test_sparse_l2_normalize_equals_scikit_learn() -> None:
    import scipy.sparse as sp
    from sklearn.preprocessing import normalize

    from taxonomist.vectors import l2_normalize

    dense = sp.random(30, 50, density=0.1, random_state=0, dtype=np.float32).toarray()
    dense[3] = 0  # an all-zero row stays zero
    x = sp.csr_matrix(dense)
    got = l2_normalize(x)
    np.testing.assert_allclose(got.toarray(), normalize(x).toarray(), rtol=1e-6)
    assert got.dtype == np.float32 and x.data is not got.data  # a copy unless copy=False


def test_keyword_stuffing_is_flagged_for_review(sample_model: tx.TaxonomyClassifier, sample_split) -> None:
    """A title whose halves point to different top-level categories (another category's keywords appended) is
    flagged; ordinary titles, long or short, are not."""
    stuffed = ["Puma Men Coupe Black Sandal watch wallet handbag belt sunglasses",
               "Titan Men Black Analog Watch tshirt jeans shirt kurta shorts"]
    flags = sample_model.stuffing_flags(stuffed)
    assert flags == [True, True]
    clean = sample_split[1].frame["title"].tolist()
    assert sum(sample_model.stuffing_flags(clean)) <= 0.02 * len(clean)
    assert sample_model.stuffing_flags(["Nike shoes", ""]) == [False, False]


def test_calibrated_probabilities_sum_to_one_and_level_confidences_stay_in_range(sample_model, sample_split) -> None:
    """Regression: rows of predict_proba summed to 0.9989-1.0016 (the top-label map rescaled float32 softmax
    outputs by 1 - top) and level confidences above 1.0 reached the API."""
    proba = sample_model.predict_proba(sample_split[1])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    preds = sample_model.predict_products(sample_split[1].frame.head(300).to_dict("records"))
    assert all(0.0 <= c <= 1.0 for p in preds for c in p.confidence)


def test_a_large_catalogue_is_fitted_once(sample_catalog, monkeypatch) -> None:
    """Calibration holds out at most MAX_CALIBRATION_ROWS products; when that is a small share of the catalogue,
    the model fitted on the rest is kept (one fit) instead of being fitted again on everything."""
    import taxonomist.models.sparse as sparse

    frame = sample_catalog.frame
    X, y = (frame["title"].tolist(), [""] * len(frame)), frame["category"].tolist()
    fits: list[int] = []
    real = SparseClassifier._fit_model

    def counting(self, Xs, y_idx, rows=None):  # type: ignore[no-untyped-def]
        fits.append(Xs.shape[0] if rows is None else len(rows))
        return real(self, Xs, y_idx, rows)

    monkeypatch.setattr(SparseClassifier, "_fit_model", counting)
    monkeypatch.setattr(sparse, "MAX_CALIBRATION_ROWS", 100)  # 100 of ~3,170 products: about 3 %
    once = SparseClassifier().fit(X, y)
    assert len(fits) == 1 and len(frame) - 110 <= fits[0] <= len(frame) - 90
    assert once.refitted_ is False and once.predict(["navy blue men brief"]).shape == (1,)
    fits.clear()
    monkeypatch.setattr(sparse, "MAX_CALIBRATION_ROWS", 20_000)  # 15 % held out: refitted on everything
    twice = SparseClassifier().fit(X, y)
    assert fits[-1] == len(frame) and len(fits) == 2 and twice.refitted_ is True
    fits.clear()
    monkeypatch.setattr(sparse, "MAX_CALIBRATION_ROWS", 100)
    SparseClassifier(refit=True).fit(X, y)  # asked for: refitted however small the held-out share
    assert fits[-1] == len(frame) and len(fits) == 2


def test_decode_of_thousands_of_leaves_picks_the_same_top_k_without_sorting_every_leaf(monkeypatch) -> None:
    from taxonomist.models import hierarchy
    from taxonomist.models.hierarchy import LevelIndex, decode

    rng = np.random.default_rng(0)
    classes = [f"T{i % 7} > M{i % 50} > L{i}" for i in range(3000)]
    proba = rng.dirichlet(np.full(len(classes), 0.05), size=40)
    index = LevelIndex.build(classes)
    want = np.argsort(-proba, axis=1)[:, :5]
    sorted_rows: list[int] = []
    real = np.argsort

    def counting(a, *args, **kwargs):
        sorted_rows.append(int(np.asarray(a).shape[-1]))
        return real(a, *args, **kwargs)

    monkeypatch.setattr(hierarchy.np, "argsort", counting)
    preds = decode(proba, index, top_k=5, min_confidence=0.5)
    assert [[c for c, _ in p.alternatives] for p in preds] == [[classes[j] for j in row] for row in want]
    assert [p.leaf for p in preds] == [index.classes[row[0]] for row in want]
    assert max(sorted_rows) <= 5  # only the k best of each row are sorted


def test_top_label_map_of_thousands_of_classes_sorts_only_the_two_best(monkeypatch) -> None:
    from taxonomist.models import calibration, hierarchy
    from taxonomist.models.calibration import apply_top_label

    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.full(3000, 0.05), size=30)
    knots = (np.array([0.0, 0.5, 1.0]), np.array([0.1, 0.4, 0.95]))
    monkeypatch.setattr(hierarchy, "PARTIAL_SORT_ABOVE", 10**9)
    want = apply_top_label(proba, knots)  # every column sorted
    monkeypatch.undo()
    sorted_rows: list[int] = []
    real = np.argsort
    monkeypatch.setattr(calibration.np, "argsort",
                        lambda a, *args, **kw: sorted_rows.append(int(np.asarray(a).shape[-1])) or real(a, *args, **kw))
    np.testing.assert_array_equal(apply_top_label(proba, knots), want)
    assert max(sorted_rows, default=0) <= 2


def _memory_docs(n: int) -> tuple[list[str], list[str]]:
    """Products of few distinct words: their features are many stored values over a small vocabulary."""
    rng = np.random.default_rng(0)
    words = np.array([f"word{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(60)])
    return [" ".join(rng.choice(words, 8)) for _ in range(n)], [" ".join(rng.choice(words, 20)) for _ in range(n)]


def test_the_vocabulary_fit_equals_scikit_learns_without_its_matrix_of_python_ints(sample_catalog, monkeypatch) -> None:
    """The 1,000,000-product fit was killed for memory while scikit-learn's vectorizers learned the vocabulary:
    they build the whole count matrix, its column indices first as a list of Python ints (36 bytes per stored
    value). The encoder counts document frequencies instead: the same vocabulary and idf, a fraction of the
    memory."""
    import tracemalloc

    from sklearn.feature_extraction.text import TfidfVectorizer

    from taxonomist.encoders import sparse
    from taxonomist.encoders.sparse import SparseTextEncoder
    from taxonomist.text import normalize_for_sparse, tokenize

    titles = [*sample_catalog.titles[:1200], "a", "  x  y ", "", "连衣裙 红色 夏季", "ab\tcd  ef"]
    contexts = [*sample_catalog.frame["description"].fillna("")[:1200], "", "b", "", "", "x"]
    for min_df, cjk in ((1, False), (2, False), (1, True)):
        enc = SparseTextEncoder(min_df=min_df, cjk=cjk).fit(titles, contexts)
        docs = [a + " " + b if b else a for a, b in ((normalize_for_sparse(t), normalize_for_sparse(c))
                                                      for t, c in zip(titles, contexts, strict=True))]
        common = {"lowercase": False, "preprocessor": lambda s: s, "dtype": np.float32, "sublinear_tf": True,
                  "min_df": min_df}
        word = (TfidfVectorizer(tokenizer=tokenize, token_pattern=None, **common) if cjk
                else TfidfVectorizer(**common)).set_params(ngram_range=(1, 2)).fit(docs)
        char = TfidfVectorizer(analyzer="char" if cjk else "char_wb", ngram_range=(1, 3) if cjk else (2, 5),
                               **common).fit(docs)
        for ours, theirs in ((enc.word_, word), (enc.char_, char)):
            assert ours.vocabulary_ == theirs.vocabulary_
            np.testing.assert_array_equal(ours.idf_, theirs.idf_)
        np.testing.assert_array_equal(enc.transform(titles, contexts).toarray(),
                                      SparseTextEncoder(min_df=min_df, cjk=cjk).fit(titles, contexts)
                                      .transform(titles, contexts).toarray())
    with pytest.raises(ValueError, match="empty vocabulary"):
        SparseTextEncoder().fit(["", " "], ["", ""])

    titles, contexts = _memory_docs(4000)
    monkeypatch.setattr(sparse, "_FIT_CHUNK", 500)  # the n-gram ids of 500 documents buffered at a time
    tracemalloc.start()
    try:
        enc = SparseTextEncoder().fit(titles, contexts)
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    x = enc.transform(titles, contexts)
    matrix = x.data.nbytes + x.indices.nbytes + x.indptr.nbytes
    # what the fit needs beyond what it keeps; scikit-learn's fit: about twice the matrix it does not return
    assert peak - retained < 0.5 * matrix, (peak - retained, matrix)


def test_the_features_of_many_products_are_built_without_a_python_int_per_stored_value(monkeypatch) -> None:
    """The transform's peak memory stays near the size of the matrix it returns (the column indices used to be
    collected as a list of Python ints, and a catalogue's blocks were all built and summed at once)."""
    import tracemalloc

    from taxonomist.encoders import sparse
    from taxonomist.encoders.sparse import SparseTextEncoder

    titles, contexts = _memory_docs(4000)
    enc = SparseTextEncoder().fit(titles, contexts)
    whole = enc.transform(titles, contexts)
    monkeypatch.setattr(sparse, "_TRANSFORM_CHUNK", 500)  # products whose features are built together
    enc.transform(titles[:10], contexts[:10])  # the indexes built outside the measurement
    tracemalloc.start()
    try:
        x = enc.transform(titles, contexts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    matrix = x.data.nbytes + x.indices.nbytes + x.indptr.nbytes
    assert peak < 2.5 * matrix, (peak, matrix)  # the blocks and the matrix they are stacked into, at the end
    assert (x != whole).nnz == 0


def _fit_in_child(queue) -> None:  # noqa: ANN001
    from taxonomist.datasets import sample_path

    clf = tx.TaxonomyClassifier(tier="sparse", hierarchy="two-level", n_jobs=2).fit(tx.read_catalog(sample_path()))
    queue.put(len(clf.classes_))


def test_a_fit_with_worker_processes_inside_a_child_process_lets_it_exit() -> None:
    """A multiprocessing child joins its own child processes as it ends, before the exit handlers that stop
    joblib's worker processes run: a fit with workers inside such a child (a benchmark's run, a user's pool) left
    it waiting for them for ever."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_fit_in_child, args=(queue,))
    proc.start()
    try:
        proc.join(90)
        assert not proc.is_alive(), "the child process did not exit after its fit"
        assert queue.get(timeout=5) > 1
    finally:
        if proc.is_alive():
            import psutil

            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()


def test_a_backed_off_path_is_an_ancestor_of_the_answered_leaf() -> None:
    """Issue 36 (High): a backed-off item showed its parent ("Apparel 35 %") while Accept saved the most probable
    leaf ("Footwear > Shoes > Casual Shoes", 3 %) in another top-level branch: the service answered a category and
    a leaf that disagree. The leaf answered is the most probable one under the path answered."""
    classes = ["Apparel > Tops > T-shirts", "Apparel > Tops > Shirts", "Apparel > Bottoms > Jeans",
               "Footwear > Shoes > Casual Shoes", "Footwear > Shoes > Boots", "Home > Decor > Vases"]
    index = LevelIndex.build(classes)
    proba = np.array([[0.15, 0.13, 0.12, 0.30, 0.0, 0.30]])  # Apparel 0.40 over three leaves; no leaf over 0.30
    [p] = decode(proba, index, min_confidence=0.35)
    assert p.backed_off and p.path == ("Apparel",)
    assert p.leaf == ("Apparel", "Tops", "T-shirts") and p.leaf_confidence == pytest.approx(0.15)
    assert p.alternatives[0][0] in ("Footwear > Shoes > Casual Shoes", "Home > Decor > Vases")  # still the top-k
    [q] = decode(proba, index, min_confidence=0.9)  # nothing clears: no path, the most probable leaf
    assert q.path == () and q.leaf in (("Footwear", "Shoes", "Casual Shoes"), ("Home", "Decor", "Vases"))


def _assert_paths_lead_to_leaves(clf: tx.TaxonomyClassifier, titles: list[str]) -> None:
    for mc in (0.2, 0.5, 0.8, 0.95):
        for p in clf.predict_products(titles, min_confidence=mc):
            assert p.leaf[:len(p.path)] == p.path, (mc, p.path, p.leaf)


TITLES = ["Nike Men Black Running Shoes", "Titan Men Steel Watch", "blue thing", "gift for her", "zzz qqq",
          "Levis Men Blue Denim Jeans", "cotton", "black leather", "Casio Women Digital Watch", "men"]


def test_every_tier_answers_a_leaf_under_its_path(tiny_model, tiny_frame, tiny_encoder_dir) -> None:
    _assert_paths_lead_to_leaves(tiny_model, TITLES)
    frame = pd.concat([tiny_frame] * 3, ignore_index=True)
    ens = tx.TaxonomyClassifier(tier="ensemble", encoder=str(tiny_encoder_dir)).fit(frame)
    _assert_paths_lead_to_leaves(ens, TITLES)
    zs = tx.TaxonomyClassifier.from_taxonomy(tx.Taxonomy.from_paths(sorted(set(frame["category"]))),
                                             encoder=str(tiny_encoder_dir))
    _assert_paths_lead_to_leaves(zs, TITLES)


def test_the_parameters_are_declared_once_and_a_fit_reads_a_copy(tiny_frame) -> None:
    """issue 35: the estimator's parameters are params.Parameters' fields (no second list to keep equal), each
    with a constraint, and fitting never changes them."""
    import dataclasses

    from taxonomist.params import PARAMETERS, Parameters

    names = [f.name for f in dataclasses.fields(Parameters)]
    assert sorted(names) == sorted(tx.TaxonomyClassifier().get_params()) == sorted(PARAMETERS)
    clf = tx.TaxonomyClassifier(tier="sparse", hierarchy="auto", calibration="none")
    before = clf.get_params()
    clf.fit(tiny_frame)
    assert clf.get_params() == before and clf.hierarchy_ == "flat"  # (resolved into a fitted attribute)


def test_every_parameter_after_the_tier_is_keyword_only() -> None:
    import inspect

    params = list(inspect.signature(tx.TaxonomyClassifier).parameters.values())
    assert params[0].name == "tier" and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
    with pytest.raises(TypeError):
        tx.TaxonomyClassifier("sparse", 0.5)  # type: ignore[misc]


BAD_PARAMETERS = {
    "tier": "forest", "min_confidence": 1.5, "C": 0.0, "title_weight": -1.0, "context_weight": "high",
    "description_chars": 0, "class_weight": "equal", "use_attributes": "yes", "calibration": "platt",
    "random_state": "seed", "encoder": 3, "encoder_backend": "tf", "max_length": 0, "embed_context": "both",
    "members": ["sparse", "forest"], "knn_k": 0, "validation_size": 1.0, "epochs": 0, "finetune_max_length": -2,
    "prior_shift": "high", "image_encoder": 7, "image_views": 5, "fusion": "middle", "image_root": 1,
    "allow_remote_images": "no", "cascade": None, "cv": -1, "dp_epsilon": 0.0, "dp_delta": 1.0, "n_jobs": 0,
    "hierarchy": "deep", "engine": "spark", "checkpoint": 5, "max_problem_rows": 0, "max_embedded": 0,
}


def test_every_parameter_is_checked_before_any_data_is_read() -> None:
    import inspect

    names = list(inspect.signature(tx.TaxonomyClassifier).parameters)
    assert sorted(BAD_PARAMETERS) == sorted(names)  # a new parameter needs a bad value here and a constraint
    for name, bad in BAD_PARAMETERS.items():
        clf = tx.TaxonomyClassifier(**{name: bad})
        with pytest.raises((ValueError, TypeError), match=name):
            clf.fit(["never read"] * 2, ["A", "B"])


def test_char_wb_ngrams_of_a_word_are_scikit_learns() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from taxonomist.encoders.sparse import _wb_ngrams

    words = ["a", "ab", "abc", "abcd", "abcdefgh", "连衣裙", "t-shirt"]
    for lo, hi in ((1, 1), (2, 5), (5, 5), (1, 3), (3, 7)):
        analyze = TfidfVectorizer(analyzer="char_wb", ngram_range=(lo, hi), lowercase=False).build_analyzer()
        for w in words:
            assert _wb_ngrams(w, lo, hi) == analyze(w), (w, lo, hi)
