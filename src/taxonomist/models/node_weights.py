"""A tree model's weights laid out node by node, and the compiled loop that scores (product, node) pairs with them.

:func:`node_major_weights` cuts the features × edges weights once per loaded model into each node's features and
their weights at the node's edges (a feature's weights that fill half of the node's row stored as a full row);
:func:`pair_margins` adds, for each (product, node) pair, the product's features times those weights. Used by
:func:`~taxonomist.models.beam.beam_descent`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from numba import njit

from .tree import LocalTree

__all__ = ["BLOCK_MARGINS", "FEW_OCCURRENCES", "NodeWeights", "compiled", "lower_bound", "node_major_weights",
           "pair_margins"]


BLOCK_MARGINS = 2**18
"""(Product, edge) margins :func:`pair_margins` adds into per block of a node's products: 1 MB of float32, read
and written while each of the block's features' weights is read once."""
DENSE_SHARE = 0.5
"""A feature's weights at a node are stored as a full row of the node's edges when they fill at least this share
of it (:func:`node_major_weights`; benchmarks/RESULTS.md)."""
FEW_OCCURRENCES = 16
"""A node whose products' feature occurrences, times this, are fewer than its features is scored without marking
its features (by bisection in them)."""


def compiled(fn: Callable[..., Any]) -> Any:
    """``numba.njit``, cached on disk next to this module when that folder is writable."""
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # no writable cache location (a read-only install): compiled once per process
        return njit(nogil=True)(fn)


@compiled
def pair_margins(x_indptr, x_indices, x_data, pair_rows, pair_nodes, offsets,  # type: ignore[no-untyped-def]
                 node_sizes, feat_ptr, feats, w_ptr, w_edge, w_data, table, budget, few, out):
    """For each (product, node) pair, the product's features times the weights of the node's edges, added into
    ``out[offset:offset + the node's edges]``. The weights are node-major (:class:`NodeWeights`); pairs come
    sorted by node. For each node, its pairs are taken in blocks of at most ``budget`` margins; a block's feature
    occurrences are grouped by feature (a counting sort), and each feature's weights are read once and added to
    the margins of each product that has it -- features in ascending order, so every margin adds its product's
    features in the product's own order (the same float32 sums as a product at a time). ``table`` (one slot per
    feature, -1 everywhere, as it is left) marks the node's features (``-2 - position``) and then the block's
    distinct ones (``>= 0``). A node with fewer than its features / ``few`` occurrences is scored by bisection
    instead (see below). Products' feature indices must ascend within each row."""
    n_pairs = pair_rows.shape[0]
    p = 0
    while p < n_pairs:
        v = pair_nodes[p]
        group_end = p
        n_occ = 0
        while group_end < n_pairs and pair_nodes[group_end] == v:
            n_occ += x_indptr[pair_rows[group_end] + 1] - x_indptr[pair_rows[group_end]]
            group_end += 1
        if n_occ * few < feat_ptr[v + 1] - feat_ptr[v]:
            _by_bisection(x_indptr, x_indices, x_data, pair_rows, offsets, p, group_end, node_sizes[v],
                          feat_ptr[v], feat_ptr[v + 1], feats, w_ptr, w_edge, w_data, out)
        else:
            _by_blocks(x_indptr, x_indices, x_data, pair_rows, offsets, p, group_end, node_sizes[v], n_occ,
                       feat_ptr[v], feat_ptr[v + 1], feats, w_ptr, w_edge, w_data, table, budget, out)
        p = group_end


