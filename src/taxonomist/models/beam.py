"""Beam descent over a :class:`~.tree.LocalTree`, and predictions read from its compact result.

Level by level, each product's ``beam`` most probable inner nodes are scored further (for the best class alone,
a node whose children are all classes only when it could hold a better one: ``exact_top``). Only the edges
under a product's beam are scored (a compiled loop over the product's features and each feature's weights at those
edges), and the result stays compact: the classes reached, with their log-probabilities, and the nodes not
descended, whose probability is shared evenly among their classes. Predictions (best leaf, top-k alternatives,
the confidence of every node on the path) are read from it directly, so the cost per product grows with the
depth of the taxonomy and the beam, not with the number of leaves; the dense (products × classes) matrix is built
only when asked for (:meth:`BeamResult.log_proba`) and for products that back off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .calibration import apply_top_label, softmax_with_temperature, top_label_rescale
from .hierarchy import LevelIndex, Prediction, decode
from .node_weights import (
    BLOCK_MARGINS,
    FEW_OCCURRENCES,
    NodeWeights,
    compiled,
    lower_bound,
    pair_margins,
)
from .tree import LocalTree

__all__ = ["BeamResult", "beam_descent", "beam_predictions"]

@compiled
def _top_k(ptr_e, cls_e, val_e, ptr_s, node_s, val_s, cnt_s, nc_ptr, nc_idx, top_cls, top_val, log_z):  # type: ignore[no-untyped-def]
    """Per product: the log of its softmax normaliser over every class, and its ``k`` best classes (ties: the
    lower class index first). Reached classes are ``(cls_e, val_e)``; each node not descended holds ``cnt_s``
    classes (``nc_idx[nc_ptr[v]:nc_ptr[v + 1]]``, ascending) at ``val_s`` each."""
    k = top_cls.shape[1]
    for i in range(ptr_e.shape[0] - 1):
        m = -np.inf
        for t in range(ptr_e[i], ptr_e[i + 1]):
            m = max(m, val_e[t])
        for t in range(ptr_s[i], ptr_s[i + 1]):
            m = max(m, val_s[t])
        z = 0.0
        for t in range(ptr_e[i], ptr_e[i + 1]):
            z += math.exp(val_e[t] - m)
        for t in range(ptr_s[i], ptr_s[i + 1]):
            z += cnt_s[t] * math.exp(val_s[t] - m)
        log_z[i] = m + math.log(z)
        for q in range(k):
            top_val[i, q] = -np.inf
            top_cls[i, q] = -1
        n_e = ptr_e[i + 1] - ptr_e[i]
        n_s = ptr_s[i + 1] - ptr_s[i]
        for t in range(n_e + n_s):
            if t < n_e:
                first = t + ptr_e[i]
                last = first + 1
                val = val_e[first]
            else:
                s = t - n_e + ptr_s[i]
                first = nc_ptr[node_s[s]]
                last = min(nc_ptr[node_s[s] + 1], first + k)
                val = val_s[s]
            for u in range(first, last):
                c = cls_e[u] if t < n_e else nc_idx[u]
                q = k - 1
                if val < top_val[i, q] or (val == top_val[i, q] and (top_cls[i, q] >= 0 and c > top_cls[i, q])):
                    break  # (a node's classes come in ascending order: the rest of them cannot enter either)
                while q > 0 and (val > top_val[i, q - 1] or (val == top_val[i, q - 1] and c < top_cls[i, q - 1])):
                    top_val[i, q] = top_val[i, q - 1]
                    top_cls[i, q] = top_cls[i, q - 1]
                    q -= 1
                top_val[i, q] = val
                top_cls[i, q] = c


@dataclass
class BeamResult:
    """A beam descent's class log-probabilities, compact: ``leaf_*`` the classes reached (row, class, log-prob),
    ``spread_*`` the nodes not descended (row, node, log-probability of the node); each of a spread node's
    classes has the node's log-probability minus the log of their number. Every class of every row is in
    exactly one of the two."""

    tree: LocalTree
    n: int
    leaf_rows: np.ndarray
    leaf_classes: np.ndarray
    leaf_logp: np.ndarray
    spread_rows: np.ndarray
    spread_nodes: np.ndarray
    spread_logp: np.ndarray

    def spread_counts(self) -> np.ndarray:
        """How many classes each spread node shares its probability among."""
        return np.asarray(np.diff(self.tree.node_class_ptr)[self.spread_nodes])

    def spread_class_logp(self) -> np.ndarray:
        """The log-probability of each class of each spread node."""
        return np.asarray(self.spread_logp - np.log(self.spread_counts()))

    def log_proba(self) -> np.ndarray:
        """The dense (n, n_classes) class log-probabilities."""
        tree = self.tree
        out = np.empty((self.n, tree.paths.shape[0]), dtype=np.float64)
        out[self.leaf_rows, self.leaf_classes] = self.leaf_logp
        ptr, idx = tree.node_class_ptr, tree.node_class_index
        counts, each = self.spread_counts(), self.spread_class_logp()
        pos = np.repeat(ptr[self.spread_nodes] - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(counts.sum())
        out[np.repeat(self.spread_rows, counts), idx[pos]] = np.repeat(each, counts)
        return out

    def subset(self, rows: np.ndarray) -> BeamResult:
        """The result of some of the products (in the order of ``rows``)."""
        new = np.full(self.n, -1, dtype=np.intp)
        new[rows] = np.arange(len(rows))
        le, sp_ = new[self.leaf_rows] >= 0, new[self.spread_rows] >= 0
        return BeamResult(self.tree, len(rows), new[self.leaf_rows[le]], self.leaf_classes[le], self.leaf_logp[le],
                          new[self.spread_rows[sp_]], self.spread_nodes[sp_], self.spread_logp[sp_])

    def top(self, k: int, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's ``k`` most probable classes (best first), their probabilities under
        ``softmax(log_proba / temperature)``, and the log of that softmax's normaliser."""
        tree = self.tree
        k = max(1, min(k, tree.paths.shape[0]))
        order_e, order_s = np.argsort(self.leaf_rows, kind="stable"), np.argsort(self.spread_rows, kind="stable")
        nodes = self.spread_nodes[order_s]
        val_s = self.spread_class_logp()[order_s] / temperature
        top_cls = np.empty((self.n, k), dtype=np.intp)
        top_val = np.empty((self.n, k), dtype=np.float64)
        log_z = np.empty(self.n, dtype=np.float64)
        _top_k(_row_ptr(self.leaf_rows, self.n), self.leaf_classes[order_e].astype(np.intp),
               self.leaf_logp[order_e] / temperature, _row_ptr(self.spread_rows, self.n), nodes.astype(np.intp),
               val_s, self.spread_counts()[order_s].astype(np.float64), tree.node_class_ptr, tree.node_class_index,
               top_cls, top_val, log_z)
        return top_cls, np.exp(top_val - log_z[:, None]), log_z

    def node_mass(self, targets: np.ndarray, node_of: np.ndarray, leaf_p: np.ndarray,
                  spread_p: np.ndarray) -> np.ndarray:
        """Each row's probability of the classes whose ``node_of`` value (one node per class, e.g. its ancestor at
        some depth) is the row's ``targets`` value; ``leaf_p`` and ``spread_p``: the probability of each reached
        class and of each class of a spread node."""
        # how many of a spread node's classes are at each value: a sorted table of (node, value) keys
        ptr, idx = self.tree.node_class_ptr, self.tree.node_class_index
        width = int(node_of.max()) + 1
        keys, counts = np.unique(np.repeat(np.arange(len(ptr) - 1), np.diff(ptr)) * width + node_of[idx],
                                 return_counts=True)
        values = (keys % width).astype(np.int64)
        seg = np.searchsorted(keys, np.arange(len(ptr)) * width).astype(np.int64)  # each node's run of values
        out = np.zeros(self.n)
        _node_mass(self.leaf_rows, self.leaf_classes, np.asarray(leaf_p, dtype=np.float64), self.spread_rows,
                   self.spread_nodes, np.asarray(spread_p, dtype=np.float64), np.asarray(targets, dtype=np.int64),
                   np.asarray(node_of, dtype=np.int64), seg, values, counts.astype(np.float64), out)
        return out


