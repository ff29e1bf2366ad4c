"""Reading, validating and splitting product catalogues.

A catalogue is a table of products. Whatever the source columns, :func:`read_catalog` returns a
:class:`Catalog` whose frame has the canonical columns ``id``, ``title``, ``description``, ``category`` (a path
joined with ``" > "``, or empty when unlabelled) and ``image``, plus every other source column kept as an
attribute (brand, colour, …), all as strings.

Nothing is lost silently: rows with an empty title, a missing label, an exact duplicate or a malformed line are
counted in :class:`ValidationReport` with their first examples and row numbers, then skipped -- or, with
``strict=True``, the read fails with a :class:`~taxonomist.exceptions.CatalogError` listing them.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .exceptions import CatalogError
from .taxonomy import DEFAULT_SEP, CategoryPath, Taxonomy, format_path, parse_path
from .text import clean_text, normalize_for_sparse, scrub_pii

__all__ = [
    "CANONICAL_FIELDS",
    "Catalog",
    "column_key",
    "ValidationIssue",
    "ValidationReport",
    "read_catalog",
    "split_catalog",
]

logger = logging.getLogger(__name__)

CANONICAL_FIELDS = ("id", "title", "description", "category", "image")
MAX_TITLE_CHARS = 2_000
MAX_TEXT_CHARS = 20_000
_N_EXAMPLES = 5

# Column names seen in the wild for each canonical field, matched case-insensitively when no --map is given.
ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "sku", "product_id", "productid", "item_id", "itemid", "index", "编号", "商品id"),
    "title": (
        "title", "name", "product", "product_name", "productname", "productdisplayname", "product_title",
        "item_name", "标题", "商品名称", "名称", "商品标题",
    ),
    "description": ("description", "desc", "body", "body_html", "details", "product_description", "描述", "商品描述"),
    "category": (
        "category", "category_path", "categories", "label", "path", "google_product_category", "product_type",
        "类目", "类别", "分类",
    ),
    "image": ("image", "image_path", "image_url", "img", "picture", "photo", "图片"),
}

_ISSUE_TEXT = {
    "malformed_line": "malformed lines (wrong number of fields or invalid JSON)",
    "empty_title": "rows with an empty title",
    "image_only": "rows with an empty title but a photo (kept: classified from the photo by image models)",
    "missing_label": "rows without a category label",
    "unknown_label": "rows whose category is not in the taxonomy",
    "duplicate": "exact duplicate rows (all fields equal to an earlier row)",
    "duplicate_id": "rows whose id repeats an earlier row's id with other content (kept)",
    "missing_user_item": "events without a user or an item",
    "unknown_event": "events whose type is not view / fav / cart / buy (or pv, click, purchase, ...)",
    "bad_timestamp": "events whose timestamp is neither Unix seconds nor a date",
    "not_utf8": "lines that were not UTF-8 in a UTF-8 file (decoded as cp1252, kept; check them)",
    "long_text": f"rows whose title was longer than {MAX_TITLE_CHARS:,} or description longer than "
    f"{MAX_TEXT_CHARS:,} characters (truncated, kept)",
}
_FEED_NAMES = {"shopify": "Shopify products", "merchant": "Google Merchant Center", "woocommerce": "WooCommerce products"}
_KEPT_ISSUES = {"duplicate_id", "long_text", "image_only", "not_utf8"}
_STRICT_ISSUES = {"not_utf8"}  # kept, but --strict rejects them: the repair is a guess


@dataclass
class ValidationIssue:
    """One kind of problem: how many rows had it and the first few, as (row number, excerpt)."""

    kind: str
    count: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)

    def add(self, row: int, excerpt: str) -> None:
        self.count += 1
        if len(self.examples) < _N_EXAMPLES:
            self.examples.append((row, scrub_pii(excerpt[:80])))

    @property
    def skipped(self) -> bool:
        return self.kind not in _KEPT_ISSUES


@dataclass
class ValidationReport:
    """What reading a catalogue found. Row numbers count data rows from 1 (line 1 is the header in a CSV)."""

    source: str = ""
    n_read: int = 0
    n_kept: int = 0
    issues: dict[str, ValidationIssue] = field(default_factory=dict)
    feed: str | None = None  # the shop export recognised by its header (taxonomist.feeds), if any
    n_folded: int = 0  # its variant / image rows folded into their product

    def issue(self, kind: str) -> ValidationIssue:
        return self.issues.setdefault(kind, ValidationIssue(kind))

    @property
    def n_skipped(self) -> int:
        return self.n_read - self.n_kept

    @property
    def ok(self) -> bool:
        return not any(i.count for i in self.issues.values())

    def lines(self) -> list[str]:
        out = [f"{self.source}: read {self.n_read:,} rows, kept {self.n_kept:,}, skipped {self.n_skipped:,}"]
        if self.feed:
            out[0] += f" (a {_FEED_NAMES.get(self.feed, self.feed)} export" + (
                f"; {self.n_folded:,} variant / image rows folded into their product)" if self.n_folded else ")")
        for issue in self.issues.values():
            if not issue.count:
                continue
            action = "skipped" if issue.skipped else "kept"
            ex = "; ".join(f"row {r}: {t!r}" for r, t in issue.examples)
            out.append(f"  {issue.count:,} {_ISSUE_TEXT.get(issue.kind, issue.kind)} [{action}] e.g. {ex}")
        return out

    def summary(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_read": self.n_read,
            "n_kept": self.n_kept,
            "feed": self.feed,
            "n_folded": self.n_folded,
            "issues": {
                k: {"count": v.count, "examples": [list(e) for e in v.examples]}
                for k, v in self.issues.items()
                if v.count
            },
        }


class Catalog:
    """A validated product catalogue.

    Attributes:
        frame: canonical columns + attributes, all strings, one row per product; ``row`` holds the source row.
        attribute_columns: names of the attribute columns (source columns beyond the canonical ones).
        report: what validation found.
        sep: the separator the labels were read with (paths are stored joined with ``" > "``).
        base_dir: the folder of the catalogue file (relative image paths resolve against it), when read from one.

    Example:
        >>> cat = Catalog.from_records([{"title": "Blue jeans", "category": "Apparel > Jeans"}])
        >>> cat.labels
        [('Apparel', 'Jeans')]
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        attribute_columns: Sequence[str] = (),
        report: ValidationReport | None = None,
        sep: str = DEFAULT_SEP,
    ) -> None:
        self.frame = frame.reset_index(drop=True)
        self.attribute_columns = list(attribute_columns)
        self.report = report or ValidationReport(n_read=len(frame), n_kept=len(frame))
        self.sep = sep
        self.base_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return f"Catalog(rows={len(self)}, labelled={self.is_labelled}, attributes={self.attribute_columns})"

    @property
    def is_labelled(self) -> bool:
        return bool(len(self.frame)) and bool((self.frame["category"] != "").all())

    @property
    def labels(self) -> list[CategoryPath]:
        return [parse_path(c) for c in self.frame["category"]]

    @property
    def titles(self) -> list[str]:
        return self.frame["title"].tolist()

    def taxonomy(self, name: str = "") -> Taxonomy:
        """The tree spanned by this catalogue's labels."""
        return Taxonomy.from_paths((p for p in self.frame["category"].unique() if p), name=name)

    def subset(self, index: Iterable[int] | np.ndarray) -> Catalog:
        out = Catalog(self.frame.iloc[np.asarray(list(index) if not isinstance(index, np.ndarray) else index)],
                      self.attribute_columns, None, self.sep)
        out.base_dir = self.base_dir
        return out

    def records(self) -> list[dict[str, str]]:
        """Products as dicts (canonical fields + attributes)."""
        return self.frame.drop(columns=["row"], errors="ignore").to_dict(orient="records")  # type: ignore[return-value]

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], **kwargs: Any) -> Catalog:
        """Build a catalogue from dicts (``title`` required; ``category`` optional unless ``require_labels``)."""
        kwargs.setdefault("require_labels", False)
        return cls.from_frame(pd.DataFrame(list(records)), **kwargs)

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        mapping: Mapping[str, str] | None = None,
        label_columns: Sequence[str] | None = None,
        sep: str = DEFAULT_SEP,
        require_labels: bool = False,
        strict: bool = False,
        taxonomy: Taxonomy | None = None,
        source: str = "<frame>",
        report: ValidationReport | None = None,
        guess: bool = True,
    ) -> Catalog:
        """Map, validate and clean a frame (see :func:`read_catalog` for the arguments; ``guess=False``: the
        mapping is complete, no other column is taken for a canonical field by its name)."""
        report = report or ValidationReport(source=source)
        frame, attrs = _canonicalise(df, mapping or {}, label_columns, sep, require_labels, source, guess)
        frame = _validate(frame, attrs, report, require_labels, taxonomy)
        if strict:
            bad = [i for i in report.issues.values() if i.count and (i.skipped or i.kind in _STRICT_ISSUES)]
            if bad:
                raise CatalogError(
                    "strict mode: the catalogue has problems, and --strict rejects it instead of skipping rows:\n"
                    + report.summary()
                    + "\nFix these rows, or drop --strict to skip them."
                )
        for line in report.lines()[1:]:
            logger.warning("%s", line.strip())
        return cls(frame, attrs, report, sep)


