"""The shop exercise: a catalogue manager's own products, zero-shot into Google's taxonomy, read from their exports.

    python benchmarks/zeroshot_shop.py --taxonomy ../shared/data/taxonomies/google/taxonomy-with-ids.en-US.txt

``benchmarks/shop/`` holds 36 invented branded products with their true Google paths (``products.csv``) and the
same products as a Shopify products export and a Merchant Center RSS feed (``make_exports.py``). Each export is
read with ``read_catalog`` and no options, classified by ``TaxonomyClassifier.from_taxonomy`` (the default
encoder, no back-off threshold), once from the titles alone and once from everything the export says
(title, type / product_type, tags, vendor / brand, description). A product is *right* when the predicted path is
its true path or an ancestor of it, *top-level right* when the first level matches. Prints both counts per export
and mode, the seconds to build the classifier (label embeddings; cached after the first run) and to classify,
and the products still wrong.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import taxonomist as tx
from taxonomist.catalog import read_catalog
from taxonomist.taxonomy import Taxonomy, format_path

HERE = Path(__file__).parent / "shop"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--taxonomy", type=Path,
                    default=Path("../shared/data/taxonomies/google/taxonomy-with-ids.en-US.txt"))
    ap.add_argument("--encoder", default="auto")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/zeroshot_shop.json"))
    args = ap.parse_args()
    tax = Taxonomy.load(args.taxonomy)
    truth = {r["title"]: tax.by_id(r["google_id"]) for r in csv.DictReader((HERE / "products.csv").open(encoding="utf-8"))}
    t = time.perf_counter()
    clf = tx.TaxonomyClassifier.from_taxonomy(tax, encoder=args.encoder)
    build_s = time.perf_counter() - t
    print(f"zero-shot classifier over {len(clf.classes_):,} leaves built in {build_s:.1f} s ({clf.encoder_.name})")
    results = []
    for export in ("shopify_products_export.csv", "merchant_center_feed.xml"):
        cat = read_catalog(HERE / export)
        records = cat.records()
        for mode in ("title", "everything"):
            X = [r["title"] for r in records] if mode == "title" else records
            t = time.perf_counter()
            preds = clf.predict_products(X, top_k=1)
            seconds = time.perf_counter() - t
            right = top = 0
            wrong = []
            for r, p in zip(records, preds, strict=True):
                true, got = truth[r["title"]], tuple(p.path)
                ok = bool(got) and true[: len(got)] == got
                right += ok
                top += bool(got) and got[0] == true[0]
                if not ok:
                    wrong.append(f"{r['title']} -> {format_path(got)} ({p.score:.2f})")
            run = {"export": export, "mode": mode, "n": len(records), "right": right, "top_level_right": top,
                   "classify_s": round(seconds, 2), "build_s": round(build_s, 1), "wrong": wrong}
            results.append(run)
            print(f"{export:32s} {mode:10s} right {right}/{len(records)}  top level {top}/{len(records)}  "
                  f"{seconds:.2f} s")
    for run in results:
        if run["mode"] == "everything":
            print(f"\nstill wrong ({run['export']}):\n  " + "\n  ".join(run["wrong"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
