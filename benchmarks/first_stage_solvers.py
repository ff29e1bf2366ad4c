"""The first stage of the synthetic marketplace's two-level fit (its 99 departments) with LinearSVC and with SGD.

    python benchmarks/first_stage_solvers.py [--data benchmarks/out/scale-data] [--size 100000] [--leaves 5000]
        [--solvers svc,sgd-hinge,sgd-hinge-avg,sgd-squared_hinge]

Reads the train / test split that ``benchmarks/scale.py --sizes SIZE --leaves LEAVES`` wrote, builds the sparse
tier's features, and fits one binary column per department (depth-2 prefix of the category path) in 2 worker
processes, as the sparse tier's one-vs-rest tasks do; prints each solver's fit seconds and department accuracy on
the held-out products. SGD reads the feature matrix without copying its rows (liblinear copies them), which is why
it was tried for problems of a million products; ``alpha = 1 / (C · n)`` matches LinearSVC's C = 0.5.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from joblib import Parallel, delayed
from sklearn.linear_model import SGDClassifier
from sklearn.svm import LinearSVC

from taxonomist.encoders.sparse import SparseTextEncoder
from taxonomist.products import ProductBatch
from taxonomist.taxonomy import format_path, parse_path


def texts(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    batch = ProductBatch.from_any(frame)
    return batch.titles, batch.contexts(["brand"])


def column(X: sp.csr_matrix, y: np.ndarray, solver: str) -> tuple[np.ndarray, float]:
    warnings.filterwarnings("ignore")
    if solver == "svc":
        m = LinearSVC(C=0.5, random_state=0).fit(X, y)
    else:
        loss = solver.split("-")[1]
        m = SGDClassifier(loss=loss, alpha=1 / (0.5 * X.shape[0]), max_iter=30, tol=1e-4,
                          average=solver.endswith("avg"), random_state=0).fit(X, y)
    return m.coef_[0].astype(np.float32), float(m.intercept_[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("benchmarks/out/scale-data"))
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--leaves", type=int, default=5000)
    ap.add_argument("--solvers", default="svc,sgd-hinge,sgd-hinge-avg")
    args = ap.parse_args()
    train = pd.read_parquet(args.data / f"train-{args.size}-{args.leaves}.parquet")
    test = pd.read_parquet(args.data / f"test-{args.size}-{args.leaves}.parquet")
    t0 = time.perf_counter()
    enc = SparseTextEncoder().fit(*texts(train))
    X_train = sp.csr_matrix(enc.transform(*texts(train)), dtype=np.float64)
    X_test = enc.transform(*texts(test))
    print(f"features: {time.perf_counter() - t0:.0f} s, {X_train.shape[0]:,} x {X_train.shape[1]:,}", flush=True)
    department = np.vectorize(lambda c: format_path(parse_path(c)[:2]))
    y_train, y_test = department(train["category"].to_numpy()), department(test["category"].to_numpy())
    classes = np.unique(y_train)
    for solver in args.solvers.split(","):
        t = time.perf_counter()
        fitted = Parallel(n_jobs=2)(delayed(column)(X_train, (y_train == c).astype(np.int8), solver) for c in classes)
        W = np.stack([w for w, _b in fitted])
        b = np.asarray([b for _w, b in fitted])
        accuracy = (classes[np.asarray(X_test @ W.T + b).argmax(axis=1)] == y_test).mean()
        print(f"{solver}: fit {time.perf_counter() - t:.0f} s, department accuracy {accuracy:.4f}", flush=True)


if __name__ == "__main__":
    main()
