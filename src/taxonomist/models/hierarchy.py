"""Hierarchy-aware decoding of a leaf distribution.

Each ancestor's probability is the sum of its leaves' probabilities. A :class:`Prediction` carries the path, the
confidence at every level, the top-k alternative leaves, and -- with ``min_confidence`` -- backs off to the
deepest node that clears the threshold (``backed_off=True``); when not even a top-level category does, the path
is empty (the product is left unclassified rather than guessed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..taxonomy import CategoryPath, format_path, parse_path

__all__ = ["LevelIndex", "Prediction", "decode", "level_probabilities", "predictions_frame", "top_leaves"]


@dataclass
class Prediction:
    """One product's prediction.

    Attributes:
        path: the predicted category path (top level first); empty when nothing cleared ``min_confidence``.
        confidence: probability of each node of ``path``, one per level (non-increasing).
        leaf: the most probable leaf under ``path`` (always a descendant of it): what ``predict`` returns, except
            when ``path`` backed off to a node of another branch than the most probable leaf's.
        leaf_confidence: its probability.
        alternatives: the top-k leaves as (path string, probability), best first.
        backed_off: ``path`` stops above a leaf because no leaf was confident enough.
        explanation: (feature, contribution) pairs that drove the prediction, when asked for.
        neighbours: the most similar labelled training products as (title, category, cosine similarity), when
            asked for and the model keeps an embedding index.
    """

    path: CategoryPath
    confidence: list[float]
    leaf: CategoryPath
    leaf_confidence: float
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    backed_off: bool = False
    explanation: list[tuple[str, float]] | None = None
    neighbours: list[tuple[str, str, float]] | None = None

    @property
    def category(self) -> str:
        return format_path(self.path)

    @property
    def score(self) -> float:
        """Confidence of the returned path's deepest node (0 when the path is empty)."""
        return self.confidence[-1] if self.confidence else 0.0

    def to_dict(self) -> dict[str, Any]:
        # written out rather than dataclasses.asdict, whose deep copies are slow on the serving path
        return {
            "path": list(self.path),
            "confidence": list(self.confidence),
            "leaf": format_path(self.leaf),
            "leaf_confidence": self.leaf_confidence,
            "alternatives": [{"category": c, "confidence": p} for c, p in self.alternatives],
            "backed_off": self.backed_off,
            "explanation": None if self.explanation is None else
            [{"feature": f, "weight": w} for f, w in self.explanation],
            "neighbours": None if self.neighbours is None else
            [{"title": t, "category": c, "similarity": s} for t, c, s in self.neighbours],
            "category": self.category,
        }


@dataclass
class LevelIndex:
    """For each depth d, the nodes at that depth and a (n_classes × n_nodes) 0/1 matrix mapping leaves to them.

    A leaf shallower than d maps to itself, so every level's probabilities sum to 1.
    """

    classes: list[CategoryPath]
    nodes: list[list[CategoryPath]]
    maps: list[sp.csr_matrix]

    @classmethod
    def build(cls, classes: Sequence[str] | Sequence[CategoryPath]) -> LevelIndex:
        paths = [parse_path(c) if isinstance(c, str) else tuple(c) for c in classes]
        depth = max((len(p) for p in paths), default=0)
        nodes, maps = [], []
        for d in range(1, depth + 1):
            prefixes = [p[:d] for p in paths]
            uniq = sorted(set(prefixes))
            pos = {n: i for i, n in enumerate(uniq)}
            cols = np.array([pos[p] for p in prefixes])
            m = sp.csr_matrix((np.ones(len(paths)), (np.arange(len(paths)), cols)), shape=(len(paths), len(uniq)))
            nodes.append(uniq)
            maps.append(m)
        return cls(paths, nodes, maps)

    @property
    def depth(self) -> int:
        return len(self.nodes)

    @cached_property
    def names(self) -> list[str]:
        """The classes as path strings (``"A > B > C"``), formatted once."""
        return [format_path(c) for c in self.classes]

    @cached_property
    def node_of(self) -> list[np.ndarray]:
        """Per depth, each class's node at that depth (its position in ``nodes[d]``)."""
        return [np.asarray(sp.csr_matrix(m).indices) for m in self.maps]


