"""One-vs-rest columns of linear SVMs, fitted as independent tasks: in this process, in worker processes, or as
Ray tasks on a cluster -- the same columns whichever runs them -- and resumable from a checkpoint folder.

A *problem* is one multi-class fit (the flat model has one; the top-down model one per inner node of the
taxonomy). Its present labels are split into tasks of at most ``MAX_COLUMNS_PER_TASK`` columns; each task fits
its columns one against the rest of the problem's rows, prunes small weights and returns them sparse, so the
dense weights in flight never exceed a task's columns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from ..exceptions import TaxonomistError

__all__ = ["CSR_BYTES_PER_VALUE", "MAX_COLUMNS_PER_TASK", "Task", "backing_file", "capped", "fit_task", "local_tasks", "mapped_rows",
           "release_workers", "run_tasks"]

logger = logging.getLogger(__name__)

Engine = Literal["local", "ray"]
FitResult = tuple[sp.csr_matrix, np.ndarray, np.ndarray, int, int]

@dataclass
class Task:
    """Some one-vs-rest columns of one local problem: ``rows`` of X with local labels ``y``; ``columns`` to fit
    (``mirror``: a two-class problem fitted once, the second column the negated first)."""

    problem: int
    rows: np.ndarray
    y: np.ndarray
    columns: np.ndarray
    mirror: bool = False


MAX_COLUMNS_PER_TASK = 32


def local_tasks(rows: np.ndarray, y: np.ndarray, problem: int = 0, n_chunks: int = 2) -> list[Task]:
    """The tasks of one local problem: its present labels split into chunks of at most ``MAX_COLUMNS_PER_TASK``
    columns (at least ``n_chunks`` when it has enough), so that workers share a large problem and the dense
    weights in flight stay small."""
    present = np.unique(y)
    if len(present) <= 2:
        return [Task(problem, rows, y, present, mirror=len(present) == 2)]
    k = max(n_chunks, -(-len(present) // MAX_COLUMNS_PER_TASK))
    return [Task(problem, rows, y, c) for c in np.array_split(present, k) if len(c)]


def capped(rows: np.ndarray, y: np.ndarray, max_rows: int, seed: int | Sequence[int] = 0
           ) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_rows`` of a problem's ``rows`` (labels ``y``), drawn with ``seed`` in the labels' own
    proportions -- so the classifier learns the same priors -- except that every label keeps at least
    ``max_rows / (2 × labels)`` rows (all of them when it has fewer): the rare ones are not sampled away.
    ``rows`` themselves when there are not more than ``max_rows``. Returned in row order."""
    if len(rows) <= max_rows:
        return rows, y
    _labels, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    floor = np.minimum(counts, max(1, max_rows // (2 * len(counts))))
    rest = counts - floor
    budget = max(0, max_rows - int(floor.sum()))
    share = rest * (budget / max(1, int(rest.sum())))
    quota = floor + np.floor(share).astype(np.int64)
    spare = max_rows - int(quota.sum())  # the rows rounding left over: to the largest remainders
    if spare > 0:
        more = np.argsort(-(share - np.floor(share)), kind="stable")
        more = more[quota[more] < counts[more]][:spare]
        quota[more] += 1
    order = np.lexsort((np.random.default_rng(seed).random(len(y)), inverse))
    start = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.arange(len(y)) - np.repeat(start, counts)
    keep = np.sort(order[rank < np.repeat(quota, counts)])
    return rows[keep], y[keep]


def mapped_rows(blocks: Iterable[sp.csr_matrix], n_features: int, folder: str | Path) -> sp.csr_matrix:
    """Row blocks stacked into one float64 CSR matrix (liblinear's type) whose values and column indices are
    written to files in ``folder`` as the blocks come and mapped read-only from them: the matrix is held once,
    in the page cache, and worker processes read it by the file's name instead of receiving a copy."""
    folder = Path(folder)
    ends, nnz, n_rows = [np.zeros(1, dtype=np.int64)], 0, 0
    with open(folder / "data.f64", "wb") as fd, open(folder / "indices.i32", "wb") as fi:
        for block in blocks:
            block = sp.csr_matrix(block)
            np.asarray(block.data, dtype=np.float64).tofile(fd)
            np.asarray(block.indices, dtype=np.int32).tofile(fi)
            ends.append(np.asarray(block.indptr[1:], dtype=np.int64) + nnz)
            nnz += int(block.nnz)
            n_rows += block.shape[0]
    indptr = np.concatenate(ends)
    if nnz == 0:
        return sp.csr_matrix((n_rows, n_features), dtype=np.float64)
    data = np.memmap(folder / "data.f64", dtype=np.float64, mode="r", shape=(nnz,))
    indices: np.ndarray = np.memmap(folder / "indices.i32", dtype=np.int32, mode="r", shape=(nnz,))
    if nnz > np.iinfo(np.int32).max:  # scipy needs one index type for both: 64-bit indices, in memory
        indices = np.asarray(indices, dtype=np.int64)
    else:
        indptr = indptr.astype(np.int32)
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_features), copy=False)


