"""Drift signals against the share of foreign products in a served stream.

    python benchmarks/drift.py --data ../shared/data [--tier sparse] [--shares 0,0.05,0.1,0.3,0.6] [--window 2000]
        [--draws 5] [--out benchmarks/out/drift.json] [--plot docs/images/drift-signals.png]

A model is trained on 70 % of the fashion catalogue; its drift reference is taken, as ``taxonomist train``
takes it, from its answers on 15 % it did not train on; the last 15 % is the served stream. For each share
``s``, ``--draws`` windows of ``--window`` products are served: ``1 - s`` drawn from the fashion stream, ``s``
from BigBasket (groceries and household goods, which the fashion taxonomy does not have: every one of them is
an error). ``--base`` / ``--foreign`` name other catalogues of ../shared/data for the two roles. Each window's signals (:func:`taxonomist.monitoring.drift_signals`) are printed as the mean over the
draws (min-max in the JSON), beside the window's real accuracy; the alerts column counts the draws in which
any alert fired. The alert thresholds are :data:`taxonomist.monitoring.ALERTS`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from generalise import read  # noqa: E402

import taxonomist as tx  # noqa: E402
from taxonomist.monitoring import ALERTS, DriftReference, brands, drift_signals, observations  # noqa: E402
from taxonomist.taxonomy import parse_path  # noqa: E402

SIGNALS = ("psi_level_1", "js_level_1", "psi_level_2", "confidence_psi", "mean_confidence", "back_off_share",
           "unknown_word_share", "new_brand_rate")


def flat(s: dict[str, Any]) -> dict[str, float]:
    return {"psi_level_1": s["psi"]["level_1"], "psi_level_2": s["psi"]["level_2"], "js_level_1": s["js"]["level_1"],
            "confidence_psi": s["confidence_psi"], "mean_confidence": s["mean_confidence"]["current"],
            "back_off_share": s["back_off_share"]["current"], "unknown_word_share": s["unknown_word_share"]["current"],
            "new_brand_rate": s["new_brand_rate"] if s["new_brand_rate"] is not None else float("nan")}


def _stat(f: Any, v: np.ndarray) -> float:
    v = v[~np.isnan(v)]
    return float(f(v)) if len(v) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--tier", default="sparse")
    ap.add_argument("--base", default="fashion", help="the catalogue the model is trained on and served")
    ap.add_argument("--foreign", default="bigbasket", help="the catalogue mixed into the served stream")
    ap.add_argument("--shares", default="0,0.05,0.1,0.3,0.6")
    ap.add_argument("--window", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/drift.json"))
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# drift — {dt.date.today()} — commit {commit} — {args.base} model, {args.foreign} mixed in — tier {args.tier}, "
          f"window {args.window}, {args.draws} draws",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        fashion, foreign = read(args.base, args.data, Path(tmp)), read(args.foreign, args.data, Path(tmp))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(fashion))
    a, b = int(0.7 * len(order)), int(0.85 * len(order))
    train, held, stream = (fashion.subset(np.sort(order[:a])), fashion.subset(np.sort(order[a:b])),
                           fashion.subset(np.sort(order[b:])))
    t0 = time.perf_counter()
    clf = tx.TaxonomyClassifier(tier=args.tier).fit(train)
    print(f"trained on {len(train):,} {args.base} products in {time.perf_counter() - t0:.0f} s", flush=True)
    reference = DriftReference.of(clf, held.frame.to_dict("records"), brands=brands(train.frame.to_dict("records")))
    stream_rows, foreign_rows = stream.frame.to_dict("records"), foreign.frame.to_dict("records")
    # every product's answer once; windows are drawn from the answers
    answers = {}
    for name, rows in (("fashion", stream_rows), ("foreign", foreign_rows)):
        pick = rng.choice(len(rows), min(len(rows), 4 * args.window), replace=False)
        recs = [rows[i] for i in pick]
        preds = clf.predict_products(recs, top_k=2)
        right = np.asarray([tuple(p.leaf) == parse_path(r["category"]) for p, r in zip(preds, recs, strict=True)]) \
            if name == "fashion" else np.zeros(len(recs), dtype=bool)
        answers[name] = (observations(clf, recs, preds), right)
    results = []
    for share in [float(s) for s in args.shares.split(",")]:
        draws = []
        for _ in range(args.draws):
            n_foreign = int(round(share * args.window))
            fi = rng.choice(len(answers["fashion"][0]), args.window - n_foreign, replace=False)
            gi = rng.choice(len(answers["foreign"][0]), n_foreign, replace=False)
            obs = [answers["fashion"][0][i] for i in fi] + [answers["foreign"][0][i] for i in gi]
            acc = (answers["fashion"][1][fi].sum() + answers["foreign"][1][gi].sum()) / args.window
            s = drift_signals(reference, obs)
            draws.append({**flat(s), "accuracy": float(acc), "alerts": s["alerts"]})
        keys = [*SIGNALS, "accuracy"]
        values = {k: np.asarray([d[k] for d in draws], dtype=float) for k in keys}
        results.append({"share": share, **{stat: {k: _stat(f, v) for k, v in values.items()}
                                           for stat, f in (("mean", np.mean), ("min", np.min), ("max", np.max))},
                        "alert_draws": sum(bool(d["alerts"]) for d in draws), "alerts": [d["alerts"] for d in draws]})
    print(f"\nthresholds: {ALERTS}\n")
    print("| foreign share | accuracy | PSI L1 | JS L1 | PSI L2 | confidence PSI | mean conf. | back-off | unknown words "
          "| new brands | draws alerting |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m = r["mean"]
        print(f"| {r['share']:.0%} | {m['accuracy']:.3f} | {m['psi_level_1']:.3f} | {m['js_level_1']:.3f} | "
              f"{m['psi_level_2']:.3f} | {m['confidence_psi']:.3f} | {m['mean_confidence']:.3f} | "
              f"{m['back_off_share']:.3f} | {m['unknown_word_share']:.3f} | {m['new_brand_rate']:.3f} | "
              f"{r['alert_draws']}/{args.draws} |")
    ref = reference.summary
    print(f"\nreference ({reference.source}, {ref['n']:,} products): mean confidence {ref['mean_confidence']:.3f}, "
          f"unknown words {ref['unknown_word_share']:.3f}, back-off {ref['back_off_share']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": str(dt.date.today()), "commit": commit, "tier": args.tier,
                                    "base": args.base, "foreign": args.foreign,
                                    "window": args.window, "draws": args.draws, "thresholds": ALERTS,
                                    "results": results}, indent=1))
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = [r["share"] for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("psi_level_1", "PSI, level 1"), ("psi_level_2", "PSI, level 2"),
                       ("confidence_psi", "PSI, confidence histogram")):
        axes[0].errorbar(shares, [r["mean"][key] for r in results], marker="o", label=label,
                         yerr=[[r["mean"][key] - r["min"][key] for r in results],
                               [r["max"][key] - r["mean"][key] for r in results]], capsize=3)
    axes[0].axhline(ALERTS["psi_level_1"], color="red", ls="--", lw=1, label=f"alert (level 1 > {ALERTS['psi_level_1']})")
    axes[0].set(xlabel="share of foreign products in the window", ylabel="PSI", title="Distribution shift")
    axes[0].legend(fontsize=8)
    for key, label in (("accuracy", "real accuracy"), ("mean_confidence", "mean confidence"),
                       ("unknown_word_share", "unknown title words"), ("js_level_1", "Jensen-Shannon, level 1 (bits)"),
                       ("back_off_share", "backed off")):
        axes[1].plot(shares, [r["mean"][key] for r in results], marker="o", label=label)
    axes[1].set(xlabel="share of foreign products in the window", ylabel="share", title="Signals and accuracy")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
