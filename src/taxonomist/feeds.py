"""Shop exports read as they are: Shopify products CSV, Google Merchant Center feeds (XML or TSV), WooCommerce CSV.

:func:`detect` recognises an export by its header; :func:`adapt` turns it into the shape :func:`read_catalog`
canonicalises: one row per product (Shopify's variant and image rows and WooCommerce's variations folded into
their product), and a column mapping (id, title, description, category, image) chosen from the format's own
field names rather than guessed. Columns that only run the shop (prices, stock, SEO fields, flags) are left out of
the product's attributes; columns that describe the product (vendor, type, tags, options, brand, colour, ...) stay.

:func:`read_xml_feed` reads a Merchant Center XML feed (RSS 2.0 ``<item>`` or Atom ``<entry>``, fields in the
``g:`` namespace) with defusedxml, so a hostile feed cannot expand entities or reach the network.

Formats, from their public specifications:

- Shopify products CSV: ``Handle, Title, Body (HTML), Vendor, Product Category, Type, Tags, ... Image Src ...``;
  a product's first row carries the title, the rows after it (same handle, empty title) its other variants and
  images. ``Product Category`` is a Shopify Standard Product Taxonomy path.
- Google Merchant Center: ``id, title, description, link, image_link, google_product_category, product_type,
  brand, ...``; ``google_product_category`` is a Google taxonomy path or its numeric id (mapped through the
  taxonomy file when one is given).
- WooCommerce products CSV: ``ID, Type, SKU, Name, ..., Short description, Description, ..., Categories, Tags,
  Images, Parent, ...``; ``Categories`` lists the product's categories, comma-separated, each a ``A > B`` path;
  ``variation`` rows belong to the product named in ``Parent``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from .exceptions import CatalogError

__all__ = ["FORMATS", "adapt", "detect", "read_xml_feed"]

logger = logging.getLogger(__name__)

FORMATS = ("shopify", "merchant", "woocommerce")

_SHOPIFY_KEEP = ("Vendor", "Type", "Tags", "Option1 Name", "Option1 Value", "Option2 Name", "Option2 Value",
                 "Option3 Name", "Option3 Value", "Google Shopping / Gender", "Google Shopping / Age Group",
                 "Google Shopping / Condition")
_MERCHANT_KEEP = ("product_type", "brand", "color", "gender", "age_group", "material", "pattern", "size",
                  "size_type", "item_group_id", "condition", "product_detail", "product_highlight")
_MERCHANT_ONLY = {"image_link", "product_type", "availability", "condition", "gtin", "mpn", "item_group_id"}
_WOO_KEEP = ("Short description", "Tags", "Attribute 1 name", "Attribute 1 value(s)", "Attribute 2 name",
             "Attribute 2 value(s)", "Brands")


def detect(columns: list[str]) -> str | None:
    """The export a header belongs to (``"shopify"``, ``"merchant"``, ``"woocommerce"``) or ``None``."""
    cols = {str(c).strip() for c in columns}
    plain = {c.removeprefix("g:").lower() for c in cols}
    if {"Handle", "Title", "Body (HTML)"} <= cols:
        return "shopify"
    if {"ID", "Type", "Name", "Categories"} <= cols and ({"Short description", "Description"} & cols):
        return "woocommerce"
    if {"id", "title"} <= plain and ("google_product_category" in plain or ("link" in plain and _MERCHANT_ONLY & plain)):
        return "merchant"
    return None


def adapt(df: pd.DataFrame, fmt: str) -> tuple[pd.DataFrame, dict[str, str], int]:
    """(one row per product with only the columns worth reading, canonical field → column, rows folded)."""
    if fmt == "shopify":
        return _shopify(df)
    if fmt == "merchant":
        return _merchant(df)
    if fmt == "woocommerce":
        return _woocommerce(df)
    raise ValueError(f"unknown feed format {fmt!r}; expected one of {FORMATS}")


def _keep(df: pd.DataFrame, mapping: dict[str, str], attrs: tuple[str, ...]) -> pd.DataFrame:
    cols = [*dict.fromkeys([*mapping.values(), *(c for c in attrs if c in df.columns), "row"])]
    return df[[c for c in cols if c in df.columns]].reset_index(drop=True)


def _shopify(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str], int]:
    handle = df["Handle"].fillna("").astype(str).str.strip()
    title = df["Title"].fillna("").astype(str).str.strip()
    # a continuation row repeats the handle of the product above it and leaves the title empty
    cont = (title == "") & (handle != "") & (handle == handle.where(title != "").ffill())
    out = df.loc[~cont].copy()
    if "Image Src" in df.columns:  # a product whose own row has no image takes its first image row's
        first_image = df["Image Src"].fillna("").astype(str).str.strip().where(lambda s: s != "").groupby(handle).first()
        own = out["Image Src"].fillna("").astype(str).str.strip()
        out["Image Src"] = own.where(own != "", handle[~cont].map(first_image).fillna(""))
    for opt in ("Option1 Value", "Option2 Value", "Option3 Value"):  # every variant's option values, once each
        if opt in df.columns:
            values = df[opt].fillna("").astype(str).str.strip().groupby(handle).agg(
                lambda s: ", ".join(dict.fromkeys(v for v in s if v and v != "Default Title")))
            out[opt] = handle[~cont].map(values).fillna("")
    mapping = {"id": "Handle", "title": "Title", "description": "Body (HTML)"}
    for fld, col in (("category", "Product Category"), ("image", "Image Src")):
        if col in df.columns:
            mapping[fld] = col
    return _keep(out, mapping, _SHOPIFY_KEEP), mapping, int(cont.sum())


def _merchant(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str], int]:
    df = df.rename(columns={c: str(c).removeprefix("g:") for c in df.columns if str(c).startswith("g:")})
    mapping = {"id": "id", "title": "title"}
    for fld, cols in (("description", ("description",)), ("category", ("google_product_category", "category")),
                      ("image", ("image_link", "image"))):
        found = next((c for c in cols if c in df.columns), None)
        if found is not None:
            mapping[fld] = found
    return _keep(df, mapping, _MERCHANT_KEEP), mapping, 0


def _woocommerce(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str], int]:
    kind = df["Type"].fillna("").astype(str).str.strip().str.lower()
    variation = kind == "variation"
    out = df.loc[~variation].copy()
    if "Categories" in out.columns:  # the most specific of the listed categories ("A > B, A" -> "A > B")
        def best(cell: Any) -> str:
            paths = [p.strip() for p in str(cell or "").split(",") if p.strip()]
            return max(paths, key=lambda p: p.count(">"), default="")

        out["Categories"] = out["Categories"].map(best)
    if "Images" in out.columns:
        out["Images"] = out["Images"].fillna("").astype(str).map(lambda s: s.split(",")[0].strip())
    mapping = {"id": "ID", "title": "Name"}
    for fld, col in (("description", "Description"), ("category", "Categories"), ("image", "Images")):
        if col in out.columns:
            mapping[fld] = col
    return _keep(out, mapping, _WOO_KEEP), mapping, int(variation.sum())


def read_xml_feed(raw: bytes, path: Path) -> pd.DataFrame:
    """A Merchant Center XML feed (RSS 2.0 or Atom) as a frame of strings, one row per item, columns named by the
    fields' local names (``g:id`` → ``id``); repeated fields are joined with ``, ``, nested ones (``g:shipping``)
    flattened as ``shipping.country``."""
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    try:
        root = ElementTree.fromstring(raw)
    except DefusedXmlException as e:
        raise CatalogError(f"{path.name}: refused an XML feed that uses entities or DTDs ({type(e).__name__}); "
                           "a product feed needs neither") from None
    except ElementTree.ParseError as e:
        raise CatalogError(f"{path.name} is not well-formed XML ({e}); expected a Merchant Center feed "
                           "(<rss><channel><item>... or <feed><entry>...)") from None

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    items = [el for el in root.iter() if local(el.tag) in ("item", "entry")]
    if not items:
        raise CatalogError(f"{path.name}: no <item> (RSS) or <entry> (Atom) elements; expected a Merchant Center "
                           "product feed")
    rows = []
    for item in items:
        row: dict[str, str] = {}
        for field in item:
            children = list(field)
            pairs = ([(f"{local(field.tag)}.{local(c.tag)}", (c.text or "").strip()) for c in children] if children
                     else [(local(field.tag), (field.text or field.get("href") or "").strip())])
            for name, value in pairs:
                row[name] = f"{row[name]}, {value}" if row.get(name) and value else (value or row.get(name, ""))
        rows.append(row)
    df = pd.DataFrame(rows).fillna("").astype(str)
    df["row"] = range(1, len(df) + 1)
    return df
