"""The beam descent's compact result: the same predictions as the dense matrix, without building it."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

import taxonomist as tx
from taxonomist.models import SparseClassifier
from taxonomist.models import beam as beam_mod
from taxonomist.models import node_weights as nw
from taxonomist.models.hierarchy import LevelIndex, decode


@pytest.fixture(scope="module")
def beam_model(sample_catalog):
    """A top-down model of the bundled sample (three levels), predicting with a beam of 2."""
    f = sample_catalog.frame
    X = (f["title"].tolist(), f["description"].tolist())
    m = SparseClassifier(hierarchy="top-down").fit(X, f["category"].tolist())
    m.beam = 2
    return m, X


def test_the_compact_result_gives_the_dense_predictions(beam_model) -> None:
    m, X = beam_model
    assert m.top_label_ is not None  # the top-label map is applied on both paths
    index = LevelIndex.build(list(m.classes_))
    probe = (X[0][:300], X[1][:300])
    proba = m.predict_proba(probe)  # dense: the beam's log-probabilities, softmax, top-label map
    for top_k, mc in ((3, None), (1, None), (5, 0.6), (2, 0.95)):
        fast = m.beam_predictions(probe, index, top_k=top_k, min_confidence=mc)
        dense = decode(proba, index, top_k=top_k, min_confidence=mc)
        assert len(fast) == len(dense) == 300
        col = {name: j for j, name in enumerate(m.classes_)}
        for i, (a, b) in enumerate(zip(fast, dense, strict=True)):
            assert (a.path, a.leaf, a.backed_off) == (b.path, b.leaf, b.backed_off)
            np.testing.assert_allclose(a.confidence, b.confidence, rtol=1e-9, atol=1e-12)
            assert a.leaf_confidence == pytest.approx(b.leaf_confidence, rel=1e-9, abs=1e-12)
            # the same top-k values; each alternative's class has that probability in the dense matrix (classes
            # of equal probability, e.g. under a node the beam did not descend, may be chosen either way)
            np.testing.assert_allclose([p for _, p in a.alternatives], [p for _, p in b.alternatives],
                                       rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose([proba[i, col[c]] for c, _ in a.alternatives],
                                       [p for _, p in a.alternatives], rtol=1e-9, atol=1e-12)
        if mc is not None:
            assert any(p.backed_off for p in fast)
    assert (m.predict(probe) == m.classes_[proba.argmax(axis=1)]).all()


def test_the_classifier_predicts_products_from_the_compact_result(sample_catalog, monkeypatch) -> None:
    clf = tx.TaxonomyClassifier(tier="sparse", hierarchy="top-down").fit(sample_catalog)
    m = clf.model_
    m.beam = 2
    calls = []
    real = beam_mod.beam_predictions
    monkeypatch.setattr("taxonomist.models.sparse.beam_predictions",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(m, "predict_proba", lambda *a, **k: pytest.fail("the dense matrix was built"))
    preds = clf.predict_products(sample_catalog.frame.head(20), top_k=2)
    assert calls and len(preds) == 20 and all(len(p.alternatives) == 2 for p in preds)
    assert [p.category for p in preds] == clf.predict(sample_catalog.frame.head(20)).tolist()


def test_pair_margins_in_small_blocks_equal_the_product_of_features_and_weights(beam_model, monkeypatch) -> None:
    m, X = beam_model
    tree = m.tree_
    feats = m.encoder_.transform(X[0][:60], X[1][:60])
    nodes = np.repeat(np.flatnonzero(tree.sizes > 1), 60)
    rows = np.tile(np.arange(60), len(nodes) // 60)
    want = np.concatenate([
        (feats[r] @ m.coef_[tree.starts[v]:tree.starts[v] + tree.sizes[v]].T).toarray().ravel()
        for r, v in zip(rows, nodes, strict=True)])
    offsets = np.r_[0, np.cumsum(tree.sizes[nodes])]
    outs = []
    # every feature's weights as sparse runs, as full rows, or full where they fill half the row
    for share in (2.0, 0.0, 0.5):
        weights = nw.node_major_weights(tree, m._weights_t(), dense_share=share)
        # (few=10**9: every node's features marked -- in one block, in blocks of 40 margins; few=0: bisection)
        for budget, few in ((nw.BLOCK_MARGINS, 10**9), (40, 10**9), (nw.BLOCK_MARGINS, 0)):
            out = np.zeros(offsets[-1], dtype=np.float32)
            table = np.full(feats.shape[1], -1, dtype=np.int64)
            nw.pair_margins(feats.indptr, feats.indices, feats.data.astype(np.float32), rows, nodes,
                                   offsets[:-1], tree.sizes, weights.feat_ptr, weights.feats, weights.w_ptr,
                                   weights.w_edge, weights.w_data, table, budget, few, out)
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
            assert (table == -1).all()
            outs.append(out)
    for out in outs[1:]:  # the same sums in the same order, whichever way
        np.testing.assert_array_equal(out, outs[0])


def test_full_rows_hold_the_same_weights_as_sparse_runs(beam_model) -> None:
    m, _ = beam_model
    tree = m.tree_
    sparse_runs = nw.node_major_weights(tree, m._weights_t(), dense_share=2.0)
    full = nw.node_major_weights(tree, m._weights_t(), dense_share=0.0)
    np.testing.assert_array_equal(sparse_runs.feats, full.feats)
    assert len(sparse_runs.w_data) == m._weights_t().nnz - (tree.sizes[tree.edge_node[m._weights_t().indices]] < 2).sum()
    size_of_run = np.repeat(tree.sizes, np.diff(full.feat_ptr))
    np.testing.assert_array_equal(np.diff(full.w_ptr), size_of_run)  # share 0: every run a full row
    for i in range(0, len(full.feats), max(1, len(full.feats) // 500)):
        a, b = slice(sparse_runs.w_ptr[i], sparse_runs.w_ptr[i + 1]), slice(full.w_ptr[i], full.w_ptr[i + 1])
        row = np.zeros(size_of_run[i], np.float32)
        row[sparse_runs.w_edge[a]] = sparse_runs.w_data[a]
        np.testing.assert_array_equal(full.w_data[b], row)
        np.testing.assert_array_equal(full.w_edge[b], np.arange(size_of_run[i]))


def test_an_empty_batch_and_a_product_without_known_words() -> None:
    titles = ["red cotton shirt", "blue denim jeans", "steel kitchen knife", "wooden cutting board"] * 5
    labels = ["Apparel > Shirts", "Apparel > Jeans", "Home > Knives", "Home > Boards"] * 5
    m = SparseClassifier(hierarchy="top-down", calibration="none", beam=1).fit(titles, labels)
    assert m.predict([]).shape == (0,)
    assert m.decision_function([]).shape == (0, 4)
    index = LevelIndex.build(list(m.classes_))
    [pred] = m.beam_predictions(["zzzz qqqq"], index, top_k=4)
    np.testing.assert_allclose(sum(p for _, p in pred.alternatives), 1.0)
    np.testing.assert_allclose(np.exp(m.decision_function(["zzzz qqqq"])).sum(), 1.0)
    assert isinstance(m._node_weights.feats, np.ndarray) and sp.issparse(m._weights_t())
    # a model that has predicted (its node-major weights and scratch table cached) still copies and pickles
    for twin in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert twin.predict(["green shirt", "zzzz"]).tolist() == m.predict(["green shirt", "zzzz"]).tolist()


@pytest.mark.parametrize("exact_top", [1, 3])
def test_a_bounded_beam_keeps_the_best_classes_of_the_whole_beam(beam_model, monkeypatch, exact_top) -> None:
    """Beam nodes whose children are all classes are scored only when they could hold one of the best
    ``exact_top`` classes: those classes, their order and (at temperature 1) their probabilities are the
    whole beam's, and fewer (product, node) pairs are scored."""
    m, X = beam_model
    tree = m.tree_
    feats = m.encoder_.transform(X[0][:400], X[1][:400])
    weights = nw.node_major_weights(tree, m._weights_t())
    scored: list[int] = []
    real = beam_mod.pair_margins
    monkeypatch.setattr(beam_mod, "pair_margins", lambda *a: scored.append(len(a[3])) or real(*a))
    ones = np.ones_like(m.level_temperatures_)
    for beam in (2, 4):
        scored.clear()
        whole = beam_mod.beam_descent(tree, feats, weights, m.intercept_, ones, beam)
        n_whole = sum(scored)
        scored.clear()
        bounded = beam_mod.beam_descent(tree, feats, weights, m.intercept_, ones, beam, exact_top)
        assert sum(scored) < n_whole
        a_cls, a_p, a_z = whole.top(exact_top)
        b_cls, b_p, b_z = bounded.top(exact_top)
        np.testing.assert_array_equal(a_cls, b_cls)
        np.testing.assert_allclose(b_p, a_p, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b_z, a_z, atol=1e-9)  # (temperature 1: a spread node holds what its classes would)
        dense = bounded.log_proba()
        np.testing.assert_allclose(np.logaddexp.reduce(dense, axis=1), 0.0, atol=1e-9)  # every class, once
        # at another temperature the order of the best classes still holds
        t_cls, _, _ = bounded.top(exact_top, temperature=0.5)
        np.testing.assert_array_equal(t_cls, whole.top(exact_top, temperature=0.5)[0])
