"""The catalogue's other uses: ``messages``, ``search``, ``users`` and ``demand``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import (
    CliError,
    ColumnsOpt,
    DelimOpt,
    EncOpt,
    EventCatalogOpt,
    EventColsOpt,
    EventEncoderOpt,
    LabelColsOpt,
    MapOpt,
    NoHeaderOpt,
    Reading,
    SepOpt,
    SheetOpt,
    StrictOpt,
    WithOpt,
    app,
    console,
    messages_app,
    out,
    read_input,
    search_app,
    spinner,
    users_app,
)


@messages_app.command("train")
def messages_train(
    data: Annotated[Path, typer.Argument(help="Labelled messages: CSV, TSV, JSONL or Parquet.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Router folder to write.")],
    text_column: Annotated[str, typer.Option(help="Column with the message text.")] = "title",
    category_column: Annotated[str, typer.Option(help="Column with the product category (a path or a name).")] = "category",
    sentiment_column: Annotated[str | None, typer.Option(help="Column with the sentiment (1/0, pos/neg or words).")] = None,
    issue_column: Annotated[str | None, typer.Option(help="Column with the issue type, when labelled.")] = None,
    rules: Annotated[Path | None, typer.Option(help="Routing rules: CSV category,issue_type,sentiment,queue or JSON.")] = None,
    default_queue: Annotated[str, typer.Option(help="Queue when no rule matches.")] = "general",
    tier: Annotated[str, typer.Option(help="Tier of the models (sparse, ensemble, ...).")] = "sparse",
    test_size: Annotated[float, typer.Option(help="Share held out (grouped by text) for evaluation; 0 trains on all.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    dp_epsilon: Annotated[float | None, typer.Option(help="Train with differential privacy per message: the router's total budget epsilon (e.g. 3; sparse tier only; split over its models).", min=1e-3, max=1e3)] = None,
    dp_delta: Annotated[float, typer.Option(help="Delta of the differential-privacy guarantee; keep it well below 1 / the number of messages.", min=1e-12, max=0.1)] = 1e-6,
) -> None:
    """Train a message router and report category / sentiment / issue-type scores on held-out messages."""
    from sklearn.metrics import accuracy_score, f1_score

    from ..apps.routing import MessageRouter, load_rules, sentiment_label
    from ..catalog import split_catalog

    if dp_epsilon is not None and tier != "sparse":
        raise CliError(f"--dp-epsilon trains the sparse tier only, got --tier {tier}; use --tier sparse")
    mapping = {"title": text_column, "category": category_column}
    cat = read_input(data, Reading(mapping=dict(mapping)), require_labels=True)
    for col in (sentiment_column, issue_column):
        if col and col not in cat.frame.columns:
            raise CliError(f"column {col!r} not found; the file has {sorted(cat.frame.columns)}")
    train_cat, test_cat = split_catalog(cat, test_size=test_size, seed=seed) if test_size > 0 else (cat, None)

    def labels(c: Any, col: str | None) -> Any:
        return c.frame[col].tolist() if col else None

    with spinner(f"training the router on {len(train_cat):,} messages"):
        router = MessageRouter.fit(train_cat.frame["title"].tolist(), train_cat.frame["category"].tolist(),
                                   labels(train_cat, sentiment_column), labels(train_cat, issue_column),
                                   load_rules(rules) if rules else (), tier=tier, default_queue=default_queue,
                                   dp_epsilon=dp_epsilon, dp_delta=dp_delta)
    if router.privacy:
        p = router.privacy
        parts = ", ".join(f"{k} {v['epsilon']:.3f}" for k, v in p["models"].items())
        out.print(f"differential privacy per message: epsilon {p['epsilon']:.3f}, delta {p['delta']:.1e} for the "
                  f"router ({parts})")
    if test_cat is not None:
        with spinner("evaluating on the held-out messages"):
            routes = router.route(test_cat.frame["title"].tolist())
        table = Table(title=f"held-out messages ({len(test_cat):,})")
        for col in ("prediction", "accuracy", "macro F1"):
            table.add_column(col)
        truth = {"category": test_cat.frame["category"].tolist()}
        if sentiment_column:
            truth["sentiment"] = [sentiment_label(v) for v in test_cat.frame[sentiment_column]]
        if issue_column:
            truth["issue_type"] = test_cat.frame[issue_column].tolist()
        for name, y in truth.items():  # a category backed off to a parent counts as wrong, as in evaluate
            pred = [str(getattr(r, name) or "") for r in routes]
            table.add_row(name, f"{accuracy_score(y, pred):.4f}", f"{f1_score(y, pred, average='macro', zero_division=0):.4f}")
        out.print(table)
    out.print(f"router saved to {router.save(output)}")


@messages_app.command("route")
def messages_route(
    router_dir: Annotated[Path, typer.Argument(help="Router folder (taxonomist messages train).")],
    messages: Annotated[list[str], typer.Argument(help="Messages to route.")],
) -> None:
    """Route messages: category, sentiment, issue type and queue (with the rule that matched)."""
    from ..apps.routing import MessageRouter

    router = MessageRouter.load(router_dir)
    table = Table(title="routes")
    for col in ("message", "category", "sentiment", "issue type", "queue", "rule"):
        table.add_column(col)
    for m, r in zip(messages, router.route(messages), strict=True):
        table.add_row(m[:60], f"{r.category} ({r.category_confidence:.2f})",
                      f"{r.sentiment} ({r.sentiment_confidence:.2f})" if r.sentiment else "",
                      r.issue_type or "", r.queue, str(r.rule) if r.rule else "default")
    out.print(table)


@search_app.command("build")
def search_build(
    catalog: Annotated[Path, typer.Argument(help="Catalogue to make searchable (labels optional).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Index folder to write.")],
    model: Annotated[Path | None, typer.Option(help="Model bundle that categorises the unlabelled products.")] = None,
    encoder: Annotated[str, typer.Option(help="Text encoder of the embedding side: auto, minilm-en, e5-multilingual, a folder, or none (full text only).")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Rebuild an existing index in that folder.")] = False,
    map_: MapOpt = None, label_columns: LabelColsOpt = None, sep: SepOpt = " > ", with_columns: WithOpt = None,
    encoding: EncOpt = None, delimiter: DelimOpt = None, sheet: SheetOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
) -> None:
    """Build a search index (full text + title embeddings) over a catalogue, for taxonomist search query and
    POST /v1/search (TAXONOMIST_SEARCH_DIR)."""
    from ..apps.search import SearchIndex
    from ..classifier import load

    cat = read_input(catalog, Reading.of(map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, delimiter, sheet))
    with spinner(f"indexing {len(cat):,} products"):
        idx = SearchIndex.build(cat, output, model=load(model) if model else None,
                                encoder=None if encoder == "none" else encoder, overwrite=overwrite)
    c = idx.meta["categories"]
    out.print(f"search index of {len(idx):,} products written to {output} (encoder {idx.meta['encoder'] or 'none'}; "
              f"categories: {c['label']:,} labelled, {c['predicted']:,} predicted, {c['none']:,} none)")


@search_app.command("query")
def search_query(
    index: Annotated[Path, typer.Argument(help="Search index folder (taxonomist search build).")],
    query: Annotated[str, typer.Argument(help="What to search for.")],
    model: Annotated[Path | None, typer.Option(help="Product model bundle whose query classification boosts the results.")] = None,
    k: Annotated[int, typer.Option("-k", help="Results to show.")] = 10,
    mode: Annotated[str, typer.Option(help="hybrid, bm25 or vector.")] = "hybrid",
    boost: Annotated[float, typer.Option(help="Strength of the category boost (0: none).")] = 1.0,
    category: Annotated[str | None, typer.Option(help="Only results in this category (or below it).")] = None,
) -> None:
    """Search an index; with --model the query's predicted category boosts matching products."""
    from ..apps.query import QueryClassifier
    from ..apps.search import SearchIndex
    from ..classifier import load

    if k < 1:
        raise CliError(f"-k must be at least 1, got {k}")
    idx = SearchIndex.load(index)
    qc = QueryClassifier(product_model=load(model)) if model else None
    with spinner("searching"):
        hits = idx.search(query, k=k, mode=mode, query_classifier=qc, boost=boost, category=category)  # type: ignore[arg-type]
    table = Table(title=f"{query!r}: {len(hits)} results ({mode}{', category boost' if qc and boost else ''})")
    for col in ("id", "title", "category", "score"):
        table.add_column(col)
    for h in hits:
        table.add_row(h.id, h.title[:60], h.category, f"{h.score:.4f}")
    out.print(table)