def column_key(name: str) -> str:
    """A column name as it is matched against known names: trimmed, lower case, spaces and ``-`` as ``_``."""
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def _canonicalise(
    df: pd.DataFrame,
    mapping: Mapping[str, str],
    label_columns: Sequence[str] | None,
    sep: str,
    require_labels: bool,
    source: str,
    guess: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    df = df.copy()
    df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    cols = [c for c in df.columns if c != "row"]  # "row" is the reader's own source row number
    unknown_fields = set(mapping) - set(CANONICAL_FIELDS)
    if unknown_fields:
        raise CatalogError(
            f"--map names canonical fields {sorted(unknown_fields)}, but the fields are {list(CANONICAL_FIELDS)}; "
            "write --map FIELD=SOURCE_COLUMN, e.g. --map title=productDisplayName"
        )
    for fld, src in mapping.items():
        if src not in cols:
            raise CatalogError(
                f"--map {fld}={src}: expected a column {src!r} in {source}, but the columns are {cols}"
            )
    if label_columns:
        missing = [c for c in label_columns if c not in cols]
        if missing:
            raise CatalogError(
                f"--label-columns: expected columns {missing} in {source}, but the columns are {cols}"
            )
    used: set[str] = set(mapping.values()) | set(label_columns or ())
    chosen: dict[str, str] = dict(mapping)
    by_norm = {column_key(c): c for c in reversed(cols)}
    for fld in CANONICAL_FIELDS:
        if fld in chosen or (fld == "category" and label_columns) or not guess:
            continue
        for alias in ALIASES[fld]:
            found = by_norm.get(alias)
            if found is not None and found not in used:
                chosen[fld] = found
                used.add(found)
                break
    if "title" not in chosen:
        raise CatalogError(
            f"expected a title column (one of {list(ALIASES['title'][:8])}), but {source} has the columns "
            f"{cols}; name it with --map title=COLUMN (Python: mapping={{'title': 'COLUMN'}}). A file without a "
            "header row needs --no-header (columns become 0, 1, 2, ...) or --columns a,b,c"
        )
    out = pd.DataFrame(index=df.index)
    for fld in CANONICAL_FIELDS:
        if fld == "category" and label_columns:
            levels = df[list(label_columns)].fillna("").astype(str)
            parts = [levels[c].str.strip() for c in label_columns]
            out[fld] = [format_path(parse_path(list(vals))) for vals in zip(*parts, strict=True)]
        elif fld in chosen:
            col = df[chosen[fld]].fillna("").astype(str)
            if fld == "category":
                out[fld] = [format_path(parse_path(v, sep)) for v in col]
            else:
                out[fld] = col.str.strip()
        else:
            out[fld] = ""
    if require_labels and "category" not in chosen and not label_columns:
        raise CatalogError(
            f"expected a category column (one of {list(ALIASES['category'][:6])}) to train or evaluate, but "
            f"{source} has the columns {cols}; name it with --map category=COLUMN, or build the path from several "
            "columns with --label-columns level1,level2,level3"
        )
    attrs = [c for c in cols if c not in used and c not in CANONICAL_FIELDS and c != "row"]
    for c in attrs:
        out[c] = df[c].fillna("").astype(str).str.strip()
    out["row"] = np.arange(1, len(df) + 1) if "row" not in df.columns else df["row"].to_numpy()
    return out.reset_index(drop=True), attrs


def _validate(
    frame: pd.DataFrame,
    attrs: list[str],
    report: ValidationReport,
    require_labels: bool,
    taxonomy: Taxonomy | None,
) -> pd.DataFrame:
    report.n_read += len(frame)
    keep = np.ones(len(frame), dtype=bool)
    rows = frame["row"].to_numpy()
    titles = [clean_text(t) for t in frame["title"]]
    images = frame["image"].astype(str).str.strip().to_numpy()
    for i, t in enumerate(titles):
        if not t and images[i]:
            report.issue("image_only").add(int(rows[i]), images[i])
        elif not t:
            keep[i] = False
            report.issue("empty_title").add(int(rows[i]), str(frame.at[i, "title"]) or "<empty>")
    if require_labels:
        for i, c in enumerate(frame["category"]):
            if keep[i] and not c:
                keep[i] = False
                report.issue("missing_label").add(int(rows[i]), titles[i])
    if taxonomy is not None:
        for i, c in enumerate(frame["category"].tolist()):
            if not keep[i] or not c or parse_path(c) in taxonomy:
                continue
            # a numeric category is a node id (Merchant Center's google_product_category)
            node = taxonomy.path_of_id(c) if c.isdigit() else None
            if node is not None:
                frame.at[i, "category"] = format_path(node)
            else:
                keep[i] = False
                report.issue("unknown_label").add(int(rows[i]), c)
    content_cols = [c for c in frame.columns if c != "row"]
    dup = frame.duplicated(subset=content_cols, keep="first").to_numpy()
    for i in np.flatnonzero(dup & keep).tolist():
        keep[i] = False
        report.issue("duplicate").add(int(rows[i]), titles[i])
    if frame["id"].ne("").any():
        id_dup = frame["id"].duplicated(keep="first").to_numpy() & frame["id"].ne("").to_numpy()
        for i in np.flatnonzero(id_dup & keep).tolist():
            report.issue("duplicate_id").add(int(rows[i]), f"id {frame['id'].iat[i]}: {titles[i]}")
    long_title = np.array([len(t) > MAX_TITLE_CHARS for t in frame["title"]], dtype=bool)
    long_desc = np.array([len(t) > MAX_TEXT_CHARS for t in frame["description"]], dtype=bool)
    for i in np.flatnonzero((long_title | long_desc) & keep).tolist():
        report.issue("long_text").add(int(rows[i]), titles[i][:60])
    out = frame.loc[keep].copy()
    if long_title.any():
        out["title"] = out["title"].str.slice(0, MAX_TITLE_CHARS)
    if long_desc.any():
        out["description"] = out["description"].str.slice(0, MAX_TEXT_CHARS)
    missing_id = out["id"] == ""
    if missing_id.any():
        out.loc[missing_id, "id"] = out.loc[missing_id, "row"].astype(str)
    report.n_kept += len(out)
    return out.reset_index(drop=True)


# -- reading files ---------------------------------------------------------------------------------------------
def _repair_utf8_lines(raw: bytes, path: Path, report: ValidationReport | None, header: bool) -> str | None:
    """A UTF-8 file with a few lines in another encoding (a row pasted from a cp1252 spreadsheet): each such line
    decoded as cp1252 (latin-1 where cp1252 has no character) and reported; ``None`` when the file is not UTF-8
    with a few bad lines (more than a tenth of the lines bad, or no more lines with UTF-8 multi-byte characters
    than bad ones): it is then decoded whole in the encoding detected."""
    lines = raw.removeprefix(codecs.BOM_UTF8).split(b"\n")
    out, bad, utf8_lines = [], [], 0
    for i, line in enumerate(lines):
        try:
            out.append(line.decode("utf-8"))
            utf8_lines += not line.isascii()
        except UnicodeDecodeError:
            try:
                out.append(line.decode("cp1252"))
            except UnicodeDecodeError:
                out.append(line.decode("latin-1"))
            bad.append(i)
    # a few bad lines among many UTF-8 ones (a GBK line can be valid UTF-8 by chance: one is not enough)
    if utf8_lines <= len(bad) or len(bad) > len(lines) // 10:
        return None
    for i in bad:  # (the report's lines are logged with the others when the catalogue is built)
        if report is not None:
            report.issue("not_utf8").add(i + (0 if header else 1), out[i])  # data rows count from 1 after the header
        else:
            logger.warning("%s: line %d is not UTF-8; decoded it as cp1252 (check it)", path.name, i + 1)
    return "\n".join(out)


def _decode(raw: bytes, path: Path, encoding: str | None, report: ValidationReport | None = None,
            header: bool = True) -> str:
    if encoding:
        try:
            return raw.decode(encoding)
        except LookupError:
            raise CatalogError(f"--encoding {encoding!r} is not an encoding Python knows (try utf-8, gb18030, cp1252)") from None
        except UnicodeDecodeError as e:
            raise CatalogError(
                f"{path.name} is not valid {encoding} ({e.reason} at byte {e.start}); check the file's encoding "
                "or leave --encoding out to detect it"
            ) from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as utf8_error:
        repaired = _repair_utf8_lines(raw, path, report, header)
        if repaired is not None:
            return repaired
        from charset_normalizer import from_bytes

        best = from_bytes(raw[: 1 << 20]).best()
        guess = best.encoding if best is not None else None
        chinese = guess is not None and guess.replace("_", "").lower() in {"gb2312", "gbk", "gb18030", "hz"}
        candidates = ([guess] if guess is not None and not chinese else []) + ["gb18030"]
        for enc in candidates:
            try:
                text = raw.decode(enc)
            except (UnicodeDecodeError, LookupError):
                continue
            logger.warning("%s is not UTF-8; decoded it as %s (pass --encoding to choose)", path.name, enc)
            return text
        raise CatalogError(
            f"{path.name} is not UTF-8 ({utf8_error.reason} at byte {utf8_error.start}) and its encoding could not be "
            "detected; pass --encoding (e.g. gb18030, cp1252, latin-1) or convert the file to UTF-8"
        ) from None


def _read_delimited(
    text: str, path: Path, delimiter: str, header: bool, columns: Sequence[str] | None, report: ValidationReport
) -> pd.DataFrame:
    csv.field_size_limit(1 << 28)  # a 1 MB title is reported and truncated later, not a parser crash
    try:
        records = _records(text, delimiter, len(columns) if columns else None if not header else -1)
    except csv.Error as e:
        raise CatalogError(f"{path.name} could not be parsed as delimited text: {e}") from None
    # a blank line is not a product; csv gives it as an empty list
    numbered = [(n, r) for n, r in enumerate(records) if r is None or any(cell.strip() for cell in r)]
    if not numbered:
        raise CatalogError(f"{path.name} is empty: expected a header row and at least one product row")
    if columns:
        names = [c.strip() for c in columns]
    elif header:
        names = [c.strip().lstrip("\ufeff") for c in numbered[0][1] or []]  # (the header is never None)
        numbered = numbered[1:]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise CatalogError(f"{path.name}: the header repeats the column names {dupes}; column names must be unique")
    else:
        names = [str(i) for i in range(max(len(r or []) for _, r in numbered))]
    width = len(names)
    good: list[list[str]] = []
    numbers: list[int] = []
    offset = 0 if header and not columns else 1  # data rows count from 1 after the header
    for n0, r in numbered:
        n = n0 + offset
        if r is None:
            report.issue("malformed_line").add(n, "an unclosed quote (it swallowed the lines after it; they are read "
                                                  "on their own)")
        elif len(r) == width:
            good.append(r)
            numbers.append(n)
        elif len(r) < width and not header and not columns:
            good.append(r + [""] * (width - len(r)))
            numbers.append(n)
        else:
            report.issue("malformed_line").add(n, f"expected {width} fields, found {len(r)}: {delimiter.join(r)[:60]}")
    frame = pd.DataFrame(good, columns=names, dtype=object) if good else pd.DataFrame(columns=names)
    frame["row"] = numbers
    return frame


_TABLE_EXTS = {".csv", ".tsv", ".tab", ".txt", ".jsonl", ".ndjson", ".json", ".parquet", ".pq"}


def _unzip(path: Path) -> tuple[bytes, str]:
    """The one table in a ``.zip`` (its bytes and extension); an error naming them when there are several."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.endswith("/") and not n.startswith("__MACOSX/")]
            tables = [n for n in names if Path(n).suffix.lower() in _TABLE_EXTS] or names
            if len(tables) != 1:
                raise CatalogError(f"{path.name} holds {len(tables)} tables ({', '.join(tables[:5])}); expected one "
                                   "CSV, TSV, JSONL or Parquet file -- unzip it and give the file to read")
            return z.read(tables[0]), Path(tables[0]).suffix.lower()
    except zipfile.BadZipFile as e:
        raise CatalogError(f"{path.name} is not a readable .zip file ({e}); copy or download it again") from None


def _records(text: str, delimiter: str, width: int | None) -> list[list[str] | None]:
    """The records of delimited text; ``None`` for a line whose unclosed quote swallowed whole rows after it.

    A quoted field may hold line breaks, so an unclosed quote makes the parser read the next products into one
    field. A record spanning several lines, one of whose later lines is a complete row on its own (``width``
    fields; ``-1``: as many as the first record, the header), is taken for that: its first line is reported
    (``None``) and parsing restarts on the line after it. ``width`` ``None``: no check.
    """
    lines = io.StringIO(text, newline="").readlines()
    out: list[list[str] | None] = []
    pos = 0
    while pos < len(lines):
        reader = csv.reader(iter(lines[pos:]), delimiter=delimiter)
        start, restart = pos, None
        for rec in reader:
            end = pos + reader.line_num
            if width == -1:
                width = len(rec)
            elif width is not None and end - start > 1 and any(
                    len(next(csv.reader([line], delimiter=delimiter), [])) == width for line in lines[start + 1:end]):
                out.append(None)
                restart = start + 1
                break
            out.append(rec)
            start = end
        if restart is None:
            break
        pos = restart
    return out


def _read_jsonl(text: str, path: Path, report: ValidationReport) -> pd.DataFrame:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise CatalogError(f"{path.name} is not valid JSON ({e.msg} at line {e.lineno}); expected one object per line (JSONL) or a JSON array") from None
        records = [(i, r) for i, r in enumerate(data, start=1)]
    else:
        records = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                report.issue("malformed_line").add(n, f"invalid JSON ({e.msg}): {line[:60]}")
    good = []
    for n, r in records:
        if isinstance(r, dict):
            flat = dict(r)  # lists and objects become text in _to_str_frame (a list under "category" is a path)
            flat["row"] = n
            good.append(flat)
        else:
            report.issue("malformed_line").add(n, f"expected a JSON object, found {type(r).__name__}")
    return pd.DataFrame(good)


def _to_str_frame(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        if c == "row":
            out[c] = df[c]
            continue
        # a list column (Parquet / JSON arrays) is a category path under a category name, else a list of values
        joiner = " > " if str(c).strip().lower() in ALIASES["category"] else ", "
        out[str(c)] = [_cell_text(v, joiner) for v in df[c]]
    return out


def _cell_text(v: Any, joiner: str) -> str:
    """One cell as text: bytes decoded as UTF-8, lists / arrays joined, mappings as JSON, missing as ""."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, (list, tuple, np.ndarray)):
        return joiner.join(t for t in (_cell_text(x, joiner) for x in v) if t)
    if isinstance(v, dict):
        return json.dumps({k: x.decode("utf-8", "replace") if isinstance(x, bytes) else x for k, x in v.items()},
                          ensure_ascii=False, default=str)
    return str(v)


def load_table(
    path: Path, encoding: str | None, header: bool, columns: Sequence[str] | None, report: ValidationReport,
    delimiter: str | None = None,
) -> pd.DataFrame:
    """A table file (CSV/TSV/JSONL/Parquet, compressed too, encoding detected) as a frame of strings plus ``row``
    (its row number); malformed lines go to ``report``. ``delimiter``: the field delimiter of a delimited text
    (default: tab for ``.tsv``, else sniffed). Shared by catalogues and behaviour events."""
    if delimiter is not None and len(delimiter) != 1:
        raise CatalogError(f"the field delimiter: expected one character (',', ';', tab, '|'), got {delimiter!r}")
    if not path.exists():
        raise CatalogError(f"expected a catalogue file, but {str(path)!r} does not exist")
    if path.is_dir():
        raise CatalogError(f"expected a catalogue file, but {str(path)!r} is a folder")
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in {".gz", ".bz2", ".zip", ".xz"}]
    ext = suffixes[-1] if suffixes else ""
    source: Path | io.BytesIO = path
    raw: bytes | None = None
    if path.suffix.lower() == ".zip":
        raw, ext = _unzip(path)
        source = io.BytesIO(raw)
    if ext in {".parquet", ".pq"}:
        try:
            df = pd.read_parquet(source)
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise CatalogError(f"{path.name} could not be read as Parquet: {e}") from None
        df = _to_str_frame(df)
        df["row"] = np.arange(1, len(df) + 1)
        return df
    if raw is None:
        raw = path.read_bytes()
    if path.suffix.lower() in {".gz", ".bz2", ".xz"}:
        import bz2
        import gzip
        import lzma

        opener = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}[path.suffix.lower()]
        try:
            raw = opener(raw)
        except (EOFError, OSError, ValueError, lzma.LZMAError) as e:  # cut short in a copy or a download
            raise CatalogError(f"{path.name} is a truncated or damaged {path.suffix} file ({type(e).__name__}: "
                               f"{str(e)[:120]}); copy or download it again") from None
    head = raw[:4096]
    if b"\x00" in head and not raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        if encoding is None:
            # UTF-16 without a byte-order mark (some Windows exports): mostly-Latin text has a NUL in every other
            # byte
            odd, even = head[1::2].count(0), head[0::2].count(0)
            encoding = ("utf-16-le" if odd > len(head) // 4 and even == 0 else
                        "utf-16-be" if even > len(head) // 4 and odd == 0 else None)
        if encoding is None or not encoding.lower().replace("_", "-").startswith(("utf-16", "utf16", "utf-32", "utf32")):
            raise CatalogError(
                f"{path.name} looks binary (NUL bytes), not a text table; expected CSV, TSV, JSONL or Parquet"
            )
    if ext in {".xml", ".rss", ".atom"}:
        from .feeds import read_xml_feed

        return read_xml_feed(raw, path)
    text = _decode(raw, path, encoding, report, header)
    if ext in {".jsonl", ".ndjson", ".json"}:
        return _to_str_frame(_read_jsonl(text, path, report))
    if ext in {".tsv", ".tab", ".csv", ".txt", ""}:
        if delimiter is None:
            delimiter = "\t" if ext in {".tsv", ".tab"} else sniff_delimiter(text)
    else:
        raise CatalogError(
            f"{path.name}: unsupported file type {ext!r}; expected .csv, .tsv, .jsonl (.ndjson/.json), .parquet or "
            "a Merchant Center .xml feed"
        )
    return _read_delimited(text, path, delimiter, header, columns, report)


_DELIMITERS = (",", "\t", ";", "|")


def sniff_delimiter(text: str, lines: int = 50) -> str:
    """The field delimiter of a delimited text (``,`` tab ``;`` or ``|``): the one that splits the first lines
    into the same number of fields, most of them; ``,`` when none does. European spreadsheets write ``;``."""
    head = text[:200_000].splitlines()[:lines]
    best, best_key = ",", (-1.0, 0)
    for d in _DELIMITERS:
        if not any(d in line for line in head[:5]):
            continue
        widths = [len(r) for r in csv.reader(head, delimiter=d)][: max(1, len(head) - 1)]  # the last line may be cut
        if not widths or widths[0] < 2:
            continue
        share = sum(w == widths[0] for w in widths) / len(widths)
        key = (share, widths[0])
        if key > best_key:
            best, best_key = d, key
    return best


def read_catalog(
    path: str | Path,
    *,
    mapping: Mapping[str, str] | None = None,
    label_columns: Sequence[str] | None = None,
    sep: str = DEFAULT_SEP,
    with_columns: Sequence[str | Path] = (),
    encoding: str | None = None,
    header: bool = True,
    columns: Sequence[str] | None = None,
    require_labels: bool = False,
    strict: bool = False,
    taxonomy: Taxonomy | None = None,
    delimiter: str | None = None,
) -> Catalog:
    """Read and validate a catalogue file.

    Args:
        path: a ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``/``.json`` or ``.parquet`` file (``.gz`` etc. allowed
            for the text formats). Encoding is detected (UTF-8 with or without BOM, UTF-16, GB18030/GBK, ...).
        mapping: canonical field → source column, e.g. ``{"title": "productDisplayName"}``. Without it, common
            names are recognised (``name``, ``product``, ``sku``, ...).
        label_columns: build the category path from these columns, top level first.
        sep: separator of category paths in the category column (``" > "``; ``">>"``, ``"/"`` seen too).
        with_columns: other files whose columns are added row by row (same row count and order), e.g. the
            fashion dataset's ``styles_text.csv`` beside ``styles.csv``.
        encoding: force an encoding instead of detecting it.
        header: whether the first row names the columns; without one, columns are named ``0, 1, 2, ...``.
        columns: names for a file without a header row.
        require_labels: rows without a category are reported and skipped (training / evaluation).
        strict: fail with a :class:`CatalogError` instead of skipping bad rows.
        taxonomy: when given, labels not in it are reported and skipped.
        delimiter: the field delimiter of a CSV / TXT / TSV file (one character); default: tab for ``.tsv``,
            else sniffed among ``,`` ``;`` tab ``|``.

    Example:
        >>> cat = read_catalog("products.csv", label_columns=["masterCategory", "subCategory"])  # doctest: +SKIP
    """
    p = Path(path)
    report = ValidationReport(source=p.name)
    df = load_table(p, encoding, header, columns, report, delimiter)
    for extra in with_columns:
        ep = Path(extra)
        extra_report = ValidationReport(source=ep.name)
        other = load_table(ep, encoding, True, None, extra_report)
        if extra_report.issues.get("malformed_line") or len(other) != len(df) + report.issue("malformed_line").count:
            raise CatalogError(
                f"--with-columns {ep.name}: expected {len(df) + report.issue('malformed_line').count:,} rows to pair "
                f"row by row with {p.name}, but it has {len(other):,} readable rows"
                + (f" and {extra_report.issue('malformed_line').count} malformed lines" if extra_report.issues.get("malformed_line") else "")
                + "; both files must list the same products in the same order"
            )
        other = other.drop(columns=["row"]).set_index(other["row"])
        clash = [c for c in other.columns if c in df.columns]
        if clash:
            raise CatalogError(f"--with-columns {ep.name}: the columns {clash} exist in {p.name} too; rename them")
        df = df.join(other, on="row")
    if not mapping and not label_columns:  # a shop export read by its own field names
        from .feeds import adapt, detect

        feed = detect([c for c in df.columns if c != "row"])
        if feed is not None:
            df, mapping, report.n_folded = adapt(df, feed)
            report.feed = feed
    if report.issue("malformed_line").count and strict:
        raise CatalogError(
            "strict mode: the file has malformed lines:\n" + report.summary() + "\nFix them or drop --strict to skip them."
        )
    cat = Catalog.from_frame(
        df, mapping=mapping, label_columns=label_columns, sep=sep, require_labels=require_labels, strict=strict,
        taxonomy=taxonomy, source=p.name, report=report, guess=report.feed is None,
    )
    cat.base_dir = p.resolve().parent
    return cat


# -- splitting -------------------------------------------------------------------------------------------------
def title_groups(titles: Iterable[str]) -> np.ndarray:
    """Integer group per title: identical normalised titles share a group; products without a title (photo-only
    rows) are each their own group."""
    norm = [normalize_for_sparse(t) for t in titles]
    codes, uniques = pd.factorize(pd.Series(norm))
    codes = np.asarray(codes)
    empty = np.flatnonzero(np.asarray([not t for t in norm], dtype=bool))
    codes[empty] = len(uniques) + np.arange(len(empty))
    return codes


def split_catalog(catalog: Catalog, test_size: float = 0.2, seed: int = 0) -> tuple[Catalog, Catalog]:
    """Seeded train/test split, stratified by leaf where possible and grouped by normalised title.

    Products with the same normalised title never straddle the split (catalogues are full of duplicates, and
    letting one copy into training inflates test scores). Leaves with a single title group stay in training.

    Returns:
        (train, test) catalogues.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"expected 0 < test_size < 1, got {test_size}")
    n = len(catalog)
    if n < 4:
        raise CatalogError(f"expected at least 4 products to split into train and test, found {n}")
    from sklearn.model_selection import StratifiedGroupKFold

    groups = title_groups(catalog.titles)
    y = catalog.frame["category"].to_numpy()
    # leaves whose products all share one title group cannot be stratified: keep them in training
    groups_per_leaf = pd.Series(groups).groupby(y).nunique()
    multi = np.isin(y, groups_per_leaf.index[groups_per_leaf.to_numpy() >= 2])
    n_splits = max(2, round(1 / test_size))
    test_mask = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(multi)
    if len(np.unique(groups[idx])) >= n_splits:
        sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "least populated class has only k members"
            _, test_idx = next(sgkf.split(idx, y[idx], groups[idx]))
        test_mask[idx[test_idx]] = True
    # a group that also occurs among the single-group leaves must follow the test decision of its other rows
    test_groups = set(groups[test_mask])
    test_mask |= np.isin(groups, list(test_groups))
    train_idx, test_idx = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    if len(test_idx) == 0 or len(train_idx) == 0:
        raise CatalogError(
            f"could not split {n} products into train and test (every product shares one title group); "
            "add more distinct products"
        )
    return catalog.subset(train_idx), catalog.subset(test_idx)
