"""One method run twice by benchmarks/generalise.py with different parameters (A and B), compared catalogue by
catalogue on the same splits.

    python benchmarks/generalise.py --data ../shared/data --methods default --param embed_context=true \
        --out benchmarks/out/generalise-ctx-on.json            # and embed_context=false -> ...-ctx-off.json
    python benchmarks/ab.py benchmarks/out/generalise-ctx-on.json benchmarks/out/generalise-ctx-off.json \
        [--method default] [--labels "title + context" "title"]

Per catalogue: macro-F1 / accuracy of each (mean over the seeds both have), A − B with a 90 % paired bootstrap
interval (benchmarks/generalise.py ``compare``: test products resampled within each seed), train
seconds and predict rows/s of each; then the mean and the worst difference over the catalogues, and on how
many catalogues the interval lies wholly above or below 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from generalise import DATASETS, compare, score  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path, help="generalise.py --out file of run A")
    ap.add_argument("b", type=Path, help="generalise.py --out file of run B")
    ap.add_argument("--method", default="default")
    ap.add_argument("--labels", nargs=2, default=["A", "B"])
    args = ap.parse_args()
    la, lb = args.labels
    runs: list[dict[str, Any]] = []
    for label, file in ((la, args.a), (lb, args.b)):
        runs += [{**r, "method": label} for r in json.loads(file.read_text()) if r["method"] == args.method]
    names = [d for d in DATASETS if any(r["dataset"] == d for r in runs)]
    names += sorted({r["dataset"] for r in runs} - set(names))
    print(f"| catalogue | {la}: macro-F1 / acc | {lb}: macro-F1 / acc | Δ macro-F1 ({la} − {lb}) | interval | "
          f"Δ accuracy | interval | train s {la} / {lb} | predict rows/s {la} / {lb} | seeds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    deltas = []
    for d in names:
        by = {(r["method"], r["seed"]): r for r in runs if r["dataset"] == d}
        v = compare(list(by.values()), la, lb)
        if not v:
            continue
        seeds = sorted(s for m, s in by if m == la and (lb, s) in by)
        cells = []
        for label in (la, lb):
            sc = np.array([score(by[label, s]) for s in seeds])
            cells.append(f"{sc[:, 0].mean():.4f} / {sc[:, 1].mean():.4f}")
        secs = " / ".join(f"{np.mean([by[m, s]['train_s'] for s in seeds]):.0f}" for m in (la, lb))
        rate = " / ".join(f"{np.mean([by[m, s]['rows_s'] for s in seeds]):,.0f}" for m in (la, lb))
        print(f"| {d} | {cells[0]} | {cells[1]} | {v['d_macro_f1']:+.4f} | {v['d_macro_f1_lo']:+.4f} .. "
              f"{v['d_macro_f1_hi']:+.4f} | {v['d_accuracy']:+.4f} | {v['d_accuracy_lo']:+.4f} .. "
              f"{v['d_accuracy_hi']:+.4f} | {secs} | {rate} | {len(seeds)} |")
        deltas.append(v)
    if not deltas:
        print("no catalogue has runs of both")
        return
    for key, name in (("d_macro_f1", "macro-F1"), ("d_accuracy", "accuracy")):
        vals = np.array([v[key] for v in deltas])
        above = sum(v[f"{key}_lo"] > 0 for v in deltas)
        below = sum(v[f"{key}_hi"] < 0 for v in deltas)
        print(f"\n{name}: mean Δ {vals.mean():+.4f}, worst {vals.min():+.4f}, best {vals.max():+.4f} over "
              f"{len(vals)} catalogues; interval above 0 on {above}, below 0 on {below}")


if __name__ == "__main__":
    main()
