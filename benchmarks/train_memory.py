"""Peak memory of the default model's training on one catalogue of ../shared/data: the whole process tree (the
main process and the sparse member's worker processes), and with ``--trace`` the tree's proportional set size
every 2 s beside the fit's log, to see which stage holds it.

    python benchmarks/train_memory.py --data ../shared/data --dataset cdiscount [--trace] [--param max_embedded=null]

The catalogue is read and split as in ``generalise.py`` (``split_catalog(test_size=0.2, seed)``); the default
``TaxonomyClassifier`` (or one with ``--param`` values) is fitted on the training part inside ``PeakRSS(tree=True)``
and scored on the held-out part. Needs psutil (``pip install 'taxonomist[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import generalise  # noqa: E402
from sparse_vs_baselines import PeakRSS  # noqa: E402

import taxonomist as tx  # noqa: E402


def _trace(mem: PeakRSS, stop: threading.Event) -> None:
    """The process tree's PSS every 2 s, with its peak so far (printed beside the fit's log lines)."""
    peak = 0
    while not stop.wait(2.0):
        total = mem.pss()
        peak = max(peak, total)
        print(f"{time.strftime('%H:%M:%S')} PSS {total >> 20} MB (peak {peak >> 20} MB)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--dataset", default="cdiscount", choices=generalise.DATASETS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trace", action="store_true", help="print the tree's PSS every 2 s beside the fit's log")
    ap.add_argument("--param", action="append", default=[], help="TaxonomyClassifier parameter as name=JSON value")
    args = ap.parse_args()
    params = {k: json.loads(v) for k, v in (p.split("=", 1) for p in args.param)}
    logging.basicConfig(level=logging.INFO if args.trace else logging.WARNING, stream=sys.stdout,
                        format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("taxonomist.catalog").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        cat = generalise.read(args.dataset, args.data, Path(tmp))
        train, test = tx.split_catalog(cat, test_size=0.2, seed=args.seed)
        print(f"{args.dataset}: {len(train):,} training products, {train.frame['category'].nunique():,} leaves",
              flush=True)
        stop, mem = threading.Event(), PeakRSS(tree=True)
        if args.trace:
            threading.Thread(target=_trace, args=(mem, stop), daemon=True).start()
        with mem:
            t0 = time.perf_counter()
            clf = tx.TaxonomyClassifier(**params).fit(train)
            seconds = time.perf_counter() - t0
        stop.set()
        accuracy = float((clf.predict(test) == test.frame["category"].to_numpy()).mean())
    stacking = {k: v for k, v in clf.stacking_.items() if k in ("seconds", "embedded_products", "oof_products")}
    print(json.dumps({"dataset": args.dataset, "train_s": round(seconds, 1), "peak_rss_tree_mb": round(mem.mb),
                      "peak_pss_mb": round(mem.peak_pss / 2**20), "held_out_accuracy": round(accuracy, 4),
                      "stacking": stacking}), flush=True)


if __name__ == "__main__":
    main()
