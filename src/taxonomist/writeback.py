"""Predictions written back into the file they came from, in its own format, so it can be uploaded again
(``taxonomist predict|classify CATALOGUE --fill OUT``) -- without damaging what the shop already has.

- **Empty cells only.** A category the shop has already set is kept; where the answer disagrees with it, the
  answer is a suggestion in the change report. ``overwrite=True`` (``--overwrite``) replaces them.
- **Each taxonomy in its own column.** A Shopify export's ``Product Category`` takes Shopify taxonomy paths and its
  ``Google Shopping / Google Product Category`` Google paths; a Merchant Center feed's ``google_product_category``
  Google paths. A Shopify answer is translated into Google's taxonomy with Shopify's published mapping
  (:func:`~taxonomist.taxonomy.shopify_to_google`); a path that is not a category of a column's taxonomy is never
  written there (``not_in_taxonomy`` in the report). WooCommerce's ``Categories`` and a plain ``category`` column take
  the answer as it is (the shop's own taxonomy).
- **A change report**: one line per product and column -- old value, answer, confidence and what was done
  (:data:`ACTIONS`) -- written beside the output by the CLI.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .exceptions import CatalogError
from .feeds import detect
from .tables import ALIASES, column_key, sniff_delimiter, spreadsheet_safe
from .taxonomy import CategoryPath, Taxonomy, category_of, format_path, parse_path

__all__ = ["ACTIONS", "ATTRIBUTE_COLUMNS", "Change", "FillReport", "write_back"]

_G = "http://base.google.com/ns/1.0"
_ATOM = "http://www.w3.org/2005/Atom"
SHOPIFY_GOOGLE_COLUMN = "Google Shopping / Google Product Category"

ACTIONS = {
    "filled": "the cell was empty and now holds the answer",
    "kept": "the cell already held this category, an ancestor or a descendant of it: kept",
    "disagree": "the cell held another category: kept, the answer is a suggestion (--overwrite replaces it)",
    "replaced": "the cell held another category and was replaced (--overwrite)",
    "no_answer": "no answer (backed off to no category): the cell is as it was",
    "not_in_taxonomy": "the answer is not a category of this column's taxonomy: the cell is as it was",
    "not_allowed": "the answer is not one of the values this attribute column accepts: the cell is as it was",
}


@dataclass
class Change:
    """What was done to one product's cell of one column."""

    row: int
    id: str
    title: str
    column: str
    old: str
    new: str
    confidence: float | None
    action: str


@dataclass
class FillReport:
    """The columns written and, per product and column, what was done (:data:`ACTIONS`)."""

    columns: list[str]
    changes: list[Change] = field(default_factory=list)

    @property
    def column(self) -> str:
        """The first column written (the category column of the file's format)."""
        return self.columns[0] if self.columns else ""

    def counts(self, column: str | None = None) -> Counter[str]:
        return Counter(c.action for c in self.changes if column is None or c.column == column)

    def summary(self, suggestions: str | Path | None = None) -> str:
        """``'Product Category': filled 3 empty, kept 2, 1 disagree (suggestions in FILE)``, one clause per column."""
        parts = []
        for col in self.columns:
            n = self.counts(col)
            text = f"{col!r}: filled {n['filled']:,} empty, kept {n['kept'] + n['disagree']:,}"
            if n["disagree"]:
                text += f", {n['disagree']:,} disagree" + (f" (suggestions in {suggestions})" if suggestions else "")
            if n["replaced"]:
                text += f", replaced {n['replaced']:,}"
            if n["not_in_taxonomy"]:
                text += f", {n['not_in_taxonomy']:,} answers not in its taxonomy (not written)"
            if n["no_answer"]:
                text += f", {n['no_answer']:,} without an answer"
            parts.append(text)
        return "; ".join(parts)

    def write_csv(self, path: str | Path) -> Path:
        """The change report (text cells spreadsheet-safe: :func:`~taxonomist.tables.spreadsheet_safe`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["row", "id", "title", "column", "old", "new", "confidence", "action"])
            for c in self.changes:
                w.writerow([c.row, *map(spreadsheet_safe, (c.id, c.title, c.column, c.old, c.new)),
                            "" if c.confidence is None else f"{c.confidence:.4f}", c.action])
        return path


class _Target:
    """A column to fill with categories and the taxonomy its values must belong to (``None``: any path)."""

    def __init__(self, name: str, taxonomy: str | None) -> None:
        self.name, self.taxonomy = name, taxonomy
        self.tax = Taxonomy.builtin(taxonomy) if taxonomy else None

    def value(self, path: CategoryPath) -> CategoryPath | None:
        """The answer as this column's taxonomy has it, or ``None`` when it has no such category."""
        return path if self.tax is None else category_of(path, self.tax)

    def read(self, cell: str) -> CategoryPath:
        """An existing cell as a path (a Google category id is looked up)."""
        cell = cell.strip()
        if self.tax is not None and cell.isdigit():
            return self.tax.path_of_id(cell) or (cell,)
        return parse_path(cell)

    def decide(self, old_cell: str, answer: str, overwrite: bool) -> tuple[str, str]:
        """(action, value to write or "")."""
        if not answer:
            return "no_answer", ""
        value = self.value(parse_path(answer))
        if value is None:
            return "not_in_taxonomy", ""
        new = format_path(value)
        if not old_cell.strip():
            return "filled", new
        old = self.read(old_cell)
        n = min(len(old), len(value))
        if old[:n] == value[:n]:
            return "kept", ""
        return ("replaced", new) if overwrite else ("disagree", "")


