from __future__ import annotations

import json

import pytest

from taxonomist import Taxonomy, TaxonomyError
from taxonomist.taxonomy import parse_path

GOOGLE = """# Google_Product_Taxonomy_Version: 2021-09-21
1 - Animals & Pet Supplies
3237 - Animals & Pet Supplies > Live Animals
2 - Animals & Pet Supplies > Pet Supplies
3 - Animals & Pet Supplies > Pet Supplies > Bird Supplies
166 - Apparel & Accessories
1604 - Apparel & Accessories > Clothing
"""
SHOPIFY = """# Shopify Product Taxonomy - Categories: 2025-06-unstable
# Format: {GID} : {Ancestor name} > ... > {Category name}

gid://shopify/TaxonomyCategory/ap                : Animals & Pet Supplies
gid://shopify/TaxonomyCategory/ap-1              : Animals & Pet Supplies > Live Animals
gid://shopify/TaxonomyCategory/ap-2              : Animals & Pet Supplies > Pet Supplies
gid://shopify/TaxonomyCategory/ap-2-1            : Animals & Pet Supplies > Pet Supplies > Bird Supplies
"""
BESTBUY = [
    {"id": "abcat0100000", "name": "TV & Home Theater", "path": [{"id": "abcat0100000", "name": "TV & Home Theater"}]},
    {"id": "abcat0101000", "name": "TVs", "path": [{"id": "abcat0100000", "name": "TV & Home Theater"},
                                                   {"id": "abcat0101000", "name": "TVs"}]},
]


def test_same_leaf_name_under_two_parents_is_two_categories() -> None:
    tax = Taxonomy.from_paths(["Men > Shoes", "Women > Shoes", "Men > Shirts"])
    assert ("Men", "Shoes") in tax and ("Women", "Shoes") in tax
    assert len(tax.leaves()) == 3 and len(tax) == 5
    assert tax.children("Men") == [("Men", "Shirts"), ("Men", "Shoes")]
    assert tax.ancestors("Women > Shoes") == [("Women",)]
    assert tax.ancestors("Women > Shoes", include_self=True) == [("Women",), ("Women", "Shoes")]
    assert tax.depth("Men > Shirts") == 2 and tax.max_depth == 2
    assert tax.is_leaf("Men > Shoes") and not tax.is_leaf("Men")


def test_separators_and_truncation() -> None:
    assert parse_path("A>>B>>C", ">>") == ("A", "B", "C")
    assert parse_path("Home/Kitchen/Knives", "/") == ("Home", "Kitchen", "Knives")
    assert parse_path("A > B>C ") == ("A", "B", "C")
    tax = Taxonomy.from_paths(["A > B > C", "A > B > D", "A > E"])
    cut = tax.truncate(2)
    assert cut.max_depth == 2 and sorted(cut.leaves()) == [("A", "B"), ("A", "E")]
    assert tax.nodes_at_depth(3) == [("A", "B", "C"), ("A", "B", "D")]


def test_google_format(tmp_path) -> None:
    f = tmp_path / "taxonomy-with-ids.en-US.txt"
    f.write_text(GOOGLE, encoding="utf-8")
    tax = Taxonomy.load(f)
    assert len(tax) == 6
    assert tax.by_id(3) == ("Animals & Pet Supplies", "Pet Supplies", "Bird Supplies")
    assert tax.find("1604") == ("Apparel & Accessories", "Clothing")
    assert tax.id_of("Apparel & Accessories") == "166"


def test_shopify_format(tmp_path) -> None:
    f = tmp_path / "categories.txt"
    f.write_text(SHOPIFY, encoding="utf-8")
    tax = Taxonomy.load(f)
    assert len(tax) == 4
    assert tax.by_id("gid://shopify/TaxonomyCategory/ap-2-1")[-1] == "Bird Supplies"


def test_bestbuy_format(tmp_path) -> None:
    f = tmp_path / "categories.json"
    f.write_text(json.dumps(BESTBUY), encoding="utf-8")
    tax = Taxonomy.load(f)
    assert tax.find("abcat0101000") == ("TV & Home Theater", "TVs")
    assert tax.leaves() == [("TV & Home Theater", "TVs")]


def test_check_reports_unknown_paths() -> None:
    tax = Taxonomy.from_paths(["A > B", "A > C"])
    assert tax.check(["A > B", "A > X", "A > X", "Z"]) == {"A > X": 2, "Z": 1}


def test_lookup_errors_are_clear() -> None:
    tax = Taxonomy.from_paths(["Apparel > Topwear > Tshirts"])
    with pytest.raises(TaxonomyError, match=r"'Apparel > Tshirts' is not in the taxonomy; similar: \['Apparel > Topwear > Tshirts'\]"):
        tax.children("Apparel > Tshirts")
    with pytest.raises(TaxonomyError, match="no category has the id '99'"):
        tax.by_id(99)


def test_dict_roundtrip_and_search() -> None:
    tax = Taxonomy.from_paths(["A > B > C", "A > D"], name="t")
    tax.add("A > D", node_id="7")
    again = Taxonomy.from_dict(json.loads(json.dumps(tax.to_dict())))
    assert again == tax and again.by_id("7") == ("A", "D")
    assert tax.search("b") == [("A", "B"), ("A", "B", "C")]


SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "taxonomies"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/taxonomies is not beside this checkout")
@pytest.mark.parametrize(
    ("file", "nodes", "depth", "top"),
    [("google/taxonomy-with-ids.en-US.txt", 5595, 7, 21), ("shopify/categories.txt", 10595, 8, 26),
     ("bestbuy/categories.json", 4714, 6, 43)],
)
def test_real_taxonomy_files(file: str, nodes: int, depth: int, top: int) -> None:
    tax = Taxonomy.load(SHARED / file)
    assert (len(tax), tax.max_depth, len(tax.children())) == (nodes, depth, top)
    some = tax.leaves()[len(tax.leaves()) // 2]
    assert tax.ancestors(some)[0] in tax.children() and tax.is_leaf(some)
