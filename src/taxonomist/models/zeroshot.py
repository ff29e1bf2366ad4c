"""Zero- and few-shot classification from the taxonomy itself.

Each category is represented by the embedding of its path text ("Apparel > Topwear > Tshirts"), optionally with
its own description and a few example titles (the label vector is then the normalised mean of the path's and
the examples' embeddings), and a product's embedding is scored against them by cosine similarity.

Two decodings. ``"flat"`` (default): one softmax over the leaves' full-path embeddings; a parent's probability
is the sum of its leaves' (the hierarchy decoding). ``"top-down"``: a hierarchical softmax, P(node) = P(parent)
· softmax over the parent's children. On the bundled fashion sample top-down lost to flat at both the leaf and
the top level -- a top-level name alone ("Apparel", "Accessories") says too little -- so flat is the default.
Both cost one matrix product over the categories, so the 5,595 Google or 10,595 Shopify nodes stay fast. No training data is needed. Inside a trained model the same scorer over the model's
own categories is the "zero-shot prior" of the ensemble: it gives categories with few or no examples
probability mass, and a category added to a trained bundle is scored at once.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from ..taxonomy import CategoryPath, format_path, parse_path
from ..text import clean_text, field_text
from ..vectors import l2_normalize

__all__ = ["TaxonomyScorer", "crosswalk", "label_text", "name_coverage", "zero_shot_queries"]

QUERY_CONTEXT_CHARS = 300
"""Characters of a product's context (type, tags, description) a zero-shot query reads after its title."""


_WORD_RE = re.compile(r"[^\W\d_]+")
_ALTERNATIVES_RE = re.compile(r"\s*(?:&|,|/|\band\b|\bor\b|\+)\s*")
_NAME_STOP = frozenset("a an and at by for from in of on or other the to with".split())
_PLURALS = (("ies", "y"), ("ves", "f"), ("ches", "ch"), ("shes", "sh"), ("sses", "ss"), ("xes", "x"), ("s", ""))


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """English plural to singular, roughly ("batteries" -> "battery", "boots" -> "boot"); other words as they are."""
    if word.endswith("ss"):
        return word
    for suffix, repl in _PLURALS:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: len(word) - len(suffix)] + repl
    return word


def _words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD_RE.findall(text.lower()) if w not in _NAME_STOP}


def _name_alternatives(name: str) -> list[frozenset[str]]:
    """A category name as the word sets any of which names it: "Shirts & Tops" -> {shirt}, {top}; "Boot Liners"
    -> {boot, liner}."""
    return [frozenset(w) for w in (_words(part) for part in _ALTERNATIVES_RE.split(name.lower())) if w]


@lru_cache(maxsize=8)
def _names_index(names: tuple[str, ...]) -> tuple[list[list[frozenset[str]]], dict[str, list[int]]]:
    """Each name's alternatives, and the names each word occurs in (built once per class list, not per call:
    ~40 ms for Shopify's 8,516 leaves)."""
    alts = [_name_alternatives(n) for n in names]
    index: dict[str, list[int]] = {}
    for j, al in enumerate(alts):
        for w in {w for a in al for w in a}:
            index.setdefault(w, []).append(j)
    return alts, index


