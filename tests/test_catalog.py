from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import taxonomist as tx
from taxonomist import CatalogError
from taxonomist.catalog import MAX_TITLE_CHARS, title_groups

CANON = "id,title,description,category,image\n1,Levis Men Jeans,Slim fit,Apparel > Jeans,\n2,Nike Tee,,Apparel > Tshirts,\n"


def test_canonical_csv_needs_no_options(tmp_path) -> None:
    f = tmp_path / "p.csv"
    f.write_text(CANON, encoding="utf-8")
    cat = tx.read_catalog(f, require_labels=True)
    assert cat.frame[["id", "title", "description", "category"]].values.tolist() == [
        ["1", "Levis Men Jeans", "Slim fit", "Apparel > Jeans"], ["2", "Nike Tee", "", "Apparel > Tshirts"]]
    assert cat.report.ok and cat.labels[0] == ("Apparel", "Jeans")


def test_tsv_jsonl_parquet_and_gzip(tmp_path) -> None:
    df = pd.DataFrame({"sku": ["a", "b"], "name": ["Blue Jeans", "Red Tee"], "path": ["A > J", "A > T"], "brand": ["L", "N"]})
    (tmp_path / "p.tsv").write_text(df.to_csv(sep="\t", index=False), encoding="utf-8")
    df.to_json(tmp_path / "p.jsonl", orient="records", lines=True)
    df.to_parquet(tmp_path / "p.parquet")
    df.to_csv(tmp_path / "p.csv.gz", index=False)
    for name in ("p.tsv", "p.jsonl", "p.parquet", "p.csv.gz"):
        cat = tx.read_catalog(tmp_path / name, require_labels=True)
        assert cat.frame["id"].tolist() == ["a", "b"], name
        assert cat.frame["title"].tolist() == ["Blue Jeans", "Red Tee"], name
        assert cat.frame["category"].tolist() == ["A > J", "A > T"], name
        assert cat.attribute_columns == ["brand"], name


def test_map_label_columns_and_with_columns(tmp_path) -> None:
    (tmp_path / "styles.csv").write_text("id,gender,masterCategory,subCategory,articleType\n1,Men,Apparel,Topwear,Shirts\n"
                                         "2,Women,Footwear,Shoes,Heels\n", encoding="utf-8")
    (tmp_path / "styles_text.csv").write_text("productDisplayName\nArrow Men Shirt\nCatwalk Women Heels\n", encoding="utf-8")
    cat = tx.read_catalog(tmp_path / "styles.csv", with_columns=[tmp_path / "styles_text.csv"],
                          mapping={"title": "productDisplayName"},
                          label_columns=["masterCategory", "subCategory", "articleType"], require_labels=True)
    assert cat.frame["category"].tolist() == ["Apparel > Topwear > Shirts", "Footwear > Shoes > Heels"]
    assert cat.frame["title"].tolist() == ["Arrow Men Shirt", "Catwalk Women Heels"]
    assert cat.attribute_columns == ["gender"]