@compiled
def _node_mass(leaf_rows, leaf_classes, leaf_p, spread_rows, spread_nodes, spread_p, targets,  # type: ignore[no-untyped-def]
               node_of, seg, values, counts, out):
    """:meth:`BeamResult.node_mass`: node ``v``'s classes take ``values[seg[v]:seg[v + 1]]`` (ascending),
    ``counts`` of them each."""
    for t in range(leaf_rows.shape[0]):
        r = leaf_rows[t]
        if node_of[leaf_classes[t]] == targets[r]:
            out[r] += leaf_p[t]
    for t in range(spread_rows.shape[0]):
        r = spread_rows[t]
        end = seg[spread_nodes[t] + 1]
        lo = lower_bound(values, seg[spread_nodes[t]], end, targets[r])
        if lo < end and values[lo] == targets[r]:
            out[r] += counts[lo] * spread_p[t]


def _rank_in_row(rows: np.ndarray) -> np.ndarray:
    """Each entry's position among the entries of its row (``rows`` ascending)."""
    first = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
    return np.asarray(np.arange(len(rows)) - np.repeat(first, np.diff(np.r_[first, len(rows)])))


def _row_ptr(rows: np.ndarray, n: int) -> np.ndarray:
    return np.asarray(np.r_[0, np.cumsum(np.bincount(rows, minlength=n))], dtype=np.intp)


