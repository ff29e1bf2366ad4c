"""Row-wise L2 normalisation of dense embeddings and sparse feature matrices (one function for both), and the blocks
of rows a products × classes matrix is worked through so that its temporaries stay small."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar, cast

import numpy as np

__all__ = ["BLOCK_CELLS", "l2_normalize", "row_blocks"]

V = TypeVar("V")

BLOCK_CELLS = 2**22
"""Rows × columns of one block of :func:`row_blocks` (a float64 temporary of it is 32 MB)."""


def row_blocks(n_rows: int, n_cols: int, cells: int = BLOCK_CELLS) -> Iterator[slice]:
    """Consecutive slices of ``n_rows`` rows, each of at most ``cells`` rows × ``n_cols`` cells (at least one row).

    Example:
        >>> list(row_blocks(5, 2, cells=4))
        [slice(0, 2, None), slice(2, 4, None), slice(4, 6, None)]
    """
    step = max(1, cells // max(1, n_cols))
    return (slice(a, a + step) for a in range(0, n_rows, step))


def l2_normalize(x: V, copy: bool = True) -> V:
    """Rows scaled to unit L2 norm; all-zero rows stay zero.

    A dense array comes back as a new float32 array; a sparse matrix as CSR of its own dtype (``copy=False``
    scales it in place): ``sklearn.preprocessing.normalize`` without its input validation, which cost as much as
    the arithmetic on a served batch.

    Example:
        >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    if isinstance(x, np.ndarray):
        return cast(V, _dense(x))
    return cast(V, _sparse(x, copy))


def _dense(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return np.asarray((v / np.maximum(n, 1e-12)).astype(np.float32))


def _sparse(m: Any, copy: bool) -> Any:
    import scipy.sparse as sp

    x = sp.csr_matrix(m, copy=copy)
    sq = np.zeros(x.shape[0], dtype=np.float64)
    lengths = np.diff(x.indptr)
    rows = np.flatnonzero(lengths)
    if len(rows):
        sq[rows] = np.add.reduceat(np.square(x.data, dtype=np.float64), x.indptr[rows])
    norms = np.sqrt(sq)
    norms[norms == 0] = 1.0
    x.data /= np.repeat(norms, lengths).astype(x.dtype, copy=False)
    return x
