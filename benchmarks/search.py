"""Category-aware search on the fashion catalogue with the Algolia fashion queries: category precision@10.

    python benchmarks/search.py --data ../shared/data [--boosts 0,1,3] [--no-vector]

The catalogue: ../shared/data/fashion (44,446 products; title + gender / colour / season / usage as the body).
The queries: the 713 fashion query suggestions with a Bags / Clothing / Shoes label (the top ``lvl1`` facet, as in
benchmarks/queries.py). A result is in the query's category when its path starts with the label's path
(Clothing → Apparel, Shoes → Footwear, Bags → Accessories > Bags); precision@10 is the share of the top 10 in it
(a query with fewer than 10 results counts the missing ones as misses).

The query classifier is the default product model (sparse tier) trained on the catalogue being searched, pooled
with the zero-shot scorer (the default QueryClassifier). Compared: BM25 only, embeddings only, both fused (hybrid),
each with the category boost at the given strengths, and hybrid filtered to the predicted top-level category.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from queries import _FASHION, fashion_queries  # noqa: E402  (the same queries and labels)

import taxonomist as tx  # noqa: E402
from taxonomist.apps import QueryClassifier, SearchHit, SearchIndex  # noqa: E402
from taxonomist.taxonomy import parse_path  # noqa: E402


def precision_at_10(hits: list[SearchHit], want: tuple[str, ...]) -> float:
    return sum(parse_path(h.category)[: len(want)] == want for h in hits[:10]) / 10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--boosts", default="0,1,3")
    ap.add_argument("--no-vector", action="store_true", help="Full text only (no encoder).")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    boosts = [float(b) for b in args.boosts.split(",")]
    cat = tx.read_catalog(
        args.data / "fashion/styles.csv", with_columns=[args.data / "fashion/styles_text.csv"],
        mapping={"title": "productDisplayName"}, label_columns=["masterCategory", "subCategory", "articleType"])
    queries = [(q, _FASHION[label]) for q, label in fashion_queries(args.data)]
    print(f"catalogue: {len(cat):,} fashion products; queries: {len(queries)} labelled")
    t = time.perf_counter()
    model = tx.TaxonomyClassifier(tier="sparse").fit(cat)
    qc = QueryClassifier(product_model=model, min_confidence=None)
    print(f"query classifier (sparse product model on the catalogue + zero-shot) ready in {time.perf_counter() - t:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        idx = SearchIndex.build(cat, Path(tmp) / "index", encoder=None if args.no_vector else "minilm-en")
        print(f"index built in {time.perf_counter() - t:.0f} s ({idx.meta['encoder'] or 'no encoder'})")
        qs = [q for q, _ in queries]
        proba = qc.predict_proba(qs)  # once for all queries

        modes = ["bm25"] if args.no_vector else ["bm25", "vector", "hybrid"]
        print(f"\n{'mode':8s} " + " ".join(f"{'boost ' + format(b, 'g'):>9s}" for b in boosts) + "   queries/s (boost 0)")
        for mode in modes:
            cells, rate = [], 0.0
            for b in boosts:
                t = time.perf_counter()
                p = [precision_at_10(idx.search(q, k=10, mode=mode, boost=b,  # type: ignore[arg-type]
                                                category_scores=dict(zip(qc.classes_, proba[i], strict=True))), want)
                     for i, (q, want) in enumerate(queries)]
                if b == 0:
                    rate = len(queries) / (time.perf_counter() - t)
                cells.append(f"{np.mean(p):9.4f}")
            print(f"{mode:8s} " + " ".join(cells) + f"   {rate:.0f}")
        pred_top = [parse_path(str(qc.classes_[int(np.argmax(row))]))[:1] for row in proba]
        mode = modes[-1]
        p = [precision_at_10(idx.search(q, k=10, mode=mode, category=" > ".join(pt)), want)  # type: ignore[arg-type]
             for (q, want), pt in zip(queries, pred_top, strict=True)]
        print(f"{mode} filtered to the predicted top-level category: {np.mean(p):.4f}")
        idx.close()


if __name__ == "__main__":
    main()