class _AttributeTarget:
    """A column to fill with one attribute's values (:mod:`taxonomist.attributes`): only values it accepts."""

    def __init__(self, name: str, attribute: str) -> None:
        self.name, self.attribute = name, attribute

    def decide(self, old_cell: str, answer: str, overwrite: bool) -> tuple[str, str]:
        from .attributes import ATTRIBUTES, normalise

        if not answer:
            return "no_answer", ""
        known = ATTRIBUTES.get(self.attribute)
        if known is not None and answer not in known.values:
            return "not_allowed", ""
        if not old_cell.strip():
            return "filled", answer
        if normalise(self.attribute, old_cell.strip()).lower() == answer.lower():
            return "kept", ""
        return ("replaced", answer) if overwrite else ("disagree", "")


def _targets(fmt: str | None, column: str | None = None) -> list[_Target]:
    if fmt is None and column is not None:
        return [_Target(column, None)]
    if fmt == "shopify":
        return [_Target("Product Category", "shopify"), _Target(SHOPIFY_GOOGLE_COLUMN, "google")]
    if fmt == "merchant":
        return [_Target("google_product_category", "google")]
    if fmt == "woocommerce":
        return [_Target("Categories", None)]
    return [_Target("category", None)]


ATTRIBUTE_COLUMNS = {
    "merchant": {"color": "color", "gender": "gender", "age_group": "age_group", "material": "material",
                 "pattern": "pattern", "size": "size", "size_type": "size_type", "brand": "brand"},
    "shopify": {"gender": "Google Shopping / Gender", "age_group": "Google Shopping / Age Group"},
}
"""The column each attribute is written to, per file format (a plain table: the column of its name; a Shopify
export's colour is a metaobject reference and a WooCommerce export's attributes are numbered name / value pairs:
neither is written)."""


def _attribute_targets(fmt: str | None, names: Sequence[str]) -> list[_AttributeTarget]:
    if fmt is None:
        return [_AttributeTarget(n, n) for n in names]
    columns = ATTRIBUTE_COLUMNS.get(fmt, {})
    return [_AttributeTarget(columns[n], n) for n in names if n in columns]


Answers = tuple[_Target | _AttributeTarget, Sequence[str], Sequence[float | None]]


def write_back(source: Path, rows: Sequence[int], categories: Sequence[str], out: Path, *, overwrite: bool = False,
               confidences: Sequence[float] | None = None, ids: Sequence[str] | None = None,
               titles: Sequence[str] | None = None, column: str | None = None,
               attributes: Mapping[str, Sequence[str]] | None = None,
               attribute_confidences: Mapping[str, Sequence[float]] | None = None) -> FillReport:
    """Write ``source`` again as ``out``, in the same format, with each product's answer in the category column(s)
    of its format (see the module doc): empty cells are filled, filled ones kept unless ``overwrite``; ``column``:
    the column a plain table gets the answers in (a new one when absent; default its category column). ``rows`` are
    the products' source rows (``Catalog.frame["row"]``: data rows counted from 1, a feed's items in order); an
    empty answer leaves the cell as it was. ``attributes``: each attribute's values (``""``: none), written the
    same way to the format's attribute columns (:data:`ATTRIBUTE_COLUMNS`; a value the attribute does not accept
    never). Everything else in the file is kept as it was read. Returns what was done, per product and column."""
    source, out = Path(source), Path(out)
    if len(rows) != len(categories):
        raise ValueError(f"expected one category per row: {len(rows)} rows, {len(categories)} categories")
    n = len(rows)
    for name, values in (attributes or {}).items():
        if len(values) != n:
            raise ValueError(f"expected one {name} value per row: {n} rows, {len(values)} values")
    confs: list[float | None] = list(confidences) if confidences is not None else [None] * n
    meta = (list(ids) if ids is not None else [""] * n, list(titles) if titles is not None else [""] * n)

    def answers(fmt: str | None) -> list[Answers]:
        out_: list[Answers] = [(t, categories, confs) for t in _targets(fmt, column)]
        for t in _attribute_targets(fmt, list(attributes or {})):
            ac = (attribute_confidences or {}).get(t.attribute)
            out_.append((t, (attributes or {})[t.attribute], list(ac) if ac is not None else [None] * n))
        return out_

    if source.suffix.lower() in (".xml", ".rss", ".atom"):
        return _write_back_xml(source, rows, answers("merchant"), out, overwrite, meta)
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
    report = FillReport([])
    for target, values, cf in answers(fmt):
        _write_column(source, records, fmt, column, target, rows, values, cf, meta, overwrite, report)
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerows(records)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(buf.getvalue(), encoding="utf-8")
    return report