def name_coverage(titles: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """(n, len(names)): for each title and category name, the largest share of the words of one of the name's
    alternatives that the title contains (plurals folded). A title that names "boot" covers "Boots" fully and
    "Boot Liners" half: the product is a boot, not its liner -- an embedding alone puts the two close together."""
    alts, index = _names_index(tuple(names))
    out = np.zeros((len(titles), len(names)), np.float32)
    for i, t in enumerate(titles):
        words = _words(t)
        for j in {j for w in words for j in index.get(w, ())}:
            out[i, j] = max(len(a & words) / len(a) for a in alts[j])
    return out


def label_text(path: CategoryPath, description: str | None = None) -> str:
    """A category's full path, plus its description when there is one."""
    text = format_path(path)
    return f"{text}: {description}" if description else text


def embed_labels(paths: Sequence[CategoryPath], encoder: Any,
                 descriptions: Mapping[CategoryPath, str] | None = None) -> np.ndarray:
    """Label vectors: the normalised sum of three views of each category -- its full path (+ description), its
    own name, and its name with the parent path as context ("Tshirts (Apparel > Topwear)").

    On the bundled fashion sample the three views together place more products right than the path or the name
    alone (zero-shot accuracy: benchmarks/RESULTS.md, "Every tier vs the baselines").
    """
    descriptions = descriptions or {}
    if not paths:
        return np.zeros((0, 0), np.float32)
    parts = getattr(encoder, "parts", None)
    if parts:  # a combined encoder: each part's label vectors, weighted as its product vectors are
        return np.asarray(encoder.combine([embed_labels(paths, p, descriptions) for p in parts]))
    full = encoder.encode([label_text(p, descriptions.get(p)) for p in paths])
    name = encoder.encode([p[-1] for p in paths])
    ctx = encoder.encode([f"{p[-1]} ({format_path(p[:-1])})" if len(p) > 1 else p[-1] for p in paths])
    return l2_normalize(np.asarray(full + name + ctx))


class TaxonomyScorer:
    """Scores products against category embeddings; leaves' log-probabilities by top-down decoding.

    Args:
        temperature: softmax temperature on cosine similarities (fitted on validation data inside a trained
            model; 0.03 without training data).
        decoding: ``"flat"`` (one softmax over the leaves) or ``"top-down"`` (hierarchical softmax).
        lexical: weight of :func:`name_coverage` (how much of a category's own name the title contains) added to
            each class's logit (flat decoding; 0: the embeddings alone, as inside a trained ensemble).
        adaptation: ``"general"`` or ``"own"`` adapts a batch of products' answers to their catalogue
            (:mod:`taxonomist.models.transduction`; a zero-shot model into a general or the catalogue's own
            taxonomy), ``None`` answers each product alone.
        hierarchy: weight of the similarity to each class's parent category (its own, for a top-level class)
            added to its logit (flat decoding): a leaf name that fits several branches ("Cases") goes to the
            branch the product resembles; 0: the class's own vector alone (as inside a trained ensemble).
    """

    def __init__(self, temperature: float = 0.03, decoding: str = "flat", lexical: float = 0.0,
                 adaptation: str | None = None, hierarchy: float = 0.0) -> None:
        if decoding not in ("top-down", "flat"):
            raise ValueError(f"decoding must be 'top-down' or 'flat', got {decoding!r}")
        self.temperature = temperature
        self.decoding = decoding
        self.lexical = lexical
        if adaptation not in (None, "general", "own"):
            raise ValueError(f"adaptation must be None, 'general' or 'own', got {adaptation!r}")
        self.adaptation = adaptation
        self.hierarchy = hierarchy

    # -- building -----------------------------------------------------------------------------------------
    def build(
        self,
        classes: Sequence[CategoryPath],
        encoder: Any,
        descriptions: Mapping[CategoryPath, str] | None = None,
        examples: Mapping[CategoryPath, Sequence[str]] | None = None,
    ) -> TaxonomyScorer:
        """Embed the categories (``classes``: what products can get) and the tree above them.

        Top-down decoding embeds every node; flat decoding embeds the classes only and gives each other node
        the normalised mean of its classes' vectors (kept for ``add_class`` and a later switch of decoding).
        """
        self.classes_ = [tuple(c) for c in classes]
        nodes = sorted({c[:d] for c in self.classes_ for d in range(1, len(c) + 1)}, key=lambda p: (len(p), p))
        if self.decoding == "top-down":
            vecs = embed_labels(nodes, encoder, descriptions)
        else:
            from .label_vectors import lookup

            shipped = None if descriptions else lookup(self.classes_, encoder)  # Google's / Shopify's, computed once
            label_vecs = shipped if shipped is not None else embed_labels(self.classes_, encoder, descriptions)
            cls_vecs = dict(zip(self.classes_, label_vecs, strict=True))
            dim = len(next(iter(cls_vecs.values())))
            sums: dict[CategoryPath, np.ndarray] = {n: np.zeros(dim, np.float32) for n in nodes}
            for c, v in cls_vecs.items():
                for d in range(1, len(c)):
                    sums[c[:d]] += v
            vecs = np.vstack([cls_vecs[n] if n in cls_vecs else sums[n] for n in nodes])
            vecs = l2_normalize(vecs)
        if examples:
            pos = {n: i for i, n in enumerate(nodes)}
            for path, titles in examples.items():
                if titles and tuple(path) in pos:
                    ex = encoder.encode(list(titles))
                    i = pos[tuple(path)]
                    vecs[i] = l2_normalize((vecs[i] + ex.mean(axis=0))[None])[0]
        self._set_nodes(nodes, vecs)
        return self

    def _set_nodes(self, nodes: list[CategoryPath], vecs: np.ndarray) -> None:
        self.nodes_ = nodes
        self.vectors_ = np.asarray(vecs, dtype=np.float32)
        pos = {n: i for i, n in enumerate(nodes)}
        self.parent_ = np.array([pos[n[:-1]] if len(n) > 1 else -1 for n in nodes], dtype=np.int64)
        self.depth_ = np.array([len(n) for n in nodes], dtype=np.int64)
        self.class_nodes_ = np.array([pos[c] for c in self.classes_], dtype=np.int64)
        # each class's parent node, or the class itself at the top level (for ``hierarchy``)
        self.class_parents_ = np.where(self.parent_[self.class_nodes_] >= 0, self.parent_[self.class_nodes_],
                                       self.class_nodes_)
        # per depth: the nodes sorted by parent, and the start of each sibling group (for reduceat)
        self._levels: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for d in range(1, int(self.depth_.max(initial=0)) + 1):
            at = np.flatnonzero(self.depth_ == d)
            at = at[np.argsort(self.parent_[at], kind="stable")]
            par = self.parent_[at]
            starts = np.flatnonzero(np.r_[True, par[1:] != par[:-1]])
            self._levels.append((at, starts, np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(at)]))))

    def add_class(self, path: CategoryPath, encoder: Any, description: str | None = None,
                  examples: Sequence[str] = ()) -> None:
        """Add a category (and any missing ancestors) without touching the others."""
        path = tuple(path)
        known = set(self.nodes_)
        missing = [path[:d] for d in range(1, len(path) + 1) if path[:d] not in known]
        vectors = dict(zip(missing, embed_labels(missing, encoder, {path: description} if description else None),
                           strict=True))
        if path not in vectors:  # an existing inner node becomes a category: re-embed it as one
            vectors[path] = embed_labels([path], encoder, {path: description} if description else None)[0]
        if examples:
            vectors[path] = l2_normalize((vectors[path] + encoder.encode(list(examples)).mean(axis=0))[None])[0]
        nodes = list(self.nodes_)
        vecs = [v for v in self.vectors_]
        for node in missing:
            nodes.append(node)
            vecs.append(vectors[node])
        if path not in missing:
            vecs[nodes.index(path)] = vectors[path]
        self.classes_ = [*self.classes_, tuple(path)]
        self._set_nodes(nodes, np.vstack(vecs))

    # -- scoring ------------------------------------------------------------------------------------------
    def node_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine similarity of each product to each node, (n, n_nodes)."""
        return np.asarray(embeddings, np.float32) @ self.vectors_.T

    def log_proba(self, embeddings: np.ndarray, temperature: float | None = None,
                  titles: Sequence[str] | None = None) -> np.ndarray:
        """Log-probabilities of the classes (n, n_classes), normalised over the classes; with ``titles`` and a
        ``lexical`` weight, the name coverage joins the flat decoding's logits."""
        T = self.temperature if temperature is None else temperature
        S = self.node_scores(embeddings).astype(np.float64) / T
        if self.decoding == "flat":
            logits = S[:, self.class_nodes_]
            if self.hierarchy:
                logits = logits + self.hierarchy * S[:, self.class_parents_]
            if self.lexical and titles is not None:
                logits += self.lexical * name_coverage(titles, [c[-1] for c in self.classes_])
            return np.asarray(log_softmax(logits, axis=1))
        logp = np.zeros_like(S)
        for at, starts, group in self._levels:
            s = S[:, at]
            mx = np.maximum.reduceat(s, starts, axis=1)
            lse = np.log(np.add.reduceat(np.exp(s - mx[:, group]), starts, axis=1)) + mx
            par = self.parent_[at]
            base = np.where(par >= 0, logp[:, np.maximum(par, 0)], 0.0)
            logp[:, at] = base + s - lse[:, group]
        return np.asarray(log_softmax(logp[:, self.class_nodes_], axis=1))

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        return np.asarray(np.exp(self.log_proba(embeddings)))

    def fit_temperature(self, embeddings: np.ndarray, y_index: np.ndarray) -> float:
        """The temperature minimising the NLL of the true classes ``y_index`` (a validation split)."""
        rows = np.arange(len(y_index))

        def nll(log_t: float) -> float:
            return float(-self.log_proba(embeddings, float(np.exp(log_t)))[rows, y_index].mean())

        res = minimize_scalar(nll, bounds=(np.log(0.005), np.log(1.0)), method="bounded", options={"xatol": 1e-2})
        self.temperature = float(np.exp(res.x))
        return self.temperature

    # -- persistence --------------------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"temperature": self.temperature, "decoding": self.decoding, "lexical": self.lexical,
                 "adaptation": self.adaptation, "hierarchy": self.hierarchy,
                 "nodes": [list(n) for n in self.nodes_], "classes": [list(c) for c in self.classes_]},
                {"zs_vectors": self.vectors_.astype(np.float16)})

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> TaxonomyScorer:
        s = cls(temperature=float(params["temperature"]), decoding=str(params["decoding"]),
                lexical=float(params.get("lexical", 0.0)), hierarchy=float(params.get("hierarchy", 0.0)),
                adaptation=params.get("adaptation") if params.get("adaptation") in ("general", "own") else None)
        s.classes_ = [tuple(c) for c in params["classes"]]
        vecs = np.asarray(arrays["zs_vectors"], np.float32)
        nodes = [tuple(n) for n in params["nodes"]]
        if len(nodes) != len(vecs):
            raise ValueError(f"{len(nodes)} taxonomy nodes but {len(vecs)} label vectors")
        s._set_nodes(nodes, vecs)
        return s


