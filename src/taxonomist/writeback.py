"""Predictions written back into the file they came from, in its own format, so it can be uploaded again
(``taxonomist predict CATALOGUE --fill OUT``): Shopify's ``Product Category``, Merchant Center's
``g:google_product_category``, WooCommerce's ``Categories``, else a ``category`` column."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from .exceptions import CatalogError
from .feeds import detect
from .tables import ALIASES, column_key, sniff_delimiter

__all__ = ["write_back"]

_G = "http://base.google.com/ns/1.0"
_ATOM = "http://www.w3.org/2005/Atom"
_CATEGORY_COLUMN = {"shopify": "Product Category", "merchant": "google_product_category", "woocommerce": "Categories"}


def write_back(source: Path, rows: Sequence[int], categories: Sequence[str], out: Path) -> str:
    """Write ``source`` again as ``out``, in the same format, with each product's category filled in: Shopify's
    ``Product Category``, Merchant Center's ``google_product_category`` (XML or TSV), WooCommerce's ``Categories``,
    else a ``category`` column (added when missing). ``rows`` are the products' source rows (``Catalog.frame["row"]``:
    data rows counted from 1, a feed's items in order); an empty category leaves the cell as it was. Returns the
    column (or XML field) written. Everything else in the file is kept as it was read."""
    source, out = Path(source), Path(out)
    if len(rows) != len(categories):
        raise ValueError(f"expected one category per row: {len(rows)} rows, {len(categories)} categories")
    if source.suffix.lower() in (".xml", ".rss", ".atom"):
        return _write_back_xml(source, rows, categories, out)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as e:
        raise CatalogError(f"cannot write {source.name} back: it must be a readable UTF-8 file ({e})") from None
    delimiter = "\t" if source.suffix.lower() in (".tsv", ".tab") else sniff_delimiter(text)
    records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    if not records:
        raise CatalogError(f"cannot write {source.name} back: it is empty")
    header = records[0]
    fmt = detect(header)
    plain = [h.removeprefix("g:") for h in header]
    column = _CATEGORY_COLUMN.get(fmt or "", "category")
    if column in plain:
        j = plain.index(column)
    else:
        named = [i for i, h in enumerate(header) if column_key(h) in ALIASES["category"]] if fmt is None else []
        if named:
            j = named[0]
        else:
            header.append(column)
            j = len(header) - 1
    column = header[j]
    width = len(header)
    for r, c in zip(rows, categories, strict=True):
        if not c:
            continue
        if not 0 < int(r) < len(records) or len(records[int(r)]) > width:
            raise CatalogError(f"cannot write {source.name} back: row {r} is not a well-formed row of the file; "
                               "fix its malformed lines first (taxonomist prints them when it reads the file)")
        rec = records[int(r)]
        rec.extend([""] * (width - len(rec)))
        rec[j] = c
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerows(records)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(buf.getvalue(), encoding="utf-8")
    return column


def _write_back_xml(source: Path, rows: Sequence[int], categories: Sequence[str], out: Path) -> str:
    from xml.etree import ElementTree as ET  # serialising only; the bytes were parsed by defusedxml

    from defusedxml import ElementTree as SafeET

    try:
        tree = SafeET.parse(source)
    except Exception as e:  # defusedxml's refusals and parse errors
        raise CatalogError(f"cannot write {source.name} back: {type(e).__name__}: {e}") from None
    root = tree.getroot()
    ET.register_namespace("g", _G)
    if root.tag.startswith("{" + _ATOM + "}"):
        ET.register_namespace("", _ATOM)
    items = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] in ("item", "entry")]
    for r, c in zip(rows, categories, strict=True):
        if not c:
            continue
        if not 0 < int(r) <= len(items):
            raise CatalogError(f"cannot write {source.name} back: it has no item {r}")
        item = items[int(r) - 1]
        field = next((el for el in item if el.tag.rsplit("}", 1)[-1] == "google_product_category"), None)
        if field is None:
            field = ET.SubElement(item, f"{{{_G}}}google_product_category")
        field.text = c
    out.parent.mkdir(parents=True, exist_ok=True)
    tree.write(out, encoding="utf-8", xml_declaration=True)
    return "g:google_product_category"
