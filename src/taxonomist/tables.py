"""Table files as frames of strings: CSV / TSV (delimiter sniffed), JSONL, Parquet and Merchant Center XML,
compressed or not, with their encoding detected; malformed lines go to a :class:`ValidationReport`, never lost.

:func:`load_table` is shared by catalogues (:func:`taxonomist.catalog.read_catalog`) and behaviour events.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import os
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .exceptions import CatalogError
from .feeds import read_xml_feed
from .validation import ValidationReport

__all__ = ["ALIASES", "column_key", "load_table", "sniff_delimiter", "spreadsheet_safe"]

logger = logging.getLogger(__name__)

# Column names seen in the wild for each canonical field, matched case-insensitively when no --map is given.
ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "sku", "product_id", "productid", "item_id", "itemid", "index", "编号", "商品id"),
    "title": (
        "title", "name", "product", "product_name", "productname", "productdisplayname", "product_title",
        "item_name", "标题", "商品名称", "名称", "商品标题",
        # shops' exports in other languages (de, fr, es, it, pt, nl, pl, cs, ja, ko, zh)
        "produktname", "artikelname", "bezeichnung", "titel", "produkttitel", "nom", "nom_du_produit", "titre",
        "libellé", "libelle", "nombre", "nombre_del_producto", "título", "titulo", "nome", "nome_prodotto",
        "nome_del_prodotto", "titolo", "nome_do_produto", "naam", "productnaam", "nazwa", "nazwa_produktu", "název",
        "nazev", "商品名", "品名", "产品名称", "タイトル", "商品タイトル", "상품명", "제품명",
    ),
    "description": ("description", "desc", "body", "body_html", "details", "product_description", "描述", "商品描述",
                    "beschreibung", "produktbeschreibung", "descripción", "descripcion", "descrizione", "descrição",
                    "descricao", "omschrijving", "opis", "popis", "説明", "商品説明", "설명"),
    "category": (
        "category", "category_path", "categories", "label", "path", "google_product_category", "product_type",
        "类目", "类别", "分类",
        "kategorie", "catégorie", "categorie", "categoría", "categoria", "kategoria", "カテゴリ", "카테고리",
    ),
    "image": ("image", "image_path", "image_url", "img", "picture", "photo", "图片"),
}


def closest_column(columns: Sequence[str], field: str) -> str | None:
    """The column of ``columns`` that most looks like a name of ``field`` without being one (``Produkt_Titel``
    for the title): one containing a known name, or within a few letters of one; None when none is close."""
    import difflib

    names = [a for a in ALIASES[field] if len(a) >= 3]
    best, best_score = None, 0.0
    for c in columns:
        key = column_key(c)
        score = max(difflib.SequenceMatcher(None, key, a).ratio() for a in names)
        if any(a in key for a in names if len(a) >= 4):
            score = max(score, 0.9)
        if score > best_score:
            best, best_score = c, score
    return best if best_score >= 0.75 else None


def column_key(name: str) -> str:
    """A column name as it is matched against known names: trimmed, lower case, spaces and ``-`` as ``_``."""
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


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


_SINGLE_BYTE_LATIN = {"cp1250", "cp1252", "cp1254", "cp1257", "iso8859_1", "iso8859_2", "iso8859_3", "iso8859_4",
                      "iso8859_9", "iso8859_10", "iso8859_13", "iso8859_15", "iso8859_16", "latin_1", "mac_latin2",
                      "mac_roman", "cp850", "cp852", "cp775", "hp_roman8"}


def _misplaced(text: str) -> int:
    """Non-ASCII characters that are not letters yet sit inside a word (``Za¿ó³æ``): what a wrong single-byte
    code page produces."""
    n = 0
    for i, ch in enumerate(text):
        if ord(ch) > 127 and not unicodedata.category(ch).startswith("L"):
            before = text[i - 1] if i else " "
            after = text[i + 1] if i + 1 < len(text) else " "
            n += before.isalpha() or after.isalpha()
    return n


def _western_if_as_plausible(raw: bytes, guess: str) -> str | None:
    """``raw`` read as cp1252 when that reads it as plausibly as the detector's single-byte ``guess`` (short
    Western text is often guessed as cp1250: "Crème" as "Crčme"); None when cp1252 cannot or reads it worse."""
    try:
        western, other = raw.decode("cp1252"), raw.decode(guess)
    except (UnicodeDecodeError, LookupError):
        return None
    return western if _misplaced(western[: 1 << 20]) <= _misplaced(other[: 1 << 20]) else None


def _decode(raw: bytes, path: Path, encoding: str | None, report: ValidationReport | None = None,
            header: bool = True) -> str:
    if encoding:
        try:
            return raw.decode(encoding)
        except LookupError:
            raise CatalogError(f"encoding {encoding!r} is not an encoding Python knows (try utf-8, gb18030, cp1252)",
                               options=("encoding",)) from None
        except UnicodeDecodeError as e:
            raise CatalogError(
                f"{path.name} is not valid {encoding} ({e.reason} at byte {e.start}); check the file's encoding "
                "or leave encoding out to detect it", options=("encoding",)) from None
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

        def noted(text: str, enc: str, why: str) -> str:
            note = f"not UTF-8: read as {enc} ({why}); pass --encoding NAME to choose"
            if report is not None:
                report.notes.append(note)
            logger.warning("%s is %s", path.name, note)
            return text

        if guess is not None and guess.lower() in _SINGLE_BYTE_LATIN and guess.lower() != "cp1252":
            western = _western_if_as_plausible(raw, guess)
            if western is not None:
                return noted(western, "cp1252", f"Western European; the detector guessed {guess}, which reads this "
                                                "text no better")
        for enc in candidates:
            try:
                text = raw.decode(enc)
            except (UnicodeDecodeError, LookupError):
                continue
            # (a Chinese guess is read as gb18030, the superset of gb2312 and gbk)
            return noted(text, enc, f"the detector's guess, {1 - best.chaos:.0%} clean" if best is not None and
                         (enc == guess or chinese) else "the fallback")
        raise CatalogError(
            f"{path.name} is not UTF-8 ({utf8_error.reason} at byte {utf8_error.start}) and its encoding could not be "
            "detected; pass encoding= (e.g. gb18030, cp1252, latin-1) or convert the file to UTF-8",
            options=("encoding",)) from None


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


DEFAULT_MAX_DECOMPRESSED_BYTES = 1 << 30


def max_decompressed_bytes() -> int:
    """The most bytes a compressed catalogue may inflate to (``TAXONOMIST_MAX_DECOMPRESSED_BYTES``, default 1 GiB):
    a small archive must not fill the memory."""
    raw = os.environ.get("TAXONOMIST_MAX_DECOMPRESSED_BYTES", "")
    try:
        return int(raw) if raw.strip() else DEFAULT_MAX_DECOMPRESSED_BYTES
    except ValueError:
        raise CatalogError(f"TAXONOMIST_MAX_DECOMPRESSED_BYTES: expected a number of bytes, got {raw!r}") from None


def _inflate(stream: Any, name: str) -> bytes:
    """Read a decompressing stream in blocks, refusing it once it passes :func:`max_decompressed_bytes`."""
    limit = max_decompressed_bytes()
    parts: list[bytes] = []
    size = 0
    while True:
        block = stream.read(1 << 20)
        if not block:
            return b"".join(parts)
        size += len(block)
        if size > limit:
            raise CatalogError(f"{name} inflates to more than {limit:,} bytes; expected a compressed catalogue under "
                               "that size -- split it into shards (a folder of files), or raise "
                               "TAXONOMIST_MAX_DECOMPRESSED_BYTES if the file is trusted")
        parts.append(block)


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
            with z.open(tables[0]) as member:
                return _inflate(member, f"{path.name} ({tables[0]})"), Path(tables[0]).suffix.lower()
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
        except RecursionError:
            raise CatalogError(f"{path.name} is nested too deeply to read; expected a JSON array of flat product "
                               "objects (or one object per line, JSONL, where such a line is skipped)") from None
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
            except RecursionError:  # a crafted line nested thousands deep: that line, not the file
                report.issue("malformed_line").add(n, f"JSON nested too deeply: {line[:60]}")
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


_WORKBOOK_EXTS = {".xlsx", ".xlsm"}


def _sheet_named(names: list[str], sheet: str | int | None, name: str) -> str:
    """The sheet to read of a workbook with sheets ``names``: the first, or ``sheet`` by name or 0-based position."""
    if sheet is None:
        return names[0]
    if str(sheet) in names:
        return str(sheet)
    if isinstance(sheet, int) or str(sheet).isdigit():
        if not 0 <= int(sheet) < len(names):
            raise CatalogError(f"{name} has {len(names)} sheets ({', '.join(names)}); sheet {sheet} is not one of them "
                               "(positions count from 0)", options=("sheet",))
        return names[int(sheet)]
    raise CatalogError(f"{name} has no sheet {str(sheet)!r}; its sheets: {', '.join(names)}; choose one with sheet=",
                       options=("sheet",))


def _read_workbook(source: Path | io.BytesIO, name: str, header: bool, columns: Sequence[str] | None,
                   report: ValidationReport, sheet: str | int | None) -> pd.DataFrame:
    """An Excel workbook's sheet (the first, or ``sheet``: a name or a 0-based position) as a frame of strings,
    through pandas and openpyxl (the ``excel`` extra); its inflated size bounded like any compressed input."""
    import zipfile

    try:
        import openpyxl  # noqa: F401 -- pandas' engine for .xlsx
    except ImportError:
        raise CatalogError(f"{name} is an Excel workbook; reading one needs openpyxl: pip install 'taxonomist[excel]' "
                           "(or save the sheet as CSV)") from None
    try:
        with zipfile.ZipFile(source) as z:  # an .xlsx is a zip of XML parts: refuse a bomb before parsing it
            inflated = sum(i.file_size for i in z.infolist())
    except zipfile.BadZipFile as e:
        raise CatalogError(f"{name} is not a readable Excel workbook ({e}); open and save it again, or export CSV") from None
    limit = max_decompressed_bytes()
    if inflated > limit:
        raise CatalogError(f"{name} inflates to {inflated:,} bytes, more than {limit:,}; save its products as CSV "
                           "shards, or raise TAXONOMIST_MAX_DECOMPRESSED_BYTES if the file is trusted")
    with pd.ExcelFile(source, engine="openpyxl") as book:
        names = [str(n) for n in book.sheet_names]
        chosen = _sheet_named(names, sheet, name)
        df = pd.read_excel(book, sheet_name=chosen, dtype=str, header=0 if header else None, keep_default_na=False)
    if len(names) > 1:
        others = ", ".join(n for n in names if n != chosen)
        report.notes.append(f"read the sheet {chosen!r} of {len(names)} (others: {others}; another with --sheet NAME, "
                            "sheet= in Python)")
    if columns is not None:
        if len(columns) != df.shape[1]:
            raise CatalogError(f"{name}: {len(columns)} column names given for a sheet of {df.shape[1]} columns")
        df.columns = list(columns)
    elif not header:
        df.columns = [str(c) for c in range(df.shape[1])]
    df.columns = [str(c) for c in df.columns]
    empty = df.isna().all(axis=1).to_numpy()  # the empty rows a spreadsheet keeps under its data
    df = df.fillna("")
    df["row"] = np.arange(1, len(df) + 1)  # data rows counted from 1, as in a CSV
    return df[~empty].reset_index(drop=True)


def load_table(
    path: Path, encoding: str | None, header: bool, columns: Sequence[str] | None, report: ValidationReport,
    delimiter: str | None = None, sheet: str | int | None = None,
) -> pd.DataFrame:
    """A table file (CSV/TSV/JSONL/Parquet/Excel, compressed too, encoding detected) as a frame of strings plus
    ``row`` (its row number); malformed lines go to ``report``. ``delimiter``: the field delimiter of a delimited
    text (default: tab for ``.tsv``, else sniffed); ``sheet``: an Excel workbook's sheet (default: the first).
    Shared by catalogues and behaviour events."""
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
    if ext in _WORKBOOK_EXTS:
        return _read_workbook(source, path.name, header, columns, report, sheet)
    if ext in {".xls", ".ods", ".numbers"}:
        raise CatalogError(f"{path.name}: taxonomist reads Excel workbooks in the .xlsx format, not {ext} files; "
                           "open it in a spreadsheet and save it as .xlsx or CSV")
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

        openers: dict[str, Callable[[io.BytesIO], Any]] = {
            ".gz": lambda f: gzip.GzipFile(fileobj=f), ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile}
        opener = openers[path.suffix.lower()]
        try:
            with opener(io.BytesIO(raw)) as stream:
                raw = _inflate(stream, path.name)
        except CatalogError:  # over the decompressed-size cap: its own message (a CatalogError is a ValueError)
            raise
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
                f"{path.name} looks binary (NUL bytes), not a text table; expected CSV, TSV, JSONL, Parquet or an "
                "Excel .xlsx workbook (named .xlsx)"
            )
    if ext in {".xml", ".rss", ".atom"}:
        return read_xml_feed(raw, path)
    text = _decode(raw, path, encoding, report, header)
    if ext in {".jsonl", ".ndjson", ".json"}:
        return _to_str_frame(_read_jsonl(text, path, report))
    if ext in {".tsv", ".tab", ".csv", ".txt", ""}:
        if delimiter is None:
            delimiter = "\t" if ext in {".tsv", ".tab"} else sniff_delimiter(text)
    else:
        raise CatalogError(
            f"{path.name}: unsupported file type {ext!r}; expected .csv, .tsv, .jsonl (.ndjson/.json), .parquet, "
            ".xlsx or a Merchant Center .xml feed"
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


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """OWASP's rule against CSV formula injection, for the CSV files taxonomist writes of its own (predictions,
    change reports): a text cell that a spreadsheet would run as a formula (it begins with ``= + - @``, a tab or a
    carriage return) is prefixed with a quote; anything else is returned as it is."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def spreadsheet_text(values: pd.Series) -> pd.Series:
    """Undo :func:`spreadsheet_safe` when reading a table: a cell ``'=…`` (a quote before what a spreadsheet would
    run) is read as ``=…``, as a spreadsheet shows it -- what taxonomist wrote reads back as it was."""
    return values.str.replace(r"^'(?=[=+\-@\t\r])", "", regex=True)