def _events_and_items(events: Path, columns: str | None, strict: bool, catalog: Path | None,
                      model: Path | None) -> tuple[Any, Any, Any]:
    from ..apps.profiles import read_events
    from ..classifier import load

    with spinner(f"reading {events.name}"):
        ev = read_events(events, columns=columns.split(",") if columns else None, strict=strict)
    for line in ev.report.lines():
        console.print(line, style="green" if ev.report.ok else "yellow", markup=False, highlight=False, soft_wrap=True)
    cat = read_input(catalog) if catalog else None
    return ev, cat, load(model) if model else None


@users_app.command("build")
def users_build(
    events: Annotated[Path, typer.Argument(help="Behaviour events: user, item, category, event, timestamp (CSV/TSV/JSONL/Parquet).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Profile store folder to write.")],
    catalog: EventCatalogOpt = None,
    model: Annotated[Path | None, typer.Option(help="Model bundle that categorises catalogue items without a label.")] = None,
    encoder: EventEncoderOpt = "none",
    half_life_days: Annotated[float, typer.Option(help="An event's weight halves every this many days.")] = 14.0,
    columns: EventColsOpt = None, strict: StrictOpt = False,
) -> None:
    """Build shopper profiles (category affinity, recent items, purchases) and the recommender, for
    taxonomist users profile|recommend and GET /v1/users/{id}/... (TAXONOMIST_PROFILES_DIR)."""
    from ..apps.profiles import ProfileStore

    ev, cat, clf = _events_and_items(events, columns, strict, catalog, model)
    with spinner(f"building profiles from {len(ev):,} events"):
        store = ProfileStore.fit(ev, catalog=cat, model=clf, encoder=None if encoder == "none" else encoder,
                                 half_life_days=half_life_days)
        store.save(output)
    out.print(f"{len(store.users):,} user profiles over {len(store.item_ids):,} items and {len(store.categories):,} "
              f"categories written to {output}")


