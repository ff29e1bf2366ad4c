"""Does the default model generalise? Every labelled catalogue of ../shared/data and long-tailed variants, several
seeds: taxonomist's default and its sparse tier against scikit-learn TF-IDF + LinearSVC, the same LinearSVC with
L2-normalised MiniLM title embeddings stacked beside the TF-IDF columns ("TF-IDF + MiniLM SVC", the practitioner's
anchor), and fastText.

    python benchmarks/generalise.py --data ../shared/data [--datasets fashion,bigbasket-longtail] [--seeds 0,1,2]
        [--methods default,sparse,svc,svc+minilm,fasttext] [--out benchmarks/out/generalise.json]

Protocol (the same for every method, one process, one catalogue at a time): taxonomist's reader, then
``split_catalog(test_size=0.2, seed=s)`` (grouped by normalised title, stratified), each method fitted on the
training part as a user would (taxonomist: ``TaxonomyClassifier(**params).fit(train)``, saved, loaded, predicted;
the baselines: title + description text), scored on the held-out part. Per catalogue: macro-F1 and accuracy of
each method (mean over seeds), the difference default − TF-IDF + LinearSVC with a 90 % paired bootstrap interval
(test products resampled within each seed, 300 times), train seconds and predict rows/s. Then the mean and the
worst difference over catalogues. Finished runs are kept in ``--out`` (JSON) and not run again: an interrupted
benchmark resumes, and ``--report`` prints the tables from it without running anything.

Catalogues: ``fashion`` (Myntra, 3 levels), ``bigbasket`` (3 levels), ``online_shopping_zh`` (9 categories, Chinese
reviews), ``mwpd2020`` (web-shop offers with GS1 classes; its train, validation and test files pooled, the
shop's breadcrumb kept as an attribute), ``cdiscount`` (French marketplace, 2,682 leaf paths, brand kept), and
``fashion-longtail`` / ``bigbasket-longtail``: each leaf subsampled (seed 0, the same rows for every split seed) to
a Zipf profile -- the leaf of rank r by size keeps at most ceil(2.5 L / r) products (L leaves), so half the
leaves keep at most 5; ``cdiscount-10k``: 10,000 of cdiscount's products drawn at random (seed 0), since one
one-vs-rest fit on its 40,000 training products and 2,682 leaves did not finish within 10 minutes on 2 cores;
``mwpd2020-desc-1k``: a small catalogue whose descriptions carry the category -- 1,250 MWPD2020 products with a
description of at least 300 characters, in leaves with at least 5 of them (seed 0).

The embedding cache is shared by the runs of one catalogue (set TAXONOMIST_CACHE_DIR to choose it): train
seconds of the default model after the first seed do not include encoding the titles again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from sparse_vs_baselines import fasttext_baseline, sklearn_baseline, taxonomist_tier, timed  # noqa: E402

import taxonomist as tx  # noqa: E402
from taxonomist.catalog import Catalog  # noqa: E402
from taxonomist.metrics import macro_f1_accuracy  # noqa: E402

SOURCES: dict[str, dict[str, Any]] = {
    "fashion": {"file": "fashion/styles.csv",
                "kwargs": {"with_columns": ["fashion/styles_text.csv"], "mapping": {"title": "productDisplayName"},
                           "label_columns": ["masterCategory", "subCategory", "articleType"]}},
    "bigbasket": {"file": "bigbasket/bigbasket.csv", "kwargs": {"label_columns": ["category", "sub_category", "type"]}},
    "online_shopping_zh": {"file": "online_shopping_zh/online_shopping_10_cats.csv",
                           "kwargs": {"mapping": {"title": "review"}, "label_columns": ["cat"]},
                           "exclude": {"酒店"}},  # hotel reviews are not products
    "mwpd2020": {"files": ["mwpd2020/train.json", "mwpd2020/validation.json",
                           "mwpd2020/task2_testset_with_labels.json"],
                 "kwargs": {"mapping": {"title": "Name", "description": "Description", "id": "ID"},
                            "label_columns": ["lvl1", "lvl2", "lvl3"]},
                 "drop": ["URL"]},
    "cdiscount": {"file": "cdiscount/cdiscount_test.csv",
                  "kwargs": {"mapping": {"title": "Libelle", "description": "Description"},
                             "label_columns": ["Categorie1", "Categorie2", "Categorie3"]}},
}
DATASETS = [*SOURCES, "fashion-longtail", "bigbasket-longtail", "cdiscount-10k", "mwpd2020-desc-1k"]
METHODS = ("default", "sparse", "svc", "svc+minilm", "fasttext")
LABELS = {"default": "taxonomist default", "sparse": "taxonomist sparse", "svc": "TF-IDF + LinearSVC",
          "svc+minilm": "TF-IDF + MiniLM SVC", "fasttext": "fastText"}


def read(name: str, data: Path, workdir: Path) -> Catalog:
    base = name.removesuffix("-longtail").removesuffix("-10k").removesuffix("-desc-1k")
    spec = SOURCES[base]
    kwargs = dict(spec["kwargs"])
    kwargs["with_columns"] = [data / p for p in kwargs.get("with_columns", [])]
    if "files" in spec:  # several JSON-lines files of one catalogue: pooled into one, the split is ours
        frame = pd.concat([pd.read_json(data / f, lines=True, dtype=str) for f in spec["files"]], ignore_index=True)
        frame = frame.drop(columns=spec.get("drop", []))
        path = workdir / f"{base}.jsonl"
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        path = data / spec["file"]
    cat = tx.read_catalog(path, require_labels=True, **kwargs)
    if spec.get("exclude"):
        cat = cat.subset(np.flatnonzero(~cat.frame["category"].isin(spec["exclude"]).to_numpy()))
    if name.endswith("-longtail"):
        cat = long_tail(cat)
    if name.endswith("-10k"):  # 10,000 products drawn at random (seed 0)
        cat = cat.subset(np.sort(np.random.default_rng(0).choice(len(cat), 10_000, replace=False)))
    if name.endswith("-desc-1k"):
        cat = long_descriptions(cat)
    return cat


def long_descriptions(cat: Catalog, n: int = 1_250, min_chars: int = 300, min_per_leaf: int = 5) -> Catalog:
    """A small catalogue whose descriptions carry the category: products with a description of at least
    ``min_chars`` characters, in leaves with at least ``min_per_leaf`` of them, ``n`` drawn at random (seed 0;
    1,000 to train on at an 80/20 split)."""
    long = cat.frame["description"].fillna("").str.len() >= min_chars
    counts = cat.frame.loc[long, "category"].value_counts()
    keep = np.flatnonzero((long & cat.frame["category"].isin(counts[counts >= min_per_leaf].index)).to_numpy())
    if len(keep) > n:
        keep = np.sort(np.random.default_rng(0).choice(keep, n, replace=False))
    return cat.subset(keep)


def long_tail(cat: Catalog, seed: int = 0) -> Catalog:
    """Each leaf subsampled to a Zipf profile: the leaf of rank r (by size) keeps at most ceil(2.5 L / r)."""
    counts = cat.frame["category"].value_counts()
    rng = np.random.default_rng(seed)
    cap = {c: math.ceil(2.5 * len(counts) / (r + 1)) for r, c in enumerate(counts.index)}
    keep = []
    for c, idx in cat.frame.groupby("category").indices.items():
        keep.extend(rng.choice(idx, min(len(idx), cap[c]), replace=False).tolist())
    return cat.subset(np.sort(np.asarray(keep)))


def run_one(name: str, cat: Catalog, seed: int, method: str, workdir: Path, params: dict[str, Any]) -> dict[str, Any]:
    train, test = tx.split_catalog(cat, test_size=0.2, seed=seed)
    state: dict[str, Any] = {}
    if method in ("svc", "svc+minilm"):
        m = sklearn_baseline(train, encoder="minilm-en" if method == "svc+minilm" else None)
    elif method == "fasttext":
        m = fasttext_baseline(train)
    else:
        m = taxonomist_tier(train, workdir / f"{name}-{seed}", state, tier="sparse" if method == "sparse" else "ensemble",
                            **params)
    (pred,), train_s, (predict_s,), mb = timed(m, test)
    y = test.frame["category"].to_numpy()
    out = {"dataset": name, "seed": seed, "method": method, "n_train": len(train), "n_test": len(test),
           "train_s": train_s, "rows_s": len(y) / predict_s, "peak_mb": mb, "y": y.tolist(), "pred": pred.tolist()}
    if method == "default":
        out["stacking"] = {k: v for k, v in getattr(state["m"], "stacking_", {}).items() if k != "fitted_weights"}
        out["weights"] = state["m"].weights_
    return out


def _codes(y: list[str], *preds: list[str]) -> tuple[np.ndarray, list[np.ndarray], int]:
    labels = {c: i for i, c in enumerate(sorted(set(y).union(*map(set, preds))))}
    return (np.array([labels[v] for v in y]), [np.array([labels[v] for v in p]) for p in preds], len(labels))


def score(r: dict[str, Any]) -> tuple[float, float]:
    """(macro-F1, accuracy) of one run."""
    y, (p,), k = _codes(r["y"], r["pred"])
    return macro_f1_accuracy(y, p, k)


def compare(runs: list[dict[str, Any]], a: str, b: str, n_boot: int = 300) -> dict[str, float]:
    """Mean over seeds of (a − b) in macro-F1 and accuracy, with 90 % paired bootstrap intervals."""
    seeds = sorted({r["seed"] for r in runs if r["method"] == a} & {r["seed"] for r in runs if r["method"] == b})
    if not seeds:
        return {}
    by = {(r["method"], r["seed"]): r for r in runs}
    parts = []
    for s in seeds:
        y, (pa, pb), k = _codes(by[a, s]["y"], by[a, s]["pred"], by[b, s]["pred"])
        parts.append((y, pa, pb, k))

    def delta(weights: list[np.ndarray] | None) -> tuple[float, float]:
        d = np.array([np.subtract(macro_f1_accuracy(y, pa, k, None if weights is None else weights[i]),
                                  macro_f1_accuracy(y, pb, k, None if weights is None else weights[i]))
                      for i, (y, pa, pb, k) in enumerate(parts)])
        return float(d[:, 0].mean()), float(d[:, 1].mean())

    rng = np.random.default_rng(0)
    boot = np.array([delta([rng.poisson(1.0, len(p[0])).astype(float) for p in parts]) for _ in range(n_boot)])
    f, acc = delta(None)
    lo, hi = np.quantile(boot, [0.05, 0.95], axis=0)
    return {"d_macro_f1": f, "d_macro_f1_lo": float(lo[0]), "d_macro_f1_hi": float(hi[0]),
            "d_accuracy": acc, "d_accuracy_lo": float(lo[1]), "d_accuracy_hi": float(hi[1]), "seeds": len(seeds)}


def report(results: list[dict[str, Any]]) -> None:
    names = [d for d in DATASETS if any(r["dataset"] == d for r in results)]
    print("\n| catalogue | method | macro-F1 | accuracy | train s | predict rows/s | seeds |")
    print("|---|---|---|---|---|---|---|")
    for d in names:
        for m in METHODS:
            rs = [r for r in results if r["dataset"] == d and r["method"] == m]
            if not rs:
                continue
            sc = np.array([score(r) for r in rs])
            print(f"| {d} | {LABELS[m]} | {sc[:, 0].mean():.4f} | {sc[:, 1].mean():.4f} | "
                  f"{np.mean([r['train_s'] for r in rs]):.0f} | {np.mean([r['rows_s'] for r in rs]):,.0f} | {len(rs)} |")
    for a, b in (("default", "svc"), ("default", "svc+minilm"), ("sparse", "svc"), ("default", "sparse"),
                 ("default", "fasttext")):
        rows = {d: compare([r for r in results if r["dataset"] == d], a, b) for d in names}
        rows = {d: v for d, v in rows.items() if v}
        if not rows:
            continue
        print(f"\n{LABELS[a]} − {LABELS[b]} (mean over seeds, 90 % paired bootstrap interval)\n")
        print("| catalogue | Δ macro-F1 | interval | Δ accuracy | interval | seeds |")
        print("|---|---|---|---|---|---|")
        for d, v in rows.items():
            print(f"| {d} | {v['d_macro_f1']:+.4f} | {v['d_macro_f1_lo']:+.4f} .. {v['d_macro_f1_hi']:+.4f} | "
                  f"{v['d_accuracy']:+.4f} | {v['d_accuracy_lo']:+.4f} .. {v['d_accuracy_hi']:+.4f} | {v['seeds']} |")
        f = [v["d_macro_f1"] for v in rows.values()]
        acc = [v["d_accuracy"] for v in rows.values()]
        worst_f, worst_a = min(rows, key=lambda d: rows[d]["d_macro_f1"]), min(rows, key=lambda d: rows[d]["d_accuracy"])
        print(f"\nmean Δ macro-F1 {np.mean(f):+.4f} (worst {min(f):+.4f}, {worst_f}); mean Δ accuracy {np.mean(acc):+.4f} "
              f"(worst {min(acc):+.4f}, {worst_a}) over {len(rows)} catalogues")
    chosen = [(r["dataset"], r["seed"], r.get("stacking", {}).get("summary", "")) for r in results if r["method"] == "default"]
    if chosen:
        print("\nwhat cross-validation chose for the default model:")
        for d, s, text in chosen:
            print(f"- {d} (seed {s}): {text}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/generalise.json"))
    ap.add_argument("--param", action="append", default=[], help="TaxonomyClassifier parameter of the taxonomist "
                    "methods, as name=JSON value (e.g. cv=3); repeatable")
    ap.add_argument("--report", action="store_true", help="only print the tables of the runs in --out")
    args = ap.parse_args()
    params = {k: json.loads(v) for k, v in (p.split("=", 1) for p in args.param)}
    results: list[dict[str, Any]] = json.loads(args.out.read_text()) if args.out.is_file() else []
    if not args.report:
        logging.basicConfig(level=logging.WARNING, format="    %(name)s: %(message)s")
        logging.getLogger("taxonomist.models.ensemble").setLevel(logging.INFO)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        print(f"# generalisation — {dt.date.today()} — commit {commit} — {platform.node()} ({os.cpu_count()} CPUs, "
              f"taxonomist {tx.__version__}) params {params}", flush=True)
        done = {(r["dataset"], r["seed"], r["method"]) for r in results}
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.datasets.split(","):
                todo = [(int(s), m) for s in args.seeds.split(",") for m in args.methods.split(",")
                        if (name, int(s), m) not in done]
                if not todo:
                    continue
                cat = read(name, args.data, Path(tmp))
                counts = cat.frame["category"].value_counts()
                print(f"\n## {name}: {len(cat):,} products, {len(counts)} leaves ({(counts <= 5).mean():.0%} with <= 5)",
                      flush=True)
                for seed, method in todo:
                    t0 = time.perf_counter()
                    r = run_one(name, cat, seed, method, Path(tmp), params)
                    f1, acc = score(r)
                    print(f"  seed {seed} {LABELS[method]:<20} macro-F1 {f1:.4f} acc {acc:.4f} train {r['train_s']:.0f}s "
                          f"predict {r['rows_s']:,.0f} rows/s ({time.perf_counter() - t0:.0f}s)"
                          + (f"\n    {r['stacking'].get('summary', '')}" if r.get("stacking") else ""), flush=True)
                    results.append(r)
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(results))
    report(results)


if __name__ == "__main__":
    main()
