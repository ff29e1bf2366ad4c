"""Every taxonomist tier and the ensemble against fastText and scikit-learn TF-IDF + LinearSVC, same split.

    python benchmarks/tiers.py --data ../shared/data [--datasets fashion,bigbasket,online_shopping_zh]

Same protocol as ``sparse_vs_baselines.py`` (taxonomist's reader, ``split_catalog(test_size=0.2, seed=0)``,
grouped by normalised title). For each method: macro-F1, weighted-F1, accuracy, hierarchical F1, coverage at 95 %
precision (taxonomist's calibrated confidence; the baselines have none), train seconds (encoding included;
the on-disk embedding cache is switched off so nothing is reused between runs), predict rows/s from a freshly
loaded bundle, peak RSS growth. Then zero-shot from the category names alone (no training data) against the
majority-class baseline, leaf and top level.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).parent))
from sparse_vs_baselines import DATASETS, fasttext_baseline, sklearn_baseline, taxonomist_tier, timed  # noqa: E402

import taxonomist as tx  # noqa: E402
from taxonomist.catalog import Catalog  # noqa: E402
from taxonomist.evaluation import compute_metrics  # noqa: E402

DATASETS = {
    **DATASETS,
    "online_shopping_zh": {
        "file": "online_shopping_zh/online_shopping_10_cats.csv",
        "kwargs": {"mapping": {"title": "review"}, "label_columns": ["cat"]},
        "exclude": {"酒店"},  # hotel reviews are not products (as in ../shared/MEASUREMENTS.md)
    },
}


def run(name: str, data: Path, seed: int, workdir: Path, tiers: list[str], baselines: bool = True,
        zero_shot: bool = True, params: dict[str, Any] | None = None, encoders: list[str] | None = None) -> None:
    encoders = encoders or ["auto"]
    spec = DATASETS[name]
    kwargs = dict(spec["kwargs"])
    kwargs["with_columns"] = [data / p for p in kwargs.get("with_columns", [])]
    cat = tx.read_catalog(data / spec["file"], require_labels=True, **kwargs)
    if spec.get("exclude"):
        keep = ~cat.frame["category"].isin(spec["exclude"]).to_numpy()
        cat = cat.subset(np.flatnonzero(keep))
    train, test = tx.split_catalog(cat, test_size=0.2, seed=seed)
    y = test.frame["category"].to_numpy()
    print(f"\n## {name}: {len(cat):,} products, {cat.frame['category'].nunique()} leaves; "
          f"train {len(train):,} / test {len(test):,} (seed {seed})", flush=True)
    methods: dict[str, Any] = {}
    if baselines:
        methods["sklearn TF-IDF + LinearSVC"] = (sklearn_baseline(train), None)
        methods["fastText supervised"] = (fasttext_baseline(train), None)
    for t in tiers:
        for enc in (encoders if t != "sparse" else [None]):
            state: dict[str, Any] = {}
            kw = {**(params or {}), **({"encoder": enc} if enc else {})}
            label = f"taxonomist {t}" + (f" ({enc})" if enc and len(encoders) > 1 else "")
            methods[label] = (taxonomist_tier(train, workdir, state, tier=t, **kw), state)
    rows = []
    for label, (method, state) in methods.items():
        (pred,), train_s, (predict_s,), mb = timed(method, test)
        r = {"method": label, "macro_f1": f1_score(y, pred, average="macro", zero_division=0),
             "weighted_f1": f1_score(y, pred, average="weighted", zero_division=0),
             "accuracy": float((pred == y).mean()), "train_s": train_s, "rows_s": len(y) / predict_s, "mb": mb}
        if state is not None:
            m = state["m"]
            ev = compute_metrics(y, m.predict_proba(test), list(m.classes_)).metrics
            r.update(hf1=ev["hierarchical_f1"], cov95=ev["coverage_at_95_precision"])
        else:
            classes = sorted(set(train.frame["category"]))
            onehot = np.zeros((len(pred), len(classes)))
            pos = {c: i for i, c in enumerate(classes)}
            onehot[np.arange(len(pred)), [pos[p] for p in pred]] = 1.0
            r.update(hf1=compute_metrics(y, onehot, classes).metrics["hierarchical_f1"], cov95=float("nan"))
        rows.append(r)
        print(f"  {label:<28} macro-F1 {r['macro_f1']:.4f}  weighted-F1 {r['weighted_f1']:.4f}  acc {r['accuracy']:.4f}  "
              f"hF1 {r['hf1']:.4f}  cov@95 {r['cov95']:.4f}  train {r['train_s']:.1f}s  predict {r['rows_s']:,.0f} rows/s  "
              f"peak +{r['mb']:.0f} MB", flush=True)
    if baselines:
        table(name, rows)
    if zero_shot:
        zero_shot_figures(cat, train, test)


def table(name: str, rows: list[dict[str, Any]]) -> None:
    best = max(rows[:2], key=lambda r: r["macro_f1"])
    print(f"\n| {name} | macro-F1 | weighted-F1 | accuracy | hier. F1 | coverage@95% prec. | train s | predict rows/s | "
          f"peak RSS MB | Δ macro-F1 vs best baseline ({best['method'].split()[0]}) | Δ accuracy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cov = "–" if np.isnan(r["cov95"]) else f"{r['cov95']:.4f}"
        print(f"| {r['method']} | {r['macro_f1']:.4f} | {r['weighted_f1']:.4f} | {r['accuracy']:.4f} | {r['hf1']:.4f} | "
              f"{cov} | {r['train_s']:.1f} | {r['rows_s']:,.0f} | {r['mb']:.0f} | {r['macro_f1'] - best['macro_f1']:+.4f} | "
              f"{r['accuracy'] - best['accuracy']:+.4f} |", flush=True)


def zero_shot_figures(cat: Catalog, train: Catalog, test: Catalog) -> None:
    """Zero-shot from the category names only, against the majority class (leaf and top level)."""
    y = test.frame["category"].to_numpy()
    t0 = time.perf_counter()
    zs = tx.TaxonomyClassifier.from_taxonomy(tx.Taxonomy.from_paths(sorted(set(cat.frame["category"]))),
                                             sample_texts=train.frame["title"].tolist()[:2000])
    pred = np.asarray(zs.predict(test))
    secs = time.perf_counter() - t0
    top = lambda v: np.array([s.split(" > ")[0] for s in v])  # noqa: E731
    train_y = train.frame["category"].to_numpy()
    vals, counts = np.unique(train_y, return_counts=True)
    maj = vals[counts.argmax()]
    tv, tc = np.unique(top(train_y), return_counts=True)
    print(f"\nzero-shot ({zs.encoder_.name}, names only, {len(zs.classes_)} leaves, {secs:.1f}s): leaf accuracy "
          f"{(pred == y).mean():.4f} (majority {(y == maj).mean():.4f}), top-level accuracy "
          f"{(top(pred) == top(y)).mean():.4f} (majority {(top(y) == tv[tc.argmax()]).mean():.4f}), "
          f"macro-F1 {f1_score(y, pred, average='macro', zero_division=0):.4f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--datasets", default="fashion,bigbasket,online_shopping_zh")
    ap.add_argument("--tiers", default="sparse,ensemble")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-baselines", action="store_true", help="only the taxonomist tiers (no table, no zero-shot)")
    ap.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (finetune tier)")
    ap.add_argument("--encoders", default="auto", help="text encoders of the embedding tiers, comma-separated (each a row)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="    %(name)s: %(message)s")
    logging.getLogger("taxonomist.models").setLevel(logging.INFO)  # ensemble weights and fine-tuning epochs
    os.environ["TAXONOMIST_CACHE_DIR"] = tempfile.mkdtemp(prefix="tx-bench-cache-")  # nothing reused between runs
    print(f"# taxonomist tiers vs baselines — {dt.date.today()} — {platform.node()} ({os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, taxonomist {tx.__version__})")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            run(name.strip(), args.data, args.seed, Path(tmp), args.tiers.split(","), baselines=not args.no_baselines,
                params={"epochs": args.epochs} if args.epochs else None, encoders=args.encoders.split(","))


if __name__ == "__main__":
    main()