def beam_descent(tree: LocalTree, X: sp.csr_matrix, weights: NodeWeights, intercept: np.ndarray,
                 temperatures: np.ndarray, beam: int, exact_top: int | None = None) -> BeamResult:
    """Class log-probabilities by a beam descent (see the module): ``weights`` from :func:`node_major_weights`,
    ``temperatures`` one per level of edges.

    ``exact_top``: a node of the beam whose children are all classes is scored only when it could hold one of
    the product's ``exact_top`` most probable classes -- when its probability is at least that of the
    ``exact_top``-th best class reached (no class under a node is more probable than the node): each product's
    most probable such node first, then those of the others that reach the bound then. The ``exact_top`` best
    classes and their order are those of the whole beam (at any temperature); their probabilities differ by
    the shares of the nodes left spread (not at temperature 1). ``None``: every node of the beam is scored.
    With ``exact_top=1`` most products descend into one node at the last level; with 3, most still descend
    into several (benchmarks/RESULTS.md), so only the best class alone (``predict``) asks for it."""
    X = sp.csr_matrix(X)
    if not X.has_sorted_indices:
        X = X.sorted_indices()
    n = X.shape[0]
    if n == 0:
        empty = np.zeros(0, np.intp)
        return BeamResult(tree, 0, empty, empty, np.zeros(0), empty, empty, np.zeros(0))
    x_data = np.asarray(X.data, dtype=np.float32)  # (float32 sums, as the exhaustive scoring's)
    table = weights.scratch(X.shape[1])
    done = False
    try:
        result = _Descent(tree, X, x_data, weights, intercept, temperatures, table).run(beam, exact_top)
        done = True
        return result
    finally:
        weights.release(table, done)


