"""Category demand: events (orders by default) counted per category and day / week, forecast per category with
statsmodels exponential smoothing (ETS) or a seasonal naive forecast — whichever wins a rolling-origin backtest —
and the backtest error (sMAPE, MAPE) set against the naive last-value forecast.

Categories come from the events, else from a catalogue's labels, else from a model's predictions
(:func:`taxonomist.apps.profiles.fill_categories`); ``level=1`` aggregates to the top of the taxonomy.

Cleaning, logged: events cut off from the rest by 7 empty days (4 empty weeks) are left out (a stray test order
must not stretch every series with zeros), and a first / last period the log covers only in part is dropped (a
half-observed day reads as a drop in demand).

Backtest: ``origins`` forecast origins, ``horizon`` periods apart, at the end of each series; at each the methods
are fitted on the history before it and forecast the next ``horizon`` periods. A series too short for any
candidate (ETS needs 10 periods before the first origin, seasonal ETS two seasons, seasonal naive one) is reported
as too short, not forecast.

Example:
    >>> rep = forecast_demand(read_events("orders.csv"), freq="W", horizon=4)   # doctest: +SKIP
    >>> rep.table()                                                              # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..exceptions import TaxonomistError
from ..taxonomy import format_path, parse_path
from .profiles import Events, fill_categories

__all__ = ["CategoryForecast", "DemandReport", "backtest", "category_series", "forecast_demand", "smape"]

logger = logging.getLogger(__name__)

Freq = Literal["D", "W"]
SEASON = {"D": 7, "W": 52}
DEFAULT_HORIZON = {"D": 7, "W": 4}
GAP = {"D": 7, "W": 4}  # this many empty periods in a row cut off the stray events before them
MIN_ETS = 10


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric MAPE in [0, 2]: mean of 2|F - A| / (|A| + |F|), 0 where both are 0."""
    a, f = np.asarray(actual, float), np.asarray(forecast, float)
    den = np.abs(a) + np.abs(f)
    return float(np.mean(np.where(den > 0, 2 * np.abs(f - a) / np.where(den > 0, den, 1), 0.0)))


def mape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """MAPE over the periods with non-zero actuals (NaN when all are zero)."""
    a, f = np.asarray(actual, float), np.asarray(forecast, float)
    nz = a != 0
    return float(np.mean(np.abs(f[nz] - a[nz]) / np.abs(a[nz]))) if nz.any() else float("nan")


def category_series(events: Events, freq: Freq = "D", event: str = "buy", level: int | None = None) -> pd.DataFrame:
    """Counts per period (rows, every period present) and category (columns). ``event``: ``buy``, ``cart``,
    ``fav``, ``view`` or ``all``; ``level``: cut category paths to this depth."""
    if freq not in SEASON:
        raise TaxonomistError(f"freq must be 'D' (days) or 'W' (weeks), got {freq!r}")
    df = events.frame
    if event != "all":
        if event not in ("buy", "cart", "fav", "view"):
            raise TaxonomistError(f"event must be buy, cart, fav, view or all, got {event!r}")
        df = df[df["event"] == event]
    df = df[df["category"] != ""]
    if not len(df):
        raise TaxonomistError(f"no {'' if event == 'all' else event + ' '}events with a category to count; "
                              "give categories in the events, or a catalogue / model that supplies them")
    cats = df["category"] if level is None else df["category"].map(lambda c: format_path(parse_path(c)[:level]))
    when = pd.to_datetime(df["timestamp"], unit="s")
    period = when.dt.to_period(freq)
    table = pd.crosstab(period, cats)
    full = pd.period_range(table.index.min(), table.index.max(), freq=freq)
    table = table.reindex(full, fill_value=0)
    # stray early events (a mis-set clock, a test order) separated from the rest by a long empty gap would
    # stretch every series with zeros: the series starts after the last gap of GAP empty periods or more
    empty = (table.sum(axis=1) == 0).to_numpy()
    start, run = 0, 0
    for i, e in enumerate(empty):
        run = run + 1 if e else 0
        if run >= GAP[freq]:
            start = i + 1
    if start:
        dropped = int(table.iloc[:start].to_numpy().sum())
        logger.warning("demand: %d events before %s left out: a gap of %d+ empty periods separates them from the rest",
                       dropped, table.index[start], GAP[freq])
        table = table.iloc[start:]
    # a log rarely starts and ends on period boundaries: a first / last period the log covers only in part
    # (it starts after the period's first day / hour, or stops before its last) would read as a drop in demand
    slack = pd.Timedelta(days=1) if freq == "W" else pd.Timedelta(hours=1)
    stamps = when[when >= table.index[0].start_time]
    first, last = table.index[0], table.index[-1]
    keep = np.ones(len(table), dtype=bool)
    if len(table) > 2 and stamps.min() > first.start_time + slack:
        keep[0] = False
    if len(table) > 2 and stamps.max() < last.end_time - slack:
        keep[-1] = False
    if not keep.all():
        logger.info("demand: partial periods left out: %s", [str(p) for p in table.index[~keep]])
    return table[keep]


