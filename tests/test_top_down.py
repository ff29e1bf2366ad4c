"""Top-down training of the sparse member: one local problem per inner node, decoded softly."""

from __future__ import annotations

import numpy as np
import pytest

import taxonomist as tx
from taxonomist.models import SparseClassifier
from taxonomist.models.tree import STOP, LocalTree


def test_local_tree_has_one_problem_per_inner_node_and_paths_of_edges() -> None:
    classes = ["A > B > C", "A > B > D", "A > E", "F", "F > G"]
    tree = LocalTree(classes)
    assert tree.nodes == [(), ("A",), ("F",), ("A", "B")]
    assert tree.sizes.tolist() == [2, 2, 2, 2]  # root: A, F; A: B, E; F: itself (STOP), G; A > B: C, D
    assert tree.n_levels == 3
    edges = {(tree.nodes[tree.edge_node[e]], e) for e in range(tree.n_edges)}
    assert len(edges) == 8
    assert tree.paths.sum(axis=1).A1.tolist() == [3, 3, 2, 2, 2]  # "F" is root -> F, then F -> STOP
    assert STOP == "\x00"
    rng = np.random.default_rng(0)
    logp = tree.log_proba(rng.normal(size=(4, tree.n_edges)), np.array([0.5, 1.0, 2.0]))
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-9)  # a distribution over the classes


def test_two_level_merges_the_levels_below_the_top_into_one_problem_per_top_category() -> None:
    tree = LocalTree(["A > B > C", "A > B > D", "A > E", "F"], depth=1)
    assert tree.nodes == [(), ("A",)]
    assert tree.sizes.tolist() == [2, 3]  # root: A, F; A: "B > C", "B > D", E
    assert tree.paths.sum(axis=1).A1.tolist() == [2, 2, 2, 1]


def test_two_level_splits_where_its_two_stages_cost_least() -> None:
    from taxonomist.models.tree import split_depth

    # many departments under the root: split at the top level
    shop = [f"D{d} > S{s} > L{j}" for d in range(20) for s in range(3) for j in range(4)]
    assert split_depth(shop, np.full(len(shop), 10)) == 1
    # two sources under the root, each with many departments: one level deeper
    sources = [f"Shop{k} > D{d} > L{j}" for k in range(2) for d in range(30) for j in range(5)]
    assert split_depth(sources, np.full(len(sources), 10)) == 2
    tree = LocalTree(sources, depth=2)
    assert tree.sizes[0] == 60 and len(tree.nodes) == 61  # the root over the 60 departments, then each one


