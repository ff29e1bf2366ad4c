"""The one training recipe every path that makes a bundle calls (taxonomist.training.train_bundle)."""

from __future__ import annotations

import pandas as pd
import pytest

import taxonomist as tx
from taxonomist.datasets import sample_path
from taxonomist.training import train_bundle


@pytest.fixture(scope="module")
def catalog() -> tx.Catalog:
    frame = pd.read_csv(sample_path("products"), dtype=str, keep_default_na=False).head(600)
    return tx.Catalog.from_frame(frame, require_labels=True)


def test_train_bundle_evaluates_backs_off_keeps_a_reference_refits_and_times_each_stage(catalog, tmp_path) -> None:
    estimator = tx.TaxonomyClassifier(tier="sparse")
    result = train_bundle(estimator, catalog, test_size=0.25, seed=0)
    ev = result.evaluation
    assert ev is not None and result.metrics["split"]["n_test"] == ev.metrics["n"]
    assert result.metrics["split"]["n_train"] + ev.metrics["n"] == len(catalog)
    threshold = float(ev.metrics["threshold_at_90_precision"])
    assert result.back_off == threshold == result.model.min_confidence == result.metrics["back_off_threshold"]
    assert estimator.min_confidence is None  # the configuration given is not changed
    assert result.model.drift_reference_.source == "held-out"
    assert list(result.seconds) == ["fit", "evaluate", "drift_reference", "refit"]
    assert result.model.fingerprint_ == tx.TaxonomyClassifier(tier="sparse").fit(catalog).fingerprint_  # refitted on all
    path = result.save(tmp_path / "m", note="x")
    again = tx.load(path)
    assert again.drift_reference_.source == "held-out" and again.metrics_["note"] == "x"
    assert again.min_confidence == threshold


def test_without_a_held_out_part_nothing_is_evaluated_and_the_reference_is_a_training_sample(catalog) -> None:
    result = train_bundle(tx.TaxonomyClassifier(tier="sparse", min_confidence=0.4), catalog, test_size=0)
    assert result.evaluation is None and result.metrics == {} and result.back_off is None
    assert result.model.min_confidence == 0.4
    assert result.model.drift_reference_.source == "training sample"
    assert list(result.seconds) == ["fit", "drift_reference"]


def _long_descriptions(n_per: int = 40, seed: int = 0) -> pd.DataFrame:
    """Products whose title barely helps, whose description opens with what the product is, then runs on with the
    same boilerplate words for every category (a shop's shipping and care text): read whole, the boilerplate
    drowns the opening; read from its start, the description names the category."""
    import numpy as np

    rng = np.random.default_rng(seed)
    kinds = {"Kitchen > Kettles": "electric kettle boils water", "Kitchen > Toasters": "toaster browns bread slices",
             "Garden > Hoses": "garden hose waters plants", "Garden > Rakes": "steel rake gathers leaves",
             "Home > Lamps": "desk lamp lights the room", "Home > Rugs": "wool rug warms the floor"}
    filler = ("free shipping returns within thirty days care instructions warranty customer service packaging "
              "delivery order online store quality guaranteed premium materials gift idea").split()
    rows = []
    for cat, opening in kinds.items():
        for i in range(n_per):
            words = " ".join(rng.choice(filler, 140))  # ~1,000 characters of boilerplate
            noise = " ".join(rng.choice(filler, 30))
            rows.append({"id": f"{cat[:3]}{i}", "title": f"Item {rng.integers(1000)} {rng.choice(filler)}",
                         "description": f"{opening}. {noise} {words}", "category": cat})
    return pd.DataFrame(rows)


def test_how_much_of_a_long_description_the_model_reads_is_chosen_on_the_training_data(tmp_path) -> None:
    """The sparse member read every description whole, at a fixed weight: a catalogue whose descriptions state the
    product first and then run on scored like a title-only model. With ``description_chars="auto"`` (the default)
    a held-out part of the training data decides between the whole description and its first 300 characters."""
    data = tx.Catalog.from_frame(_long_descriptions(), require_labels=True)
    auto = tx.TaxonomyClassifier(tier="sparse").fit(data)
    assert auto.description_chars_ == 300
    titles, contexts = auto.reader_.texts(data.subset(range(3)))
    assert all(len(c) <= 300 for c in contexts)
    auto.save(tmp_path / "m")
    assert tx.load(tmp_path / "m").description_chars_ == 300
    whole = tx.TaxonomyClassifier(tier="sparse", description_chars=None).fit(data)
    assert whole.description_chars_ is None
    # short descriptions: nothing to choose, nothing extra fitted
    short = tx.TaxonomyClassifier(tier="sparse").fit(tx.Catalog.from_frame(
        _long_descriptions().assign(description=lambda f: f["description"].str[:120]), require_labels=True))
    assert short.description_chars_ is None