def _forecast(y: np.ndarray, method: str, horizon: int, season: int) -> np.ndarray:
    if method == "naive":
        return np.repeat(y[-1], horizon).astype(float)
    if method == "seasonal_naive":
        reps = int(np.ceil(horizon / season))
        return np.asarray(np.tile(y[-season:], reps)[:horizon], dtype=float)
    if method == "ets":
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        seasonal = "add" if len(y) >= 2 * season else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notes on short or flat series
            fit = ExponentialSmoothing(y.astype(float), trend="add", damped_trend=True, seasonal=seasonal,
                                       seasonal_periods=season if seasonal else None,
                                       initialization_method="estimated").fit()
            out = np.asarray(fit.forecast(horizon), float)
        return np.asarray(np.clip(np.nan_to_num(out, nan=float(y[-1])), 0.0, None), dtype=float)  # counts: never < 0
    raise TaxonomistError(f"unknown method {method!r}")


def _candidates(n_history: int, season: int) -> list[str]:
    out = []
    if n_history >= MIN_ETS:
        out.append("ets")
    if n_history >= season:
        out.append("seasonal_naive")
    return out


def backtest(y: np.ndarray, method: str, horizon: int, origins: int, season: int) -> dict[str, float]:
    """Mean sMAPE and MAPE of ``method`` over the rolling origins at the end of ``y``."""
    errs_s, errs_m = [], []
    for j in range(origins, 0, -1):
        cut = len(y) - j * horizon
        actual = y[cut: cut + horizon]
        pred = _forecast(y[:cut], method, horizon, season)
        errs_s.append(smape(actual, pred))
        errs_m.append(mape(actual, pred))
    return {"smape": float(np.mean(errs_s)), "mape": float(np.nanmean(errs_m)) if not np.all(np.isnan(errs_m)) else float("nan")}


@dataclass
class CategoryForecast:
    category: str
    total: int
    chosen: str | None  # None: too short to forecast
    errors: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> {smape, mape}
    history: pd.Series | None = None
    forecast: pd.Series | None = None

    @property
    def beats_naive(self) -> bool | None:
        if self.chosen is None:
            return None
        return self.errors[self.chosen]["smape"] < self.errors["naive"]["smape"]