def backing_file(X: sp.csr_matrix) -> str | None:
    """The file ``X``'s values are mapped from (:func:`mapped_rows`), or ``None`` when they are in memory."""
    base: Any = X.data
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    return str(base.filename) if isinstance(base, np.memmap) and base.filename else None


def fit_task(X: sp.csr_matrix, task: Task, params: dict[str, Any]) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, int, int]:
    """Fit a task's columns: (pruned weights CSR, intercepts, columns, problems not converged, problems fitted)."""
    cols = task.columns
    n = X.shape[1]
    if len(cols) == 1:  # the only label of the problem: it always wins there
        return sp.csr_matrix((1, n), dtype=np.float32), np.zeros(1, np.float32), cols, 0, 0
    Xt = X if len(task.rows) == X.shape[0] and (np.diff(task.rows) == 1).all() else X[task.rows]
    prune = params["prune"]
    svc_params = {k: params[k] for k in ("C", "class_weight", "random_state")}
    weights, intercepts = [], []

    def keep(w: np.ndarray, b: float) -> None:  # pruned and sparse at once: one dense column in flight
        w = w.astype(np.float32)
        w[np.abs(w) < prune] = 0.0
        weights.append(sp.csr_matrix(w))
        intercepts.append(b)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if task.mirror:
            m = LinearSVC(**svc_params).fit(Xt, (task.y == cols[1]).astype(np.int8))
            keep(-m.coef_[0], -m.intercept_[0])
            keep(m.coef_[0], m.intercept_[0])
        else:
            for c in cols:
                m = LinearSVC(**svc_params).fit(Xt, (task.y == c).astype(np.int8))
                keep(m.coef_[0], m.intercept_[0])
    not_converged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    for wn in caught:
        if not issubclass(wn.category, ConvergenceWarning):
            warnings.warn_explicit(wn.message, wn.category, wn.filename, wn.lineno)
    n_fits = 1 if task.mirror else len(cols)
    return sp.vstack(weights, format="csr"), np.asarray(intercepts, np.float32), cols, not_converged, n_fits


