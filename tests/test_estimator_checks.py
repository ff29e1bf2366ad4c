"""The scikit-learn estimator contract: scikit-learn's own checks where they apply (parameters, cloning, repr,
no work in ``__init__``), and the same promises checked on products where sklearn's checks feed numeric arrays."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

import taxonomist as tx
from taxonomist.exceptions import NotFittedError

from .conftest import TINY

NUMERIC_INPUT = "fed numeric arrays; TaxonomyClassifier reads products (titles, dicts, frames): checked on products below"
# scikit-learn's checks that train or predict on random numeric matrices (or sparse matrices, NaN / inf, 1-d y)
NUMERIC_CHECKS = (
    "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
    "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_complex_data", "check_dtype_object",
    "check_estimators_empty_data_messages", "check_pipeline_consistency", "check_estimators_nan_inf",
    "check_estimator_sparse_tag", "check_estimator_sparse_array", "check_estimator_sparse_matrix",
    "check_estimators_pickle", "check_f_contiguous_array_estimator", "check_classifier_data_not_an_array",
    "check_classifiers_one_label", "check_classifiers_classes", "check_classifiers_train",
    "check_classifiers_regression_target", "check_supervised_y_no_nan", "check_supervised_y_2d",
    "check_class_weight_classifiers", "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_fit2d_1sample", "check_fit2d_1feature", "check_dict_unchanged", "check_fit_idempotent",
    "check_fit_check_is_fitted", "check_n_features_in", "check_fit1d", "check_fit2d_predict1d",
    "check_requires_y_none", "check_array_api_input",
)


@parametrize_with_checks([tx.TaxonomyClassifier(tier="sparse")],
                         expected_failed_checks=lambda est: dict.fromkeys(NUMERIC_CHECKS, NUMERIC_INPUT))
def test_scikit_learn_checks(estimator, check) -> None:
    check(estimator)


def _data() -> tuple[list[str], list[str]]:
    return [t for t, _ in TINY] * 3, [c for _, c in TINY] * 3


def test_the_contract_on_products() -> None:
    titles, labels = _data()
    clf = tx.TaxonomyClassifier(tier="sparse", random_state=0)
    params = clf.get_params()
    with pytest.raises(NotFittedError):
        clf.predict(titles)
    assert clf.fit(titles, labels) is clf  # fit returns self
    assert clf.get_params() == params  # fit leaves the parameters as they were
    assert not hasattr(clone(clf), "classes_")  # a clone is unfitted
    first = clf.predict_proba(titles)
    again = clone(clf).fit(titles, labels).predict_proba(titles)
    np.testing.assert_array_equal(first, again)  # fitting is idempotent
    order = np.random.default_rng(0).permutation(len(titles))
    np.testing.assert_allclose(clf.predict_proba([titles[i] for i in order]), first[order], atol=1e-12)  # row order
    np.testing.assert_allclose(clf.predict_proba(titles[:5]), first[:5], atol=1e-12)  # subsets
    assert list(clf.predict(titles)) == list(clf.classes_[first.argmax(axis=1)])
    np.testing.assert_allclose(first.sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(tx.TaxonomistError, match="at least 2 categories"):
        clone(clf).fit(titles, [labels[0]] * len(titles))
    with pytest.raises(ValueError, match="one label per product"):
        clone(clf).fit(titles, labels[:-1])
