"""Training the sparse member on Ray: 1 vs 2 workers against the local fit, same weights.

    python benchmarks/ray_train.py --data ../shared/data [--dataset cdiscount] [--hierarchy two-level]

One catalogue of benchmarks/generalise.py (80 % of it, ``split_catalog(seed=0)``), its features computed once;
then the sparse member's weights are fitted (no calibration split: one fit) with the local engine in this process
(1 worker), local worker processes (2), and Ray tasks on a local Ray of 1 and of 2 CPUs -- the one-vs-rest tasks
of ``taxonomist.models.ovr.run_tasks``, which is what the engines run; the features are computed once, outside
the timing. Printed: the seconds of each fit, its ratio to the 1-worker local fit, and whether the weights equal
the local fit's exactly. Ray's start (a few seconds) is outside the timing; putting the features in the object
store is inside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from generalise import read  # noqa: E402

import taxonomist as tx  # noqa: E402
from taxonomist.encoders.sparse import SparseTextEncoder  # noqa: E402
from taxonomist.models.ovr import run_tasks  # noqa: E402
from taxonomist.models.sparse import plan_tasks  # noqa: E402
from taxonomist.models.tree import local_tree, resolve_hierarchy, split_depth  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--dataset", default="cdiscount")
    ap.add_argument("--hierarchy", default="two-level")
    args = ap.parse_args()
    import ray

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# Ray training — {dt.date.today()} — commit {commit} — {platform.node()} ({os.cpu_count()} CPUs)")
    train, _ = tx.split_catalog(read(args.dataset, args.data, Path("/tmp")), test_size=0.2, seed=0)
    clf = tx.TaxonomyClassifier(tier="sparse")
    clf.text_attributes_ = [c for c in train.frame.columns if c not in ("id", "title", "description", "category", "image", "row")]
    titles, contexts = clf.reader_.texts(train)
    labels = train.frame["category"].tolist()
    X = SparseTextEncoder().fit_transform(titles, contexts)
    classes, y = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    hierarchy = resolve_hierarchy(args.hierarchy, list(classes), len(y))
    depth = split_depth(list(classes), np.bincount(y)) if hierarchy == "two-level" else 1  # as SparseClassifier.fit
    problems, tasks, sizes = plan_tasks(local_tree(hierarchy, list(classes), depth), y, len(classes))
    params = {"C": 0.5, "class_weight": None, "random_state": 0, "prune": 1e-3}
    print(f"{args.dataset}: {len(y):,} products, {len(classes):,} leaves, {X.shape[1]:,} features, hierarchy "
          f"{args.hierarchy}: {len(problems):,} problems, {len(tasks):,} tasks")

    def fit(**kw: object) -> tuple[list, float]:
        t0 = time.perf_counter()
        out = run_tasks(X, tasks, sizes, params, **kw)  # type: ignore[arg-type]
        return out, time.perf_counter() - t0

    base, base_s = fit(n_jobs=1)
    rows = [("local, 1 worker", base, base_s)]
    m, s = fit(n_jobs=2)
    rows.append(("local, 2 worker processes", m, s))
    for cpus in (1, 2):
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING, configure_logging=False)
        m, s = fit(engine="ray")
        ray.shutdown()
        rows.append((f"Ray, {cpus} CPU{'s' if cpus > 1 else ''}", m, s))
    print("\n| engine | fit s | × local 1 worker | same weights |\n|---|---|---|---|")
    for name, out, s in rows:
        same = all((w != w0).nnz == 0 and np.array_equal(b, b0) for (w, b), (w0, b0) in zip(out, base, strict=True))
        print(f"| {name} | {s:.1f} | {s / base_s:.2f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