def test_custom_separator(tmp_path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("title,category\nKnife,Home >> Kitchen >> Knives\n", encoding="utf-8")
    assert tx.read_catalog(f, sep=">>").labels == [("Home", "Kitchen", "Knives")]
    f.write_text("title,category\nKnife,Home/Kitchen/Knives\n", encoding="utf-8")
    assert tx.read_catalog(f, sep="/").labels == [("Home", "Kitchen", "Knives")]


def test_bom_gb18030_and_no_header(tmp_path) -> None:
    f = tmp_path / "bom.csv"
    f.write_bytes("\ufefftitle,category\n小米手机,数码 > 手机\n".encode())
    assert tx.read_catalog(f).frame["title"].tolist() == ["小米手机"]
    g = tmp_path / "gbk.csv"
    g.write_bytes("标题,类目\n华为 Mate 60 手机,数码 > 手机\n美的 电饭煲 4升,家电 > 厨房电器\n".encode("gb18030"))
    cat = tx.read_catalog(g, require_labels=True)
    assert cat.frame["title"].tolist() == ["华为 Mate 60 手机", "美的 电饭煲 4升"]
    assert cat.labels[1] == ("家电", "厨房电器")
    h = tmp_path / "UserBehavior.csv"
    h.write_text("1,2268318,2520377,pv\n1,2333346,2520771,buy\n", encoding="utf-8")
    cat = tx.read_catalog(h, header=False, mapping={"id": "1", "title": "1", "category": "2"}) if False else \
        tx.read_catalog(h, columns=["user", "title", "category", "event"])
    assert cat.frame["title"].tolist() == ["2268318", "2333346"] and cat.attribute_columns == ["user", "event"]
    cat = tx.read_catalog(h, header=False, mapping={"title": "1", "category": "2"})
    assert cat.frame["category"].tolist() == ["2520377", "2520771"]


def test_validation_reports_and_skips(tmp_path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("id,title,category\n1,Jeans,A > J\n2,,A > J\n3,Tee,\n1,Jeans,A > J\n4,Tee,A > T,EXTRA\n5,Shirt,A > S\n",
                 encoding="utf-8")
    cat = tx.read_catalog(f, require_labels=True)
    rep = cat.report
    assert cat.frame["id"].tolist() == ["1", "5"]
    assert rep.issues["empty_title"].count == 1 and rep.issues["empty_title"].examples[0][0] == 2
    assert rep.issues["missing_label"].count == 1 and rep.issues["missing_label"].examples[0][0] == 3
    assert rep.issues["duplicate"].count == 1 and rep.issues["duplicate"].examples[0][0] == 4
    assert rep.issues["malformed_line"].count == 1 and rep.issues["malformed_line"].examples[0][0] == 5
    assert rep.n_read == 6 and rep.n_kept == 2  # 5 well-formed rows and the malformed one: read = kept + skipped
    assert "rows with an empty title [skipped] e.g. row 2" in rep.summary()
    with pytest.raises(CatalogError, match="strict mode"):
        tx.read_catalog(f, require_labels=True, strict=True)


def test_long_title_is_truncated_and_reported(tmp_path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("title,category\n" + "x" * 1_000_000 + ",A > B\nok,A > C\n", encoding="utf-8")
    cat = tx.read_catalog(f)
    assert len(cat.frame["title"][0]) == MAX_TITLE_CHARS and cat.report.issues["long_text"].count == 1


def test_one_non_utf8_line_is_repaired_and_reported_not_the_whole_file_garbled(tmp_path) -> None:
    """Regression: a UTF-8 CSV with one cp1252 line was decoded whole as iso8859_10 ("男士 修身 T恤" became
    mojibake) while the CLI said "skipped 0"."""
    rows = [f"{i},男士 修身 T恤 {i},Apparel > Tops" for i in range(30)]
    raw = ("id,title,category\n" + "\n".join(rows) + "\n").encode("utf-8")
    raw += "30,Café crème mug,Home > Mugs\n".encode("cp1252")
    (tmp_path / "mixed.csv").write_bytes(raw)
    cat = tx.read_catalog(tmp_path / "mixed.csv")
    assert cat.frame["title"].iloc[0] == "男士 修身 T恤 0"
    assert cat.frame["title"].iloc[-1] == "Café crème mug" and len(cat) == 31
    assert cat.report.issues["not_utf8"].count == 1 and cat.report.issues["not_utf8"].examples[0][0] == 31
    assert any("not UTF-8" in line for line in cat.report.lines())
    with pytest.raises(CatalogError, match="not UTF-8"):
        tx.read_catalog(tmp_path / "mixed.csv", strict=True)


def test_an_unclosed_quote_does_not_swallow_the_next_products(tmp_path) -> None:
    """Regression: an unclosed quote made the next product part of a description: "read 40 rows ... skipped 0"
    for 41 products."""
    lines = ["id,title,description,category", '1,Nike shoe,"size 9 running,Shoes', "2,Puma shirt,cotton,Tops",
             '3,Adidas cap,"a cap, "",Caps', "4,Levis jeans,denim,Jeans", '5,Mug,"two\nlines",Home']
    (tmp_path / "q.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cat = tx.read_catalog(tmp_path / "q.csv")
    assert set(cat.frame["id"]) >= {"2", "4", "5"}  # the rows after the bad quotes are products again
    assert cat.frame.set_index("id").loc["5", "description"] == "two\nlines"  # a real multi-line field stays
    assert cat.report.n_read == 5 and cat.report.issues["malformed_line"].count == 2  # read = kept + skipped
    assert "unclosed quote" in cat.report.summary()


def test_parquet_list_binary_and_struct_columns_become_text(tmp_path) -> None:
    """Regression: Parquet list / binary / struct columns were read as Python reprs ("['Apparel' 'Innerwear']"
    as a label: accuracy 0.0 and no warning)."""
    pd.DataFrame({"title": [b"Levis jeans", b"Casio watch"], "category": [["Apparel", "Jeans"], ["Accessories", "Watches"]],
                  "tags": [["blue", "denim"], []], "specs": [{"size": "32"}, {"size": None}]}).to_parquet(tmp_path / "n.parquet")
    cat = tx.read_catalog(tmp_path / "n.parquet")
    assert cat.frame["title"].tolist() == ["Levis jeans", "Casio watch"]
    assert cat.frame["category"].tolist() == ["Apparel > Jeans", "Accessories > Watches"]
    assert cat.frame["tags"].tolist() == ["blue, denim", ""]
    assert cat.frame["specs"].iloc[0] == '{"size": "32"}'


def test_zip_is_read_and_a_truncated_gzip_says_so(tmp_path) -> None:
    import gzip
    import zipfile

    text = "title,category\nLevis jeans,A > J\nCasio watch,A > W\n"
    with zipfile.ZipFile(tmp_path / "c.csv.zip", "w") as z:
        z.writestr("export/c.csv", text)
    assert tx.read_catalog(tmp_path / "c.csv.zip").frame["title"].tolist() == ["Levis jeans", "Casio watch"]
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as z:
        z.writestr("a.csv", text)
        z.writestr("b.csv", text)
    with pytest.raises(CatalogError, match="holds 2 tables"):
        tx.read_catalog(tmp_path / "two.zip")
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(text.encode() * 50)[:-30])
    with pytest.raises(CatalogError, match="truncated or damaged"):
        tx.read_catalog(tmp_path / "t.csv.gz")


def test_utf16_without_a_bom_is_read(tmp_path) -> None:
    text = "title,category\nLevis jeans,A > J\n男士 T恤,A > T\n"
    for enc in ("utf-16-le", "utf-16-be"):
        (tmp_path / "u.csv").write_bytes(text.encode(enc))
        assert tx.read_catalog(tmp_path / "u.csv").frame["title"].tolist() == ["Levis jeans", "男士 T恤"], enc


def test_unknown_labels_against_taxonomy(tmp_path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("title,category\nJeans,A > J\nHat,A > H\n", encoding="utf-8")
    cat = tx.read_catalog(f, taxonomy=tx.Taxonomy.from_paths(["A > J"]))
    assert cat.frame["title"].tolist() == ["Jeans"] and cat.report.issues["unknown_label"].count == 1


def test_jsonl_bad_line_reported(tmp_path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"title": "a", "category": "X > Y"}) + "\n{not json\n" + json.dumps([1]) + "\n", encoding="utf-8")
    cat = tx.read_catalog(f)
    assert len(cat) == 1 and cat.report.issues["malformed_line"].count == 2


def test_split_is_grouped_seeded_and_stratified(sample_catalog) -> None:
    train, test = tx.split_catalog(sample_catalog, test_size=0.2, seed=3)
    g_train = set(title_groups(train.titles))
    norm = lambda c: {t.lower().strip() for t in c.titles}  # noqa: E731
    from taxonomist.text import normalize_for_sparse

    assert not {normalize_for_sparse(t) for t in train.titles} & {normalize_for_sparse(t) for t in test.titles}
    assert len(g_train) > 0 and norm(train) and norm(test)
    assert 0.12 < len(test) / len(sample_catalog) < 0.28
    # stratified: the big leaves are in both parts in about the same share
    share = test.frame["category"].value_counts() / sample_catalog.frame["category"].value_counts()
    big = sample_catalog.frame["category"].value_counts().index[:10]
    assert np.all((share[big] > 0.08) & (share[big] < 0.35))
    again = tx.split_catalog(sample_catalog, test_size=0.2, seed=3)[1]
    assert again.frame["id"].tolist() == test.frame["id"].tolist()
    other = tx.split_catalog(sample_catalog, test_size=0.2, seed=4)[1]
    assert other.frame["id"].tolist() != test.frame["id"].tolist()
    # every test leaf with one title group only stays in training
    assert set(test.frame["category"]) <= set(train.frame["category"])


def test_the_reference_lists_every_column_name_recognised() -> None:
    from pathlib import Path

    from taxonomist.catalog import ALIASES

    readme = (Path(__file__).parents[1] / "docs" / "reference.md").read_text(encoding="utf-8")
    for field, names in ALIASES.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{field}` |"))
        assert row == f"| `{field}` | {', '.join(names)} |"


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.bz2", ".csv.xz", ".zip"])
def test_a_compressed_catalogue_that_inflates_past_the_limit_is_refused(tmp_path, monkeypatch, suffix) -> None:
    """Issue 34 row 5: a 14.5 MB .zip inflated its 2 GB member in memory (3.5 GB RSS); every compression took
    the same unbounded path."""
    import bz2
    import gzip
    import lzma
    import zipfile

    body = b"title,category\n" + b"".join(b"x" * 1000 + b"%d,A\n" % i for i in range(3000))  # 3 MB, a few kB packed
    f = tmp_path / f"bomb{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("bomb.csv", body)
    else:
        f.write_bytes({".csv.gz": gzip.compress, ".csv.bz2": bz2.compress, ".csv.xz": lzma.compress}[suffix](body))
    monkeypatch.setenv("TAXONOMIST_MAX_DECOMPRESSED_BYTES", str(1 << 20))
    with pytest.raises(CatalogError, match="more than 1,048,576 bytes"):
        tx.read_catalog(f)
    monkeypatch.setenv("TAXONOMIST_MAX_DECOMPRESSED_BYTES", str(8 << 20))
    assert len(tx.read_catalog(f)) == 3000


def test_a_deeply_nested_json_line_is_one_bad_line(tmp_path) -> None:
    """Issue 34 row 9: one 200,000-deep line raised RecursionError and aborted the whole file."""
    f = tmp_path / "p.jsonl"
    f.write_text('{"title": "Linen shirt", "category": "Apparel"}\n'
                 + '{"title": ' + "[" * 200_000 + "]" * 200_000 + "}\n"
                 + '{"title": "Leather belt", "category": "Accessories"}\n', encoding="utf-8")
    cat = tx.read_catalog(f)
    assert cat.frame["title"].tolist() == ["Linen shirt", "Leather belt"]
    assert cat.report.issue("malformed_line").count == 1
    g = tmp_path / "a.json"  # the same inside a JSON array: the file cannot be read, and says so
    g.write_text("[" + "[" * 200_000 + "]" * 200_000 + "]", encoding="utf-8")
    with pytest.raises(CatalogError, match="nested"):
        tx.read_catalog(g)


def test_excel_workbooks_are_read_first_sheet_or_the_one_named(tmp_path, capsys, monkeypatch) -> None:
    """Issue 36: a shop's .xlsx export was refused as "looks binary (NUL bytes), not a text table"."""
    pytest.importorskip("openpyxl")
    import pandas as pd

    from .test_bad_inputs import run_cli

    book = tmp_path / "shop.xlsx"
    with pd.ExcelWriter(book, engine="openpyxl") as w:
        pd.DataFrame({"Handle": ["a", "b"], "Title": ["Linen shirt", "Oak table"], "Price": [12.5, 300]}).to_excel(
            w, sheet_name="Products", index=False)
        pd.DataFrame({"Title": ["Wool socks"], "Category": ["Apparel > Socks"]}).to_excel(w, sheet_name="Other",
                                                                                           index=False)
    cat = tx.read_catalog(book)
    assert cat.titles == ["Linen shirt", "Oak table"] and cat.frame["Price"].tolist() == ["12.5", "300"]
    assert any("sheet 'Products'" in line and "Other" in line for line in cat.report.lines())
    assert tx.read_catalog(book, sheet="Other").titles == ["Wool socks"]
    with pytest.raises(tx.CatalogError, match=r"no sheet 'Nope'.*Products, Other"):
        tx.read_catalog(book, sheet="Nope")
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    with pytest.raises(tx.CatalogError, match=r"\.xls.*save it as \.xlsx or CSV"):
        tx.read_catalog(tmp_path / "old.xls")
    model = tx.TaxonomyClassifier(tier="sparse").fit(pd.DataFrame(
        {"title": ["Linen shirt", "Wool socks", "Oak table", "Pine chair"],
         "category": ["Apparel > Shirts", "Apparel > Socks", "Home > Tables", "Home > Chairs"]}))
    model.save(tmp_path / "m")
    code, out = run_cli(["predict", str(tmp_path / "m"), str(book), "--sheet", "Other", "-o",
                         str(tmp_path / "out.csv")], capsys, monkeypatch)
    assert code == 0, out
    assert pd.read_csv(tmp_path / "out.csv")["title"].tolist() == ["Wool socks"]


@pytest.mark.parametrize(("text", "enc"), [
    ("Crème brûlée £12", "cp1252"),  # issue 36: was read as cp1250, "Crčme brűlée Ł12"
    ("Café au lait, crêpe", "cp1252"),
    ("Zażółć gęślą jaźń", "cp1250"),  # Polish: cp1252 would read "Za¿ó³æ"
    ("Příliš žluťoučký kůň", "cp1250"),
])
def test_legacy_encodings_prefer_western_european_unless_the_text_says_otherwise(tmp_path, text, enc) -> None:
    f = tmp_path / "shop.csv"
    f.write_bytes(f'id,title,category\n1,"{text}",Food\n2,"{text} 2",Food\n'.encode(enc))
    cat = tx.read_catalog(f)
    assert cat.titles[0] == text
    assert any(enc in note and "--encoding" in note for note in cat.report.notes), cat.report.notes


def test_the_counts_add_up_with_malformed_lines(tmp_path) -> None:
    """Issue 36: "read 1 rows, kept 1, skipped 0", then "3 malformed lines [skipped]": 3 of 4 rows lost while the
    first line said none was. Malformed lines are rows read and skipped: read = kept + skipped."""
    f = tmp_path / "broken.csv"
    f.write_text("id,title,category\n1,Linen shirt,Apparel\n2,Oak, table,Home,x\n3,Pine chair,Home\n"
                 "4,Wool socks,Apparel,extra\n", encoding="utf-8")
    rep = tx.read_catalog(f).report
    assert rep.lines()[0] == "broken.csv: read 4 rows, kept 2, skipped 2"
    assert rep.n_read == rep.n_kept + sum(i.count for i in rep.issues.values() if i.skipped)


@pytest.mark.parametrize("column", ["Produktname", "Titel", "商品名称", "nom", "Nombre del producto", "Titolo"])
def test_title_columns_named_in_other_languages_are_recognised(tmp_path, column) -> None:
    """Issue 36: a column named "Produktname" was refused (no title column)."""
    f = tmp_path / "shop.csv"
    f.write_text(f"id,{column},Preis\n1,Leinenhemd,12\n2,Eichentisch,300\n", encoding="utf-8")
    assert tx.read_catalog(f).titles == ["Leinenhemd", "Eichentisch"]


def test_a_title_column_that_is_close_gets_a_did_you_mean_and_cli_first_advice(tmp_path, capsys, monkeypatch) -> None:
    """Issue 36: the error gave Python syntax (mapping={'title': …}) before the CLI flag, and no suggestion."""
    from .test_bad_inputs import run_cli

    f = tmp_path / "shop.csv"
    f.write_text("sku,Produkt_Titel,Preis\n1,Leinenhemd,12\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"did you mean 'Produkt_Titel'.*mapping=\{'title': 'Produkt_Titel'\}"):
        tx.read_catalog(f)
    code, out = run_cli(["train", str(f), "-o", str(tmp_path / "m")], capsys, monkeypatch)
    flat = " ".join(out.split())
    assert code == 1 and "did you mean 'Produkt_Titel'" in flat and "--map title=Produkt_Titel" in flat
    assert "mapping=" not in flat and "header=False" not in flat  # the command line's words, not Python's
