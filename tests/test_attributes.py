"""Product attributes: zero-shot from the product's words, learned from a catalogue's filled cells (issue 37)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from taxonomist.attributes import ATTRIBUTES, AttributeModels, applies, extract, match, normalise


@pytest.mark.parametrize(("title", "color", "gender", "age"), [
    ("Turtle Check Men Navy Blue Shirt", "Navy", "male", "adult"),
    ("Baby Pink Romper for Girls", "Pink", "female", "kids"),  # a colour, not a baby
    ("Robe rouge pour femme", "Red", "female", "adult"),
    ("女士黑色连衣裙", "Black", "female", "adult"),
    ("Rose Gold Watch for her", "Rose gold", "female", "adult"),
    ("Spykar Men Charcoal Grey Jeans", "Gray", "male", "adult"),
    ("Marine Collagen Capsules", None, None, None),
])
def test_the_words_of_a_product_give_its_attributes_in_the_feed_values(title, color, gender, age) -> None:
    got = [match(n, title) for n in ("color", "gender", "age_group")]
    assert [m.value if m else None for m in got] == [color, gender, age]
    for name, m in zip(("color", "gender", "age_group"), got, strict=True):
        assert m is None or m.value in ATTRIBUTES[name].values


def test_several_colours_or_words_only_in_the_description_are_less_sure() -> None:
    one, several = match("color", "Black Running Shoes"), match("color", "Black & White Running Shoes")
    described = match("color", "Running Shoes", "a shoe in deep navy")
    assert one and several and described
    assert several.value == "Black" and several.confidence < described.confidence < one.confidence


def test_an_attribute_is_offered_only_where_the_category_has_it() -> None:
    assert applies("gender", "Apparel & Accessories > Clothing > Dresses", "google")
    assert not applies("gender", "Electronics > Computers > Laptops", "google")
    assert applies("color", "Electronics > Computers > Laptops", "google")
    assert not applies("color", "Food, Beverages & Tobacco > Beverages > Juice", "google")  # orange juice
    assert applies("color", "Animals & Pet Supplies > Pet Supplies > Pet Apparel > Pet Dresses", "shopify")
    # Shopify defines gender and age group for watches, not colour (their parent, Jewelry, has a colour)
    assert applies("gender", "Apparel & Accessories > Jewelry > Watches", "shopify")
    assert not applies("color", "Apparel & Accessories > Jewelry > Watches", "shopify")
    assert applies("color", "Apparel & Accessories > Jewelry", "shopify")
    assert applies("gender", "Apparel & Accessories > Clothing > Activewear > Dance Dresses, Skirts & Costumes",
                   "shopify")
    assert not applies("gender", "Animals & Pet Supplies > Pet Supplies > Cat Supplies > Cat Toys", "shopify")
    assert applies("gender", "Dresses", None)  # a shop's own taxonomy: the words decide
    frame = pd.DataFrame({"title": ["Women's Red Dress", "Women's Red Laptop Sleeve"]})
    got = extract(frame, ["gender", "color"], categories=["Apparel & Accessories > Clothing > Dresses",
                                                          "Electronics > Computers > Laptops"], taxonomy="google")
    assert got["attr_gender"].tolist() == ["female", ""] and math.isnan(got["attr_gender_confidence"][1])
    assert got["attr_color"].tolist() == ["Red", "Red"]


def test_unknown_attributes_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="expected attributes among"):
        extract(["a shirt"], ["flavour"])


def test_a_catalogue_value_is_normalised_to_the_feed_value() -> None:
    assert [normalise("gender", v) for v in ("Men", "Girls", "Unisex", "female")] == ["male", "female", "unisex",
                                                                                     "female"]
    assert normalise("color", "Navy Blue") == "Navy" and normalise("material", "Cotton") == "Cotton"


def test_learned_attributes_never_read_their_own_column(tiny_frame) -> None:
    frame = pd.concat([tiny_frame] * 3, ignore_index=True)
    frame["colour"] = ["red", "blue"] * (len(frame) // 2) + ["red"] * (len(frame) % 2)
    models = AttributeModels(["colour"], min_products=4, min_confidence=0.0).fit(frame)
    flipped = frame.assign(colour=frame["colour"].map({"red": "blue", "blue": "red"}))
    # the answers do not move when the column is changed: the model does not read it
    assert models.predict(frame)["attr_colour"].tolist() == models.predict(flipped)["attr_colour"].tolist()
    assert AttributeModels(["colour"], min_products=10_000).fit(frame).skipped_ == {"colour": f"{len(frame)} filled cells, 2 values"}
    with pytest.raises(ValueError, match="expected an attribute column 'size'"):
        AttributeModels(["size"]).fit(frame)


def test_a_catalogue_with_filled_cells_keeps_the_better_of_learning_and_zero_shot(tiny_frame) -> None:
    from taxonomist.attributes import read_attributes

    frame = pd.concat([tiny_frame] * 10, ignore_index=True)
    # a shop's own codes for its colours, which no word of the titles says: only learning can read them
    frame["colour"] = ["Red" if i % 2 else "White" for i in range(len(frame))]
    frame["title"] = [f"{t} {'crimson-line' if i % 2 else 'snow-line'}" for i, t in enumerate(frame["title"])]
    got, how = read_attributes(frame, ["color", "gender"], min_products=20)
    assert how["color"].startswith("learnt from the column 'colour'")
    assert set(got["attr_color"]) <= {"Red", "White", ""}
    assert how["gender"].startswith("zero-shot")
    few, how = read_attributes(frame.head(30), ["color"], min_products=50)
    assert how["color"] == "zero-shot (from the products' words); its column 'colour' has 30 values, 50 are needed to learn"


def test_an_attribute_without_a_vocabulary_is_learnt_from_the_catalogues_column(tiny_frame, tmp_path) -> None:
    from taxonomist.attributes import read_attributes
    from taxonomist.writeback import write_back

    frame = pd.concat([tiny_frame] * 10, ignore_index=True)
    frame["material"] = ["leather" if "Shoes" in t else "cotton" for t in frame["title"]]
    frame.loc[:4, "material"] = ""
    got, how = read_attributes(frame, ["material"], min_products=20)
    assert how["material"].startswith("learnt from the column 'material'")
    assert set(got["attr_material"]) <= {"leather", "cotton", ""}
    with pytest.raises(ValueError, match="or a column 'fit' of the catalogue"):
        read_attributes(frame, ["fit"])
    # a plain table gets the values in its own column, empty cells only
    src = tmp_path / "shop.csv"
    frame[["title", "material"]].to_csv(src, index=False)
    report = write_back(src, list(range(1, len(frame) + 1)), [""] * len(frame), tmp_path / "out.csv",
                        attributes={"material": got["attr_material"].tolist()})
    written = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert (written["material"][5:] == frame["material"][5:]).all() and (written["material"][:5] != "").all()
    assert report.counts("material")["filled"] == 5


def test_the_evaluation_scores_how_attributes_are_read_on_the_bundled_sample(sample_model, sample_split,
                                                                             tmp_path) -> None:
    """issue 37: the report scores the attributes (precision, coverage, per value) against the catalogue's own
    columns; on the bundled sample (Myntra fashion products) colour and gender are read as the shop states them."""
    from taxonomist.evaluation import evaluate

    ev = evaluate(sample_model, sample_split[1], attributes=["color", "gender", "age_group"])
    scores = ev.metrics["attributes"]
    assert set(scores) == {"color", "gender"}  # the sample has no age group column
    assert scores["color"]["column"] == "colour" and scores["color"]["precision"] > 0.85
    assert scores["color"]["coverage"] > 0.7 and scores["gender"]["precision"] > 0.95
    navy = next(v for v in scores["color"]["values"] if v["value"] == "Navy")
    assert navy["n"] > 0 and 0 <= navy["precision"] <= 1
    ev.write_html(tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Attributes read from the products' words" in page and "color (colour)" in page