@users_app.command("profile")
def users_profile(
    store_dir: Annotated[Path, typer.Argument(help="Profile store folder (taxonomist users build).")],
    user: Annotated[str, typer.Argument(help="User id.")],
) -> None:
    """Show a shopper's category affinity, recent items and purchases."""
    from ..apps.profiles import ProfileStore

    store = ProfileStore.load(store_dir)
    if user not in store:
        raise CliError(f"unknown user {user!r}: the store has {len(store.users):,} users, e.g. {store.users[:3]}")
    p = store.profile(user)
    table = Table(title=f"user {user}: {p.events:,} events; recent {', '.join(p.recent_items[:5])}")
    table.add_column("category")
    table.add_column("share")
    for c, v in p.categories:
        table.add_row(c, f"{v:.3f}")
    out.print(table)


@users_app.command("recommend")
def users_recommend(
    store_dir: Annotated[Path, typer.Argument(help="Profile store folder (taxonomist users build).")],
    user: Annotated[str, typer.Argument(help="User id.")],
    k: Annotated[int, typer.Option("-k", help="Recommendations to show.")] = 10,
    exclude_seen: Annotated[bool, typer.Option(help="Leave out items the user already touched (not only bought).")] = False,
) -> None:
    """Recommend items: the shopper's categories, items like the recently seen ones, popularity."""
    from ..apps.profiles import ProfileStore

    store = ProfileStore.load(store_dir)
    if user not in store:
        raise CliError(f"unknown user {user!r}: the store has {len(store.users):,} users, e.g. {store.users[:3]}")
    table = Table(title=f"recommendations for {user}")
    for col in ("item", "title", "category", "score", "reason"):
        table.add_column(col)
    for r in store.recommend(user, k=k, exclude_seen=exclude_seen):
        table.add_row(r.item, r.title[:50], r.category, f"{r.score:.4f}", r.reason)
    out.print(table)


