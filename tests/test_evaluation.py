from __future__ import annotations

import json

import numpy as np
import pytest

import taxonomist as tx
from taxonomist.evaluation import compute_metrics, coverage_at_precision, expected_calibration_error

CLASSES = ["A > B > x", "A > B > y", "A > C > z", "D > E > w"]


def test_known_metrics() -> None:
    y = ["A > B > x", "A > B > y", "A > C > z", "D > E > w"]
    proba = np.array([
        [0.9, 0.05, 0.03, 0.02],   # right
        [0.6, 0.3, 0.05, 0.05],    # wrong leaf, right parent
        [0.05, 0.05, 0.8, 0.1],    # right
        [0.1, 0.1, 0.1, 0.7],      # right
    ])
    ev = compute_metrics(y, proba, CLASSES)
    m = ev.metrics
    assert m["accuracy"] == 0.75
    assert m["levels"][0]["accuracy"] == 1.0 and m["levels"][1]["accuracy"] == 1.0 and m["levels"][2]["accuracy"] == 0.75
    assert m["top_level_accuracy"] == 1.0
    # hierarchical: 11 of 12 ancestor nodes shared
    assert m["hierarchical_precision"] == pytest.approx(11 / 12) and m["hierarchical_f1"] == pytest.approx(11 / 12)
    # macro-F1 over x (P=.5,R=1), y (0), z (1), w (1)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0 + 1 + 1) / 4)
    assert m["top_k_accuracy"]["3"] == 1.0
    assert ev.confused_pairs == [("A > B > y", "A > B > x", 1)]
    assert set(m) >= {"accuracy", "macro_f1", "weighted_f1", "hierarchical_f1", "top_level_accuracy",
                      "coverage_at_95_precision", "coverage_at_90_precision", "ece", "levels"}


def test_backoff_improves_hierarchical_precision() -> None:
    y = ["A > B > y"]
    proba = np.array([[0.6, 0.3, 0.05, 0.05]])
    plain = compute_metrics(y, proba, CLASSES).metrics
    backed = compute_metrics(y, proba, CLASSES, min_confidence=0.8).metrics
    assert backed["hierarchical_precision"] == 1.0 > plain["hierarchical_precision"]
    assert backed["backed_off_share"] == 1.0


def test_coverage_at_precision() -> None:
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([1, 1, 1, 0, 1, 0], dtype=bool)
    assert coverage_at_precision(conf, correct, 1.0) == (0.5, 0.9)
    cov, thr = coverage_at_precision(conf, correct, 0.8)
    assert cov == pytest.approx(5 / 6) and thr == 0.7
    # ties are kept or dropped together
    assert coverage_at_precision(np.array([0.9, 0.9]), np.array([True, False]), 1.0) == (0.0, 1.01)


def test_ece_perfectly_calibrated_is_zero() -> None:
    conf = np.array([0.75] * 4)
    assert expected_calibration_error(conf, np.array([1, 1, 1, 0], dtype=bool)) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([0, 0], dtype=bool)) == pytest.approx(1.0)


