"""Flat vs two-level vs top-down sparse member, every shared catalogue: tables from benchmarks/generalise.py runs.

    python benchmarks/generalise.py --data ../shared/data --methods sparse,svc --param 'hierarchy="two-level"' \
        --out benchmarks/out/generalise-twolevel.json      # and "top-down" -> generalise-topdown.json
    python benchmarks/hierarchies.py --flat benchmarks/out/generalise.json \
        --runs two-level=benchmarks/out/generalise-twolevel.json top-down=benchmarks/out/generalise-topdown.json

With ``--default-before`` / ``--default-after``: the default tier before and after ``hierarchy="auto"``, against
each other and against TF-IDF + LinearSVC.

``--flat`` (and any further file given with ``--flat``) holds the flat sparse runs (``hierarchy="flat"``) and the
TF-IDF + LinearSVC runs; each ``--runs LABEL=FILE`` holds the sparse runs of one hierarchy. Per catalogue: mean
macro-F1 / accuracy / train seconds over the seeds both have, and the difference to flat with a 90 % paired
bootstrap interval (benchmarks/generalise.py ``compare``).
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
    ap.add_argument("--flat", type=Path, nargs="+", required=True)
    ap.add_argument("--runs", nargs="+", required=True, help="LABEL=FILE of sparse runs of one hierarchy")
    ap.add_argument("--default-before", type=Path, nargs="*", default=[],
                    help="files with default-tier runs before the change (flat sparse member)")
    ap.add_argument("--default-after", type=Path, nargs="*", default=[],
                    help="files with default-tier runs after it (hierarchy='auto')")
    args = ap.parse_args()
    base: list[dict[str, Any]] = [r for f in args.flat for r in json.loads(f.read_text())]
    flat = [{**r, "method": "flat"} for r in base if r["method"] == "sparse"]
    svc = [r for r in base if r["method"] == "svc"]
    labelled: dict[str, list[dict[str, Any]]] = {"flat": flat, "svc": svc}
    for spec in args.runs:
        label, file = spec.split("=", 1)
        got = json.loads(Path(file).read_text())
        labelled[label] = [{**r, "method": label} for r in got if r["method"] == "sparse"]
        svc += [r for r in got if r["method"] == "svc"]
    names = [d for d in DATASETS if any(r["dataset"] == d for r in flat + svc)]
    print("| catalogue | method | macro-F1 | accuracy | train s | seeds |\n|---|---|---|---|---|---|")
    for d in names:
        for label, runs in labelled.items():
            rs = {r["seed"]: r for r in runs if r["dataset"] == d}  # one run per seed (the last one read)
            if not rs:
                continue
            sc = np.array([score(r) for r in rs.values()])
            name = "TF-IDF + LinearSVC" if label == "svc" else f"sparse, {label}"
            print(f"| {d} | {name} | {sc[:, 0].mean():.4f} | {sc[:, 1].mean():.4f} | "
                  f"{np.mean([r['train_s'] for r in rs.values()]):.0f} | {len(rs)} |")
    for label in [k for k in labelled if k not in ("flat", "svc")]:
        for other in ("flat", "svc"):
            print(f"\n{label} − {other} (mean over the seeds both have, 90 % paired bootstrap interval)\n")
            print("| catalogue | Δ macro-F1 | interval | Δ accuracy | interval | seeds |\n|---|---|---|---|---|---|")
            for d in names:
                runs = {(r["method"], r["seed"]): r for r in labelled[label] + labelled[other] if r["dataset"] == d}
                v = compare(list(runs.values()), label, other)
                if v:
                    print(f"| {d} | {v['d_macro_f1']:+.4f} | {v['d_macro_f1_lo']:+.4f} .. {v['d_macro_f1_hi']:+.4f} | "
                          f"{v['d_accuracy']:+.4f} | {v['d_accuracy_lo']:+.4f} .. {v['d_accuracy_hi']:+.4f} | {v['seeds']} |")

    if args.default_after:
        before = [{**r, "method": "before"} for f in args.default_before for r in json.loads(f.read_text())
                  if r["method"] == "default"]
        after = [{**r, "method": "after"} for f in args.default_after for r in json.loads(f.read_text())
                 if r["method"] == "default"]
        svc_runs = [{**r, "method": "svc"} for r in svc]
        for other, runs_other in (("before", before), ("svc", svc_runs)):
            print(f"\ndefault tier with hierarchy='auto' − {'the default tier before' if other == 'before' else 'TF-IDF + LinearSVC'}"
                  " (mean over the seeds both have, 90 % paired bootstrap interval)\n")
            print("| catalogue | after: macro-F1 / acc | Δ macro-F1 | interval | Δ accuracy | interval | seeds |\n"
                  "|---|---|---|---|---|---|---|")
            for d in DATASETS:
                runs = {(r["method"], r["seed"]): r for r in after + runs_other if r["dataset"] == d}
                v = compare(list(runs.values()), "after", other)
                if v:
                    both = {s for m, s in runs if m == other}
                    sc = np.array([score(r) for (m, s), r in runs.items() if m == "after" and s in both])
                    print(f"| {d} | {sc[:, 0].mean():.4f} / {sc[:, 1].mean():.4f} | {v['d_macro_f1']:+.4f} | "
                          f"{v['d_macro_f1_lo']:+.4f} .. {v['d_macro_f1_hi']:+.4f} | {v['d_accuracy']:+.4f} | "
                          f"{v['d_accuracy_lo']:+.4f} .. {v['d_accuracy_hi']:+.4f} | {v['seeds']} |")


if __name__ == "__main__":
    main()
