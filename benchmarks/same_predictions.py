"""Did a change move any prediction? Two ``generalise.py`` result files (the same catalogues, seeds and methods, run
before and after the change) compared product by product.

    git worktree add /tmp/before BASE_COMMIT
    PYTHONPATH=/tmp/before/src python benchmarks/generalise.py --datasets ... --seeds 0 --methods default \
        --out before.json
    python benchmarks/generalise.py --datasets ... --seeds 0 --methods default --out after.json
    python benchmarks/same_predictions.py before.json after.json

Prints, per run (catalogue, seed, method) in both files, how many test products it scored and how many of their
predictions differ, then the totals; exits 1 when any prediction differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def runs(path: Path) -> dict[tuple[str, int, str], dict[str, Any]]:
    return {(r["dataset"], r["seed"], r["method"]): r for r in json.loads(path.read_text(encoding="utf-8"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args()
    a, b = runs(args.before), runs(args.after)
    total = differ = 0
    for key in sorted(a.keys() & b.keys()):
        ra, rb = a[key], b[key]
        if ra["y"] != rb["y"]:
            sys.exit(f"{key}: the two runs scored different test products; run both with the same data and seeds")
        n = sum(x != y for x, y in zip(ra["pred"], rb["pred"], strict=True))
        total, differ = total + len(ra["pred"]), differ + n
        print(f"{key[0]} seed {key[1]} {key[2]}: {len(ra['pred']):,} products, {n:,} predictions differ")
    print(f"total: {total:,} products in {len(a.keys() & b.keys())} runs, {differ:,} predictions differ")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
