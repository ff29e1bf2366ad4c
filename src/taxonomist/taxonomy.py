"""A category taxonomy: a tree whose nodes are identified by their full path.

The same leaf name under two parents is two categories: ``Men > Shoes`` and ``Women > Shoes`` are different
nodes. A path is a tuple of names (``("Apparel", "Topwear", "Tshirts")``); wherever a path is accepted, the
string form ``"Apparel > Topwear > Tshirts"`` is accepted too.

Loaders: :meth:`Taxonomy.load` reads the Google Product Taxonomy (``id - A > B > C``), the Shopify Standard
Product Taxonomy (``gid : A > B > C``), Best Buy's ``categories.json``, or a plain file with one path per line;
:meth:`Taxonomy.from_paths` builds the tree from a catalogue's labels. Google's (2021-09-21) and Shopify's
(2025-06) taxonomies ship with the package: :meth:`Taxonomy.builtin` (``"google"``, ``"shopify"``), and
:func:`load_taxonomy` takes either name or a file; :func:`shopify_to_google` is Shopify's published mapping
between the two (``taxonomist/datasets/taxonomies/README.md`` names the sources and licences).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

from .exceptions import TaxonomyError

__all__ = ["BUILTIN", "DEFAULT_SEP", "CategoryPath", "Taxonomy", "category_of", "format_path", "load_taxonomy",
           "parse_path", "shopify_to_google"]

DEFAULT_SEP = " > "
CategoryPath = tuple[str, ...]
TaxonomyFormat = Literal["auto", "google", "shopify", "bestbuy", "paths"]

_BUILTIN_DIR = Path(__file__).resolve().parent / "datasets" / "taxonomies"
BUILTIN = {"google": "google-2021-09-21.txt.gz", "shopify": "shopify-2025-06.txt.gz"}
"""The taxonomies shipped with the package, by name: Google Product Taxonomy 2021-09-21 (the latest Google
release) and Shopify Standard Product Taxonomy 2025-06."""

_GOOGLE_RE = re.compile(r"^\s*(\d+)\s+-\s+(.+?)\s*$")
_SHOPIFY_RE = re.compile(r"^\s*(\S+)\s+:\s+(.+?)\s*$")


def parse_path(path: str | Iterable[str], sep: str = DEFAULT_SEP) -> CategoryPath:
    """Split a category path into its names; surrounding spaces and empty segments are dropped.

    The separator matches with or without spaces around it: with the default ``" > "``, ``"A>B"`` and
    ``"A > B"`` are the same path.

    Example:
        >>> parse_path("Apparel > Topwear>Tshirts")
        ('Apparel', 'Topwear', 'Tshirts')
    """
    if isinstance(path, str):
        token = sep.strip() or sep
        parts: Iterable[str] = path.split(token)
    else:
        parts = path
    return tuple(p.strip() for p in parts if p is not None and str(p).strip())


def format_path(path: Iterable[str], sep: str = DEFAULT_SEP) -> str:
    """Join a path with ``sep``: ``("A", "B")`` → ``"A > B"``."""
    return sep.join(path)


class Taxonomy:
    """A tree of category paths.

    Example:
        >>> tax = Taxonomy.from_paths(["Apparel > Topwear > Tshirts", "Apparel > Bottomwear > Jeans"])
        >>> tax.children("Apparel")
        [('Apparel', 'Bottomwear'), ('Apparel', 'Topwear')]
        >>> tax.depth("Apparel > Topwear > Tshirts"), len(tax.leaves())
        (3, 2)
    """

    def __init__(
        self, paths: Iterable[CategoryPath] = (), ids: dict[CategoryPath, str] | None = None, name: str = "",
        kind: str = "paths",
    ) -> None:
        self.name = name
        self.kind = kind  # the file format it was read from: "google", "shopify", "bestbuy" or "paths"
        self._children: dict[CategoryPath, set[CategoryPath]] = {(): set()}
        self._ids: dict[CategoryPath, str] = {}
        self._by_id: dict[str, CategoryPath] = {}
        for p in paths:
            self.add(p)
        for p, i in (ids or {}).items():
            self._set_id(p, i)

    # -- construction -------------------------------------------------------------------------------------
    def add(self, path: str | Iterable[str], node_id: str | None = None) -> CategoryPath:
        """Add a path and all its ancestors; returns the parsed path."""
        p = parse_path(path)
        if not p:
            raise TaxonomyError("expected a non-empty category path, but got an empty one")
        for depth in range(1, len(p) + 1):
            node, parent = p[:depth], p[: depth - 1]
            if node not in self._children:
                self._children[node] = set()
                self._children[parent].add(node)
        if node_id is not None:
            self._set_id(p, node_id)
        return p

    def _set_id(self, path: CategoryPath, node_id: str) -> None:
        if node_id in self._by_id and self._by_id[node_id] != path:
            raise TaxonomyError(
                f"category id {node_id!r} is used twice: for {format_path(self._by_id[node_id])!r} and "
                f"{format_path(path)!r}; ids must be unique"
            )
        self._ids.setdefault(path, node_id)
        self._by_id[node_id] = path

    @classmethod
    def from_paths(cls, paths: Iterable[str | Iterable[str]], sep: str = DEFAULT_SEP, name: str = "") -> Taxonomy:
        """Build the tree from category paths (strings with ``sep`` or tuples)."""
        tax = cls(name=name)
        for p in paths:
            parsed = parse_path(p, sep)
            if parsed:
                tax.add(parsed)
        return tax

    @classmethod
    def load(cls, file: str | Path, format: TaxonomyFormat = "auto", sep: str = DEFAULT_SEP) -> Taxonomy:
        """Load a taxonomy file.

        Args:
            file: Google ``taxonomy-with-ids.*.txt``, Shopify ``categories.txt``, Best Buy ``categories.json``,
                or a text file with one path per line.
            format: ``"auto"`` detects the format from the content.
            sep: separator of the plain-paths format (Google and Shopify always use ``" > "``).
        """
        formats = get_args(TaxonomyFormat)
        if format not in formats:
            raise TaxonomyError(f"unknown taxonomy format {format!r}; choose one of {list(formats)}")
        path = Path(file)
        if not path.is_file():
            raise TaxonomyError(f"expected a taxonomy file, but {str(path)!r} does not exist or is not a file")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise TaxonomyError(
                f"expected a UTF-8 taxonomy file, but {str(path)!r} is not valid UTF-8 ({e.reason} at byte "
                f"{e.start}); convert it with: iconv -f GB18030 -t UTF-8 (or its real encoding)"
            ) from None
        fmt = format if format != "auto" else cls._detect(path, text)
        return cls._parse(path, text, fmt, sep)

    @classmethod
    def _parse(cls, path: Path, text: str, fmt: TaxonomyFormat, sep: str = DEFAULT_SEP) -> Taxonomy:
        tax = cls(name=path.name, kind=fmt)
        if fmt == "bestbuy":
            tax._read_bestbuy(path, text)
        else:
            tax._read_lines(path, text, fmt, sep)
        if len(tax) == 0:
            raise TaxonomyError(f"expected category paths in {str(path)!r}, but found none")
        return tax

    @classmethod
    def builtin(cls, name: str) -> Taxonomy:
        """A taxonomy shipped with the package: ``"google"`` (Google Product Taxonomy 2021-09-21, 5,595
        categories) or ``"shopify"`` (Shopify Standard Product Taxonomy 2025-06, 10,595 categories)."""
        return _builtin(name).copy()

    def copy(self) -> Taxonomy:
        out = Taxonomy(name=self.name, kind=self.kind)
        out._children = {k: set(v) for k, v in self._children.items()}
        out._ids, out._by_id = dict(self._ids), dict(self._by_id)
        return out

    @staticmethod
    def _detect(path: Path, text: str) -> TaxonomyFormat:
        stripped = text.lstrip()
        if path.suffix.lower() == ".json" or stripped.startswith(("[", "{")):
            return "bestbuy"
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if _GOOGLE_RE.match(line):
                return "google"
            if _SHOPIFY_RE.match(line) and line.split(":", 1)[0].strip().startswith("gid:"):
                return "shopify"
            m = _SHOPIFY_RE.match(line)
            if m and " " not in m.group(1):
                return "shopify"
            return "paths"
        return "paths"

    def _read_lines(self, path: Path, text: str, fmt: TaxonomyFormat, sep: str) -> None:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if fmt == "paths":
                self.add(parse_path(line, sep))
                continue
            if fmt == "shopify":
                # the gid itself contains ':' ("gid://shopify/..."), so split on the spaced colon
                head, found, rest = line.partition(" : ")
                m = (head.strip(), rest.strip()) if found else None
            else:
                g = _GOOGLE_RE.match(line)
                m = (g.group(1), g.group(2)) if g else None
            if m is None or not m[1]:
                example = "123 - A > B" if fmt == "google" else "gid://shopify/TaxonomyCategory/aa-1 : A > B"
                raise TaxonomyError(
                    f"{path.name} line {lineno}: expected a {fmt} taxonomy line like {example!r}, but found "
                    f"{line[:120]!r}; pass format='paths' if the file holds plain paths",
                    options=("format",))
            self.add(parse_path(m[1], DEFAULT_SEP), node_id=m[0])

    def _read_bestbuy(self, path: Path, text: str) -> None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise TaxonomyError(f"{path.name} is not valid JSON: {e}") from None
        if isinstance(data, dict):
            data = data.get("categories", [data])
        if not isinstance(data, list):
            raise TaxonomyError(f"expected a JSON list of categories in {path.name}, found {type(data).__name__}")
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), list) or not entry["path"]:
                raise TaxonomyError(
                    f"{path.name} entry {i}: expected an object with a non-empty 'path' list of "
                    f"{{'id', 'name'}} objects (Best Buy categories.json), found {str(entry)[:120]!r}"
                )
            names = [str(step.get("name", "")) for step in entry["path"]]
            p = self.add(names)
            node_id = entry.get("id")
            if node_id is not None and str(node_id) not in self._by_id:
                self._set_id(p, str(node_id))

    # -- queries --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._children) - 1

    def __contains__(self, path: object) -> bool:
        if isinstance(path, str):
            path = parse_path(path)
        return isinstance(path, tuple) and len(path) > 0 and path in self._children

    def __iter__(self) -> Iterator[CategoryPath]:
        """All nodes, parents before children, siblings sorted."""
        stack: list[CategoryPath] = [()]
        while stack:
            node = stack.pop()
            if node:
                yield node
            stack.extend(sorted(self._children[node], reverse=True))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Taxonomy) and self._children == other._children

    def __repr__(self) -> str:
        return f"Taxonomy(name={self.name!r}, nodes={len(self)}, leaves={len(self.leaves())}, depth={self.max_depth})"

    def _key(self, path: str | Iterable[str]) -> CategoryPath:
        p = parse_path(path) if isinstance(path, str) else tuple(path)
        if p and p not in self._children:
            close = self.search(p[-1], limit=3)
            hint = f"; similar: {[format_path(c) for c in close]}" if close else ""
            raise TaxonomyError(f"category {format_path(p)!r} is not in the taxonomy{hint}")
        return p

    def children(self, path: str | Iterable[str] = ()) -> list[CategoryPath]:
        """Direct children of a node (of the root when ``path`` is empty), sorted."""
        return sorted(self._children[self._key(path)])

    def parent(self, path: str | Iterable[str]) -> CategoryPath:
        return self._key(path)[:-1]

    def ancestors(self, path: str | Iterable[str], include_self: bool = False) -> list[CategoryPath]:
        """Ancestors from the top level down (the root ``()`` excluded)."""
        p = self._key(path)
        end = len(p) + 1 if include_self else len(p)
        return [p[:d] for d in range(1, end)]

    def depth(self, path: str | Iterable[str]) -> int:
        """1 for a top-level category."""
        return len(self._key(path))

    def is_leaf(self, path: str | Iterable[str]) -> bool:
        return not self._children[self._key(path)]

    def leaves(self) -> list[CategoryPath]:
        return sorted(p for p, c in self._children.items() if p and not c)

    @property
    def max_depth(self) -> int:
        return max((len(p) for p in self._children), default=0)

    def nodes_at_depth(self, depth: int) -> list[CategoryPath]:
        return sorted(p for p in self._children if len(p) == depth)

    def id_of(self, path: str | Iterable[str]) -> str | None:
        return self._ids.get(self._key(path))

    def path_of_id(self, node_id: str | int) -> CategoryPath | None:
        """The path of a node id, or ``None`` when no node has it."""
        return self._by_id.get(str(node_id))

    def by_id(self, node_id: str | int) -> CategoryPath:
        try:
            return self._by_id[str(node_id)]
        except KeyError:
            raise TaxonomyError(f"no category has the id {str(node_id)!r} in taxonomy {self.name or '(unnamed)'!r}") from None

    def find(self, query: str | int) -> CategoryPath:
        """Look a node up by id or by path."""
        if str(query) in self._by_id:
            return self._by_id[str(query)]
        return self._key(str(query))

    def search(self, text: str, limit: int = 20) -> list[CategoryPath]:
        """Nodes whose path contains ``text`` (case-insensitive), shortest paths first."""
        needle = text.lower()
        hits = [p for p in self._children if p and needle in format_path(p).lower()]
        return sorted(hits, key=lambda p: (len(p), p))[:limit]

    def truncate(self, depth: int) -> Taxonomy:
        """A new taxonomy cut at ``depth`` levels."""
        if depth < 1:
            raise TaxonomyError(f"expected a truncation depth ≥ 1, got {depth}")
        ids = {p: i for p, i in self._ids.items() if len(p) <= depth}
        return Taxonomy((p for p in self._children if 0 < len(p) <= depth), ids=ids, name=self.name)

    def check(self, paths: Iterable[str | Iterable[str]], sep: str = DEFAULT_SEP) -> dict[str, int]:
        """Labels that are not nodes of this taxonomy, with how often each occurs."""
        unknown: dict[str, int] = {}
        for raw in paths:
            p = parse_path(raw, sep)
            if p and p not in self._children:
                key = format_path(p)
                unknown[key] = unknown.get(key, 0) + 1
        return dict(sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0])))

    # -- serialisation ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form: the leaf-or-inner node list and ids (used inside model bundles)."""
        nodes = [list(p) for p in self if self.is_leaf(p)]
        return {
            "name": self.name,
            "kind": self.kind,
            "paths": nodes,
            "ids": [[list(p), i] for p, i in sorted(self._ids.items())],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Taxonomy:
        try:
            paths = [tuple(str(x) for x in p) for p in data["paths"]]
            ids = {tuple(str(x) for x in p): str(i) for p, i in data.get("ids", [])}
        except (KeyError, TypeError, ValueError) as e:
            raise TaxonomyError(f"expected a taxonomy dict with 'paths' (list of name lists), got an error: {e}") from None
        kind = str(data.get("kind", "paths"))
        return cls(paths, ids=ids, name=str(data.get("name", "")),
                   kind=kind if kind in get_args(TaxonomyFormat) else "paths")


@lru_cache(maxsize=2)
def _builtin(name: str) -> Taxonomy:
    if name not in BUILTIN:
        raise TaxonomyError(f"no built-in taxonomy {name!r}; built in: {sorted(BUILTIN)} (or give a taxonomy file)")
    file = _BUILTIN_DIR / BUILTIN[name]
    return Taxonomy._parse(file, gzip.decompress(file.read_bytes()).decode("utf-8"), name)  # type: ignore[arg-type]


def load_taxonomy(spec: str | Path, format: TaxonomyFormat = "auto", sep: str = DEFAULT_SEP) -> Taxonomy:
    """``"google"`` / ``"shopify"`` (the built-in taxonomies, unless a file of that name exists) or a taxonomy file
    (:meth:`Taxonomy.load`)."""
    if str(spec).lower() in BUILTIN and not Path(spec).exists():
        return Taxonomy.builtin(str(spec).lower())
    return Taxonomy.load(spec, format=format, sep=sep)


@lru_cache(maxsize=1)
def shopify_to_google() -> dict[CategoryPath, CategoryPath]:
    """Shopify's published mapping of its 2025-08 categories into Google's 2021-09-21 taxonomy (10,535 of 10,595
    categories; Shopify/product-taxonomy ``dist/en/integrations/google``, MIT)."""
    file = _BUILTIN_DIR / "shopify-2025-08-to-google-2021-09-21.tsv.gz"
    out: dict[CategoryPath, CategoryPath] = {}
    for line in gzip.decompress(file.read_bytes()).decode("utf-8").splitlines():
        if line and not line.startswith("#"):
            src, _, dst = line.partition("\t")
            out[parse_path(src)] = parse_path(dst)
    return out


def category_of(path: CategoryPath, taxonomy: Taxonomy) -> CategoryPath | None:
    """``path`` as a category of ``taxonomy``: itself when the taxonomy has it, its Google category by
    :func:`shopify_to_google` when the taxonomy is Google's and the path is Shopify's, else ``None``."""
    if path in taxonomy:
        return path
    mapped = shopify_to_google().get(path) if taxonomy.kind == "google" else None
    return mapped if mapped is not None and mapped in taxonomy else None
