"""Shop exports read as they are (fixtures written from the formats' public specifications)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from taxonomist.catalog import read_catalog
from taxonomist.exceptions import CatalogError
from taxonomist.taxonomy import Taxonomy
from taxonomist.text import clean_text
from taxonomist.writeback import write_back

SHOPIFY = '''Handle,Title,Body (HTML),Vendor,Product Category,Type,Tags,Published,Option1 Name,Option1 Value,Variant SKU,Variant Price,Image Src,Image Position,Status
harbour-fountain-pen,Harbour Fountain Pen,"<style>.x{color:red}</style><p>Steel nib, 5 &lt; 6 grams of ink</p>",Harbour,Office Supplies > Office Instruments > Writing & Drawing Instruments > Pens,Pens,"pen, gift",TRUE,Nib,Fine,HP-F,25.00,https://cdn.example.com/pen1.jpg,1,active
harbour-fountain-pen,,,,,,,,,Medium,HP-M,25.00,https://cdn.example.com/pen2.jpg,2,
harbour-fountain-pen,,,,,,,,,,,,https://cdn.example.com/pen3.jpg,3,
tide-mini-speaker,Tide Mini Speaker,<p>Waterproof Bluetooth speaker</p>,Tide,Electronics > Audio > Audio Components > Speakers,Speakers,audio,TRUE,Title,Default Title,TS-1,39.00,,,active
tide-mini-speaker,,,,,,,,,,,,https://cdn.example.com/speaker.jpg,1,
catnip-mice,Catnip Mice (3 pack),<p>Toys for cats</p>,Whisker,Animals & Pet Supplies > Pet Supplies > Cat Supplies > Cat Toys,Cat toys,,TRUE,Title,Default Title,CM-3,6.50,https://cdn.example.com/mice.jpg,1,active
'''

GOOGLE_TAXONOMY = '''# Google_Product_Taxonomy_Version: 2021-09-21
166 - Apparel & Accessories
1604 - Apparel & Accessories > Clothing
212 - Apparel & Accessories > Clothing > Shirts & Tops
222 - Electronics
2165 - Electronics > Audio
'''

MERCHANT_RSS = '''<?xml version="1.0"?>
<rss xmlns:g="http://base.google.com/ns/1.0" version="2.0">
<channel>
<title>Example shop</title>
<link>https://www.example.com</link>
<description>Products</description>
<item>
<g:id>TS-001</g:id>
<g:title>Linen Shirt &amp; Pocket</g:title>
<g:description>A light linen shirt.</g:description>
<g:link>https://www.example.com/shirt</g:link>
<g:image_link>https://www.example.com/shirt.jpg</g:image_link>
<g:google_product_category>212</g:google_product_category>
<g:product_type>Men &gt; Shirts</g:product_type>
<g:brand>Harbour</g:brand>
<g:price>30.00 USD</g:price>
<g:shipping><g:country>US</g:country><g:price>5.00 USD</g:price></g:shipping>
</item>
<item>
<g:id>SP-002</g:id>
<g:title>Tide Mini Speaker</g:title>
<g:description>Waterproof speaker.</g:description>
<g:link>https://www.example.com/speaker</g:link>
<g:google_product_category>Electronics &gt; Audio</g:google_product_category>
<g:product_type>Audio</g:product_type>
</item>
</channel>
</rss>
'''

MERCHANT_ATOM = '''<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:g="http://base.google.com/ns/1.0">
<title>Example shop</title>
<entry>
<g:id>TS-001</g:id>
<title>Linen Shirt</title>
<g:google_product_category>1604</g:google_product_category>
<link href="https://www.example.com/shirt"/>
</entry>
</feed>
'''


def test_a_shopify_export_is_read_by_its_own_fields(tmp_path: Path) -> None:
    f = tmp_path / "products_export.csv"
    f.write_text(SHOPIFY, encoding="utf-8")
    cat = read_catalog(f, require_labels=True)
    frame = cat.frame
    assert frame["id"].tolist() == ["harbour-fountain-pen", "tide-mini-speaker", "catnip-mice"]
    assert frame["category"].tolist()[2] == "Animals & Pet Supplies > Pet Supplies > Cat Supplies > Cat Toys"
    assert clean_text(frame["description"][0]) == "Steel nib, 5 < 6 grams of ink"
    assert frame["image"].tolist() == ["https://cdn.example.com/pen1.jpg", "https://cdn.example.com/speaker.jpg",
                                       "https://cdn.example.com/mice.jpg"]
    assert frame["Option1 Value"].tolist() == ["Fine, Medium", "", ""]
    assert "Type" in cat.attribute_columns and "Tags" in cat.attribute_columns
    assert not {"Variant Price", "Published", "Status", "Image Position"} & set(frame.columns)
    first = cat.report.lines()[0]
    assert "read 3 rows, kept 3, skipped 0 (a Shopify products export; 3 variant / image rows folded" in first
    assert cat.report.ok


def test_a_merchant_center_xml_feed_with_numeric_google_ids(tmp_path: Path) -> None:
    tax_file = tmp_path / "taxonomy-with-ids.en-US.txt"
    tax_file.write_text(GOOGLE_TAXONOMY, encoding="utf-8")
    tax = Taxonomy.load(tax_file)
    f = tmp_path / "feed.xml"
    f.write_text(MERCHANT_RSS, encoding="utf-8")
    cat = read_catalog(f, require_labels=True, taxonomy=tax)
    frame = cat.frame
    assert frame["id"].tolist() == ["TS-001", "SP-002"]
    assert frame["title"][0] == "Linen Shirt & Pocket"
    assert frame["category"].tolist() == ["Apparel & Accessories > Clothing > Shirts & Tops", "Electronics > Audio"]
    assert frame["product_type"][0] == "Men > Shirts" and frame["brand"][0] == "Harbour"
    assert "shipping.country" not in frame.columns and "price" not in frame.columns
    assert "Google Merchant Center export" in cat.report.lines()[0]
    atom = tmp_path / "feed.atom.xml"
    atom.write_text(MERCHANT_ATOM, encoding="utf-8")
    assert read_catalog(atom, taxonomy=tax, require_labels=True).frame["category"].tolist() == [
        "Apparel & Accessories > Clothing"]


def test_a_merchant_center_tsv_takes_the_google_category_not_the_product_type(tmp_path: Path) -> None:
    f = tmp_path / "feed.tsv"
    f.write_text("id\ttitle\tdescription\tlink\tproduct_type\tgoogle_product_category\n"
                 "1\tLinen Shirt\tlight\thttps://x/1\tMen > Shirts\tApparel & Accessories > Clothing\n", encoding="utf-8")
    assert read_catalog(f, require_labels=True).frame["category"].tolist() == ["Apparel & Accessories > Clothing"]
    f.write_text("id\ttitle\tlink\tproduct_type\n1\tLinen Shirt\thttps://x/1\tMen > Shirts\n", encoding="utf-8")
    unlabelled = read_catalog(f).frame  # a feed without google_product_category has no label yet
    assert unlabelled["category"].tolist() == [""] and unlabelled["product_type"].tolist() == ["Men > Shirts"]
    f.write_text("id\ttitle\tlink\tcategory\n1\tLinen Shirt\thttps://x/1\tShirts\n", encoding="utf-8")
    assert read_catalog(f, require_labels=True).frame["category"].tolist() == ["Shirts"]  # a plain file, not a feed


def test_hostile_or_broken_xml_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
                    '<rss><channel><item><title>&lol2;</title></item></channel></rss>', encoding="utf-8")
    with pytest.raises(CatalogError, match="refused an XML feed that uses entities"):
        read_catalog(bomb)
    broken = tmp_path / "broken.xml"
    broken.write_text("<rss><channel><item><title>x</item>", encoding="utf-8")
    with pytest.raises(CatalogError, match="not well-formed XML"):
        read_catalog(broken)
    empty = tmp_path / "empty.xml"
    empty.write_text("<rss><channel><title>x</title></channel></rss>", encoding="utf-8")
    with pytest.raises(CatalogError, match="no <item>"):
        read_catalog(empty)


def test_a_semicolon_csv_from_european_excel(tmp_path: Path) -> None:
    f = tmp_path / "export.csv"
    f.write_text("title;category;price\nChemise lin;Vêtements > Chemises;29,90\nPull laine;Vêtements > Pulls;49,00\n",
                 encoding="utf-8")
    cat = read_catalog(f, require_labels=True)
    assert cat.frame["title"].tolist() == ["Chemise lin", "Pull laine"]
    assert cat.frame["price"].tolist() == ["29,90", "49,00"]
    f.write_text("title|category\nChemise lin|Vêtements\nPull|Vêtements\n", encoding="utf-8")
    assert read_catalog(f).frame["category"].tolist() == ["Vêtements", "Vêtements"]


def test_a_woocommerce_export_folds_variations_and_picks_the_deepest_category(tmp_path: Path) -> None:
    f = tmp_path / "wc-product-export.csv"
    f.write_text(
        "ID,Type,SKU,Name,Published,Short description,Description,Regular price,Categories,Tags,Images,Parent\n"
        '10,variable,HOOD,Hoodie,1,Warm,"<p>Cotton hoodie</p>",,"Clothing, Clothing > Hoodies",winter,'
        '"https://x/h1.jpg, https://x/h2.jpg",\n'
        "11,variation,HOOD-S,Hoodie - S,1,,,40,,,,id:10\n"
        "12,variation,HOOD-M,Hoodie - M,1,,,40,,,,id:10\n"
        '13,simple,CAP,Cap,1,Sunny,<p>Cap</p>,15,"Accessories > Hats",,https://x/c.jpg,\n', encoding="utf-8")
    cat = read_catalog(f, require_labels=True)
    assert cat.frame["id"].tolist() == ["10", "13"]
    assert cat.frame["category"].tolist() == ["Clothing > Hoodies", "Accessories > Hats"]
    assert cat.frame["image"].tolist() == ["https://x/h1.jpg", "https://x/c.jpg"]
    assert "2 variant / image rows folded" in cat.report.lines()[0]


PEN_SHOPIFY = "Office Supplies > Office Instruments > Writing & Drawing Instruments > Pens & Pencils > Pens > Fountain Pens"
PEN_GOOGLE = "Office Supplies > Office Instruments > Writing & Drawing Instruments > Pens & Pencils > Pens"
SPEAKERS = "Electronics > Audio > Audio Components > Speakers"
CAT_TOYS = "Animals & Pet Supplies > Pet Supplies > Cat Supplies > Cat Toys"
DOG_TOYS = "Animals & Pet Supplies > Pet Supplies > Dog Supplies > Dog Toys"


def _shop_with_categories(tmp_path: Path) -> Path:
    """The Shopify export with the pen's category empty, the speaker's and the mice's set by the merchant."""
    shop = tmp_path / "products_export.csv"
    shop.write_text(SHOPIFY.replace("Office Supplies > Office Instruments > Writing & Drawing Instruments > Pens", ""),
                    encoding="utf-8")
    return shop


