"""Category-aware product search over a catalogue: full-text retrieval (SQLite FTS5, BM25) fused with embedding
similarity, boosted or filtered by the query's predicted category.

An index is a folder:
- ``index.sqlite``: the products (id, title, category, where the category came from) and an FTS5 table over
  their title and body (description + attributes), tokenised by :func:`taxonomist.text.tokenize` (jieba words
  for Chinese, so FTS5 sees words, not whole CJK runs);
- ``embeddings.npy``: L2-normalised title embeddings (float32; loaded without pickle), when built with an encoder;
- ``search.json``: what the index was built from (encoder, rows, where categories came from).

Scoring: the top ``candidates`` of each retriever are fused by reciprocal rank (RRF, k = 60); with a category
distribution for the query (from a :class:`~taxonomist.apps.query.QueryClassifier`), each candidate's fused score is
multiplied by ``1 + boost * m``, where ``m`` is the query's probability mass on the candidate's category averaged
over its levels (agreeing at the top level counts, agreeing down to the leaf counts more). ``category=`` instead
restricts both retrievers to one subtree.

Example:
    >>> idx = SearchIndex.build(tx.read_catalog("products.csv"), "search-index/")      # doctest: +SKIP
    >>> idx.search("red running shoes", k=5, query_classifier=qc)[0].title              # doctest: +SKIP
    'Nike Men Red Running Shoes'
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..exceptions import TaxonomistError
from ..taxonomy import parse_path
from ..text import normalize_for_sparse, tokenize

__all__ = ["SearchHit", "SearchIndex", "category_mass", "elasticsearch_boost"]

logger = logging.getLogger(__name__)

Mode = Literal["hybrid", "bm25", "vector"]
_RRF_K = 60
_BATCH = 2048
_FILES = ("index.sqlite", "search.json", "embeddings.npy")


@dataclass(frozen=True)
class SearchHit:
    id: str
    title: str
    category: str
    score: float
    bm25_rank: int | None = None  # 1-based rank among the full-text candidates (None: not among them)
    vector_rank: int | None = None
    category_mass: float | None = None  # the query's probability mass on this product's category (with a boost)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fts_text(text: str) -> str:
    return " ".join(tokenize(normalize_for_sparse(text)))


def _match_expression(query: str) -> str:
    """An FTS5 MATCH expression: every query word quoted (no FTS syntax from users), any word may match."""
    words = dict.fromkeys(tokenize(normalize_for_sparse(query)))
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def category_mass(scores: Mapping[str, float]) -> dict[tuple[str, ...], float]:
    """Probability mass per category path prefix, from one query's leaf distribution ``{path: probability}``."""
    mass: dict[tuple[str, ...], float] = {}
    for c, p in scores.items():
        path = parse_path(str(c))
        for depth in range(1, len(path) + 1):
            mass[path[:depth]] = mass.get(path[:depth], 0.0) + float(p)
    return mass


def _item_mass(path: tuple[str, ...], mass: Mapping[tuple[str, ...], float]) -> float:
    if not path:
        return 0.0
    return float(np.mean([mass.get(path[:d], 0.0) for d in range(1, len(path) + 1)]))


def elasticsearch_boost(scores: Mapping[str, float], field: str = "category_path", min_mass: float = 0.05,
                        boost: float = 2.0) -> list[dict[str, Any]]:
    """``should`` clauses that carry the same category boost into an OpenSearch / Elasticsearch ``bool`` query.

    Each category prefix with at least ``min_mass`` of the query's probability becomes a ``term`` clause on
    ``field`` (a keyword field holding every prefix of the product's path, e.g. ``["Apparel", "Apparel > Topwear"]``)
    weighted by ``boost * mass``. Put them next to the text ``must`` clause::

        scores = dict(zip(qc.classes_, qc.predict_proba([q])[0]))
        {"query": {"bool": {"must": {"match": {"title": q}}, "should": elasticsearch_boost(scores)}}}
    """
    return [{"term": {field: {"value": " > ".join(path), "boost": round(boost * m, 4)}}}
            for path, m in sorted(category_mass(scores).items(), key=lambda kv: -kv[1]) if m >= min_mass]


