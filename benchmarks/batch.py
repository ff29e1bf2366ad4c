"""Batch prediction at catalogue scale: ``--engine local`` vs ``--engine ray`` on 200k and 1M products.

    python benchmarks/batch.py [--sizes 200000 1000000] [--workers 2] [--shard-rows 50000] [--engines local ray]

Synthetic but realistic products: each is the first half of one bundled sample title and the second half of
another title *of the same category*, plus its attributes, with a fresh id (so titles are new to the model but
still belong to their category). Written once as Parquet shards of ``--shard-rows`` rows under ``--workdir``. The
model is the sparse tier trained on the bundled sample.

For each engine and size it runs one job (``taxonomist.batch.run_job``, the code behind ``taxonomist predict
FOLDER -o FOLDER --engine ...``) and prints rows/s, microseconds per row, machine cost per 1k rows (wall seconds ×
cores / 1000 rows), the peak RSS of the whole process tree (driver + workers; for Ray also raylet, GCS and
actors), and the ratio of per-row time at the largest vs the smallest size (flat = it scales). Ray is started
once before the Ray runs (its start-up time is printed, not counted). Also checks the two engines wrote the same
predictions for the smallest size.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

import taxonomist as tx
from taxonomist.batch import read_output, run_job
from taxonomist.datasets import sample_path

sys.path.insert(0, str(Path(__file__).parent))
from sparse_vs_baselines import PeakRSS  # noqa: E402


def synthesize(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` products recombined within categories from the bundled sample."""
    src = pd.read_csv(sample_path("products"), dtype=str, keep_default_na=False)
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(src), n)
    by_cat = src.groupby("category").indices
    cats = src["category"].to_numpy()
    second = np.array([rng.choice(by_cat[c]) for c in cats[first]]) if n <= 50_000 else \
        np.concatenate([np.array([rng.choice(by_cat[c]) for c in cats[first[i:i + 50_000]]])
                        for i in range(0, n, 50_000)])
    words = [t.split() for t in src["title"]]
    titles = [" ".join(words[a][: max(1, len(words[a]) // 2)] + words[b][len(words[b]) // 2:])
              for a, b in zip(first, second, strict=True)]
    out = src.iloc[first].reset_index(drop=True).drop(columns=["category"])
    out["id"] = [f"syn-{seed}-{i}" for i in range(n)]
    out["title"] = titles
    return out


def write_shards(n: int, folder: Path, shard_rows: int) -> None:
    if (folder / "_DONE").is_file():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for k, start in enumerate(range(0, n, shard_rows)):
        synthesize(min(shard_rows, n - start), seed=k).to_parquet(folder / f"shard-{k:04d}.parquet", index=False)
    (folder / "_DONE").write_text("")


def train_model(folder: Path) -> None:
    if not (folder / "manifest.json").is_file():
        tx.TaxonomyClassifier(tier="sparse").fit(tx.read_catalog(sample_path("products"), require_labels=True)).save(folder)
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)  # else this process waits for joblib's idle workers on exit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    ap.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-rows", type=int, default=50_000)
    ap.add_argument("--workdir", type=Path, default=Path("benchmarks/out/batch"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cores = os.cpu_count() or 1

    model = args.workdir / "model"
    inputs = {n: args.workdir / f"in-{n}" for n in args.sizes}
    # model and inputs are made in a child process, so their memory does not count in this process's RSS
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(train_model, model).result()
        for n in args.sizes:
            t0 = time.perf_counter()
            pool.submit(write_shards, n, inputs[n], args.shard_rows).result()
            print(f"input {n:,} rows: {len(list(inputs[n].glob('*.parquet')))} shards ({time.perf_counter() - t0:.1f} s to make)")

    rows = []
    for engine in args.engines:
        if engine == "ray":
            import ray

            t0 = time.perf_counter()
            ray.init(include_dashboard=False, logging_level=logging.WARNING, configure_logging=False)
            print(f"ray start-up: {time.perf_counter() - t0:.1f} s (not counted below)")
        for n in args.sizes:
            out = args.workdir / f"out-{engine}-{n}"
            shutil.rmtree(out, ignore_errors=True)
            with PeakRSS(tree=True) as rss:
                t0 = time.perf_counter()
                res = run_job("predict", model, inputs[n], out, engine=engine, num_workers=args.workers)
                wall = time.perf_counter() - t0
            assert res.ok and res.rows == n, res
            rows.append({"engine": engine, "rows": n, "seconds": wall, "rows_per_s": n / wall,
                         "us_per_row": 1e6 * wall / n, "core_s_per_1k": wall * cores / (n / 1000),
                         "peak_rss_mb": rss.peak / 2**20})
            r = rows[-1]
            print(f"{engine:5s} {n:>9,} rows: {wall:6.1f} s  {r['rows_per_s']:8,.0f} rows/s  {r['us_per_row']:6.1f} µs/row  "
                  f"{r['core_s_per_1k']:.3f} core-s/1k rows  peak RSS {r['peak_rss_mb']:,.0f} MB", flush=True)
        if engine == "ray":
            ray.shutdown()

    print("\n| engine | rows | seconds | rows/s | µs/row | core-s per 1k rows | peak RSS (MB) | per-row time vs smallest |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(b for b in rows if b["engine"] == r["engine"] and b["rows"] == min(args.sizes))
        print(f"| {r['engine']} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | {r['us_per_row']:.1f} | "
              f"{r['core_s_per_1k']:.3f} | {r['peak_rss_mb']:,.0f} | {r['us_per_row'] / base['us_per_row']:.2f}× |")
    if {"local", "ray"} <= set(args.engines):
        n = min(args.sizes)
        same = read_output(args.workdir / f"out-local-{n}").equals(read_output(args.workdir / f"out-ray-{n}"))
        print(f"\nlocal and ray outputs identical at {n:,} rows: {same}")


if __name__ == "__main__":
    main()
