"""Prediction of a many-leaf sparse bundle: the beam's compact result against the dense products × leaves matrix.

    python benchmarks/beam_predict.py --bundle DIR --test PRODUCTS.parquet [--rows 8000] [--batch 2048]

In one process, on the same products (``--rows`` of ``--test``, in batches of ``--batch``), each path run twice
and the faster run kept:

- ``dense``: ``decode(predict_proba(...))`` -- the beam's class log-probabilities as a dense matrix, softmax,
  top-label map, then the level sums of every node (how predictions were made before the compact path);
- ``compact``: ``predict_products`` -- best leaf, top-3, the path's confidences read from the beam's result;
- ``predict``: the leaf alone (``TaxonomyClassifier.predict``);
- the sparse features alone (what every path pays first);
- one product at a time (a served request), median of 50.

Prints products/s, the ratio compact / dense, and how many of the products' leaves and paths differ between the
two (0 expected: the compact path is the same calculation). The bundle must be a sparse-tier tree model that
predicts by beam descent (more than 2,000 edges), e.g. the one ``benchmarks/scale.py`` leaves in
``benchmarks/out/scale-data/bundle``.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

import taxonomist as tx
from taxonomist.models.hierarchy import decode


def best_of(runs: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=2048)
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    model = tx.load(args.bundle)
    sparse = model.model_
    if not isinstance(sparse, tx.models.SparseClassifier) or not sparse._beam_width():
        raise SystemExit(f"{args.bundle} is not a sparse-tier tree model that predicts by beam descent")
    frame = pd.read_parquet(args.test).iloc[: args.rows]
    batches = [frame.iloc[i:i + args.batch] for i in range(0, len(frame), args.batch)]
    t = time.perf_counter()
    model.predict_products(batches[0].iloc[:50])  # weights laid out node-major once, compiled loops loaded
    print(f"# beam prediction — commit {commit} — {args.bundle} ({len(model.classes_):,} leaves), {len(frame):,} "
          f"products in batches of {args.batch:,}; first call {time.perf_counter() - t:.1f} s")
    n = len(frame)

    def dense() -> list:  # type: ignore[type-arg]
        return [p for b in batches for p in decode(model.predict_proba(b), model.levels_)]

    def compact() -> list:  # type: ignore[type-arg]
        return [p for b in batches for p in model.predict_products(b)]

    texts = [model.reader_.texts(b) for b in batches]
    s_dense = best_of(2, dense)
    s_compact = best_of(2, compact)
    s_predict = best_of(2, lambda: [model.predict(b) for b in batches])
    s_features = best_of(2, lambda: [sparse.encoder_.transform(*p) for p in texts])
    one = []
    for i in range(50):
        t = time.perf_counter()
        model.predict_products(frame.iloc[i:i + 1])
        one.append(time.perf_counter() - t)
    a, b = dense(), compact()
    leaf_diff = sum(x.leaf != y.leaf for x, y in zip(a, b, strict=True))
    conf_diff = max(max(abs(u - v) for u, v in zip(x.confidence, y.confidence, strict=True)) for x, y in zip(a, b, strict=True))
    print(f"dense (predict_proba + decode): {n / s_dense:,.0f} products/s")
    print(f"compact (predict_products):     {n / s_compact:,.0f} products/s  ({s_dense / s_compact:.2f}x dense)")
    print(f"predict (leaf only):            {n / s_predict:,.0f} products/s")
    print(f"sparse features alone:          {n / s_features:,.0f} products/s ({s_features / s_compact:.0%} of compact's time)")
    print(f"one product at a time:          {np.median(one) * 1000:.1f} ms median")
    print(f"compact vs dense: {leaf_diff} of {n:,} leaves differ; largest confidence difference {conf_diff:.1e}")


if __name__ == "__main__":
    main()
