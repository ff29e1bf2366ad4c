"""The neighbour member's HNSW index against exact search, on real product-title embeddings.

    TAXONOMIST_CACHE_DIR=/tmp/cache python benchmarks/ann.py --data ../shared/data [--queries 2000]

The titles of the four labelled catalogues of benchmarks/scale.py's generator (cdiscount, bigbasket, mwpd2020,
fashion: 137,924 products) encoded with ``minilm-en`` (the embedding cache makes a second run fast); 2,000 of them
(seed 0) are the queries, the rest the labelled index -- above ``ANN_ABOVE``, where ``search="auto"`` switches to
HNSW. For each ``efSearch``: recall@10 (share of the exact 10 nearest found), how often the neighbour vote picks
the same category as exact search, queries per second (one batch of all queries, this process), and the index's
build seconds; the same for exact search.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from scale import pool  # noqa: E402

from taxonomist.encoders.transformer import load_text_encoder  # noqa: E402
from taxonomist.models import embed  # noqa: E402
from taxonomist.models.embed import NeighbourIndex  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--queries", type=int, default=2000)
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# HNSW vs exact neighbours — {dt.date.today()} — commit {commit} — {platform.node()} ({os.cpu_count()} CPUs)")
    products = pool(args.data, Path("/tmp"))
    labels = products["category"].astype("category").cat.codes.to_numpy()
    vectors = load_text_encoder("minilm-en").encode(products["title"].tolist(), show_progress_bar=False)
    rng = np.random.default_rng(0)
    q = rng.choice(len(vectors), args.queries, replace=False)
    keep = np.setdiff1d(np.arange(len(vectors)), q)
    n_classes = int(labels.max()) + 1
    exact = NeighbourIndex(k=10, search="exact").fit(vectors[keep], labels[keep], n_classes)
    t0 = time.perf_counter()
    _, i_exact = exact.kneighbors(vectors[q])
    exact_s = time.perf_counter() - t0
    vote_exact = exact.predict_proba(vectors[q]).argmax(1)
    print(f"{len(keep):,} labelled vectors ({vectors.shape[1]} dims), {len(q):,} queries\n")
    print("| search | efSearch | recall@10 | same vote | queries/s | build s |\n|---|---|---|---|---|---|")
    print(f"| exact | | 1.0000 | 1.0000 | {len(q) / exact_s:,.0f} | |")
    for ef in (32, 64, 128, 256):
        embed.HNSW_EF_SEARCH = ef
        approx = NeighbourIndex(k=10, search="hnsw").fit(vectors[keep], labels[keep], n_classes)
        t0 = time.perf_counter()
        approx._hnsw()
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, i_approx = approx.kneighbors(vectors[q])
        approx_s = time.perf_counter() - t0
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_exact, i_approx, strict=True)])
        same = float((approx.predict_proba(vectors[q]).argmax(1) == vote_exact).mean())
        print(f"| HNSW (M {embed.HNSW_M}) | {ef} | {recall:.4f} | {same:.4f} | {len(q) / approx_s:,.0f} | {build_s:.0f} |")


if __name__ == "__main__":
    main()