class SearchIndex:
    """A searchable catalogue (see the module docs). Build with :meth:`build`, open with :meth:`load`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta_file = self.folder / "search.json"
        if not meta_file.is_file():
            raise TaxonomistError(f"{self.folder}: not a search index (no search.json); build one with "
                                  "taxonomist search build CATALOG -o FOLDER")
        self.meta: dict[str, Any] = json.loads(meta_file.read_text())
        # read-only; one connection shared by the server's threads under a lock
        uri = (self.folder / "index.sqlite").resolve().as_uri() + "?mode=ro"  # percent-encoded: '#', '?' in paths
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        rows = self._db.execute("SELECT id, title, category FROM products ORDER BY rowid").fetchall()
        self.ids = [r[0] for r in rows]
        self.titles = [r[1] for r in rows]
        self.categories = [r[2] for r in rows]
        self._paths = [parse_path(c) if c else () for c in self.categories]
        # each product's path as a code into the distinct paths: a category filter tests a few hundred paths, not
        # every product
        distinct: dict[tuple[str, ...], int] = {}
        self._path_codes = np.fromiter((distinct.setdefault(q, len(distinct)) for q in self._paths), dtype=np.int64,
                                       count=len(self._paths))
        self._distinct_paths = list(distinct)
        emb = self.folder / "embeddings.npy"
        self.embeddings: np.ndarray | None = np.load(emb, allow_pickle=False) if emb.is_file() else None
        if self.embeddings is not None and len(self.embeddings) != len(self.ids):
            raise TaxonomistError(f"{self.folder}: embeddings.npy has {len(self.embeddings)} rows for {len(self.ids)} "
                                  "products; rebuild the index")
        self._encoder: Any = None

    @classmethod
    def load(cls, folder: str | Path) -> SearchIndex:
        return cls(folder)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"SearchIndex({str(self.folder)!r}, products={len(self)}, encoder={self.meta.get('encoder')!r})"

    @property
    def encoder(self) -> Any:
        if self._encoder is None and self.meta.get("encoder"):
            from ..encoders import load_text_encoder

            self._encoder = load_text_encoder(self.meta["encoder"])
        return self._encoder

    # -- building ---------------------------------------------------------------------------------------
    @classmethod
    def build(cls, catalog: Any, folder: str | Path, model: Any = None, encoder: str | None = "auto",
              overwrite: bool = False, show_progress_bar: bool | None = None) -> SearchIndex:
        """Index ``catalog`` (a :class:`~taxonomist.Catalog`) into ``folder``.

        Products keep their labelled category; unlabelled ones get ``model``'s prediction (no model: no category,
        so no boost for them). ``encoder``: a text encoder preset / folder for the embedding side, ``"auto"`` (by
        language), or ``None`` for full text only.
        """
        from ..catalog import Catalog

        if not isinstance(catalog, Catalog):
            raise TypeError(f"expected a Catalog (taxonomist.read_catalog(...)), got {type(catalog).__name__}")
        if len(catalog) == 0:
            raise TaxonomistError("the catalogue has no products to index")
        out = Path(folder)
        if out.exists() and any(out.iterdir()):
            if not (out / "search.json").is_file():
                raise TaxonomistError(f"{out} exists and is not a search index; choose an empty or new folder")
            if not overwrite:
                raise TaxonomistError(f"{out} already holds a search index; pass overwrite=True to rebuild it",
                                      options=("overwrite",))
            for name in _FILES:
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        df = catalog.frame
        categories = df["category"].tolist()
        source = ["label" if c else "" for c in categories]
        missing = [i for i, c in enumerate(categories) if not c]
        if missing and model is not None:
            preds = model.predict(df.iloc[missing])
            for i, c in zip(missing, preds, strict=True):
                categories[i], source[i] = str(c), "predicted"
        attrs = [c for c in catalog.attribute_columns if c in df.columns]
        body_cols = df[["description", *attrs]].fillna("").astype(str).to_numpy()
        tmp = out / "index.sqlite.tmp"
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp)
        with db:
            db.execute("CREATE TABLE products (id TEXT, title TEXT, category TEXT, category_source TEXT)")
            db.execute("CREATE VIRTUAL TABLE docs USING fts5(title, body, tokenize='unicode61 remove_diacritics 2')")
            rows = list(zip(df["id"].astype(str), df["title"].astype(str), categories, source, strict=True))
            db.executemany("INSERT INTO products VALUES (?, ?, ?, ?)", rows)
            db.executemany("INSERT INTO docs(rowid, title, body) VALUES (?, ?, ?)",
                           ((i + 1, _fts_text(t), _fts_text(" ".join(v for v in body if v)))
                            for i, (t, body) in enumerate(zip(df["title"].astype(str), body_cols, strict=True))))
            db.execute("INSERT INTO docs(docs) VALUES ('optimize')")
        db.close()
        tmp.replace(out / "index.sqlite")
        enc_name = None
        if encoder is not None:
            from ..encoders import load_text_encoder, pick_encoder

            enc_name = pick_encoder(df["title"].tolist()) if encoder == "auto" else str(encoder)
            vectors = load_text_encoder(enc_name).encode(df["title"].tolist(), show_progress_bar=show_progress_bar)
            np.save(out / "embeddings.npy", np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
        meta = {"format": 1, "rows": len(df), "encoder": enc_name,
                "categories": {"label": source.count("label"), "predicted": source.count("predicted"),
                               "none": source.count("")}}
        (out / "search.json").write_text(json.dumps(meta, indent=2))
        logger.info("search index %s: %d products (%s), encoder %s", out, len(df), meta["categories"], enc_name)
        return cls(out)

    # -- searching --------------------------------------------------------------------------------------
    def _in_subtree(self, category: str) -> np.ndarray:
        want = parse_path(category)
        inside = [j for j, q in enumerate(self._distinct_paths) if q[: len(want)] == want]
        return np.isin(self._path_codes, np.asarray(inside, dtype=np.int64))

    def _bm25(self, query: str, n: int, allowed: np.ndarray | None) -> list[int]:
        expr = _match_expression(query)
        if not expr:
            return []
        with self._lock:
            cur = self._db.execute("SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY bm25(docs, 3.0, 1.0) LIMIT ?",
                                   (expr, n if allowed is None else max(n * 20, 2000)))
            found = [r[0] - 1 for r in cur.fetchall()]
        if allowed is not None:
            found = [i for i in found if allowed[i]]
        return found[:n]

    def _vector(self, query: str, n: int, allowed: np.ndarray | None) -> list[int]:
        if self.embeddings is None:
            return []
        scores = self.embeddings @ self.encoder.encode([query])[0]
        if allowed is not None:
            scores = np.where(allowed, scores, -np.inf)
        n = min(n, int(np.isfinite(scores).sum()))
        if n <= 0:
            return []
        top = np.argpartition(-scores, n - 1)[:n]
        return [int(i) for i in top[np.argsort(-scores[top], kind="stable")]]

    def search(self, query: str, k: int = 10, mode: Mode = "hybrid", query_classifier: Any = None,
               category_scores: Mapping[str, float] | None = None, boost: float = 1.0, category: str | None = None,
               candidates: int = 200) -> list[SearchHit]:
        """The ``k`` best products for ``query``.

        Args:
            mode: ``hybrid`` (BM25 + embeddings, fused by rank), ``bm25`` or ``vector``.
            query_classifier: predicts the query's category distribution (anything with ``classes_`` and
                ``predict_proba([query])``); each result's score is multiplied by ``1 + boost * mass``.
            category_scores: the query's leaf distribution ``{path: probability}`` when already computed
                (instead of ``query_classifier``).
            boost: strength of the category boost (0: none).
            category: only products in this category or below it (a filter, not a boost).
            candidates: how many results each retriever contributes before fusion and boosting.
        """
        if not isinstance(query, str) or not query.strip():
            raise TaxonomistError("the search query is empty; give some words to search for")
        if mode not in ("hybrid", "bm25", "vector"):
            raise TaxonomistError(f"mode must be 'hybrid', 'bm25' or 'vector', got {mode!r}")
        if mode != "bm25" and self.embeddings is None:
            if mode == "vector":
                raise TaxonomistError("this index has no embeddings (built without an encoder); use mode='bm25'")
            mode = "bm25"
        allowed = self._in_subtree(category) if category else None
        n = max(candidates, k)
        ranked = {"bm25": self._bm25(query, n, allowed) if mode != "vector" else [],
                  "vector": self._vector(query, n, allowed) if mode != "bm25" else []}
        ranks: dict[str, dict[int, int]] = {name: {i: r + 1 for r, i in enumerate(lst)} for name, lst in ranked.items()}
        fused: dict[int, float] = {}
        for lst in ranked.values():
            for r, i in enumerate(lst):
                fused[i] = fused.get(i, 0.0) + 1.0 / (_RRF_K + r + 1)
        masses: dict[int, float] = {}
        if category_scores is None and query_classifier is not None and boost > 0 and fused:
            category_scores = dict(zip(query_classifier.classes_, query_classifier.predict_proba([query])[0], strict=True))
        if category_scores is not None and boost > 0 and fused:
            mass = category_mass(category_scores)
            for i in fused:
                masses[i] = _item_mass(self._paths[i], mass)
                fused[i] *= 1.0 + boost * masses[i]
        best = sorted(fused, key=lambda i: (-fused[i], i))[:k]
        return [SearchHit(id=self.ids[i], title=self.titles[i], category=self.categories[i], score=round(fused[i], 6),
                          bm25_rank=ranks["bm25"].get(i), vector_rank=ranks["vector"].get(i),
                          category_mass=round(masses[i], 4) if i in masses else None) for i in best]

    def close(self) -> None:
        self._db.close()

