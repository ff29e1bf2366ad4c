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

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .exceptions import CatalogError
from .feeds import adapt, detect
from .products import CANONICAL_FIELDS, groups_of
from .tables import ALIASES, closest_column, column_key, load_table, spreadsheet_text
from .taxonomy import DEFAULT_SEP, CategoryPath, Taxonomy, format_path, parse_path
from .text import clean_text, normalize_for_sparse
from .validation import MAX_TEXT_CHARS, MAX_TITLE_CHARS, STRICT_ISSUES, ValidationIssue, ValidationReport

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
            bad = [i for i in report.issues.values() if i.count and (i.skipped or i.kind in STRICT_ISSUES)]
            if bad:
                raise CatalogError(
                    "strict mode: the catalogue has problems, and strict=True rejects it instead of skipping rows:\n"
                    + report.summary()
                    + "\nFix these rows, or read without strict=True to skip them.", options=("strict",))
        for line in report.lines()[1:]:
            logger.warning("%s", line.strip())
        return cls(frame, attrs, report, sep)


def _check_mapping(mapping: Mapping[str, str], label_columns: Sequence[str] | None, cols: list[str],
                   source: str) -> None:
    """Refuse a mapping of unknown fields or from missing columns, and missing label columns."""
    unknown_fields = set(mapping) - set(CANONICAL_FIELDS)
    if unknown_fields:
        raise CatalogError(
            f"the mapping names canonical fields {sorted(unknown_fields)}, but the fields are "
            f"{list(CANONICAL_FIELDS)}; map FIELD to SOURCE_COLUMN, e.g. mapping={{'title': 'productDisplayName'}}",
            options=("mapping",))
    for fld, src in mapping.items():
        if src not in cols:
            raise CatalogError(
                f"mapping {fld} -> {src}: expected a column {src!r} in {source}, but the columns are {cols}",
                options=("mapping",))
    if label_columns:
        missing = [c for c in label_columns if c not in cols]
        if missing:
            raise CatalogError(
                f"label columns: expected columns {missing} in {source}, but the columns are {cols}",
                options=("label_columns",))


def _choose_columns(mapping: Mapping[str, str], label_columns: Sequence[str] | None, cols: list[str],
                    guess: bool) -> tuple[dict[str, str], set[str]]:
    """(the source column of each canonical field: mapped, else the first unused column named like one of its
    :data:`ALIASES` when ``guess``; the columns so used)."""
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
    return chosen, used


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
    _check_mapping(mapping, label_columns, cols, source)
    chosen, used = _choose_columns(mapping, label_columns, cols, guess)
    if "title" not in chosen:
        close = closest_column([c for c in cols if c not in used], "title")
        what = f"expected a title column (one of {list(ALIASES['title'][:8])}), but {source} has the columns {cols}"
        raise CatalogError(
            f"{what}; " + (f"did you mean {close!r}? name it with mapping={{'title': {close!r}}}" if close else
                           "name it with mapping={'title': 'COLUMN'}")
            + ". A file without a header row needs header=False (columns become 0, 1, 2, ...) or "
              "columns=['a', 'b', 'c']", options=("mapping", "header", "columns"),
            cli=f"{what}; " + (f"did you mean {close!r}? name it with --map title={close}" if close else
                               "name it with --map title=COLUMN")
            + ". A file without a header row needs --no-header (columns become 0, 1, 2, ...) or --columns a,b,c")
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
                out[fld] = spreadsheet_text(col.str.strip())
        else:
            out[fld] = ""
    if require_labels and "category" not in chosen and not label_columns:
        close = closest_column([c for c in cols if c not in used], "category")
        what = (f"expected a category column (one of {list(ALIASES['category'][:6])}) to train or evaluate, but "
                f"{source} has the columns {cols}")
        raise CatalogError(
            f"{what}; " + (f"did you mean {close!r}? name it with mapping={{'category': {close!r}}}" if close else
                           "name it with mapping={'category': 'COLUMN'}")
            + ", or build the path from several columns with label_columns=['level1', 'level2', 'level3']",
            options=("mapping", "label_columns"),
            cli=f"{what}; " + (f"did you mean {close!r}? name it with --map category={close}" if close else
                               "name it with --map category=COLUMN")
            + ", or build the path from several columns with --label-columns level1,level2,level3")
    attrs = [c for c in cols if c not in used and c not in CANONICAL_FIELDS and c != "row"]
    for c in attrs:
        out[c] = spreadsheet_text(df[c].fillna("").astype(str).str.strip())
    out["row"] = np.arange(1, len(df) + 1) if "row" not in df.columns else df["row"].to_numpy()
    return out.reset_index(drop=True), attrs


def _validate(
    frame: pd.DataFrame,
    attrs: list[str],
    report: ValidationReport,
    require_labels: bool,
    taxonomy: Taxonomy | None,
) -> pd.DataFrame:
    # a malformed line (reported by the reader) is a row read and skipped: read = kept + skipped
    report.n_read += len(frame) + report.issue("malformed_line").count
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
    sheet: str | int | None = None,
) -> Catalog:
    """Read and validate a catalogue file.

    Args:
        path: a ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``/``.json``, ``.parquet`` or Excel ``.xlsx`` file
            (``.gz`` etc. allowed for the text formats), or a Merchant Center ``.xml`` feed. Encoding is detected
            (UTF-8 with or without BOM, UTF-16, GB18030/GBK, ...).
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
        sheet: the sheet of an Excel workbook to read, by name or 0-based position (default: the first; the
            report names the others).

    Example:
        >>> cat = read_catalog("products.csv", label_columns=["masterCategory", "subCategory"])  # doctest: +SKIP
    """
    p = Path(path)
    report = ValidationReport(source=p.name)
    df = load_table(p, encoding, header, columns, report, delimiter, sheet)
    for extra in with_columns:
        ep = Path(extra)
        extra_report = ValidationReport(source=ep.name)
        other = load_table(ep, encoding, True, None, extra_report)
        if extra_report.issues.get("malformed_line") or len(other) != len(df) + report.issue("malformed_line").count:
            raise CatalogError(
                f"with_columns {ep.name}: expected {len(df) + report.issue('malformed_line').count:,} rows to pair "
                f"row by row with {p.name}, but it has {len(other):,} readable rows"
                + (f" and {extra_report.issue('malformed_line').count} malformed lines" if extra_report.issues.get("malformed_line") else "")
                + "; both files must list the same products in the same order", options=("with_columns",))
        other = other.drop(columns=["row"]).set_index(other["row"])
        clash = [c for c in other.columns if c in df.columns]
        if clash:
            raise CatalogError(f"with_columns {ep.name}: the columns {clash} exist in {p.name} too; rename them",
                               options=("with_columns",))
        df = df.join(other, on="row")
    if not mapping and not label_columns:  # a shop export read by its own field names
        feed = detect([c for c in df.columns if c != "row"])
        if feed is not None:
            df, mapping, report.n_folded = adapt(df, feed)
            report.feed = feed
    if report.issue("malformed_line").count and strict:
        raise CatalogError(
            "strict mode: the file has malformed lines:\n" + report.summary()
            + "\nFix them, or read without strict=True to skip them.", options=("strict",))
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
    return groups_of([normalize_for_sparse(t) for t in titles])


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