def test_auto_is_flat_for_small_problems_and_two_level_for_large_ones() -> None:
    from taxonomist.models.tree import TOP_DOWN_ABOVE, resolve_hierarchy

    deep = [f"A{i % 7} > B{i}" for i in range(100)]
    assert resolve_hierarchy("auto", deep, 1000) == "flat"
    assert resolve_hierarchy("auto", deep, TOP_DOWN_ABOVE // 100 + 1) == "two-level"
    assert resolve_hierarchy("auto", [f"B{i}" for i in range(100)], 10**9) == "flat"  # one level: nothing to split
    assert resolve_hierarchy("top-down", deep, 10) == "top-down"


def test_a_node_with_one_child_costs_nothing() -> None:
    tree = LocalTree(["A > B > C", "A > B > D"])
    assert tree.sizes.tolist() == [1, 1, 2]
    problems = tree.problems(np.array([0, 1, 0, 1]))
    assert [node for node, _rows, _y in problems] == [2]


def test_top_down_learns_predicts_calibrates_explains_and_round_trips(sample_catalog, tmp_path) -> None:
    train, test = tx.split_catalog(sample_catalog, test_size=0.2, seed=0)
    flat = tx.TaxonomyClassifier(tier="sparse").fit(train)
    top = tx.TaxonomyClassifier(tier="sparse", hierarchy="top-down").fit(train)
    assert top.model_.tree_ is not None and top.model_.level_temperatures_.shape == (top.model_.tree_.n_levels,)
    y = test.frame["category"].to_numpy()
    acc_top, acc_flat = (np.mean(m.predict(test) == y) for m in (top, flat))
    assert acc_top >= acc_flat - 0.05, (acc_top, acc_flat)
    proba = top.predict_proba(test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert list(top.classes_[proba.argmax(axis=1)]) == list(top.predict(test))
    [p] = top.predict_products(test.frame.iloc[:1], explain=True)
    assert p.explanation and all(w > 0 for _f, w in p.explanation)
    top.save(tmp_path / "m")
    back = tx.TaxonomyClassifier.load(tmp_path / "m")
    assert back.get_params()["hierarchy"] == "top-down"
    np.testing.assert_allclose(back.predict_proba(test), proba, rtol=1e-5, atol=1e-7)


def test_top_down_without_calibration_uses_the_default_level_temperature() -> None:
    titles = ["red cotton shirt", "blue denim jeans", "steel kitchen knife", "wooden cutting board"] * 5
    labels = ["Apparel > Shirts", "Apparel > Jeans", "Home > Knives", "Home > Boards"] * 5
    m = SparseClassifier(hierarchy="top-down", calibration="none").fit(titles, labels)
    assert m.predict(["green shirt", "chef knife"]).tolist() == ["Apparel > Shirts", "Home > Knives"]
    assert np.all(m.level_temperatures_ > 0)


def test_unknown_hierarchy_is_refused() -> None:
    with pytest.raises(ValueError, match="hierarchy must be 'flat', 'two-level', 'top-down' or 'auto'"):
        SparseClassifier(hierarchy="sideways").fit(["a", "b"], ["x", "y"])  # type: ignore[arg-type]


def _fit(sample_catalog, **kw) -> SparseClassifier:
    f = sample_catalog.frame
    return SparseClassifier(hierarchy="top-down", calibration="none", **kw).fit(
        (f["title"].tolist(), f["description"].tolist()), f["category"].tolist())


def _same(a: SparseClassifier, b: SparseClassifier) -> None:
    assert (a.coef_ != b.coef_).nnz == 0
    np.testing.assert_array_equal(a.intercept_, b.intercept_)


def test_ray_training_equals_the_local_fit(sample_catalog, ray_local) -> None:
    _same(_fit(sample_catalog, engine="ray"), _fit(sample_catalog, n_jobs=2))


def test_tasks_too_large_for_every_worker_at_once_run_one_at_a_time(sample_catalog, monkeypatch, caplog) -> None:
    """A 1,000,000-product fit was killed for memory: each worker held liblinear's copy of the all-products
    problem. Tasks whose copies would not fit side by side in the available memory now run one at a time in
    this process; the others still run in parallel, and the model is the same."""
    import logging

    from taxonomist.models import ovr

    parallel = _fit(sample_catalog, n_jobs=2)
    X_nnz = parallel.encoder_.transform(sample_catalog.frame["title"].tolist(),
                                        sample_catalog.frame["description"].tolist()).nnz
    # room for the shared features and one all-products copy, not two
    monkeypatch.setattr(ovr, "_available_bytes", lambda: int((12 * X_nnz + 1.5 * 16 * X_nnz) / 0.8))
    in_process: list[int] = []
    real = ovr.fit_task

    def counting(X, task, params):  # type: ignore[no-untyped-def]
        in_process.append(len(task.rows))  # only calls made in this process are seen here
        return real(X, task, params)

    monkeypatch.setattr(ovr, "fit_task", counting)
    _fit(sample_catalog, n_jobs=1)
    n_tasks = len(in_process)  # a serial fit runs every task here
    in_process.clear()
    with caplog.at_level(logging.INFO, logger="taxonomist.models.ovr"):
        bounded = _fit(sample_catalog, n_jobs=2)
    # the root problem's tasks (every product) and any other too large to run two at once: here; the rest in workers
    assert len(sample_catalog) in in_process and 0 < len(in_process) < n_tasks
    assert "one at a time in this process" in caplog.text
    _same(bounded, parallel)


def test_an_interrupted_fit_resumes_from_its_checkpoint(sample_catalog, tmp_path, monkeypatch) -> None:
    from taxonomist.models import ovr

    whole = _fit(sample_catalog, n_jobs=1)
    real, calls = ovr.fit_task, {"n": 0}

    def dies_after_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ovr, "fit_task", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        _fit(sample_catalog, n_jobs=1, checkpoint=str(tmp_path / "ck"))
    assert len(list((tmp_path / "ck").glob("*.npz"))) == 5
    calls["n"] = -10_000  # counts the fits of the second run
    resumed = _fit(sample_catalog, n_jobs=1, checkpoint=str(tmp_path / "ck"))
    n_tasks = len(list((tmp_path / "ck").glob("*.npz")))
    assert calls["n"] == -10_000 + n_tasks - 5  # only the missing tasks were fitted
    _same(resumed, whole)


def test_train_cli_top_down_with_a_checkpoint(tmp_path, capsys, monkeypatch) -> None:
    import json

    import pandas as pd

    from taxonomist.datasets import sample_path

    from .test_bad_inputs import run_cli

    f = tmp_path / "cat.csv"
    pd.read_csv(sample_path("products"), dtype=str, keep_default_na=False).head(600).to_csv(f, index=False)
    args = ["train", str(f), "-o", str(tmp_path / "m"), "--tier", "sparse", "--hierarchy", "top-down",
            "--checkpoint", str(tmp_path / "ck"), "--no-refit"]
    code, out = run_cli(args, capsys, monkeypatch)
    assert code == 0, out
    assert "sparse member: top-down" in out and "local problems" in out
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["config"]["hierarchy"] == "top-down"
    assert list((tmp_path / "ck").glob("*.npz"))
    code, out = run_cli(["train", str(f), "-o", str(tmp_path / "x"), "--hierarchy", "sideways"], capsys, monkeypatch)
    assert code == 1 and "--hierarchy must be flat, two-level, top-down or auto" in out


def test_train_cli_max_problem_rows(tmp_path, capsys, monkeypatch) -> None:
    import json

    import pandas as pd

    from taxonomist.datasets import sample_path

    from .test_bad_inputs import run_cli

    f = tmp_path / "cat.csv"
    pd.read_csv(sample_path("products"), dtype=str, keep_default_na=False).head(600).to_csv(f, index=False)
    base = ["train", str(f), "--tier", "sparse", "--hierarchy", "two-level", "--no-refit"]
    for value, want in (("300", 300), ("none", None), ("auto", "auto")):
        code, out = run_cli([*base, "-o", str(tmp_path / value), "--max-problem-rows", value], capsys, monkeypatch)
        assert code == 0, out
        assert json.loads((tmp_path / value / "manifest.json").read_text())["config"]["max_problem_rows"] == want
    code, out = run_cli([*base, "-o", str(tmp_path / "x"), "--max-problem-rows", "lots"], capsys, monkeypatch)
    assert code == 1 and "--max-problem-rows must be auto, none or a number of at least 2, got 'lots'" in out


def test_beam_descent_is_a_distribution_and_equals_exact_scoring_when_wide(sample_catalog, monkeypatch) -> None:
    from taxonomist.models import sparse as sparse_mod

    f = sample_catalog.frame
    X = (f["title"].tolist(), f["description"].tolist())
    m = SparseClassifier(hierarchy="top-down").fit(X, f["category"].tolist())
    probe = (X[0][:200], X[1][:200])
    exact = m.decision_function(probe)  # a small tree: every edge scored
    assert m._beam_width() == 0
    m.beam = 10_000
    np.testing.assert_allclose(m.decision_function(probe), exact, rtol=1e-6, atol=1e-6)
    m.beam = 1
    greedy = m.decision_function(probe)
    np.testing.assert_allclose(np.exp(greedy).sum(axis=1), 1.0, rtol=1e-9)
    assert (greedy.argmax(axis=1) == exact.argmax(axis=1)).mean() >= 0.95
    m.beam = "auto"
    monkeypatch.setattr(sparse_mod, "BEAM_ABOVE", 0)
    assert m._beam_width() == sparse_mod.BEAM_WIDTH


def test_scores_in_bounded_blocks_equal_one_block(monkeypatch) -> None:
    import scipy.sparse as sp

    from taxonomist.models import sparse as sparse_mod

    rng = np.random.default_rng(0)
    X = sp.random(300, 2_000, density=0.01, format="csr", random_state=1, dtype=np.float32)
    coef_t = sp.random(2_000, 40, density=0.05, format="csr", random_state=2, dtype=np.float32)
    b = rng.normal(size=40).astype(np.float32)
    whole = sparse_mod.linear_scores(X, coef_t, b)
    monkeypatch.setattr(sparse_mod, "_DENSE_BUDGET", 40 * 25)  # blocks of about 25 feature occurrences
    np.testing.assert_allclose(sparse_mod.linear_scores(X, coef_t, b), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole, X @ coef_t.toarray() + b, rtol=1e-5, atol=1e-5)


def test_a_products_scores_do_not_depend_on_the_other_products_of_its_batch(monkeypatch) -> None:
    import scipy.sparse as sp

    from taxonomist.models import sparse as sparse_mod

    rng = np.random.default_rng(0)
    X = sp.random(200, 3_000, density=0.02, format="csr", random_state=3, dtype=np.float32)
    coef_t = sp.random(3_000, 30, density=0.2, format="csr", random_state=4, dtype=np.float32)
    b = rng.normal(size=30).astype(np.float32)
    monkeypatch.setattr(sparse_mod, "_DENSE_BUDGET", 30 * 100)  # weights densified 100 features at a time
    batch = sparse_mod.linear_scores(X, coef_t, b)
    for i in (0, 17, 199):  # served one at a time, or in another batch: the same bits
        np.testing.assert_array_equal(sparse_mod.linear_scores(X[[i]], coef_t, b)[0], batch[i])
        np.testing.assert_array_equal(sparse_mod.linear_scores(X[i:i + 50], coef_t, b)[0], batch[i])


def test_calibration_scores_a_bounded_number_of_held_out_products(sample_catalog, monkeypatch, caplog) -> None:
    import logging

    from taxonomist.models import sparse as sparse_mod

    monkeypatch.setattr(sparse_mod, "MAX_CALIBRATION_ROWS", 50)
    caplog.set_level(logging.INFO, logger="taxonomist")
    f = sample_catalog.frame
    m = SparseClassifier(hierarchy="two-level").fit((f["title"].tolist(), f["description"].tolist()),
                                                    f["category"].tolist())
    fitted = [r.getMessage() for r in caplog.records if "level temperatures" in r.getMessage()]
    assert fitted and "fitted on" in fitted[0] and int(fitted[0].rsplit("fitted on ", 1)[1].split()[0]) <= 50
    assert m.predict(f["title"].tolist()[:5]).shape == (5,)


def test_a_refit_model_beams_with_its_new_weights() -> None:
    titles = ["red cotton shirt", "blue denim jeans", "steel kitchen knife", "wooden cutting board"] * 5
    labels = ["Apparel > Shirts", "Apparel > Jeans", "Home > Knives", "Home > Boards"] * 5
    m = SparseClassifier(hierarchy="top-down", calibration="none", beam=1).fit(titles, labels)
    assert m.predict(["green shirt"]).tolist() == ["Apparel > Shirts"]
    swapped = ["Home > Knives", "Home > Boards", "Apparel > Shirts", "Apparel > Jeans"] * 5
    m.fit(titles, swapped)
    assert m.predict(["green shirt"]).tolist() == ["Home > Knives"]


def test_a_problem_of_more_products_than_max_problem_rows_trains_on_a_sample_in_proportion(sample_catalog,
                                                                                     monkeypatch) -> None:
    """The first stage of a two-level fit sees every product: at 1,000,000 products liblinear's copy of it took
    more than 5 GB per worker and half the training time. A problem above ``max_problem_rows`` products trains
    on a sample in the labels' own proportions, each label keeping at least ``max_rows / (2 × labels)``."""
    from taxonomist.models import ovr, sparse

    y = np.r_[np.zeros(5000, int), np.ones(300, int), np.full(20, 2), np.full(400, 3)]
    rows = np.arange(10, 10 + len(y))
    kept_rows, kept_y = ovr.capped(rows, y, 1000, seed=0)
    # floor 1000 // 8 = 125 each (label 2: its 20); the other 605 in proportion to what each has above the floor
    # (4,875 : 175 : 0 : 275 -> 553.8, 19.9, 0, 31.2), the two rows of rounding to the largest remainders
    assert np.bincount(kept_y).tolist() == [125 + 554, 125 + 20, 20, 125 + 31] and len(kept_rows) == 1000
    assert np.isin(kept_rows, rows).all() and (np.diff(kept_rows) > 0).all()
    np.testing.assert_array_equal(y[kept_rows - 10], kept_y)
    again = ovr.capped(rows, y, 1000, seed=0)
    assert np.array_equal(again[0], kept_rows) and not np.array_equal(ovr.capped(rows, y, 1000, seed=1)[0], kept_rows)
    assert ovr.capped(rows, y, len(y), seed=0)[0] is rows  # not above the cap: untouched

    f = sample_catalog.frame
    X, labels = (f["title"].tolist(), f["description"].tolist()), f["category"].tolist()
    seen: list[int] = []
    real = sparse.run_tasks
    monkeypatch.setattr(sparse, "run_tasks", lambda X, tasks, *a, **k: seen.extend(len(t.rows) for t in tasks)
                        or real(X, tasks, *a, **k))
    capped = SparseClassifier(hierarchy="two-level", calibration="none", max_problem_rows=1000).fit(X, labels)
    assert max(seen) == 1000 < len(f)  # the first stage, over every product, on 1,000 of them
    assert (capped.predict(f["title"].tolist()[:500]) == np.asarray(labels[:500])).mean() > 0.8
    seen.clear()
    whole = SparseClassifier(hierarchy="two-level", calibration="none", max_problem_rows=None).fit(X, labels)
    assert max(seen) == len(f)
    _same(whole, SparseClassifier(hierarchy="two-level", calibration="none", max_problem_rows=len(f)).fit(X, labels))
    with pytest.raises(ValueError, match="max_problem_rows"):
        SparseClassifier(max_problem_rows=1).fit(X, labels)


def test_large_training_features_are_kept_in_a_temporary_file_and_give_the_same_model(sample_catalog, tmp_path,
                                                                                       monkeypatch) -> None:
    """At 1,000,000 products the float64 training features are ~4 GB, and the worker processes got a copy of them
    each time a parallel fit started. Above ``FEATURES_IN_MEMORY_UP_TO`` bytes they are written to a temporary
    file as they are built and mapped from it: held once, read by the workers without a copy, deleted after the
    fit; the model is the same."""
    import tempfile

    from taxonomist.models import ovr, sparse

    f = sample_catalog.frame
    X, labels = (f["title"].tolist(), f["description"].tolist()), f["category"].tolist()
    in_memory = SparseClassifier(hierarchy="two-level", n_jobs=2).fit(X, labels)
    monkeypatch.setattr(sparse, "FEATURES_IN_MEMORY_UP_TO", 0)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mapped: list[bool] = []
    real = sparse.run_tasks

    def spy(Xs, *a, **k):  # type: ignore[no-untyped-def]
        mapped.append(isinstance(ovr.backing_file(Xs), str) and any(tmp_path.iterdir()))
        return real(Xs, *a, **k)

    monkeypatch.setattr(sparse, "run_tasks", spy)
    on_disk = SparseClassifier(hierarchy="two-level", n_jobs=2).fit(X, labels)
    assert mapped and all(mapped)
    assert not any(tmp_path.iterdir())  # the temporary file is gone
    _same(on_disk, in_memory)
    assert on_disk.temperature_ == in_memory.temperature_
    np.testing.assert_array_equal(on_disk.level_temperatures_, in_memory.level_temperatures_)


def test_the_top_label_map_fitted_in_blocks_of_held_out_products_equals_one_block(sample_catalog, monkeypatch) -> None:
    """The held-out products' class probabilities are computed a block at a time (20,000 products × 5,000 classes
    are 800 MB of float64 per temporary): the same calibration as all at once."""
    from taxonomist.models import sparse as sparse_mod

    f = sample_catalog.frame
    X, labels = (f["title"].tolist(), f["description"].tolist()), f["category"].tolist()
    for hierarchy in ("two-level", "flat"):
        monkeypatch.setattr(sparse_mod, "_CALIBRATION_BLOCK", 10**9)
        whole = SparseClassifier(hierarchy=hierarchy).fit(X, labels)
        monkeypatch.setattr(sparse_mod, "_CALIBRATION_BLOCK", 37)
        blocks = SparseClassifier(hierarchy=hierarchy).fit(X, labels)
        assert whole.top_label_ is not None and blocks.top_label_ is not None
        for a, b in zip(whole.top_label_, blocks.top_label_, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_two_level_fit_whose_calibration_split_has_no_usable_rows() -> None:
    """Four distinct titles repeated: the held-out calibration group leaves no product of a label seen in the
    fit, so the level temperatures get nothing to fit (they keep their default) -- it used to crash indexing
    with an empty float array."""
    titles = ["red cotton shirt", "blue denim jeans", "steel kitchen knife", "wooden cutting board"] * 30
    labels = ["A > Shirts", "A > Jeans", "H > Knives", "H > Boards"] * 30
    m = SparseClassifier(hierarchy="two-level").fit(titles, labels)
    assert m.predict(["green cotton shirt"]).tolist() == ["A > Shirts"]
    tree = m.tree_
    assert tree.fit_temperatures(np.zeros((0, tree.n_edges)), np.zeros(0, dtype=np.intp)).shape == (tree.n_levels,)


def test_the_features_present_are_found_the_same_way_for_few_and_many_products() -> None:
    from taxonomist.models import sparse as sparse_mod

    rng = np.random.default_rng(0)
    for n in (10, 50_000):  # a sort of the indices, and a mask over the vocabulary
        indices = rng.integers(0, 20_000, n).astype(np.int32)
        cols, inverse = sparse_mod._present(indices, 20_000)
        expected_cols, expected_inverse = np.unique(indices, return_inverse=True)
        np.testing.assert_array_equal(cols, expected_cols)
        np.testing.assert_array_equal(inverse, expected_inverse.ravel())
        assert inverse.dtype == np.int32