@dataclass
class DemandReport:
    freq: str
    horizon: int
    origins: int
    event: str
    periods: int
    forecasts: list[CategoryForecast]

    @property
    def forecastable(self) -> list[CategoryForecast]:
        return [f for f in self.forecasts if f.chosen is not None]

    def verdict(self) -> str:
        """One sentence: whether the chosen methods beat naive on most categories, or that the data is too short."""
        ok = self.forecastable
        if not ok:
            need = min(MIN_ETS, SEASON[self.freq]) + self.horizon * self.origins
            return (f"The data is too short to tell: {self.periods} {'days' if self.freq == 'D' else 'weeks'} per "
                    f"category, and a backtest of {self.origins} origins x {self.horizon} periods needs at least {need}.")
        wins = sum(bool(f.beats_naive) for f in ok)
        word = "beats" if wins * 2 > len(ok) else "does not beat"
        return (f"The chosen method {word} the naive last-value forecast on the majority of categories: {wins} of "
                f"{len(ok)} (backtest sMAPE, {self.origins} origins x {self.horizon} periods).")

    def table(self) -> pd.DataFrame:
        rows = []
        for f in self.forecasts:
            row: dict[str, Any] = {"category": f.category, "total": f.total, "chosen": f.chosen or "too short"}
            for m in ("naive", "seasonal_naive", "ets"):
                row[f"{m}_smape"] = f.errors.get(m, {}).get("smape", np.nan)
            row["chosen_mape"] = f.errors[f.chosen]["mape"] if f.chosen else np.nan
            row["naive_mape"] = f.errors.get("naive", {}).get("mape", np.nan)
            row["beats_naive"] = f.beats_naive
            rows.append(row)
        return pd.DataFrame(rows)

    def to_html(self) -> str:
        import matplotlib

        from ..report import figure_uri

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        esc = html.escape
        t = self.table()
        head = "".join(f"<th>{esc(c)}</th>" for c in t.columns)
        body = "".join("<tr>" + "".join(f"<td>{esc(_cell(v))}</td>" for v in r) + "</tr>" for r in t.itertuples(index=False))
        plots = []
        for f in self.forecastable:
            assert f.history is not None and f.forecast is not None
            fig, ax = plt.subplots(figsize=(7, 2.6))
            ax.plot(pd.PeriodIndex(f.history.index).to_timestamp(), f.history.to_numpy(), label="actual", color="#333")
            ax.plot(pd.PeriodIndex(f.forecast.index).to_timestamp(), f.forecast.to_numpy(), label=f"forecast ({f.chosen})",
                    color="#c0392b", linestyle="--")
            ax.set_title(f.category[-60:], fontsize=9)
            ax.legend(fontsize=7, frameon=False)
            plots.append(f'<figure><img src="{figure_uri(fig)}" alt="{esc(f.category)}"></figure>')
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>Category demand</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}td:first-child{{text-align:left}}</style></head><body>
<h1>Category demand</h1>
<p>{esc(self.event)} events per {'day' if self.freq == 'D' else 'week'}, {self.periods} periods;
forecast horizon {self.horizon}; generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.</p>
<p><strong>{esc(self.verdict())}</strong></p>
<table><tr>{head}</tr>{body}</table>
<h2>Top categories</h2>{''.join(plots)}
</body></html>"""


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def forecast_demand(events: Events, freq: Freq = "D", horizon: int | None = None, origins: int = 3, top: int = 10,
                    event: str = "buy", level: int | None = None, catalog: Any = None, model: Any = None) -> DemandReport:
    """Backtest and forecast the ``top`` categories by volume (see the module docs)."""
    if origins < 1:
        raise TaxonomistError(f"origins must be at least 1, got {origins}")
    try:
        import statsmodels  # noqa: F401
    except ImportError:
        raise TaxonomistError("category demand forecasting needs statsmodels: pip install 'taxonomist[demand]'") from None
    series = category_series(fill_categories(events, catalog, model), freq=freq, event=event, level=level)
    h = DEFAULT_HORIZON[freq] if horizon is None else horizon
    if h < 1:
        raise TaxonomistError(f"horizon must be at least 1, got {h}")
    season = SEASON[freq]
    totals = series.sum().sort_values(ascending=False, kind="stable")
    out = []
    for cat in totals.index[:top]:
        y = series[cat].to_numpy()
        n_history = len(y) - origins * h
        cands = _candidates(n_history, season)
        f = CategoryForecast(category=str(cat), total=int(totals[cat]), chosen=None)
        if cands:
            f.errors = {m: backtest(y, m, h, origins, season) for m in ["naive", *cands]}
            f.chosen = min(cands, key=lambda m: f.errors[m]["smape"])
            f.history = series[cat]
            idx = pd.period_range(series.index[-1] + 1, periods=h, freq=freq)
            f.forecast = pd.Series(_forecast(y, f.chosen, h, season), index=idx)
        out.append(f)
    rep = DemandReport(freq=freq, horizon=h, origins=origins, event=event, periods=len(series), forecasts=out)
    logger.info("demand: %s", rep.verdict())
    return rep
