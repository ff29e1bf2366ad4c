"""The taxonomy as local problems: two-level and top-down training of the sparse member, and their decoding.

A :class:`LocalTree` is built from the class paths alone. Each inner node is one multi-class problem over its
children; a class's log-probability is the sum of the local log-probabilities along its path, each node's
margins through a softmax at its level's temperature -- every path scored (:meth:`LocalTree.log_proba`) or a
beam descent (:func:`~taxonomist.models.beam.beam_descent`). ``two-level`` trees have two stages: the categories at one
depth (:func:`split_depth`), then the leaves under each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

__all__ = ["DEFAULT_LOCAL_TEMPERATURE", "STOP", "TOP_DOWN_ABOVE", "LocalTree", "local_tree", "resolve_hierarchy",
           "split_depth"]

STOP = "\x00"
"""The child that ends a path at an inner node which is itself a class (``A > B`` beside ``A > B > C``)."""


class LocalTree:
    """The local problems of top-down training, built from the class paths alone (so a bundle stores none of it).

    Every inner node of the taxonomy the classes span is one problem: its children are its edges, numbered so
    that each node's edges are contiguous (``starts``, ``sizes``). ``paths`` (classes × edges) marks the edges
    on each class's path, so a class's log-probability is the sum of its edges' local log-probabilities.
    """

    def __init__(self, classes: Sequence[str], depth: int | None = None) -> None:
        from ..taxonomy import format_path, parse_path

        paths = [parse_path(c) for c in classes]
        if any(not p for p in paths):
            raise ValueError("top-down training needs a non-empty category path for every class")
        if depth is not None:  # two stages: the depth-``depth`` prefixes, then the rest of the path under each
            paths = [(format_path(p[:depth]), format_path(p[depth:])) if len(p) > depth else (format_path(p),)
                     for p in paths]
        children: dict[tuple[str, ...], set[str]] = {}
        for p in paths:
            for k in range(len(p)):
                children.setdefault(p[:k], set()).add(p[k])
        for p in paths:
            if p in children:
                children[p].add(STOP)
        nodes = sorted(children, key=lambda n: (len(n), n))
        edge: dict[tuple[tuple[str, ...], str], int] = {}
        starts, sizes, level = [], [], []
        for node in nodes:
            starts.append(len(edge))
            sizes.append(len(children[node]))
            for child in sorted(children[node]):
                edge[(node, child)] = len(edge)
                level.append(len(node))
        self.nodes = nodes
        self.starts = np.asarray(starts, dtype=np.intp)
        self.sizes = np.asarray(sizes, dtype=np.intp)
        self.level = np.asarray(level, dtype=np.intp)
        self.n_edges = len(edge)
        self.n_levels = int(self.level.max()) + 1
        self.edge_node = np.repeat(np.arange(len(nodes)), self.sizes)
        class_edges = [[edge[(p[:k], p[k])] for k in range(len(p))] + ([edge[(p, STOP)]] if p in children else [])
                       for p in paths]
        self.class_edges = class_edges
        indptr = np.cumsum([0] + [len(e) for e in class_edges])
        self.paths = sp.csr_matrix((np.ones(indptr[-1]), np.concatenate(class_edges), indptr),
                                   shape=(len(paths), self.n_edges))
        # for beam decoding: what each edge leads to (a class, or an inner node) and the classes under each node
        index = {node: i for i, node in enumerate(nodes)}
        self.edge_class = np.full(self.n_edges, -1, dtype=np.intp)
        self.edge_child = np.full(self.n_edges, -1, dtype=np.intp)
        for c, path_edges in enumerate(class_edges):
            self.edge_class[path_edges[-1]] = c
        for (node, child), e in edge.items():
            if child != STOP:
                self.edge_child[e] = index.get((*node, child), -1)
        under: list[list[int]] = [[] for _ in nodes]
        for c, p in enumerate(paths):
            for k in range(len(p) + 1):
                if p[:k] in index:
                    under[index[p[:k]]].append(c)
        self.node_class_ptr = np.r_[0, np.cumsum([len(u) for u in under])].astype(np.intp)
        self.node_class_index = np.asarray([c for u in under for c in u], dtype=np.intp)

    def problems(self, y: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(node, rows, local labels) of each node with at least two children, for class indices ``y``."""
        edge_class = self.paths.tocsc()
        out = []
        for n, (start, size) in enumerate(zip(self.starts, self.sizes, strict=True)):
            if size < 2:
                continue
            local = np.full(self.paths.shape[0], -1, dtype=np.intp)
            for j in range(size):
                local[edge_class[:, start + j].indices] = j
            rows = np.flatnonzero(local[y] >= 0)
            if len(rows):
                out.append((n, rows, local[y[rows]]))
        return out

    def local_log_proba(self, margins: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
        """Each node's margins to log-probabilities of its children (softmax at the edge's level temperature)."""
        m = np.asarray(margins, dtype=np.float64) / temperatures[self.level]
        m -= np.repeat(np.maximum.reduceat(m, self.starts, axis=1), self.sizes, axis=1)
        m -= np.repeat(np.log(np.add.reduceat(np.exp(m), self.starts, axis=1)), self.sizes, axis=1)
        return np.asarray(m)

    def log_proba(self, margins: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
        """Class log-probabilities: the sum of the local log-probabilities along each class's path."""
        return np.asarray((self.paths @ self.local_log_proba(margins, temperatures).T).T)

    def fit_temperatures(self, margins: np.ndarray, y: np.ndarray) -> np.ndarray:
        """One temperature per level minimising the NLL of the true child at each node on the path of ``y``."""
        from scipy.optimize import minimize_scalar

        temps = np.full(self.n_levels, DEFAULT_LOCAL_TEMPERATURE)
        rows = np.arange(len(y))
        for lvl in range(self.n_levels):
            true = np.asarray([next((e for e in self.class_edges[c] if self.level[e] == lvl), -1) for c in y],
                              dtype=np.intp)
            keep = (true >= 0) & (self.sizes[self.edge_node[np.maximum(true, 0)]] >= 2)
            if keep.sum() < 20:
                continue
            r, e = rows[keep], true[keep]
            node = self.edge_node[e]
            cols = np.flatnonzero(self.level == lvl)
            sub = np.asarray(margins)[np.ix_(r, cols)].astype(np.float64)  # the level's cells only
            seg = self.starts[self.level[self.starts] == lvl] - cols[0]
            first = self.starts[node] - cols[0]
            pos = np.searchsorted(seg, first)

            def nll(log_t: float, sub: np.ndarray = sub, seg: np.ndarray = seg, pos: np.ndarray = pos,
                    e: np.ndarray = e, cols: np.ndarray = cols) -> float:
                z = sub / np.exp(log_t)
                mx = np.maximum.reduceat(z, seg, axis=1)
                lse = np.log(np.add.reduceat(np.exp(z - np.repeat(mx, np.diff(np.append(seg, z.shape[1])), axis=1)),
                                             seg, axis=1)) + mx
                k = np.arange(len(z))
                return float((lse[k, pos] - z[k, e - cols[0]]).mean())

            temps[lvl] = float(np.exp(minimize_scalar(nll, bounds=(-6.0, 4.0), method="bounded",
                                                      options={"xatol": 1e-3}).x))
        return temps


DEFAULT_LOCAL_TEMPERATURE = 0.1


TOP_DOWN_ABOVE = 10_000_000
"""``hierarchy="auto"`` trains two-level when classes × training products exceed this (benchmarks/RESULTS.md,
"Thousands of leaves")."""


def local_tree(hierarchy: str, classes: list[str], split_depth: int = 1) -> LocalTree | None:
    """The local problems of a resolved ``hierarchy`` (``None`` for flat); ``split_depth``: where two-level splits."""
    if hierarchy == "flat":
        return None
    return LocalTree(classes, depth=split_depth if hierarchy == "two-level" else None)


def split_depth(classes: Sequence[str], counts: np.ndarray) -> int:
    """The depth at which a two-level model splits: the one whose two stages cost least to fit.

    Splitting at depth ``d``, the first stage learns the ``d``-level prefixes over every product and the second
    the leaves under each prefix over its own products; one-vs-rest cost is columns × rows, so the cost is
    ``n × first-stage classes + sum over prefixes of (their products × their leaves)``. A catalogue whose top
    level only names a few sources (one root per shop) splits one level deeper than one with dozens of
    departments. ``counts``: training products per class.
    """
    from ..taxonomy import parse_path

    paths = [parse_path(c) for c in classes]
    n = int(np.sum(counts))
    best, best_cost = 1, None
    for d in range(1, max(len(p) for p in paths)):
        rows: dict[tuple[str, ...], int] = {}
        leaves: dict[tuple[str, ...], int] = {}
        for p, c in zip(paths, counts, strict=True):
            key = p[:d] if len(p) > d else p  # a class no deeper than d is a leaf of the first stage
            rows[key] = rows.get(key, 0) + int(c)
            leaves[key] = leaves.get(key, 0) + 1
        cost = n * len(rows) + sum(rows[k] * leaves[k] for k in rows if leaves[k] > 1)
        if best_cost is None or cost < best_cost:
            best, best_cost = d, cost
    return best


def resolve_hierarchy(hierarchy: str, classes: Sequence[str], n_rows: int) -> str:
    """``"flat"``, ``"two-level"`` or ``"top-down"``: what ``hierarchy`` means for these classes and products."""
    from ..taxonomy import parse_path

    if hierarchy not in ("flat", "top-down", "two-level", "auto"):
        raise ValueError(f"hierarchy must be 'flat', 'two-level', 'top-down' or 'auto', got {hierarchy!r}")
    if hierarchy != "auto":
        return hierarchy
    deep = any(len(parse_path(c)) > 1 for c in classes)
    return "two-level" if deep and len(classes) * n_rows > TOP_DOWN_ABOVE else "flat"