def crosswalk(source: Any, target: Any, encoder: Any, top_k: int = 3, catalog: Any = None,
              target_model: Any = None) -> list[dict[str, Any]]:
    """Propose where each category of ``source`` goes in ``target`` (both :class:`~taxonomist.Taxonomy`).

    By name: the cosine similarity of the categories' label embeddings (:func:`embed_labels`: full path, own
    name, name in its parent's context), the ``top_k`` target leaves per source category. With ``catalog``
    (products labelled in the source taxonomy) and ``target_model`` (a zero-shot classifier into the target), also
    by products: where the category's products land, the most frequent target leaf and its share. The proposal is
    the products' leaf when at least half of at least 3 products agree, else the nearest name.

    Returns one row per source category: ``source``, ``target``, ``by`` (``"products"`` or ``"name"``),
    ``name_similarity``, ``alternatives`` (top-k by name, with similarities), ``products``, ``product_share``.
    """
    src = [tuple(p) for p in source.leaves()]
    tgt = [tuple(p) for p in target.leaves()]
    if not src or not tgt:
        raise ValueError("expected two taxonomies with at least one category each")
    sims = embed_labels(src, encoder) @ embed_labels(tgt, encoder).T
    landed: dict[CategoryPath, list[CategoryPath]] = {}
    if catalog is not None and target_model is not None:
        labelled = catalog.frame[catalog.frame["category"].astype(str) != ""]
        preds = target_model.predict_products(labelled.drop(columns=["row"], errors="ignore").to_dict(orient="records"),
                                              top_k=1)
        for c, p in zip(labelled["category"], preds, strict=True):
            landed.setdefault(parse_path(str(c)), []).append(tuple(p.leaf))
    rows = []
    for i, s in enumerate(src):
        order = np.argsort(-sims[i])[:top_k]
        best_name = tgt[int(order[0])]
        row: dict[str, Any] = {"source": format_path(s), "target": format_path(best_name), "by": "name",
                               "name_similarity": round(float(sims[i, order[0]]), 4),
                               "alternatives": [(format_path(tgt[int(j)]), round(float(sims[i, j]), 4)) for j in order],
                               "products": 0, "product_share": None}
        hits = landed.get(s, [])
        if hits:
            leaf, n = Counter(hits).most_common(1)[0]
            row.update(products=len(hits), product_share=round(n / len(hits), 4))
            if len(hits) >= 3 and n / len(hits) >= 0.5:
                row.update(target=format_path(leaf), by="products")
        rows.append(row)
    return rows


def zero_shot_queries(titles: Sequence[str], contexts: Sequence[str]) -> list[str]:
    """What a zero-shot model embeds for each product: the title, then what else the product says (type, tags,
    brand, the beginning of the description), cleaned of markup -- a title alone ("Tide Mini Speaker") is too
    little to place a product among thousands of categories."""
    out = []
    for t, c in zip(titles, contexts, strict=True):
        extra = clean_text(c)[:QUERY_CONTEXT_CHARS].strip() if c else ""
        out.append(f"{field_text(t)} | {extra}" if extra else field_text(t))
    return out