@compiled
def lower_bound(a, lo, hi, value):  # type: ignore[no-untyped-def]
    """The first position in ascending ``a[lo:hi]`` whose value is not below ``value`` (``hi`` if none)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@compiled
def _by_bisection(x_indptr, x_indices, x_data, pair_rows, offsets, p, group_end, size,  # type: ignore[no-untyped-def]
                  first, last, feats, w_ptr, w_edge, w_data, out):
    """Few products for the node's features (a served request): each feature found by bisection in the node's
    ``feats[first:last]`` and its weights added one by one, rather than marking every feature of the node (same
    sums, same order)."""
    while p < group_end:
        r = pair_rows[p]
        row_out = out[offsets[p]:offsets[p] + size]
        lo = first
        for t in range(x_indptr[r], x_indptr[r + 1]):
            j = x_indices[t]
            lo = lower_bound(feats, lo, last, j)  # (a row's features ascend: from where the last one ended)
            if lo < last and feats[lo] == j:
                x = x_data[t]
                for k in range(w_ptr[lo], w_ptr[lo + 1]):
                    row_out[w_edge[k]] += x * w_data[k]
        p += 1


@compiled
def _by_blocks(x_indptr, x_indices, x_data, pair_rows, offsets, p, group_end, size, n_occ,  # type: ignore[no-untyped-def]
               first, last, feats, w_ptr, w_edge, w_data, table, budget, out):
    """One node's pairs ``p:group_end`` in blocks of at most ``budget`` margins (see :func:`pair_margins`)."""
    for i in range(first, last):
        table[feats[i]] = -2 - i
    pos = np.empty(n_occ, np.int64)  # each distinct feature's position in the node's features
    occ = np.empty(n_occ, np.int64)  # each occurrence's distinct feature (-1: no weights here)
    start = np.empty(n_occ + 1, np.int64)
    fill = np.empty(n_occ, np.int64)
    ent_pair = np.empty(n_occ, np.int64)
    ent_x = np.empty(n_occ, np.float32)
    while p < group_end:
        q = p + 1
        while q < group_end and (q - p + 1) * size <= budget:
            q += 1
        n_u = 0
        o = 0
        for pp in range(p, q):
            r = pair_rows[pp]
            for t in range(x_indptr[r], x_indptr[r + 1]):
                j = x_indices[t]
                u = table[j]
                if u <= -2:
                    pos[n_u] = -2 - u
                    u = n_u
                    table[j] = u
                    n_u += 1
                occ[o] = u
                o += 1
        # the block's occurrences grouped by feature (a counting sort), products in order within each
        start[:n_u + 1] = 0
        for t in range(o):
            if occ[t] >= 0:
                start[occ[t] + 1] += 1
        for u in range(n_u):
            start[u + 1] += start[u]
            fill[u] = start[u]
        o = 0
        for pp in range(p, q):
            r = pair_rows[pp]
            for t in range(x_indptr[r], x_indptr[r + 1]):
                u = occ[o]
                o += 1
                if u >= 0:
                    ent_pair[fill[u]] = pp
                    ent_x[fill[u]] = x_data[t]
                    fill[u] += 1
        _add_block(pos[:n_u], start, ent_pair, ent_x, offsets, size, feats, w_ptr, w_edge, w_data, table, out)
        p = q
    for i in range(first, last):
        table[feats[i]] = -1


@compiled
def _add_block(pos, start, ent_pair, ent_x, offsets, size, feats, w_ptr, w_edge, w_data,  # type: ignore[no-untyped-def]
               table, out):
    """Each distinct feature's weights (``pos``: its position in the node-major arrays; its occurrences
    ``start[u]:start[u + 1]`` of ``ent_pair`` / ``ent_x``) read once and added to each of its products' margins;
    features in ascending order, so each margin sums its product's features in their own (ascending) order."""
    for u in np.argsort(pos):
        i = pos[u]
        lo_w, hi_w = w_ptr[i], w_ptr[i + 1]
        weights = w_data[lo_w:hi_w]
        if hi_w - lo_w == size:  # a weight at every edge (they ascend): one contiguous row
            for k in range(start[u], start[u + 1]):
                x = ent_x[k]
                row_out = out[offsets[ent_pair[k]]:offsets[ent_pair[k]] + size]
                for e in range(size):  # (views: no index checks, a loop the compiler vectorises)
                    row_out[e] += x * weights[e]
        else:
            edges = w_edge[lo_w:hi_w]
            for k in range(start[u], start[u + 1]):
                x = ent_x[k]
                row_out = out[offsets[ent_pair[k]]:offsets[ent_pair[k]] + size]
                for e in range(hi_w - lo_w):
                    row_out[edges[e]] += x * weights[e]
        table[feats[i]] = -2 - i  # back to "a feature of this node" for the next block


