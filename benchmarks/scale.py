"""Marketplace scale: training and prediction cost against products and leaves.

    python benchmarks/scale.py --data ../shared/data [--catalogue synthetic|cdiscount] [--sizes 10000,100000]
        [--leaves 500,2000,5000] [--methods top-down,two-level,flat,default,svc,fasttext] [--timeout 1800]
        [--engine local|ray] [--out benchmarks/out/scale.json] [--report]

Each run (catalogue, size, leaves, method) is a fresh process: train seconds, peak resident memory of the process
and its worker processes (sampled every 20 ms with psutil), bundle MB, predict products/s (a freshly loaded
bundle, the held-out products in batches of 1,000: ``predict``, the leaf alone; and in the batch job's batches of
2,048: ``predict_frame``, the table a batch job writes, with confidences and alternatives), macro-F1 and accuracy
on the held-out products. ``--engine ray`` fits the sparse tier's local problems as Ray tasks (a Ray instance
started in the run's process, ``n_jobs`` CPUs; its processes count in the memory figures). A run that
passes ``--timeout`` is stopped and reported as not finished. Finished runs are kept in ``--out`` and not run
again.

Catalogues:

``cdiscount``: the 50,000 labelled Cdiscount products (2,682 leaf paths, French), split 80/20 with
``split_catalog(seed=0)``; ``--sizes``/``--leaves`` do not apply.

``synthetic``: a generated marketplace. Generator: the labelled products of four shared catalogues --
cdiscount (2,682 leaves), bigbasket (597), mwpd2020 (284), fashion (170) -- each under its own root
(``cdiscount > ...``), 3,733 leaf paths. For ``L`` leaves: below 3,733, the ``L`` largest leaves are kept; above,
the largest leaves are split one level deeper by brand (cdiscount ``Marque``, bigbasket ``brand``; the brand
stays an attribute of the product, so the split is learnable) until there are ``L``. Each product of a size-``N``
catalogue draws its leaf with the leaves' real frequencies (every leaf at least once) and recombines two real
products of that leaf: the first half of one title's words, the second half of the other's, the first one's
description and brand. The last 20 % (at most 20,000 products) is held out. Seed 0 throughout.

Methods: ``top-down`` / ``two-level`` / ``flat``: taxonomist's sparse tier with that ``hierarchy``; ``default``:
``TaxonomyClassifier()`` as shipped (the default tier and hierarchy); a sparse method with ``-hashed`` (e.g.
``two-level-hashed``): the same on hashed n-grams (``SparseTextEncoder(n_features=2**20)``: no vocabulary, no idf);
``svc``: scikit-learn TF-IDF (word 1-2 + char_wb 2-5, sublinear) + LinearSVC(C=0.5), title and description;
``fasttext``: fastText supervised (25 epochs, word bigrams, char 3-5-grams).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from generalise import read  # noqa: E402
from sparse_vs_baselines import PeakRSS, fasttext_baseline, sklearn_baseline  # noqa: E402

import taxonomist as tx  # noqa: E402
from taxonomist.catalog import Catalog  # noqa: E402
from taxonomist.metrics import macro_f1_accuracy  # noqa: E402

SOURCES = ("cdiscount", "bigbasket", "mwpd2020", "fashion")
BRAND = {"cdiscount": "Marque", "bigbasket": "brand"}
NONE_BRANDS = {"", "AUCUNE", "nan"}
HELD_OUT = 0.2
MAX_TEST = 20_000
BATCH_JOB_ROWS = 2048
HASHED_COLUMNS = 2**20
"""Columns per block (word, char) of the ``-hashed`` methods."""
"""Products per call of ``predict_frame``: a batch job's default ``batch_size``."""


def pool(data: Path, workdir: Path) -> pd.DataFrame:
    """title, description, brand, category (``source > path``) of every labelled product of the sources."""
    frames = []
    for name in SOURCES:
        f = read(name, data, workdir).frame
        brand = f[BRAND[name]].astype(str) if name in BRAND else pd.Series("", index=f.index)
        frames.append(pd.DataFrame({"title": f["title"].astype(str), "description": f["description"].astype(str),
                                    "brand": brand.where(~brand.isin(NONE_BRANDS), ""),
                                    "category": name + " > " + f["category"].astype(str)}))
    return pd.concat(frames, ignore_index=True)