def _column_of(header: list[str], fmt: str | None, column: str | None, target: _Target | _AttributeTarget) -> int | None:
    """The header position of the target's column (``g:`` prefixes ignored), or ``None`` when the file has none."""
    plain = [h.removeprefix("g:") for h in header]
    if target.name in plain:
        return plain.index(target.name)
    if isinstance(target, _AttributeTarget):
        from .attributes import column_for

        found = column_for(header, target.attribute) if fmt is None else None  # (a plain table: colour, sex, ...)
        named = [] if found is None else [found]
    else:
        named = ([i for i, h in enumerate(header) if column_key(h) in ALIASES["category"]]
                 if fmt is None and column is None else [])
    return named[0] if named else None


def _write_column(source: Path, records: list[list[str]], fmt: str | None, column: str | None,
                  target: _Target | _AttributeTarget, rows: Sequence[int], values: Sequence[str],
                  confs: Sequence[float | None], meta: tuple[list[str], list[str]], overwrite: bool,
                  report: FillReport) -> None:
    """One target column of a table written (added at the end when the file has none and there is something to
    write), and its changes reported."""
    header = records[0]
    j = _column_of(header, fmt, column, target)
    prefix = "g:" if isinstance(target, _AttributeTarget) and any(h.startswith("g:") for h in header) else ""
    name = header[j] if j is not None else prefix + target.name
    changes = []
    for i, (r, c) in enumerate(zip(rows, values, strict=True)):
        if not 0 < int(r) < len(records) or (j is not None and len(records[int(r)]) > len(header)):
            raise CatalogError(f"cannot write {source.name} back: row {r} is not a well-formed row of the file; "
                               "fix its malformed lines first (taxonomist prints them when it reads the file)")
        rec = records[int(r)]
        old = rec[j] if j is not None and j < len(rec) else ""
        action, value = target.decide(old, c, overwrite)
        changes.append((rec, value, Change(int(r), meta[0][i], meta[1][i], name, old, c, confs[i], action)))
    if j is None:
        if not any(v for _, v, _ in changes):
            return  # nothing to write: no column added
        header.append(name)
        j = len(header) - 1
        for rec in records[1:]:  # every row keeps the header's width (variant and image rows too)
            if len(rec) == j:
                rec.append("")
    width = len(header)
    for rec, value, _ in changes:
        if value:
            rec.extend([""] * (width - len(rec)))
            rec[j] = value
    report.columns.append(name)
    report.changes += [ch for _, _, ch in changes]


def _write_back_xml(source: Path, rows: Sequence[int], answers: list[Answers], out: Path, overwrite: bool,
                    meta: tuple[list[str], list[str]]) -> FillReport:
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
    report = FillReport([])
    for target, values, confs in answers:  # an XML feed is a Merchant Center feed: g: fields
        changes = []
        for i, (r, c) in enumerate(zip(rows, values, strict=True)):
            if not 0 < int(r) <= len(items):
                raise CatalogError(f"cannot write {source.name} back: it has no item {r}")
            item = items[int(r) - 1]
            found = next((el for el in item if el.tag.rsplit("}", 1)[-1] == target.name), None)
            old = (found.text or "") if found is not None else ""
            action, value = target.decide(old, c, overwrite)
            if value:
                field_ = found if found is not None else ET.SubElement(item, f"{{{_G}}}{target.name}")
                field_.text = value
            changes.append(Change(int(r), meta[0][i], meta[1][i], f"g:{target.name}", old, c, confs[i], action))
        if isinstance(target, _Target) or any(ch.action in ("filled", "replaced") for ch in changes):
            report.columns.append(f"g:{target.name}")
            report.changes += changes
    out.parent.mkdir(parents=True, exist_ok=True)
    tree.write(out, encoding="utf-8", xml_declaration=True)
    return report
