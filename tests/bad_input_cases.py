"""Bad inputs a user may hand taxonomist, each with the CLI call, the exit code and the message expected.

Used by tests/test_bad_inputs.py and by scripts/bad_inputs_table.py, which writes docs/bad-inputs.md from the
real messages.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GOOD = "id,title,category\n" + "".join(
    f"{2 * i + j},{t} {i},{c}\n" for i in range(12) for j, (t, c) in enumerate( (("Levis Men Jeans", "Apparel > Jeans"), ("Casio Watch", "Accessories > Watches")))
)


@dataclass
class Case:
    name: str
    what: str
    setup: Callable[[Path], list[str]]
    code: int
    expect: str  # a substring of the output


def _write(p: Path, text: str, enc: str = "utf-8") -> Path:
    p.write_bytes(text.encode(enc))
    return p


def _train(text: str, *extra: str, name: str = "c.csv", enc: str = "utf-8") -> Callable[[Path], list[str]]:
    """``taxonomist train`` on a file holding ``text``, with ``extra`` options."""
    return lambda t: ["train", str(_write(t / name, text, enc)), "-o", str(t / "m"), "--tier", "sparse", *extra]


def _model(tmp: Path) -> Path:
    import pandas as pd

    import taxonomist as tx

    d = tmp / "model"
    if not d.exists():
        tx.TaxonomyClassifier(tier="sparse").fit(pd.read_csv(_write(tmp / "good.csv", GOOD), dtype=str)).save(d)
    return d


class _Boom:
    def __reduce__(self):  # noqa: ANN204
        return (print, ("pickle executed",))


def _tampered(tmp: Path) -> list[str]:
    d = _model(tmp)
    with (d / "classes.json").open("a") as f:
        f.write(" ")
    return ["predict", str(d), "--text", "jeans"]


def _newer(tmp: Path) -> list[str]:
    d = _model(tmp)
    m = json.loads((d / "manifest.json").read_text())
    m["format_version"] = 99
    (d / "manifest.json").write_text(json.dumps(m))
    return ["predict", str(d), "--text", "jeans"]


def _pickled(tmp: Path) -> list[str]:
    d = _model(tmp)
    (d / "model.pkl").write_bytes(pickle.dumps(_Boom()))
    return ["predict", str(d), "--text", "jeans"]


CASES = [
    Case("malformed_csv_line", "a CSV line with an extra field (unquoted comma)",
         _train(GOOD + "99,Red, Tee,Apparel > Tees\n"),
         0, "1 malformed lines (wrong number of fields or invalid JSON) [skipped] e.g. row 25: 'expected 3 fields, found 4"),
    Case("wrong_encoding_forced", "a GB18030 file read with --encoding utf-8",
         _train("标题,类目\n华为手机,数码 > 手机\n", "--encoding", "utf-8", enc="gb18030"),
         1, "c.csv is not valid utf-8 (invalid start byte at byte 0); check the file's encoding"),
    Case("unknown_encoding", "an --encoding Python does not know",
         _train(GOOD, "--encoding", "klingon"),
         1, "encoding 'klingon' is not an encoding Python knows (try utf-8, gb18030, cp1252) (command line: --encoding NAME)"),
    Case("binary_file", "a binary file named .csv",
         _train("\x00\x01\x02PK\x00" * 20),
         1, "c.csv looks binary (NUL bytes), not a text table"),
    Case("old_excel_workbook", "an Excel 97-2003 workbook (.xls)",
         lambda t: ["train", str(_write(t / "shop.xls", "\xd0\xcf\x11\xe0" + "\x00" * 64, "latin-1")),
                    "-o", str(t / "m"), "--tier", "sparse"],
         1, "taxonomist reads Excel workbooks in the .xlsx format, not .xls files; open it in a spreadsheet and save "
            "it as .xlsx or CSV"),
    Case("missing_title_column", "no column that could be the title",
         _train("sku,label\n1,A > B\n"),
         1, "expected a title column (one of ['title', 'name', 'product'"),
    Case("missing_category_column", "training data without any label column",
         _train("id,title\n1,Jeans\n"),
         1, "expected a category column (one of ['category', 'category_path'"),
    Case("map_unknown_column", "--map naming a column the file does not have",
         _train(GOOD, "--map", "title=productDisplayName"),
         1, "mapping title -> productDisplayName: expected a column 'productDisplayName' in c.csv, but the columns are ['id', 'title', 'category'] (command line: --map FIELD=COLUMN)"),
    Case("map_bad_syntax", "--map without FIELD=COLUMN",
         _train(GOOD, "--map", "title"),
         1, "--map expects FIELD=COLUMN (e.g. --map title=productDisplayName), got 'title'"),
    Case("label_columns_missing", "--label-columns naming absent columns",
         _train(GOOD, "--label-columns", "masterCategory,subCategory"),
         1, "label columns: expected columns ['masterCategory', 'subCategory'] in c.csv"),
    Case("empty_titles", "rows with empty titles and a missing label",
         _train(GOOD + "50,,Apparel > Jeans\n51,Tee,\n"),
         0, "1 rows with an empty title [skipped] e.g. row 25"),
    Case("huge_title", "a 1 MB title",
         _train(GOOD + "60," + "x" * 1_000_000 + ",Apparel > Jeans\n"),
         0, "rows whose title was longer than 2,000 or description longer than 20,000 characters (truncated, kept)"),
    Case("empty_file", "an empty file",
         _train(""),
         1, "c.csv is empty: expected a header row and at least one product row"),
    Case("missing_file", "a catalogue path that does not exist",
         lambda t: ["train", str(t / "nope.csv"), "-o", str(t / "m")],
         1, "nope.csv' does not exist"),
    Case("unsupported_type", "a Word document",
         _train("PK", name="c.docx"),
         1, "unsupported file type '.docx'; expected .csv, .tsv, .jsonl (.ndjson/.json), .parquet, .xlsx or a Merchant "
            "Center .xml feed"),
    Case("damaged_workbook", "a file named .xlsx that is not a workbook",
         _train("PK", name="c.xlsx"),
         1, "c.xlsx is not a readable Excel workbook"),
    Case("xml_entities", "a Merchant Center XML feed that declares entities (an XML bomb)",
         _train('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
                '<rss><channel><item><title>&b;</title></item></channel></rss>', name="feed.xml"),
         1, "refused an XML feed that uses entities or DTDs"),
    Case("duplicate_header", "a header that repeats a column name",
         _train("title,title,category\na,b,C > D\n"),
         1, "the header repeats the column names ['title']"),
    Case("with_columns_mismatch", "--with-columns file with a different row count",
         lambda t: _train(GOOD, "--with-columns", str(_write(t / "x.csv", "brand\nLevis\n")))(t),
         1, "with_columns x.csv: expected 24 rows to pair row by row with c.csv, but it has 1 readable rows"),
    Case("strict_rejects", "--strict with one bad row",
         _train(GOOD + "50,,Apparel > Jeans\n", "--strict"),
         1, "strict mode: the catalogue has problems, and strict=True rejects it instead of skipping rows"),
    Case("single_category", "training data with one category only",
         _train("title,category\n" + "".join(f"Jeans {i},A > J\n" for i in range(30))),
         1, "expected at least 2 categories to learn, found 1"),
    Case("unknown_labels_taxonomy", "labels that are not in the taxonomy file (taxonomy check)",
         lambda t: ["taxonomy", "check", str(_write(t / "tax.txt", "1 - Apparel\n2 - Apparel > Jeans\n")), str(_write(t / "c.csv", GOOD))],
         1, "1 unknown categories (12 of 24 products)"),
    Case("bad_taxonomy_line", "a Google taxonomy file with a broken line",
         lambda t: ["taxonomy", "show", str(_write(t / "tax.txt", "1 - Apparel\n2 Apparel > Jeans\n"))],
         1, "tax.txt line 2: expected a google taxonomy line like '123 - A > B', but found '2 Apparel > Jeans'"),
    Case("tampered_bundle", "a bundle file changed after saving", _tampered,
         1, "classes.json in"),
    Case("newer_bundle", "a bundle written by a newer format version", _newer,
         1, "has bundle format version 99, but this taxonomist reads versions 1 to 1; upgrade taxonomist"),
    Case("pickle_in_bundle", "a pickle file slipped into a bundle", _pickled,
         1, "contains files the manifest does not list: ['model.pkl']"),
    Case("missing_bundle", "predict with a model folder that does not exist",
         lambda t: ["predict", str(t / "nomodel"), "--text", "x"],
         1, "expected a model bundle folder at"),
    Case("predict_no_input", "predict with neither a catalogue nor --text",
         lambda t: ["predict", str(_model(t))],
         1, "give either a CATALOG file or one or more --text titles"),
    Case("bad_output_type", "predict to an unsupported output type",
         lambda t: ["predict", str(_model(t)), "--text", "jeans", "-o", str(t / "out.xlsx")],
         1, "unsupported output type '.xlsx'; use .csv, .jsonl or .parquet"),
    *(Case(f"min_confidence_{name}", f"a back-off threshold of {value} (not a probability)",
           lambda t, value=value: ["predict", str(_model(t)), "--text", "jeans", "--min-confidence", value],
           2, "expected a confidence from 0 to 1") for name, value in (("inf", "inf"), ("nan", "nan"), ("negative", "-1"))),
]
