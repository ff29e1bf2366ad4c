"""Build ``src/taxonomist/datasets/taxonomies/shopify-2025-08-attributes.tsv.gz``: which Shopify categories define
the attributes taxonomist extracts (Color, Target gender, Age group), from Shopify's ``category_attributes.tsv``
(MIT, derived from github:Shopify/product-taxonomy data/categories/*.yml).

    python scripts/build_shopify_attributes.py ../shared/data/taxonomies/shopify/attributes/category_attributes.tsv
"""

from __future__ import annotations

import csv
import gzip
import sys
from pathlib import Path

KEEP = ("Color", "Target gender", "Age group")
OUT = Path(__file__).resolve().parents[1] / "src/taxonomist/datasets/taxonomies/shopify-2025-08-attributes.tsv.gz"


def main() -> None:
    rows = []
    with open(sys.argv[1], encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            names = [a for a in (r["attribute_names"] or "").split("; ") if a in KEEP]
            if names:
                rows.append(f"{r['full_name']}\t{';'.join(names)}\n")
    with gzip.open(OUT, "wt", encoding="utf-8", compresslevel=9) as out:
        out.write("".join(sorted(rows)))
    sys.stdout.write(f"{len(rows)} categories -> {OUT} ({OUT.stat().st_size:,} bytes)\n")


if __name__ == "__main__":
    main()