@dataclass
class NodeWeights:
    """A tree model's weights node-major, for :func:`pair_margins`: node ``v``'s features are
    ``feats[feat_ptr[v]:feat_ptr[v + 1]]`` (ascending), feature position ``i``'s weights
    ``w_data[w_ptr[i]:w_ptr[i + 1]]`` at the node's edges ``w_edge`` (0 = the node's first edge)."""

    feat_ptr: np.ndarray
    feats: np.ndarray
    w_ptr: np.ndarray
    w_edge: np.ndarray
    w_data: np.ndarray
    _table: np.ndarray | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:  # (a model is copied and pickled with its caches: not the lock)
        return {k: v for k, v in self.__dict__.items() if k not in ("_table", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _table=None, _lock=threading.Lock())

    def scratch(self, n_features: int) -> np.ndarray:
        """A table of one slot per feature, all -1, for one call of :func:`pair_margins`: kept between calls (a
        served request would spend more on setting 2 million slots than on scoring), a new one while another
        thread holds it."""
        if self._lock.acquire(blocking=False):
            if self._table is None or len(self._table) != n_features:
                self._table = np.full(n_features, -1, dtype=np.int64)
            return self._table
        return np.full(n_features, -1, dtype=np.int64)

    def release(self, table: np.ndarray, clean: bool) -> None:
        """Hands back a :meth:`scratch` table; one a failed call may have left marked is dropped."""
        if table is self._table:
            if not clean:
                self._table = None
            self._lock.release()


def node_major_weights(tree: LocalTree, coef_t: sp.csr_matrix, dense_share: float | None = None) -> NodeWeights:
    """:class:`NodeWeights` from the features × edges weights (CSR, sorted indices), in three passes over them. A
    feature's weights at a node are stored as a full row of the node's edges (zeros where it has none) when
    they fill at least ``dense_share`` (default ``DENSE_SHARE``) of it: :func:`pair_margins` adds such a row as
    one contiguous loop, the same sums."""
    share = DENSE_SHARE if dense_share is None else dense_share
    scored = np.where(tree.sizes >= 2, np.arange(len(tree.sizes)), -1)[tree.edge_node]  # (single children: none)
    runs = _node_major_counts(coef_t.indptr, coef_t.indices, scored, len(tree.sizes))
    feat_ptr = np.r_[0, np.cumsum(runs)].astype(np.int64)
    feats = np.empty(feat_ptr[-1], dtype=np.int32)
    run_len = np.zeros(feat_ptr[-1], dtype=np.int64)
    _node_major_runs(coef_t.indptr, coef_t.indices, scored, feat_ptr, feats, run_len)
    size_of_run = np.repeat(tree.sizes, runs)
    full = run_len >= share * size_of_run
    w_ptr = np.r_[0, np.cumsum(np.where(full, size_of_run, run_len))].astype(np.int64)
    w_edge = np.empty(w_ptr[-1], dtype=np.int32)
    w_data = np.zeros(w_ptr[-1], dtype=np.float32)
    _node_major_fill(coef_t.indptr, coef_t.indices, coef_t.data, scored, tree.starts, feat_ptr, w_ptr, full,
                     w_edge, w_data)
    return NodeWeights(feat_ptr, feats, w_ptr, w_edge, w_data)


@compiled
def _node_major_counts(indptr, indices, edge_node, n_nodes):  # type: ignore[no-untyped-def]
    """Per node, its features with a weight (runs)."""
    runs = np.zeros(n_nodes, np.int64)
    for j in range(indptr.shape[0] - 1):
        prev = -1
        for t in range(indptr[j], indptr[j + 1]):
            v = edge_node[indices[t]]
            if v >= 0 and v != prev:  # (a node's edges are contiguous: its weights of one feature are one run)
                runs[v] += 1
                prev = v
    return runs


@compiled
def _node_major_runs(indptr, indices, edge_node, feat_ptr, feats, run_len):  # type: ignore[no-untyped-def]
    """Each run's feature and number of weights."""
    run_at = feat_ptr[:-1].copy()
    for j in range(indptr.shape[0] - 1):  # features in ascending order: each node's come out ascending
        prev = -1
        for t in range(indptr[j], indptr[j + 1]):
            v = edge_node[indices[t]]
            if v < 0:
                continue
            if v != prev:
                feats[run_at[v]] = j
                run_at[v] += 1
                prev = v
            run_len[run_at[v] - 1] += 1


@compiled
def _node_major_fill(indptr, indices, data, edge_node, starts, feat_ptr, w_ptr, full,  # type: ignore[no-untyped-def]
                     w_edge, w_data):
    """The weights into their runs: a full run at its edge's place (``w_data`` zero elsewhere), the others in
    edge order."""
    run_at = feat_ptr[:-1].copy()
    for j in range(indptr.shape[0] - 1):
        prev = -1
        at = 0
        run = 0
        for t in range(indptr[j], indptr[j + 1]):
            e = indices[t]
            v = edge_node[e]
            if v < 0:
                continue
            if v != prev:
                run = run_at[v]
                run_at[v] += 1
                prev = v
                at = w_ptr[run]
                if full[run]:
                    for k in range(w_ptr[run + 1] - w_ptr[run]):
                        w_edge[at + k] = k
            if full[run]:
                w_data[w_ptr[run] + e - starts[v]] = data[t]
            else:
                w_edge[at] = e - starts[v]
                w_data[at] = data[t]
                at += 1