def _fingerprint(X: sp.csr_matrix, params: dict[str, Any]) -> str:
    """What a checkpoint's results depend on besides the task: the features and the SVM settings."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({k: params[k] for k in sorted(params)}, default=str).encode())
    h.update(np.asarray(X.shape, np.int64).tobytes())
    for a in (X.indptr, X.indices, X.data):
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _task_key(task: Task, base: str) -> str:
    h = hashlib.blake2b(base.encode(), digest_size=16)
    for a in (task.rows, task.y, task.columns):
        h.update(np.ascontiguousarray(a, dtype=np.int64).data)
    h.update(b"m" if task.mirror else b"-")
    return h.hexdigest()


def _save(path: Path, r: FitResult) -> None:
    """One finished task as .npz (arrays only: loading it runs no code), written atomically."""
    w, b, cols, not_converged, n_fits = r
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, data=w.data, indices=w.indices, indptr=w.indptr, shape=np.asarray(w.shape), b=b, cols=cols,
             counts=np.asarray([not_converged, n_fits]))
    os.replace(tmp, path)


def _load(path: Path) -> FitResult:
    with np.load(path, allow_pickle=False) as z:
        w = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        return w, z["b"], z["cols"], int(z["counts"][0]), int(z["counts"][1])


def _run_ray(X: sp.csr_matrix, tasks: list[Task], params: dict[str, Any], n_jobs: int | None,
             done: Callable[[int, FitResult], None]) -> None:
    try:
        import ray
    except ImportError:
        raise TaxonomistError("engine 'ray' needs Ray: pip install 'taxonomist[distributed]'") from None
    started = False
    if not ray.is_initialized():  # RAY_ADDRESS (or ray.init before fit) joins a cluster; else a local one
        address = os.environ.get("RAY_ADDRESS")
        ray.init(address=address, num_cpus=None if address else n_jobs, include_dashboard=False,
                 logging_level=logging.WARNING, configure_logging=False)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(fit_task)
        x_ref = ray.put(X)  # once into the object store, read by every task without a copy per task
        pending = {remote.remote(x_ref, t, params): i for i, t in enumerate(tasks)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                done(pending.pop(ref), ray.get(ref))
    except ray.exceptions.RayError as e:
        raise TaxonomistError(f"a Ray training task failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
                              "with a checkpoint folder, the finished tasks are kept: run the same fit again") from None
    finally:
        if started:
            ray.shutdown()


def run_tasks(X: sp.csr_matrix, tasks: list[Task], sizes: list[int], params: dict[str, Any], n_jobs: int | None = None,
              engine: Engine = "local", checkpoint: str | Path | None = None) -> list[tuple[sp.csr_matrix, np.ndarray]]:
    """Fit every task and assemble each problem's (coef CSR ``sizes[p]`` × features, intercept).

    Args:
        params: ``C``, ``class_weight``, ``random_state`` of the SVMs and ``prune``.
        n_jobs: worker processes (local) or CPUs of a Ray instance started here (``None``: all cores, at most 2
            locally; Ray's own count).
        engine: ``"local"`` (this process, or joblib worker processes) or ``"ray"`` (Ray tasks: the cluster named
            by ``RAY_ADDRESS``, or one started on this machine).
        checkpoint: a folder (shared storage on a cluster) where each finished task is kept; a fit that stopped
            half-way is resumed from it with the same data and settings, re-fitting only what is missing.
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    X = sp.csr_matrix(X, dtype=np.float64)  # liblinear's type, converted once instead of once per column
    results: list[FitResult | None] = [None] * len(tasks)
    folder = Path(checkpoint) if checkpoint is not None else None
    keys: list[str] = []
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        base = _fingerprint(X, params)
        keys = [_task_key(t, base) for t in tasks]
        for i, k in enumerate(keys):
            if (folder / f"{k}.npz").is_file():
                results[i] = _load(folder / f"{k}.npz")
        n_kept = sum(r is not None for r in results)
        if n_kept:
            logger.info("resuming: %d of %d tasks kept in %s", n_kept, len(tasks), folder)

    def done(i: int, r: FitResult) -> None:
        results[i] = r
        if folder is not None:
            _save(folder / f"{keys[i]}.npz", r)

    todo = [i for i, r in enumerate(results) if r is None]
    if engine == "ray" and todo:
        _run_ray(X, [tasks[i] for i in todo], params, n_jobs, lambda j, r: done(todo[j], r))
    else:
        workers = n_jobs if n_jobs is not None else min(2, os.cpu_count() or 1)
        # worker processes, not threads: liblinear seeds the C library's global rand() at each fit, so two fits
        # sharing one process interleave their shuffles and the weights stop being reproducible
        if workers == 1 or len(todo) <= 1 or sum(len(tasks[i].columns) for i in todo) < 8:
            for i in todo:
                done(i, fit_task(X, tasks[i], params))
        else:
            from joblib import Parallel, delayed

            alone = _too_large_for(workers, X, [tasks[i] for i in todo])
            if alone:
                logger.info("%d of %d tasks would need more memory than is available with %d workers at once "
                            "(liblinear copies a task's rows); they run one at a time in this process",
                            len(alone), len(todo), workers)
            for j in alone:
                done(todo[j], fit_task(X, tasks[todo[j]], params))
            rest = [i for j, i in enumerate(todo) if j not in set(alone)] if alone else todo
            parallel = Parallel(n_jobs=workers, return_as="generator")
            for i, r in zip(rest, parallel(delayed(fit_task)(X, tasks[i], params) for i in rest), strict=True):
                done(i, r)
            if mp.parent_process() is not None:
                # inside a multiprocessing child, which joins its child processes as it ends -- before the exit
                # handlers that stop joblib's reusable workers run: stop them now, or the child never exits
                from joblib.externals.loky import get_reusable_executor

                get_reusable_executor(max_workers=workers).shutdown(wait=True)
    finished = [r for r in results if r is not None]
    not_converged = sum(r[3] for r in finished)
    if not_converged:
        logger.warning(
            "the linear SVM stopped before converging on %d of %d one-vs-rest problems (C=%s); its predictions "
            "are usable, and a smaller C converges faster", not_converged, sum(r[4] for r in finished), params["C"],
        )
    return [_assemble([r for t, r in zip(tasks, finished, strict=True) if t.problem == p], size, X.shape[1])
            for p, size in enumerate(sizes)]


def release_workers() -> None:
    """Stop joblib's worker processes, idle between fits: each keeps the memory its fits grew to (about 200 MB on an
    8,000-product catalogue) until it is stopped; the next fit starts new ones (about a second)."""
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)  # (None: no worker was started)
    if executor is not None:
        executor.shutdown(wait=True)


