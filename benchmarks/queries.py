"""Search-query classification on the Algolia query suggestions (weak labels: the top category facet per level).

    python benchmarks/queries.py --data ../shared/data

1. Fashion queries (713, ``ecommerce-federated``): labels are the top ``lvl1`` facet, reduced to its last part
   (Bags / Clothing / Shoes; 47 gender-only labels left out). The product model is the sparse tier
   trained on the bundled fashion sample, whose paths start Apparel / Footwear / Accessories > Bags: a query is
   right when its predicted path maps to the label (Clothing → Apparel, Shoes → Footwear, Bags → Accessories >
   Bags). Sources compared: the product model alone ("naive"), the zero-shot scorer alone, both pooled (the
   default); a product model also trained on pseudo-queries (taxonomist train --pseudo-queries); and, as a user
   with a labelled query log would run it, a query model trained on the other folds of the queries (5-fold,
   grouped by the query's first word so no brand is on both sides) pooled with the product model.
2. Best Buy queries (2,120, ``ecommerce``): zero-shot into the Best Buy category tree (no training data), leaf
   accuracy at levels 1–3 against the top ``hierarchicalCategories.lvl{0,1,2}`` facet, with the majority label as
   the baseline. Only ~59 % of the facet paths exist verbatim in the tree file (the catalogue and the tree are
   different snapshots), which caps the deeper levels.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

import taxonomist as tx
from taxonomist.apps import QueryClassifier
from taxonomist.apps.query import with_pseudo_queries
from taxonomist.datasets import sample_path

_FASHION = {"Clothing": ("Apparel",), "Shoes": ("Footwear",), "Bags": ("Accessories", "Bags")}


def fashion_queries(data: Path) -> list[tuple[str, str]]:
    """(query, label) of the fashion query suggestions whose top ``lvl1`` facet ends in Bags / Clothing / Shoes."""
    rows = json.loads((data / "algolia_queries/ecommerce-federated/products_query_suggestions.json").read_text())
    labelled = []
    for r in rows:
        facets = r["autocomplete_products"]["facets"]["exact_matches"].get("hierarchical_categories.lvl1") or []
        if facets:
            label = max(facets, key=lambda f: f["count"])["value"].split(" > ")[-1]
            if label in _FASHION:
                labelled.append((r["query"], label))
    return labelled


def fashion(data: Path) -> None:
    labelled = fashion_queries(data)
    catalog = tx.read_catalog(sample_path("products"), require_labels=True)
    model = tx.TaxonomyClassifier(tier="sparse").fit(catalog)
    pq_model = tx.TaxonomyClassifier(tier="sparse").fit(with_pseudo_queries(catalog))
    queries = [q for q, _ in labelled]
    print(f"fashion queries: {len(labelled)} with a Bags / Clothing / Shoes label "
          f"(majority {collections.Counter(lab for _, lab in labelled).most_common(1)[0][1] / len(labelled):.3f})")

    def score(preds: list) -> float:  # type: ignore[type-arg]
        return float(np.mean([p.leaf[: len(_FASHION[lab])] == _FASHION[lab] for p, (_, lab) in zip(preds, labelled, strict=True)]))

    for name, kw in (("product model (naive)", {"zero_shot": False}), ("zero-shot", {"weights": {"product": 0.0}}),
                     ("product + zero-shot", {}),
                     ("product+pseudo-queries", {"product_model": pq_model, "zero_shot": False}),
                     ("  + zero-shot", {"product_model": pq_model})):
        t = time.perf_counter()
        qc = QueryClassifier(**{"product_model": model, "min_confidence": None, **kw})  # type: ignore[arg-type]
        print(f"  {name:28s} accuracy {score(qc.classify(queries)):.4f}  ({time.perf_counter() - t:.1f} s)")
    # with a labelled query log: 5-fold, grouped by the query's first word (no brand is in both train and test);
    # the log's labels are top-level paths of the product taxonomy, so the query model votes for whole subtrees
    from sklearn.model_selection import GroupKFold

    groups = [q.split()[0] for q in queries]
    for name, pm, zs in (("product + query log", model, False), ("product + zero-shot + query log", model, True),
                         ("product+pseudo + zs + query log", pq_model, True)):
        preds: list = [None] * len(queries)  # type: ignore[type-arg]
        for tr, te in GroupKFold(5).split(queries, groups=groups):
            log = pd.DataFrame({"title": [queries[i] for i in tr],
                                "category": [" > ".join(_FASHION[labelled[i][1]]) for i in tr]})
            qc = QueryClassifier(product_model=pm, query_model=tx.TaxonomyClassifier(tier="sparse").fit(log), min_confidence=None,
                                 zero_shot=zs)
            for i, p in zip(te, qc.classify([queries[i] for i in te]), strict=True):
                preds[i] = p
        print(f"  {name:28s} accuracy {score(preds):.4f}  (5-fold query log, grouped by first word)")


def bestbuy(data: Path) -> None:
    tax = tx.Taxonomy.load(data / "taxonomies/bestbuy/categories.json")
    rows = json.loads((data / "algolia_queries/ecommerce/instant_search_demo_query_suggestions.json").read_text())
    labelled = []
    for r in rows:
        facets = r["instant_search"]["facets"]["exact_matches"]
        for lvl in ("hierarchicalCategories.lvl2", "hierarchicalCategories.lvl1", "hierarchicalCategories.lvl0"):
            if facets.get(lvl):
                value = max(facets[lvl], key=lambda f: f["count"])["value"]
                labelled.append((r["query"], tuple(p.strip() for p in value.split(">"))))
                break
    t = time.perf_counter()
    qc = QueryClassifier(taxonomy=tax, min_confidence=None)
    build = time.perf_counter() - t
    t = time.perf_counter()
    preds = qc.classify([q for q, _ in labelled])
    secs = time.perf_counter() - t
    print(f"\nBest Buy queries: {len(labelled)} labelled; zero-shot into {len(tax.leaves()):,} leaves "
          f"(label index built in {build:.0f} s, {len(labelled) / secs:.0f} queries/s)")
    for level in (1, 2, 3):
        pairs = [(p.leaf[:level], lab[:level]) for p, (_, lab) in zip(preds, labelled, strict=True) if len(lab) >= level]
        majority = collections.Counter(lab for _, lab in pairs).most_common(1)[0][1] / len(pairs)
        print(f"  level {level}: accuracy {np.mean([a == b for a, b in pairs]):.4f} (n {len(pairs)}, majority {majority:.4f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    fashion(args.data)
    bestbuy(args.data)


if __name__ == "__main__":
    main()