def test_fill_never_changes_a_category_the_shop_has_set_unless_overwrite(tmp_path: Path) -> None:
    # the defect: --fill overwrote the merchant's categories (a feed with 25 of 31 right had 13 of 31 after)
    shop = _shop_with_categories(tmp_path)
    cat = read_catalog(shop)
    answers = [PEN_SHOPIFY, "Electronics > Audio", DOG_TOYS]  # fills / agrees (an ancestor) / disagrees
    report = write_back(shop, cat.frame["row"].tolist(), answers, tmp_path / "up.csv",
                        ids=cat.frame["id"].tolist(), confidences=[0.9, 0.8, 0.4])
    again = (tmp_path / "up.csv").read_text(encoding="utf-8").splitlines()
    original = shop.read_text(encoding="utf-8").splitlines()
    assert len(again) == len(original)
    back = read_catalog(tmp_path / "up.csv").frame
    assert back["category"].tolist() == [PEN_SHOPIFY, SPEAKERS, CAT_TOYS]
    assert back["description"].tolist() == cat.frame["description"].tolist()
    actions = {(c.id, c.column): c.action for c in report.changes}
    assert actions[("catnip-mice", "Product Category")] == "disagree"
    assert actions[("tide-mini-speaker", "Product Category")] == "kept"
    assert actions[("harbour-fountain-pen", "Product Category")] == "filled"
    summary = report.summary("changes.csv")
    assert "'Product Category': filled 1 empty, kept 2, 1 disagree (suggestions in changes.csv)" in summary
    report.write_csv(tmp_path / "changes.csv")
    with (tmp_path / "changes.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    mice = next(r for r in rows if r["id"] == "catnip-mice" and r["column"] == "Product Category")
    assert (mice["old"], mice["new"], mice["action"], mice["confidence"]) == (CAT_TOYS, DOG_TOYS, "disagree", "0.4000")
    # --overwrite replaces
    write_back(shop, cat.frame["row"].tolist(), answers, tmp_path / "up2.csv", overwrite=True)
    assert read_catalog(tmp_path / "up2.csv").frame["category"].tolist() == [PEN_SHOPIFY, SPEAKERS, DOG_TOYS]


def test_a_shopify_export_gets_shopify_paths_in_product_category_and_google_paths_in_the_google_column(
        tmp_path: Path) -> None:
    # the defect: Google paths went into Product Category (Shopify's taxonomy) and the Google column contradicted it
    shop = _shop_with_categories(tmp_path)
    rows = read_catalog(shop).frame["row"].tolist()
    report = write_back(shop, rows, [PEN_SHOPIFY, "", CAT_TOYS], tmp_path / "up.csv")
    with (tmp_path / "up.csv").open(encoding="utf-8") as f:
        recs = [r for r in csv.DictReader(f) if r["Title"]]
    # the Shopify answer is translated into Google's taxonomy by Shopify's mapping for the Google column
    assert [r["Google Shopping / Google Product Category"] for r in recs] == [PEN_GOOGLE, "", CAT_TOYS]
    assert [r["Product Category"] for r in recs] == [PEN_SHOPIFY, SPEAKERS, CAT_TOYS]
    assert report.columns == ["Product Category", "Google Shopping / Google Product Category"]
    # answered in Google's taxonomy: a path Shopify's taxonomy lacks never enters Product Category
    shirts = "Apparel & Accessories > Clothing > Shirts & Tops"
    assert Taxonomy.builtin("google").is_leaf(shirts) and shirts not in Taxonomy.builtin("shopify")
    report = write_back(shop, rows, [shirts, "", ""], tmp_path / "up3.csv")
    with (tmp_path / "up3.csv").open(encoding="utf-8") as f:
        first = next(csv.DictReader(f))
    assert first["Product Category"] == "" and first["Google Shopping / Google Product Category"] == shirts
    assert report.counts("Product Category")["not_in_taxonomy"] == 1
    # a path in neither taxonomy is written nowhere
    report = write_back(shop, rows, ["Office > Pens", "", ""], tmp_path / "up4.csv")
    assert report.counts()["not_in_taxonomy"] == 1 and report.columns == ["Product Category"]


def test_a_merchant_feed_keeps_its_categories_ids_included(tmp_path: Path) -> None:
    feed = tmp_path / "feed.xml"
    third = ("<item><g:id>CM-3</g:id><g:title>Catnip Mice</g:title><g:link>https://www.example.com/m</g:link>"
             "</item>\n</channel>")
    feed.write_text(MERCHANT_RSS.replace("</channel>", third), encoding="utf-8")
    rows = read_catalog(feed).frame["row"].tolist()
    # 212 is Shirts & Tops (an id): another category disagrees; an answer under Electronics > Audio agrees
    answers = ["Electronics > Audio", SPEAKERS, CAT_TOYS]
    report = write_back(feed, rows, answers, tmp_path / "feed-up.xml")
    text = (tmp_path / "feed-up.xml").read_text(encoding="utf-8")
    assert 'xmlns:g="http://base.google.com/ns/1.0"' in text and "<g:brand>Harbour</g:brand>" in text
    assert read_catalog(tmp_path / "feed-up.xml").frame["category"].tolist() == ["212", "Electronics > Audio", CAT_TOYS]
    assert [c.action for c in report.changes] == ["disagree", "kept", "filled"]
    write_back(feed, rows, answers, tmp_path / "feed-over.xml", overwrite=True)
    assert read_catalog(tmp_path / "feed-over.xml").frame["category"].tolist() == [
        "Electronics > Audio", "Electronics > Audio", CAT_TOYS]
    # a Shopify-only path goes in as its Google mapping
    write_back(feed, rows, ["", "", PEN_SHOPIFY], tmp_path / "feed-pen.xml")
    assert read_catalog(tmp_path / "feed-pen.xml").frame["category"].tolist()[2] == PEN_GOOGLE


def test_classify_fills_a_shop_export_for_upload(tmp_path: Path, capsys, monkeypatch) -> None:
    from .test_bad_inputs import run_cli

    shop = _shop_with_categories(tmp_path)
    tax = tmp_path / "taxonomy.txt"
    tax.write_text("\n".join([PEN_SHOPIFY, SPEAKERS, CAT_TOYS, DOG_TOYS]) + "\n", encoding="utf-8")
    code, out = run_cli(["classify", str(shop), "--taxonomy", str(tax), "--encoder", "minilm-en", "--fill",
                         str(tmp_path / "up.csv"), "--min-confidence", "0"], capsys, monkeypatch)
    assert code == 0, out
    said = " ".join(out.split())
    assert "'Product Category': filled 1 empty, kept 2" in said and "up.changes.csv" in said
    # the merchant's own categories are kept; only the empty cell is filled
    assert read_catalog(tmp_path / "up.csv").frame["category"].tolist() == [PEN_SHOPIFY, SPEAKERS, CAT_TOYS]
    with (tmp_path / "up.changes.csv").open(encoding="utf-8") as f:
        changes = list(csv.DictReader(f))
    assert {(r["id"], r["action"]) for r in changes if r["column"] == "Product Category"} >= {
        ("harbour-fountain-pen", "filled")}
    with (tmp_path / "up.csv").open(encoding="utf-8") as f:
        first = next(csv.DictReader(f))
    assert first["Google Shopping / Google Product Category"] == PEN_GOOGLE
    broken = tmp_path / "broken.csv"  # a malformed line: its rows would not line up with the file's records
    broken.write_text("title,category\nPen,\nSpeaker,x,extra\nMice,\n", encoding="utf-8")
    code, out = run_cli(["classify", str(broken), "--taxonomy", str(tax), "--encoder", "minilm-en", "--fill",
                         str(tmp_path / "b.csv")], capsys, monkeypatch)
    assert code == 1 and "has malformed lines" in out and not (tmp_path / "b.csv").exists()


def test_map_taxonomy_proposes_a_crosswalk_by_name_and_by_products(tmp_path: Path, capsys, monkeypatch) -> None:
    from .test_bad_inputs import run_cli

    ours = tmp_path / "ours.txt"
    ours.write_text("Clothing > T-Shirts\nFootwear > Sneakers\nKitchen > Mugs\n", encoding="utf-8")
    google = tmp_path / "google.txt"
    google.write_text(GOOGLE_TAXONOMY + "187 - Apparel & Accessories > Shoes\n"
                      "2169 - Home & Garden > Kitchen & Dining > Tableware > Drinkware > Mugs\n", encoding="utf-8")
    code, out = run_cli(["map-taxonomy", str(ours), str(google), "-o", str(tmp_path / "cw.csv")], capsys, monkeypatch)
    assert code == 0, out
    import csv

    rows = {r["source"]: r for r in csv.DictReader((tmp_path / "cw.csv").read_text(encoding="utf-8").splitlines())}
    assert rows["Footwear > Sneakers"]["target"] == "Apparel & Accessories > Shoes"
    assert rows["Kitchen > Mugs"]["target"].endswith("Drinkware > Mugs")
    assert rows["Clothing > T-Shirts"]["target"] == "Apparel & Accessories > Clothing > Shirts & Tops"
    assert all(r["by"] == "name" for r in rows.values())
    shop = tmp_path / "shop.csv"  # products labelled in our taxonomy: where they land decides
    shop.write_text("title,category\n" + "".join(f"{t},Footwear > Sneakers\n" for t in
                    ("Nike Air running shoes", "Adidas trainers white", "Puma sneakers men", "canvas shoes")),
                    encoding="utf-8")
    code, out = run_cli(["map-taxonomy", str(ours), str(google), "--catalog", str(shop), "-o", str(tmp_path / "cw2.csv")],
                        capsys, monkeypatch)
    assert code == 0, out
    rows = {r["source"]: r for r in csv.DictReader((tmp_path / "cw2.csv").read_text(encoding="utf-8").splitlines())}
    assert rows["Footwear > Sneakers"]["by"] == "products" and rows["Footwear > Sneakers"]["products"] == "4"
    assert rows["Footwear > Sneakers"]["target"] == "Apparel & Accessories > Shoes"


def test_the_field_delimiter_can_be_given(tmp_path: Path, capsys, monkeypatch) -> None:
    """Sniffing picks ``,`` for a semicolon file whose every line has the same commas; --delimiter says ';'."""
    from .test_bad_inputs import run_cli

    f = tmp_path / "export.csv"
    f.write_text("title, short;category, path\nShirt, blue;Tops, Shirts\nPants, red;Bottoms, Pants\n"
                 "Socks, grey;Bottoms, Socks\n", encoding="utf-8")
    assert list(read_catalog(f).frame.columns[:2]) != ["title", "category"]  # sniffed: ','
    cat = read_catalog(f, delimiter=";", mapping={"title": "title, short", "category": "category, path"})
    assert cat.frame["title"].tolist() == ["Shirt, blue", "Pants, red", "Socks, grey"]
    with pytest.raises(CatalogError, match="expected one character"):
        read_catalog(f, delimiter=";;")
    code, out = run_cli(["train", str(f), "-o", str(tmp_path / "m"), "--tier", "sparse", "--delimiter", ";", "--map",
                         "title=title, short", "--map", "category=category, path", "--test-size", "0"],
                        capsys, monkeypatch)
    assert code == 0 and "read 3 rows, kept 3" in out, out
    code, out = run_cli(["train", str(f), "-o", str(tmp_path / "m"), "--delimiter", "tab,"], capsys, monkeypatch)
    assert code == 1 and "--delimiter" in out


def test_map_taxonomy_applies_its_crosswalk_to_a_feed(tmp_path, capsys, monkeypatch) -> None:
    """Issue 36: `map-taxonomy` wrote a crosswalk CSV, but no command applied it to a feed. --apply FEED --fill OUT
    writes the feed with each product's category mapped (a new column for a plain CSV; empty cells only unless
    --overwrite) and a change report."""
    import pandas as pd

    from .test_bad_inputs import run_cli

    (tmp_path / "ours.txt").write_text("Clothing > Shirts\nClothing > Jeans\nKitchen > Knives\n", encoding="utf-8")
    (tmp_path / "theirs.txt").write_text("Apparel > Tops > Shirts\nApparel > Bottoms > Jeans\nHome > Kitchen > Knives\n",
                                         encoding="utf-8")
    (tmp_path / "shop.csv").write_text("id,title,category\n1,Linen shirt,Clothing > Shirts\n2,Blue jeans,Clothing > Jeans\n"
                                       "3,Wool socks,\n", encoding="utf-8")
    code, out = run_cli(["map-taxonomy", str(tmp_path / "ours.txt"), str(tmp_path / "theirs.txt"),
                         "--apply", str(tmp_path / "shop.csv"), "--fill", str(tmp_path / "mapped.csv")], capsys,
                        monkeypatch)
    assert code == 0, out
    got = pd.read_csv(tmp_path / "mapped.csv", dtype=str, keep_default_na=False)
    assert got["category"].tolist() == ["Clothing > Shirts", "Clothing > Jeans", ""]  # the shop's own, kept
    assert got["theirs_category"].tolist() == ["Apparel > Tops > Shirts", "Apparel > Bottoms > Jeans", ""]
    changes = pd.read_csv(tmp_path / "mapped.changes.csv", dtype=str, keep_default_na=False)
    assert changes["action"].tolist() == ["filled", "filled", "no_answer"]
    assert "filled 2 empty" in " ".join(out.split())


ATTRIBUTE_FEED = '''<?xml version="1.0"?>
<rss xmlns:g="http://base.google.com/ns/1.0" version="2.0">
<channel>
<title>Example shop</title>
<item><g:id>RUN-1</g:id><g:title>Nike Women's Navy Blue Running Shoes</g:title>
<g:link>https://www.example.com/run</g:link></item>
<item><g:id>JEAN-2</g:id><g:title>Levi's Men Black Slim Jeans</g:title><g:link>https://www.example.com/jeans</g:link>
<g:color>Schwarz</g:color><g:gender>male</g:gender></item>
<item><g:id>CHG-3</g:id><g:title>USB-C Laptop Charger 65W, white</g:title><g:link>https://www.example.com/chg</g:link>
<g:gender>Unisex</g:gender></item>
</channel>
</rss>
'''


def test_classify_attributes_fill_a_merchant_feed_where_empty_with_allowed_values(tmp_path: Path, capsys,
                                                                                  monkeypatch) -> None:
    """issue 37: `classify --attributes --fill` writes g:color / g:gender / g:age_group only where empty, and only
    values Merchant Center accepts; the merchant's own values are kept."""
    from xml.etree import ElementTree as ET

    from taxonomist.attributes import ATTRIBUTES

    from .test_bad_inputs import run_cli

    feed = tmp_path / "feed.xml"
    feed.write_text(ATTRIBUTE_FEED, encoding="utf-8")
    code, out = run_cli(["classify", str(feed), "--taxonomy", "google", "--encoder", "minilm-en", "--min-confidence",
                         "0", "--attributes", "color,gender,age_group", "--fill", str(tmp_path / "up.xml"),
                         "-o", str(tmp_path / "pred.csv")], capsys, monkeypatch)
    assert code == 0, out
    g = "{http://base.google.com/ns/1.0}"
    items = {it.find(f"{g}id").text: it for it in ET.parse(tmp_path / "up.xml").getroot().iter("item")}

    def field(item: str, name: str) -> str | None:
        el = items[item].find(f"{g}{name}")
        return None if el is None else el.text

    assert (field("RUN-1", "color"), field("RUN-1", "gender"), field("RUN-1", "age_group")) == ("Navy", "female", "adult")
    # the merchant's own cells are kept (Schwarz is black: no disagreement), the empty age group filled
    assert (field("JEAN-2", "color"), field("JEAN-2", "gender"), field("JEAN-2", "age_group")) == ("Schwarz", "male", "adult")
    # a charger has a colour; gender and age group are not attributes of electronics in Google's taxonomy
    assert (field("CHG-3", "color"), field("CHG-3", "gender"), field("CHG-3", "age_group")) == ("White", "Unisex", None)
    for it in items.values():
        for name in ("color", "gender", "age_group"):
            value = field(it.find(f"{g}id").text, name)
            assert value is None or value in ATTRIBUTES[name].values or value in ("Schwarz", "Unisex")
    with (tmp_path / "up.changes.csv").open(encoding="utf-8") as f:
        actions = {(r["id"], r["column"]): r["action"] for r in csv.DictReader(f)}
    assert actions[("JEAN-2", "g:color")] == "kept" and actions[("RUN-1", "g:gender")] == "filled"
    with (tmp_path / "pred.csv").open(encoding="utf-8") as f:
        pred = {r["id"]: r for r in csv.DictReader(f)}
    assert pred["RUN-1"]["attr_color"] == "Navy" and float(pred["RUN-1"]["attr_color_confidence"]) > 0.9