class _Descent:
    """One beam descent: the products' features, the parts of the result gathered so far, and, per product, the
    ``exact_top`` best class log-probabilities reached so far (the bound below which a node is left spread)."""

    def __init__(self, tree: LocalTree, X: sp.csr_matrix, x_data: np.ndarray, weights: NodeWeights,
                 intercept: np.ndarray, temperatures: np.ndarray, table: np.ndarray) -> None:
        self.tree, self.X, self.x_data, self.weights = tree, X, x_data, weights
        self.intercept, self.temperatures, self.table = intercept, temperatures, table
        self.leaves: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.spread: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.best: np.ndarray | None = None

    def score(self, rows: np.ndarray, nodes: np.ndarray, logp: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, edge, log-probability of the edge's child) of every edge under each (row, node) pair; the
        classes reached are kept."""
        tree = self.tree
        by_node = np.argsort(nodes, kind="stable")
        rows, nodes, logp = rows[by_node], nodes[by_node], logp[by_node]
        starts, sizes = tree.starts[nodes], tree.sizes[nodes]
        offsets = np.r_[0, np.cumsum(sizes)]
        edges = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - starts, sizes)
        margins = np.zeros(offsets[-1], dtype=np.float32)
        w = self.weights
        pair_margins(self.X.indptr, self.X.indices, self.x_data, rows, nodes, offsets[:-1], tree.sizes,
                      w.feat_ptr, w.feats, w.w_ptr, w.w_edge, w.w_data, self.table, BLOCK_MARGINS,
                      FEW_OCCURRENCES, margins)
        # rounded to float32 as the exhaustive scoring stores its margins
        z = (margins + self.intercept[edges]).astype(np.float32) / self.temperatures[tree.level[edges]]
        first = offsets[:-1]
        z -= np.repeat(np.maximum.reduceat(z, first), sizes)
        z -= np.repeat(np.log(np.add.reduceat(np.exp(z), first)), sizes)
        z[np.repeat(sizes == 1, sizes)] = 0.0  # a single child: its node's own probability
        child = np.repeat(logp, sizes) + z
        pair_row = np.repeat(rows, sizes)
        ends = tree.edge_class[edges] >= 0
        reached = (pair_row[ends], tree.edge_class[edges[ends]], child[ends])
        self.leaves.append(reached)
        if self.best is not None:
            self._raise_bound(*reached)
        return pair_row, edges, child

    def _raise_bound(self, rows: np.ndarray, classes: np.ndarray, logp: np.ndarray) -> None:
        assert self.best is not None
        k = self.best.shape[1]
        if k == 1:
            np.maximum.at(self.best[:, 0], rows, logp)
            return
        r = np.concatenate([np.repeat(np.arange(len(self.best)), k), rows])
        v = np.concatenate([self.best.ravel(), logp])
        order = np.lexsort((-v, r))
        r, v = r[order], v[order]
        rank = _rank_in_row(r)
        keep = rank < k
        self.best[r[keep], rank[keep]] = v[keep]

    def run(self, beam: int, exact_top: int | None) -> BeamResult:
        tree = self.tree
        n = self.X.shape[0]
        if exact_top is not None:
            self.best = np.full((n, max(1, exact_top)), -np.inf)
        terminal = np.bincount(tree.edge_node, weights=tree.edge_child >= 0, minlength=len(tree.sizes)) == 0
        rows, nodes, logp = np.arange(n), np.zeros(n, dtype=np.intp), np.zeros(n)
        while len(rows):
            pair_row, edges, child = self.score(rows, nodes, logp)
            inner = tree.edge_child[edges] >= 0
            if not inner.any():
                break
            cr, cn, cl = pair_row[inner], tree.edge_child[edges[inner]], child[inner]
            by = np.lexsort((-cl, cr))  # by row, most probable first
            cr, cn, cl = cr[by], cn[by], cl[by]
            keep = _rank_in_row(cr) < beam
            self.spread.append((cr[~keep], cn[~keep], cl[~keep]))
            cr, cn, cl = cr[keep], cn[keep], cl[keep]
            if self.best is not None:  # the nodes whose children are all classes: only where they could count
                last = terminal[cn]
                self._bounded(cr[last], cn[last], cl[last])
                cr, cn, cl = cr[~last], cn[~last], cl[~last]
            rows, nodes, logp = cr, cn, cl
        lr, lc, ll = (np.concatenate(parts) for parts in zip(*self.leaves, strict=True))
        if self.spread:
            sr, sn, sl = (np.concatenate(parts) for parts in zip(*self.spread, strict=True))
        else:
            sr, sn, sl = np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0)
        return BeamResult(tree, n, lr, lc, ll, sr, sn, sl)

    def _bounded(self, rows: np.ndarray, nodes: np.ndarray, logp: np.ndarray) -> None:
        """Scores nodes whose children are all classes: first each product's most probable one, then, at once,
        those of its others whose log-probability reaches the product's bound (its ``exact_top``-th best class
        reached) -- the rest are spread (the bound only rises: none of theirs could enter)."""
        assert self.best is not None
        first = _rank_in_row(rows) == 0  # (rows ascending, most probable first within a row)
        if first.any():
            self.score(rows[first], nodes[first], logp[first])
        rest = np.flatnonzero(~first)
        go = logp[rest] >= self.best[rows[rest], -1]
        if (~go).any():
            self.spread.append((rows[rest[~go]], nodes[rest[~go]], logp[rest[~go]]))
        if go.any():
            self.score(rows[rest[go]], nodes[rest[go]], logp[rest[go]])


def beam_predictions(result: BeamResult, index: LevelIndex, temperature: float,
                     top_label: tuple[np.ndarray, np.ndarray] | None, top_k: int = 3,
                     min_confidence: float | None = None) -> list[Prediction]:
    """The :func:`~.hierarchy.decode` of ``softmax(log_proba / temperature)`` (then the top-label map), read from
    the compact result: the same predictions without the dense matrix. Products whose best leaf falls under
    ``min_confidence`` (they back off, which compares every node of a level) are decoded densely."""
    n, n_classes = result.n, len(index.classes)
    k = max(1, min(top_k, n_classes))
    top_cls, top_p, log_z = result.top(max(k, 2), temperature)
    best, top = top_cls[:, 0], top_p[:, 0]
    if top_label is not None and n_classes >= 2:
        new_top, rest = top_label_rescale(top, top_p[:, 1], 1.0 - top, top_label)
    else:
        new_top, rest = top, np.ones(n)
    alts = np.column_stack([new_top, top_p[:, 1:k] * rest[:, None]])[:, :k]
    leaf_p = np.exp(result.leaf_logp / temperature - log_z[result.leaf_rows])
    spread_p = np.exp(result.spread_class_logp() / temperature - log_z[result.spread_rows])
    conf = np.empty((n, len(index.node_of)))
    for d, node_of in enumerate(index.node_of):
        conf[:, d] = rest * result.node_mass(node_of[best], node_of, leaf_p, spread_p) + (new_top - rest * top)
    names = index.names
    out: list[Prediction | None] = []
    for i in range(n):
        leaf = index.classes[int(best[i])]
        out.append(Prediction(leaf, conf[i, :len(leaf)].tolist(), leaf, float(new_top[i]),
                              [(names[c], p) for c, p in zip(top_cls[i, :k].tolist(), alts[i].tolist(), strict=True)]))
    if min_confidence is not None:
        unsure = np.flatnonzero(new_top < min_confidence)
        if len(unsure):
            proba = softmax_with_temperature(result.subset(unsure).log_proba(), temperature)
            if top_label is not None:
                proba = apply_top_label(proba, top_label)
            for row, pred in zip(unsure, decode(proba, index, top_k=top_k, min_confidence=min_confidence),
                                 strict=True):
                out[row] = pred
    return [p for p in out if p is not None]
