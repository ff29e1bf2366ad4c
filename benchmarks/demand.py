"""Category demand: backtest of the chosen method (ETS or seasonal naive) against the naive last-value forecast.

    python benchmarks/demand.py --data ../shared/data

1. Taobao UserBehavior head (../shared/data/taobao_behaviour): buy events and all events per day, top 10
   categories — nine days of data (one stray event in September is left out by the gap rule).
2. A synthetic order log with a stated generator, to check that the selection finds structure where there is
   some: 12 categories x 182 days; each category has a base level drawn from U(5, 60) orders/day, a linear trend
   of U(-0.3, +0.5) % of the base per day, a weekly pattern base x (1 + a sin(2 pi d / 7 + phi)) with a ~ U(0, 0.6),
   and Poisson noise. Daily horizon 7 x 3 origins, and weekly horizon 4 x 3 origins.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from taxonomist.apps.demand import forecast_demand
from taxonomist.apps.profiles import read_events


def synthetic_orders(seed: int = 0, categories: int = 12, days: int = 182) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    t0 = 1_700_000_000 - 1_700_000_000 % 86400
    d = np.arange(days)
    for c in range(categories):
        base, trend = rng.uniform(5, 60), rng.uniform(-0.003, 0.005)
        a, phi = rng.uniform(0, 0.6), rng.uniform(0, 2 * np.pi)
        lam = np.clip(base * (1 + trend * d) * (1 + a * np.sin(2 * np.pi * d / 7 + phi)), 0.1, None)
        for day, n in zip(d, rng.poisson(lam), strict=True):
            rows.extend((f"u{c}", f"i{c}", f"Category {c:02d}", "buy", t0 + int(day) * 86400 + 3600) for _ in range(n))
    return pd.DataFrame(rows, columns=["user", "item", "category", "event", "timestamp"])


def show(title: str, events: object, **kw: object) -> None:
    rep = forecast_demand(events, **kw)  # type: ignore[arg-type]
    print(f"\n{title}: {rep.periods} periods, horizon {rep.horizon} x {rep.origins} origins")
    t = rep.table()
    if rep.forecastable:
        cols = ["category", "total", "chosen", "naive_smape", "seasonal_naive_smape", "ets_smape", "naive_mape",
                "chosen_mape", "beats_naive"]
        print(t[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        ok = [f for f in rep.forecastable]
        print(f"  mean sMAPE: naive {np.mean([f.errors['naive']['smape'] for f in ok]):.3f}, chosen "
              f"{np.mean([f.errors[f.chosen]['smape'] for f in ok if f.chosen]):.3f}")
    print("  " + rep.verdict())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    taobao = read_events(args.data / "taobao_behaviour/UserBehavior.csv")
    show("taobao, buy events per day", taobao, event="buy")
    show("taobao, all events per day", taobao, event="all")
    show("taobao, all events per day, horizon 1", taobao, event="all", horizon=1)
    orders = read_events(synthetic_orders())
    show("synthetic orders per day", orders, freq="D", top=12)
    show("synthetic orders per week", orders, freq="W", top=12)


if __name__ == "__main__":
    main()
