"""How long zero-shot classification into a large taxonomy takes: the first build, a cached build, 1,000 products.

    python benchmarks/zeroshot_speed.py --taxonomy ../shared/data/taxonomies/shopify/categories.txt [--n 1000]

Builds ``TaxonomyClassifier.from_taxonomy`` twice with an empty embedding cache (a temporary
``TAXONOMIST_CACHE_DIR``): the first build embeds every category's label texts, the second reads them from the
cache. Then classifies ``--n`` products of the bundled sample (titles and attributes), and prints the seconds of
each step and the leaves per second of the scoring.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--taxonomy", type=Path, required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--encoder", default="minilm-en")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TAXONOMIST_CACHE_DIR"] = cache  # before taxonomist reads it
        import pandas as pd

        import taxonomist as tx
        from taxonomist.datasets import sample_path

        tax = tx.Taxonomy.load(args.taxonomy)
        t = time.perf_counter()
        clf = tx.TaxonomyClassifier.from_taxonomy(tax, encoder=args.encoder)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        clf = tx.TaxonomyClassifier.from_taxonomy(tax, encoder=args.encoder)
        warm = time.perf_counter() - t
        products = pd.read_csv(sample_path("products"), dtype=str, keep_default_na=False).drop(columns=["category"])
        records = products.head(args.n).to_dict(orient="records")
        t = time.perf_counter()
        clf.predict_products(records, top_k=3)
        predict = time.perf_counter() - t
    print(f"{args.taxonomy.name}: {len(clf.classes_):,} leaves ({len(tax):,} nodes), encoder {clf.encoder_.name}")
    print(f"first build (embeds the labels): {cold:.1f} s")
    print(f"cached build: {warm:.1f} s")
    print(f"{len(records):,} products classified: {predict:.1f} s ({len(records) / predict:.0f} products/s)")


if __name__ == "__main__":
    main()