@users_app.command("evaluate")
def users_evaluate(
    events: Annotated[Path, typer.Argument(help="Behaviour events (as for build).")],
    catalog: EventCatalogOpt = None,
    model: Annotated[Path | None, typer.Option(help="Model bundle that categorises catalogue items without a label.")] = None,
    encoder: EventEncoderOpt = "none",
    k: Annotated[int, typer.Option("-k", help="Cut-off of hit-rate and nDCG.")] = 10,
    new_items: Annotated[bool, typer.Option(help="Hold out each user's last new item (discovery) instead of the last event.")] = False,
    columns: EventColsOpt = None, strict: StrictOpt = False,
) -> None:
    """Leave-last-out evaluation: hit-rate@k and nDCG@k of the recommender vs popularity and category-only."""
    from ..apps.profiles import evaluate_leave_last_out

    ev, cat, clf = _events_and_items(events, columns, strict, catalog, model)
    with spinner("fitting on all but each user's last event and ranking"):
        res = evaluate_leave_last_out(ev, catalog=cat, model=clf, encoder=None if encoder == "none" else encoder, k=k,
                                      new_items=new_items)
    table = Table(title=f"leave-last-{'new-item' if new_items else 'event'}-out, {next(iter(res.values()))['users']:,} users")
    for col in ("method", f"hit-rate@{k}", f"nDCG@{k}"):
        table.add_column(col)
    for name, m in res.items():
        table.add_row(name, f"{m[f'hit_rate@{k}']:.4f}", f"{m[f'ndcg@{k}']:.4f}")
    out.print(table)


@users_app.command("synthesize")
def users_synthesize(
    catalog: Annotated[Path, typer.Argument(help="Labelled catalogue the shoppers browse.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Events file to write (.csv or .parquet).")],
    n_users: Annotated[int, typer.Option("--users", help="Shoppers to simulate.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Generate a behaviour log from a catalogue (the generator is described in apps/profiles.synthetic_events)."""
    from ..apps.profiles import synthetic_events

    cat = read_input(catalog, require_labels=True)
    with spinner(f"simulating {n_users:,} shoppers"):
        frame = synthetic_events(cat, n_users=n_users, seed=seed)
    if output.suffix.lower() not in (".csv", ".parquet"):
        raise CliError(f"-o {output}: write .csv or .parquet")
    output.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(output, index=False) if output.suffix.lower() == ".csv" else frame.to_parquet(output, index=False)
    out.print(f"{len(frame):,} events of {n_users:,} shoppers written to {output}")


@app.command()
def demand(
    events: Annotated[Path, typer.Argument(help="Behaviour events / orders: user, item, category, event, timestamp.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the HTML report (table + a plot per top category) here.")] = None,
    freq: Annotated[str, typer.Option(help="D (days) or W (weeks).")] = "D",
    horizon: Annotated[int | None, typer.Option(help="Periods to forecast (default 7 days / 4 weeks).")] = None,
    origins: Annotated[int, typer.Option(help="Backtest origins at the end of each series.")] = 3,
    top: Annotated[int, typer.Option(help="Categories to forecast, by volume.")] = 10,
    event: Annotated[str, typer.Option(help="What counts as demand: buy, cart, fav, view or all.")] = "buy",
    level: Annotated[int | None, typer.Option(help="Aggregate category paths to this depth (1: top level).")] = None,
    catalog: EventCatalogOpt = None,
    model: Annotated[Path | None, typer.Option(help="Model bundle that categorises items without a category.")] = None,
    columns: EventColsOpt = None, strict: StrictOpt = False,
) -> None:
    """Category demand: counts per category and day/week, ETS or seasonal naive chosen by backtest, against the
    naive last-value forecast."""
    from ..apps.demand import forecast_demand

    ev, cat, clf = _events_and_items(events, columns, strict, catalog, model)
    with spinner("backtesting and forecasting"):
        rep = forecast_demand(ev, freq=freq, horizon=horizon, origins=origins, top=top, event=event,  # type: ignore[arg-type]
                              level=level, catalog=cat, model=clf)
    table = Table(title=f"{event} events per {'day' if freq == 'D' else 'week'}: {rep.periods} periods, horizon {rep.horizon}")
    for col in ("category", "total", "chosen", "sMAPE naive", "sMAPE chosen", "beats naive"):
        table.add_column(col)
    for f in rep.forecasts:
        chosen = f"{f.errors[f.chosen]['smape']:.3f}" if f.chosen else ""
        naive = f"{f.errors['naive']['smape']:.3f}" if f.errors else ""
        table.add_row(f.category[:50], f"{f.total:,}", f.chosen or "too short", naive, chosen,
                      "" if f.beats_naive is None else str(f.beats_naive))
    out.print(table)
    out.print(rep.verdict())
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(rep.to_html(), encoding="utf-8")
        out.print(f"report written to {output}")
