"""After-sales message routing on real Chinese customer reviews: category and sentiment macro-F1.

    python benchmarks/messages.py --data ../shared/data [--tier sparse]

online_shopping_zh (``online_shopping_10_cats.csv``: cat, label, review), hotel reviews left out (not products,
as in the tiers benchmark): one grouped split (``split_catalog(test_size=0.2, seed=0)``, identical review texts
never straddle it). A :class:`~taxonomist.apps.MessageRouter` is trained on the training part (category model +
sentiment model, the given tier) and routes the test part; prints accuracy and macro-F1 of both predictions and
the routing speed, next to the practitioners' baseline on the same split (scikit-learn TF-IDF word 1-2 + char_wb
2-5 + LinearSVC(C=0.5), as in benchmarks/sparse_vs_baselines.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from sklearn.metrics import accuracy_score, f1_score

import taxonomist as tx
from taxonomist.apps import MessageRouter, RoutingRule
from taxonomist.apps.routing import sentiment_label

sys.path.insert(0, str(Path(__file__).parent))
from sparse_vs_baselines import sklearn_baseline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--tier", default="sparse")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cat = tx.read_catalog(args.data / "online_shopping_zh/online_shopping_10_cats.csv",
                          mapping={"title": "review", "category": "cat"}, require_labels=True)
    cat = cat.subset([i for i, c in enumerate(cat.frame["category"]) if c != "酒店"])
    train, test = tx.split_catalog(cat, test_size=0.2, seed=0)
    print(f"online_shopping_zh without hotels: {len(cat):,} reviews, {cat.frame['category'].nunique()} categories; "
          f"train {len(train):,} / test {len(test):,}")
    rules = [RoutingRule(sentiment="negative", queue="complaints")]
    t = time.perf_counter()
    router = MessageRouter.fit(train.frame["title"].tolist(), train.frame["category"].tolist(),
                               train.frame["label"].tolist(), rules=rules, tier=args.tier)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    routes = router.route(test.frame["title"].tolist())
    route_s = time.perf_counter() - t
    truth = {"category": test.frame["category"].tolist(),
             "sentiment": [sentiment_label(v) for v in test.frame["label"]]}
    print(f"tier {args.tier}: trained in {fit_s:.0f} s; routed {len(test) / route_s:,.0f} messages/s")
    for name, y in truth.items():
        pred = [str(getattr(r, name) or "") for r in routes]
        # the baseline, trained on the same training part with the same labels
        labelled = tx.Catalog(train.frame.assign(category=[sentiment_label(v) for v in train.frame["label"]])
                              if name == "sentiment" else train.frame)
        fit, predict, _ = sklearn_baseline(labelled)
        fit()
        base = predict(test)
        print(f"  {name:9s} accuracy {accuracy_score(y, pred):.4f}  macro-F1 {f1_score(y, pred, average='macro'):.4f}"
              f"   | TF-IDF + LinearSVC: accuracy {accuracy_score(y, base):.4f}  "
              f"macro-F1 {f1_score(y, base, average='macro'):.4f}", flush=True)
    share = sum(r.queue == "complaints" for r in routes) / len(routes)
    print(f"  routed to 'complaints' (negative): {share:.1%}")


if __name__ == "__main__":
    main()