def test_where_the_whole_description_is_no_better_than_its_start_the_model_reads_its_start() -> None:
    """The whole description was read unless its first 300 characters scored clearly better: on a catalogue where
    both readings predict alike, every training and prediction read all of each description for nothing (MWPD2020:
    held-out macro-F1 / accuracy 0.5991 / 0.8506 whole, 0.5969 / 0.8516 cut). The shorter reading is now kept
    unless the whole description is clearly better."""
    honest = tx.Catalog.from_frame(_misleading_titles(mislead=0.0), require_labels=True)  # titles say it all
    assert tx.TaxonomyClassifier(tier="sparse").fit(honest).description_chars_ == 300
    # titles naming another product: the kind is named only past the first 300 characters, read whole
    misleading = tx.Catalog.from_frame(_misleading_titles(mislead=1.0), require_labels=True)
    assert tx.TaxonomyClassifier(tier="sparse").fit(misleading).description_chars_ is None


def test_the_reading_and_the_weight_of_long_descriptions_are_chosen_together(monkeypatch) -> None:
    """The weight was tried only with the description's length already chosen at weight 0.5: where the whole
    description helps only when it weighs as much as the title, that combination was never tried."""
    from taxonomist import fitting
    from taxonomist.params import Parameters
    from taxonomist.products import ProductBatch

    held_out = {(300, 0.5): (0.50, 0.75), (None, 0.5): (0.505, 0.752), (300, 1.0): (0.49, 0.74),
                (None, 1.0): (0.56, 0.77)}  # (macro-F1, accuracy) of the sparse member per reading

    def scorer(*args, **kwargs):
        return lambda cut, weight: held_out[cut, weight]

    monkeypatch.setattr(fitting, "reading_scorer", scorer)
    frame = _misleading_titles(mislead=0.0)
    batch, labels = ProductBatch.from_any(frame), list(frame["category"])
    assert fitting.choose_reading(Parameters(), batch, labels, []) == (None, 1.0)
    held_out[None, 1.0] = (0.505, 0.75)  # nothing clearly better than the cut at 0.5: the cheapest reading
    assert fitting.choose_reading(Parameters(), batch, labels, []) == (300, 0.5)
    held_out[300, 1.0] = (0.52, 0.76)
    assert fitting.choose_reading(Parameters(), batch, labels, []) == (300, 1.0)
    # a reading given is kept; only the other is chosen
    assert fitting.choose_reading(Parameters(description_chars=None), batch, labels, []) == (None, 0.5)
    assert fitting.choose_reading(Parameters(context_weight=1.0), batch, labels, []) == (300, 1.0)


def _misleading_titles(mislead: float, n_per: int = 40, seed: int = 0) -> pd.DataFrame:
    """Products whose long description names what they are, amid a shop's boilerplate, and whose title names
    another kind of product in a share ``mislead`` of them (the rest: their own kind), beside a number."""
    import numpy as np

    rng = np.random.default_rng(seed)
    kinds = {"Kitchen > Kettles": "kettle", "Kitchen > Toasters": "toaster", "Garden > Hoses": "hose",
             "Garden > Rakes": "rake", "Home > Lamps": "lamp", "Home > Rugs": "rug"}
    filler = ("free shipping returns within thirty days care instructions warranty customer service packaging "
              "delivery order online store quality guaranteed premium materials gift idea").split()
    rows = []
    for cat, word in kinds.items():
        for i in range(n_per):
            named = rng.choice(list(kinds.values())) if rng.random() < mislead else word
            rows.append({"id": f"{word}{i}", "title": f"{named} {rng.integers(1000)} {rng.choice(filler)}",
                         "description": f"{' '.join(rng.choice(filler, 40))} {' '.join([word] * 8)} "
                                        f"{' '.join(rng.choice(filler, 20))}", "category": cat})
    return pd.DataFrame(rows)


def test_the_weight_of_long_descriptions_beside_the_title_is_chosen_on_the_training_data(tmp_path) -> None:
    """The sparse member weighed the description and attributes at a fixed half of the title, chosen on other
    catalogues. With ``context_weight="auto"`` (the default) a held-out part of the training data decides, where
    descriptions are long, between that and the title's own weight."""
    data = tx.Catalog.from_frame(_misleading_titles(mislead=1.0), require_labels=True)
    auto = tx.TaxonomyClassifier(tier="sparse").fit(data)
    assert auto.context_weight_ == 1.0
    auto.save(tmp_path / "m")
    assert tx.load(tmp_path / "m").context_weight_ == 1.0
    assert tx.TaxonomyClassifier(tier="sparse", context_weight=0.5).fit(data).context_weight_ == 0.5  # as given
    # titles that say what the product is: the description keeps its half weight
    honest = tx.TaxonomyClassifier(tier="sparse").fit(tx.Catalog.from_frame(_misleading_titles(mislead=0.0),
                                                                            require_labels=True))
    assert honest.context_weight_ == 0.5
    ensemble = tx.TaxonomyClassifier(members=["sparse"], cv=2).fit(data)  # the ensemble's sparse member too
    assert ensemble.context_weight_ == 1.0
