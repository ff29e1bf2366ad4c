"""One batch type for products, whatever they came as: :class:`ProductBatch`.

A :class:`~taxonomist.catalog.Catalog`, a pandas DataFrame, a list of dicts (API records), one dict or a list of
title strings become a :class:`ProductBatch` once -- by the CLI reader, the batch worker or the API -- and are
passed down as such: titles, descriptions, attribute columns, image references (paths, URLs or the photo's bytes)
and the folder relative image paths resolve against. What is derived from them is computed once and cached on
the batch: the normalised titles (title groups, fingerprints, seen-in-training hashes) and each image encoder's
features of the photos (decoded once, whatever the number of predictions made from them).

Lengths: one policy for files and the API. A title is read up to :data:`MAX_TITLE_CHARS` characters and any
other text field up to :data:`MAX_TEXT_CHARS`; a catalogue file's longer fields are truncated and reported
(``long_text``), an API request's are refused (422).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .exceptions import TaxonomistError
from .tables import column_key
from .text import field_text, normalize_for_sparse
from .validation import MAX_TEXT_CHARS, MAX_TITLE_CHARS

__all__ = ["CANONICAL_FIELDS", "MAX_TEXT_CHARS", "MAX_TITLE_CHARS", "ProductBatch", "fingerprint", "groups_of",
           "kind_of_product"]

CANONICAL_FIELDS = ("id", "title", "description", "category", "image")

_KIND_FIELDS = frozenset({"type", "product_type", "producttype", "item_type", "tags", "keywords", "product_category",
                          "category_hint", "categories", "subcategory", "sub_category", "article_type", "articletype",
                          "类型", "标签"})
_NUMERIC_SHARE = 0.9

Images = tuple[np.ndarray, np.ndarray]
"""(vectors (n, d), mask (n,)): image features and which products have a usable image."""


def kind_of_product(column: object) -> bool:
    """Whether an attribute column says what kind of product it is (type, tags, ...), which a zero-shot model
    reads with the title; colours, sizes, gender or season mislead it (benchmarks/RESULTS.md, "Zero-shot into
    Google's taxonomy from a shop's exports")."""
    return column_key(str(column)) in _KIND_FIELDS


def _hash(normalised: str) -> int:
    return int.from_bytes(hashlib.blake2b(normalised.encode(), digest_size=8).digest(), "little", signed=True)


def fingerprint(titles: Iterable[str], labels: Iterable[str]) -> str:
    """A stable digest of the (normalised title, label) rows, order-independent."""
    return _digest([normalize_for_sparse(t) for t in titles], labels)


def _digest(normalised_titles: Iterable[str], labels: Iterable[str]) -> str:
    rows = sorted(f"{t}\t{c}" for t, c in zip(normalised_titles, labels, strict=True))
    return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()[:16]


def groups_of(normalised_titles: Sequence[str]) -> np.ndarray:
    """Integer group per normalised title: identical ones share a group, numbered in order of first appearance;
    empty ones (photo-only rows) are each their own group, numbered after the others."""
    codes, uniques = pd.factorize(pd.Series(list(normalised_titles), dtype=object))
    codes = np.asarray(codes)
    empty = np.flatnonzero(np.asarray([not t for t in normalised_titles], dtype=bool))
    codes[empty] = len(uniques) + np.arange(len(empty))
    return codes


@dataclass(eq=False)
class ProductBatch:
    """Products as the models read them, built once (:meth:`from_any`) and passed down.

    Attributes:
        titles: one per product (``""`` when missing).
        descriptions: one per product (``""`` when missing).
        attributes: every other column (brand, colour, type, ...) as strings, ``""`` when missing, in the order
            the source listed them.
        images: each product's photo: a path or URL, the photo's bytes, or ``None``.
        root: the folder relative image paths resolve against (a catalogue file's folder), when known.
        ids: the products' ids, when the source had an ``id`` column.
        labels: the ``category`` column, when the source had one.
    """

    titles: list[str]
    descriptions: list[str]
    attributes: dict[str, list[str]] = field(default_factory=dict)
    images: list[str | bytes | None] = field(default_factory=list)
    root: Path | None = None
    ids: list[str] | None = None
    labels: list[str] | None = None
    _features: dict[str, Images] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.images:
            self.images = [None] * len(self.titles)

    def __len__(self) -> int:
        return len(self.titles)

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_any(cls, X: Any) -> ProductBatch:
        """Products given as a :class:`ProductBatch` (returned as it is), a Catalog, a DataFrame, dicts with a
        ``title`` (API records; ``image`` may hold the photo's bytes), one dict, or title strings."""
        if isinstance(X, ProductBatch):
            return X
        if isinstance(getattr(X, "frame", None), pd.DataFrame):  # a Catalog (which is built on this module)
            batch = cls.from_frame(X.frame)
            batch.root = getattr(X, "base_dir", None)
            return batch
        if isinstance(X, pd.DataFrame):
            return cls.from_frame(X)
        if isinstance(X, str):
            raise TypeError("expected a list of products, got a single string; pass [text] or use predict_products([...])")
        if isinstance(X, Mapping):
            return cls.from_records([X])
        items = list(X)
        if all(isinstance(i, str) for i in items):
            return cls(titles=list(items), descriptions=[""] * len(items))
        if all(isinstance(i, Mapping) for i in items):
            return cls.from_records(items)
        raise TypeError("expected products as a Catalog, a DataFrame, dicts with a 'title', or title strings")

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> ProductBatch:
        if "title" not in df.columns:
            raise TaxonomistError(f"expected products with a 'title' field, found the fields {list(df.columns)}")

        def text(col: str) -> list[str]:
            return df[col].fillna("").astype(str).tolist() if col in df.columns else [""] * len(df)

        extra = [str(c) for c in df.columns if c not in CANONICAL_FIELDS and c != "row"]
        images: list[str | bytes | None] = ([v if v else None for v in df["image"].fillna("").astype(str)]
                                            if "image" in df.columns else [])
        return cls(titles=text("title"), descriptions=text("description"),
                   attributes={c: df[c].fillna("").astype(str).tolist() for c in extra}, images=images,
                   ids=text("id") if "id" in df.columns else None,
                   labels=df["category"].tolist() if "category" in df.columns else None)

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> ProductBatch:
        if records and not any("title" in r for r in records):
            raise TaxonomistError(f"expected products with a 'title' field, found the fields {sorted(records[0])}")
        columns: dict[str, None] = {}
        for r in records:
            columns.update(dict.fromkeys(str(k) for k in r if k not in CANONICAL_FIELDS and k != "row"))
        images: list[str | bytes | None] = [
            r["image"] if isinstance(r.get("image"), bytes) else str(r["image"]) if r.get("image") else None
            for r in records]
        has_id = any("id" in r for r in records)
        return cls(titles=[field_text(r.get("title")) for r in records],
                   descriptions=[field_text(r.get("description")) for r in records],
                   attributes={c: [field_text(r.get(c)) for r in records] for c in columns}, images=images,
                   ids=[field_text(r.get("id")) for r in records] if has_id else None,
                   labels=[field_text(r.get("category")) for r in records] if any("category" in r for r in records)
                   else None)

    def subset(self, index: Sequence[int] | np.ndarray) -> ProductBatch:
        idx = [int(i) for i in index]

        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in idx]

        return ProductBatch(titles=[self.titles[i] for i in idx], descriptions=[self.descriptions[i] for i in idx],
                            attributes={c: [v[i] for i in idx] for c, v in self.attributes.items()},
                            images=[self.images[i] for i in idx], root=self.root, ids=pick(self.ids),
                            labels=pick(self.labels))

    # -- what models read -----------------------------------------------------------------------------------
    def contexts(self, columns: Sequence[str], description_chars: int | None = None) -> list[str]:
        """Each product's description (its first ``description_chars`` characters; ``None``: whole) followed by
        its values of ``columns`` (those it has), space-joined."""
        descriptions = (list(self.descriptions) if description_chars is None
                        else [d[:description_chars] for d in self.descriptions])
        cols = [self.attributes[c] for c in columns if c in self.attributes]
        if not cols:
            return descriptions
        return [" ".join(v for v in row if v) for row in zip(descriptions, *cols, strict=True)]

    def kind_contexts(self) -> list[str]:
        """What a zero-shot model reads beside the title: the columns that say what kind of product it is (type,
        tags, ...), then the description."""
        cols = [v for c, v in self.attributes.items() if kind_of_product(c)]
        if not cols:
            return list(self.descriptions)
        return [" ".join(v for v in row if v) for row in zip(*cols, self.descriptions, strict=True)]

    def text_columns(self) -> list[str]:
        """The attribute columns that are text, not numbers (prices, stock counts): what a model may read."""
        out = []
        for c, values in self.attributes.items():
            v = pd.Series(values)
            v = v[v != ""]
            if not v.empty and not pd.to_numeric(v, errors="coerce").notna().mean() >= _NUMERIC_SHARE:
                out.append(c)
        return out

    @cached_property
    def normalised_titles(self) -> list[str]:
        """The titles as the sparse features and the duplicate checks read them (computed once)."""
        return [normalize_for_sparse(t) for t in self.titles]

    def title_groups(self) -> np.ndarray:
        """Integer group per title: identical normalised titles share a group; products without a title (photo-only
        rows) are each their own group."""
        return groups_of(self.normalised_titles)

    def title_hashes(self) -> np.ndarray:
        """64-bit hashes of the normalised titles (to detect evaluation on products seen in training)."""
        return np.array([_hash(t) for t in self.normalised_titles], dtype=np.int64)

    def fingerprint(self, labels: Iterable[str]) -> str:
        """:func:`fingerprint` of these products with ``labels``."""
        return _digest(self.normalised_titles, labels)

    def image_features(self, key: str, encode: Callable[[list[str | bytes | None], Path], Images],
                       root: Path | None = None) -> Images:
        """The photos' features under an image encoder (``key``: its identity), computed once per batch."""
        if key not in self._features:
            self._features[key] = encode(self.images, Path(root or self.root or Path.cwd()))
        return self._features[key]