def with_leaves(products: pd.DataFrame, n_leaves: int) -> pd.DataFrame:
    """The products relabelled to ``n_leaves`` leaves (the largest kept, or the largest split by brand)."""
    counts = products["category"].value_counts()
    if n_leaves <= len(counts):
        return products[products["category"].isin(counts.index[:n_leaves])].reset_index(drop=True)
    out = products.copy()
    leaves = len(counts)
    for leaf in counts.index:  # largest first: each split turns one leaf into its brands (>= 2 products each)
        if leaves >= n_leaves:
            break
        rows = out.index[(out["category"] == leaf) & (out["brand"] != "")]
        brands = out.loc[rows, "brand"].value_counts()
        brands = brands[brands >= 2].index[: n_leaves - leaves + 1]
        if len(brands) < 2:
            continue
        chosen = rows[out.loc[rows, "brand"].isin(brands)]
        out.loc[chosen, "category"] = leaf + " > " + out.loc[chosen, "brand"]
        leaves = out["category"].nunique()
    if leaves < n_leaves:
        raise SystemExit(f"the generator reached {leaves} leaves, fewer than the {n_leaves} asked for")
    return out


def synthetic(products: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` products recombined within leaves (see the module docstring)."""
    rng = np.random.default_rng(seed)
    groups = products.groupby("category").indices
    leaves = sorted(groups)
    sizes = np.array([len(groups[c]) for c in leaves], dtype=float)
    draw = np.concatenate([np.arange(len(leaves)), rng.choice(len(leaves), max(0, n - len(leaves)), p=sizes / sizes.sum())])
    rng.shuffle(draw)
    titles = products["title"].to_numpy()
    words = [t.split() for t in titles]
    a = np.empty(n, dtype=np.int64)
    b = np.empty(n, dtype=np.int64)
    for k, leaf in enumerate(leaves):
        where = np.flatnonzero(draw == k)
        idx = groups[leaf]
        a[where] = rng.choice(idx, len(where))
        b[where] = rng.choice(idx, len(where))
    new_titles = []
    for i, j in zip(a, b, strict=True):
        x, y = words[i], words[j]
        new_titles.append(" ".join(x[: math.ceil(len(x) / 2)] + y[len(y) // 2:]))
    return pd.DataFrame({"id": [f"p{i}" for i in range(n)], "title": new_titles,
                         "description": products["description"].to_numpy()[a], "brand": products["brand"].to_numpy()[a],
                         "category": [leaves[k] for k in draw]})


def catalogues(args: argparse.Namespace, size: int, leaves: int, workdir: Path) -> tuple[Catalog, Catalog]:
    if args.catalogue == "cdiscount":
        return tx.split_catalog(read("cdiscount", args.data, workdir), test_size=HELD_OUT, seed=0)
    cache = workdir / f"synthetic-{size}-{leaves}.parquet"
    if not cache.exists():
        frame = synthetic(with_leaves(pool(args.data, workdir), leaves), size)
        frame.to_parquet(cache, index=False)
    frame = pd.read_parquet(cache)
    n_test = min(MAX_TEST, int(len(frame) * HELD_OUT))
    path_train, path_test = workdir / f"train-{size}-{leaves}.parquet", workdir / f"test-{size}-{leaves}.parquet"
    frame.iloc[: len(frame) - n_test].to_parquet(path_train, index=False)
    frame.iloc[len(frame) - n_test:].to_parquet(path_test, index=False)
    return (tx.read_catalog(path_train, require_labels=True), tx.read_catalog(path_test, require_labels=True))


def one_run(args: argparse.Namespace, size: int, leaves: int, method: str, workdir: Path) -> dict[str, Any]:
    """Runs in its own process: fit, save, load, predict; returns the figures."""
    train, test = catalogues(args, size, leaves, workdir)
    bundle = workdir / "bundle"
    with PeakRSS(tree=True) as mem:
        t0 = time.perf_counter()
        if method in ("svc", "fasttext"):
            fit, predict, _ = (sklearn_baseline if method == "svc" else fasttext_baseline)(train)
            fit()
            train_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            pred = np.asarray(predict(test))
            predict_s = time.perf_counter() - t1
            bundle_mb = frame_rows_s = float("nan")
        else:
            if args.max_problem_rows is not None:  # read by the sparse member at fit time
                from taxonomist.models import sparse

                sparse.MAX_PROBLEM_ROWS = None if args.max_problem_rows == "none" else int(args.max_problem_rows)
            if method.endswith("-hashed"):  # the sparse tier on hashed n-grams: no vocabulary, no idf
                from taxonomist.models import sparse

                init = sparse.SparseTextEncoder.__init__  # its last argument, n_features: hashed (this process only)
                assert init.__code__.co_varnames[init.__code__.co_argcount - 1] == "n_features"
                init.__defaults__ = (*init.__defaults__[:-1], HASHED_COLUMNS)
                method = method.removesuffix("-hashed")
            clf = (tx.TaxonomyClassifier(engine=args.engine) if method == "default"  # the default tier, as shipped
                   else tx.TaxonomyClassifier(tier="sparse", hierarchy=method, engine=args.engine))
            clf.fit(train).save(bundle)
            train_s = time.perf_counter() - t0
            model = tx.load(bundle)
            t1 = time.perf_counter()
            pred = np.concatenate([model.predict(test.frame.iloc[i:i + 1000]) for i in range(0, len(test), 1000)])
            predict_s = time.perf_counter() - t1
            t1 = time.perf_counter()
            for i in range(0, len(test), BATCH_JOB_ROWS):
                model.predict_frame(test.frame.iloc[i:i + BATCH_JOB_ROWS])
            frame_rows_s = len(test) / (time.perf_counter() - t1)
            bundle_mb = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 2**20
    y = test.frame["category"].to_numpy()
    labels = {c: i for i, c in enumerate(sorted(set(y) | set(pred)))}
    f1, acc = macro_f1_accuracy(np.array([labels[v] for v in y]), np.array([labels[v] for v in pred]), len(labels))
    return {"n_train": len(train), "n_test": len(test), "leaves": int(train.frame["category"].nunique()),
            "train_s": train_s, "peak_mb": mem.peak / 2**20, "peak_pss_mb": mem.peak_pss / 2**20,
            "peak_used_mb": mem.peak_used / 2**20, "bundle_mb": bundle_mb,
            "rows_s": len(test) / predict_s, "frame_rows_s": frame_rows_s, "macro_f1": f1, "accuracy": acc}


def _child(args: argparse.Namespace, size: int, leaves: int, method: str, queue: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        work = Path(tmp)
        if args.catalogue == "synthetic":  # generated once per (size, leaves), reused by every method
            work = args.out.parent / "scale-data"
            work.mkdir(parents=True, exist_ok=True)
        queue.put(one_run(args, size, leaves, method, work))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--catalogue", choices=("synthetic", "cdiscount"), default="synthetic")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--leaves", default="500,2000,5000")
    ap.add_argument("--methods", default="top-down,two-level,flat,svc,fasttext")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds a run may take before it is stopped")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/scale.json"))
    ap.add_argument("--report", action="store_true", help="only print the table of the runs in --out")
    ap.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="where the sparse tier fits its local problems")
    ap.add_argument("--max-problem-rows", default=None,
                    help="the sparse tier's max_problem_rows ('none': every product; default: the library's)")
    args = ap.parse_args()
    runs: list[dict[str, Any]] = json.loads(args.out.read_text()) if args.out.exists() else []
    sizes = [0] if args.catalogue == "cdiscount" else [int(s) for s in args.sizes.split(",")]
    leaves = [0] if args.catalogue == "cdiscount" else [int(v) for v in args.leaves.split(",")]
    if not args.report:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        print(f"# scale — {dt.date.today()} — commit {commit} — {platform.node()} ({os.cpu_count()} CPUs)", flush=True)
        ctx = mp.get_context("spawn")
        for size in sizes:
            for n_leaves in leaves:
                for method in args.methods.split(","):
                    key = {"catalogue": args.catalogue, "size": size, "leaves_asked": n_leaves, "method": method}
                    if args.max_problem_rows is not None:
                        key["max_problem_rows"] = args.max_problem_rows
                    if args.engine != "local":
                        key["engine"] = args.engine
                    # (a run of other settings is another run: a record without the key had the default)
                    if any(all(r.get(k) == v for k, v in key.items()) and r.get("engine", "local") == args.engine
                           and r.get("max_problem_rows") == args.max_problem_rows for r in runs):
                        continue
                    queue = ctx.Queue()
                    proc = ctx.Process(target=_child, args=(args, size, n_leaves, method, queue))
                    t0 = time.time()
                    proc.start()
                    proc.join(args.timeout)
                    if proc.is_alive():
                        import psutil

                        for p in psutil.Process(proc.pid).children(recursive=True):
                            p.kill()
                        proc.kill()
                        proc.join()
                        r = {**key, "finished": False, "seconds": time.time() - t0}
                    elif proc.exitcode != 0:
                        r = {**key, "finished": False, "seconds": time.time() - t0, "exit_code": proc.exitcode}
                    else:
                        r = {**key, "finished": True, **queue.get()}
                    r.update(date=str(dt.date.today()), commit=commit)
                    runs.append(r)
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(runs, indent=1))
                    print(_line(r), flush=True)
    print("\n| catalogue | products (train) | leaves | method | train s | peak RSS GB | peak PSS GB | peak used GB "
          "| bundle MB | predict rows/s | predict_frame rows/s | macro-F1 | accuracy |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(_row(r))


def _line(r: dict[str, Any]) -> str:
    if not r["finished"]:
        return f"{r['catalogue']} {r['size']} x {r['leaves_asked']} {r['method']}: not finished after {r['seconds']:.0f} s"
    return (f"{r['catalogue']} {r['n_train']:,} x {r['leaves']:,} {r['method']}: train {r['train_s']:.0f} s, peak "
            f"{r['peak_mb'] / 1024:.2f} GB (PSS {_gb(r, 'peak_pss_mb')}, used {_gb(r, 'peak_used_mb')}), "
            f"predict {r['rows_s']:,.0f}/s (predict_frame {_rate(r)}), macro-F1 {r['macro_f1']:.4f} acc {r['accuracy']:.4f}")


def _rate(r: dict[str, Any]) -> str:
    """predict_frame's products/s; runs recorded before it was measured, and the baselines, have none."""
    v = r.get("frame_rows_s", float("nan"))
    return "-" if v != v else f"{v:,.0f}/s"


def _gb(r: dict[str, Any], key: str) -> str:
    """A memory figure in GB; runs recorded before it was measured have none."""
    return f"{r[key] / 1024:.2f}" if key in r else "-"


def _row(r: dict[str, Any]) -> str:
    if not r["finished"]:
        return (f"| {r['catalogue']} | {r['size']:,} | {r['leaves_asked']:,} | {r['method']} | not finished in "
                f"{r['seconds']:.0f} s | | | | | | | | |")
    bundle = "" if r["bundle_mb"] != r["bundle_mb"] else f"{r['bundle_mb']:.0f}"
    method = r["method"] + (f" ({r['engine']})" if r.get("engine") else "")
    return (f"| {r['catalogue']} | {r['n_train']:,} | {r['leaves']:,} | {method} | {r['train_s']:.0f} | "
            f"{r['peak_mb'] / 1024:.2f} | {_gb(r, 'peak_pss_mb')} | {_gb(r, 'peak_used_mb')} | {bundle} | "
            f"{r['rows_s']:,.0f} | {_rate(r)} | {r['macro_f1']:.4f} | {r['accuracy']:.4f} |")


if __name__ == "__main__":
    main()