def test_report_and_json(sample_model, sample_split, tmp_path) -> None:
    ev = tx.evaluate(sample_model, sample_split[1])
    html = ev.write_html(tmp_path / "r.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 4  # levels, reliability, coverage, confusion
    assert "Worst categories" in html and "Most-confused" in html and "<script" not in html
    data = json.loads(ev.to_json(tmp_path / "m.json"))
    assert data["macro_f1"] == ev.metrics["macro_f1"] and len(data["levels"]) == 3
    assert "macro F1" in ev.table()


def test_report_reads_as_a_catalogue_manager_needs(sample_model, sample_split, tmp_path) -> None:
    """The reliability diagram had 4 points from an isotonic map's 22 confidences, the worst-categories table was
    25 rows of support 1, the back-off threshold was not shown: now one point per distinct confidence, a
    threshold table marking the model's, sibling errors, look-alike categories, every class's F1."""
    from taxonomist.report import reliability_points

    model = sample_model
    model.min_confidence = 0.5
    ev = tx.evaluate(model, sample_split[1])
    points = reliability_points(ev.confidence, ev.correct)
    assert sum(p[2] for p in points) == len(ev.confidence) and len(points) >= 3
    html = ev.write_html(tmp_path / "r.html").read_text(encoding="utf-8")
    for heading in ("Confidence thresholds", "Errors among siblings", "Categories that look like duplicates",
                    "Every category: support, precision, recall, F1"):
        assert heading in html
    assert "backs off to a parent below confidence 0.50" in html and "<tr class=mark><td>0.50</td>" in html
    worst = html.split("Worst categories")[1].split("</table>")[0]
    supports = [int(c.split("</td>")[0]) for c in worst.split("<tr><td>")[1:] for c in [c.split("</td><td>", 1)[1]]]
    assert supports and min(supports) >= 2
    model.min_confidence = None


def test_look_alike_categories_siblings_and_thresholds() -> None:
    from taxonomist.report import look_alike_categories, sibling_confusion, threshold_table

    classes = ["Accessories > Wallets > Wallets", "Bags > Wallets", "Personal Care > Skin", "Personal Care > Skin Care",
               "Apparel > Topwear > Tshirts", "Apparel > Topwear > Shirts"]
    y_true = ["Bags > Wallets", "Personal Care > Skin", "Apparel > Topwear > Tshirts", "Apparel > Topwear > Tshirts"]
    y_pred = ["Accessories > Wallets > Wallets", "Personal Care > Skin Care", "Apparel > Topwear > Shirts",
              "Apparel > Topwear > Tshirts"]
    pairs = {(r["a"], r["b"]): r["confused"] for r in look_alike_categories(classes, y_true, y_pred)}
    assert pairs == {("Accessories > Wallets > Wallets", "Bags > Wallets"): 1,
                     ("Personal Care > Skin", "Personal Care > Skin Care"): 1}
    sib = {r["parent"]: r for r in sibling_confusion(y_true, y_pred)}
    assert sib["Apparel > Topwear"] == {"parent": "Apparel > Topwear", "products": 2, "errors": 1, "among_siblings": 1}
    assert sib["Bags"]["among_siblings"] == 0
    rows = threshold_table(np.array([0.2, 0.6, 0.9, 0.95]), np.array([False, True, True, False]), (0.5, 0.9))
    assert rows == [{"threshold": 0.5, "coverage": 0.75, "precision": pytest.approx(2 / 3)},
                    {"threshold": 0.9, "coverage": 0.5, "precision": 0.5}]


def test_report_escapes_and_scrubs_titles(tiny_model, tmp_path) -> None:
    evil = [{"title": "<script>alert(1)</script> call +44 20 7946 0958", "category": "Apparel > Topwear > Shirts"},
            {"title": "Casio watch", "category": "Accessories > Watches > Watches"}]
    ev = tx.evaluate(tiny_model, evil)
    html = ev.write_html(tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "7946" not in html


def test_evaluate_warns_when_test_overlaps_training(tiny_model, caplog) -> None:
    from tests.conftest import TINY

    ev = tx.evaluate(tiny_model, [{"title": t, "category": c} for t, c in TINY])
    assert ev.metrics["seen_in_training_share"] == 1.0
    assert "scores are inflated" in caplog.text


def test_the_report_opens_with_what_a_catalogue_manager_can_do() -> None:
    """Issue 36: the report's first line is "auto-accept X % at Y % precision, review Z %"."""
    from taxonomist.report import headline

    confidence = np.array([0.99, 0.95, 0.9, 0.85, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2])
    correct = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 0], dtype=bool)
    text = headline(confidence, correct)
    assert text.startswith("Auto-accept 60% of products (confidence ≥ 0.60) at 100% precision") and "review 40%" in text
    assert "no confidence reaches 90% precision" in headline(confidence, np.zeros(10, dtype=bool))


def test_reliability_points_are_adaptive_bins_with_intervals() -> None:
    """Issue 36: reliability bins of 1-3 products zigzagged with no intervals. Bins hold similar numbers of
    products (at least 20), each with its 95 % Wilson interval."""
    from taxonomist.report import reliability_points

    rng = np.random.default_rng(0)
    conf = np.concatenate([rng.uniform(0.9, 1.0, 900), rng.uniform(0.0, 0.9, 100)])  # most products sure
    correct = rng.uniform(size=1000) < conf
    points = reliability_points(conf, correct)
    assert sum(p[2] for p in points) == 1000 and all(p[2] >= 20 for p in points) and len(points) <= 15
    assert all(lo <= acc <= hi for _, acc, _, lo, hi in points)
    few = reliability_points(np.array([0.2, 0.4, 0.6, 0.8, 0.9] * 3), np.ones(15, dtype=bool))
    assert len(few) == 1 and few[0][2] == 15  # fewer products than a bin needs: one point, not five zigzags


def test_the_report_says_what_each_figure_means(sample_model, sample_split, tmp_path) -> None:
    """Issue 36: macro-F1 and the ECE were never explained in the report."""
    html = tx.evaluate(sample_model, sample_split[1]).write_html(tmp_path / "r.html").read_text(encoding="utf-8")
    assert "rare categories count as much as common ones" in html
    assert "a confidence of 80 % is right 80 % of the time" in html


def test_reliability_points_hold_their_accuracy_when_every_answer_is_right() -> None:
    """A bin with every answer right has accuracy 1.0; its interval's top rounds below it (the report failed with
    "'yerr' must not contain negative values")."""
    from taxonomist.report import reliability_points

    for n in (20, 37, 111, 600):
        for acc_low, acc, acc_high in ((p[3], p[1], p[4]) for p in reliability_points(np.linspace(0.5, 1, n), np.ones(n, bool))):
            assert acc_low <= acc <= acc_high