def level_probabilities(proba: np.ndarray, index: LevelIndex) -> list[np.ndarray]:
    """Per depth, the (n, n_nodes_at_depth) probabilities of the nodes (sums of their leaves)."""
    return [np.asarray(m.T @ proba.T).T for m in index.maps]


PARTIAL_SORT_ABOVE = 1_000
"""Leaves above which :func:`top_leaves` selects the k best of each row before sorting them, instead of sorting
every leaf (the sort was a quarter of prediction at 5,000 leaves)."""


def top_leaves(proba: np.ndarray, k: int) -> np.ndarray:
    """The column indices of each row's ``k`` largest values, largest first."""
    if proba.shape[1] <= PARTIAL_SORT_ABOVE or k >= proba.shape[1]:
        return np.argsort(-proba, axis=1)[:, :k]
    n = proba.shape[1]
    part = np.argpartition(proba, n - k, axis=1)[:, n - k:]  # (no negated copy of the whole matrix)
    order = np.argsort(-np.take_along_axis(proba, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def decode(
    proba: np.ndarray,
    index: LevelIndex,
    top_k: int = 3,
    min_confidence: float | None = None,
) -> list[Prediction]:
    """Turn leaf probabilities (n, n_classes) into :class:`Prediction` objects."""
    proba = np.asarray(proba, dtype=np.float64)
    levels = level_probabilities(proba, index)
    node_pos = [{n: i for i, n in enumerate(nodes)} for nodes in index.nodes]
    k = max(1, min(top_k, proba.shape[1]))
    top = top_leaves(proba, k)
    out = []
    for i in range(proba.shape[0]):
        best = int(top[i, 0])
        leaf = index.classes[best]
        path = leaf
        backed_off = False
        if min_confidence is not None and proba[i, best] < min_confidence:
            backed_off = True
            path = ()
            # the deepest node that clears the threshold; the best such node at that depth -- and the leaf
            # answered is the most probable one under it (the argmax leaf may lie in another branch)
            for d in range(len(leaf) - 1, 0, -1):
                j = int(np.argmax(levels[d - 1][i]))
                if levels[d - 1][i, j] >= min_confidence:
                    path = index.nodes[d - 1][j]
                    under = np.flatnonzero(index.node_of[d - 1] == j)
                    best = int(under[np.argmax(proba[i, under])])
                    leaf = index.classes[best]
                    break
        conf = [float(levels[d - 1][i, node_pos[d - 1][path[:d]]]) for d in range(1, len(path) + 1)]
        alts = [(index.names[j], float(proba[i, j])) for j in top[i]]
        out.append(Prediction(path, conf, leaf, float(proba[i, best]), alts, backed_off))
    return out


def predictions_frame(preds: Sequence[Prediction], ids: Sequence[str], explain: bool = False) -> pd.DataFrame:
    """Predictions as a table (the batch output): one row per product.

    Columns: ``id``, ``category`` (the path, backed off when unsure; empty when unclassified), ``confidence`` (of
    that path's deepest node), ``level_confidence``, ``leaf``, ``leaf_confidence``, ``backed_off``,
    ``alternatives`` (top-k leaves), and ``explanation`` (and ``neighbours``, when the model keeps an embedding
    index) when ``explain`` is set.
    """
    out = pd.DataFrame({
        "id": list(ids),
        "category": [p.category for p in preds],
        "confidence": [round(p.score, 6) for p in preds],
        "level_confidence": [[round(c, 6) for c in p.confidence] for p in preds],
        "leaf": [format_path(p.leaf) for p in preds],
        "leaf_confidence": [round(p.leaf_confidence, 6) for p in preds],
        "backed_off": [p.backed_off for p in preds],
        "alternatives": [[{"category": c, "confidence": round(s, 6)} for c, s in p.alternatives] for p in preds],
    })
    if explain:
        explanations: list[list[dict[str, Any]]] = [
            [{"feature": f, "weight": round(w, 4)} for f, w in (p.explanation or [])] for p in preds
        ]
        out["explanation"] = pd.Series(explanations, index=out.index, dtype=object)
        if any(p.neighbours is not None for p in preds):
            neighbours = [[{"title": t, "category": c, "similarity": v} for t, c, v in (p.neighbours or [])]
                          for p in preds]
            out["neighbours"] = pd.Series(neighbours, index=out.index, dtype=object)
    return out