_LIBLINEAR_BYTES_PER_VALUE = 16
"""liblinear's copy of a problem: one (index, value) node of 16 bytes per stored value, one more per row."""
CSR_BYTES_PER_VALUE = 12
"""A float64 CSR matrix: 8 bytes of value and 4 of column index per stored value."""


def _available_bytes() -> int | None:
    """The memory the kernel says is available (Linux ``MemAvailable``); ``None`` where it is not known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _task_bytes(X: sp.csr_matrix, task: Task) -> int:
    """What a worker allocates to fit a task: liblinear's copy of its rows, and first a CSR copy of them when
    they are not all the rows (the all-rows problem reads the features joblib shares with the workers)."""
    rows = len(task.rows)
    if rows == X.shape[0]:
        return _LIBLINEAR_BYTES_PER_VALUE * (int(X.nnz) + rows)
    nnz = int(np.diff(X.indptr)[task.rows].sum())
    return (_LIBLINEAR_BYTES_PER_VALUE + CSR_BYTES_PER_VALUE) * nnz + _LIBLINEAR_BYTES_PER_VALUE * rows


def _too_large_for(workers: int, X: sp.csr_matrix, tasks: list[Task]) -> list[int]:
    """Positions of the tasks that ``workers`` processes could not fit side by side in the available memory
    (80 % of it, after the copy of the features joblib shares with them unless they are mapped from a file);
    they run one at a time instead."""
    available = _available_bytes()
    if available is None:
        return []
    shared = 0 if backing_file(X) else CSR_BYTES_PER_VALUE * X.nnz  # a mapped file is not copied for them
    budget = 0.8 * available - shared
    return [j for j, t in enumerate(tasks) if workers * _task_bytes(X, t) > budget]


def _assemble(parts: list[FitResult], size: int, n_features: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """One problem's fitted rows scattered into place; labels absent from its rows keep an all-zero row and an
    intercept of -1000 (they never win)."""
    intercept = np.full(size, -1e3, dtype=np.float32)
    if not parts:
        return sp.csr_matrix((size, n_features), dtype=np.float32), intercept
    cols = np.concatenate([c for _w, _b, c, _n, _f in parts])
    for _w, b, c, _n, _f in parts:
        intercept[c] = b
    order = np.argsort(cols)
    stacked = sp.vstack([w for w, *_ in parts], format="csr")[order]
    indptr = np.zeros(size + 1, dtype=np.int64)
    indptr[cols[order] + 1] = np.diff(stacked.indptr)
    return sp.csr_matrix((stacked.data.astype(np.float32), stacked.indices, np.cumsum(indptr)),
                         shape=(size, n_features)), intercept
