"""Running it: ``serve``, ``monitor`` and ``review purge``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import CliError, app, console, out, review_app


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="A model bundle, or a model store (a folder of bundles, one per version).")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    review_db: Annotated[str | None, typer.Option(help="The review queue and feedback: a SQLite file, or a postgresql://user@host/db URL shared by several servers.")] = None,
    image_root: Annotated[Path | None, typer.Option(help="Image paths in requests must resolve inside this folder.")] = None,
    api_key: Annotated[list[str] | None, typer.Option("--api-key", help="Bearer key for write/admin endpoints (repeatable).")] = None,
    shadow: Annotated[Path | None, typer.Option("--shadow", help="A candidate bundle that answers every classified product in the background; its agreement is in GET /v1/monitor, nothing of it is returned.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve a model over HTTP: /v1/classify, the review queue and page (/review), /metrics, /docs.

    Every setting can also come from TAXONOMIST_* environment variables or a .env file; options here win. With
    no API key configured, a random one is made for this run and printed (writes always need a key).
    """
    import gc
    import secrets

    try:
        import uvicorn
        from pydantic import ValidationError

        from ..serving import ServeSettings, create_app
    except ImportError as e:
        raise CliError(f"serving needs the 'serve' extra ({e.name} is missing): pip install 'taxonomist[serve]'") from None
    overrides: dict[str, Any] = {"model_dir": model_dir}
    if review_db is not None:
        overrides["review_db"] = review_db
    if image_root is not None:
        overrides["image_root"] = image_root
    if shadow is not None:
        overrides["shadow_model"] = shadow
    if api_key:
        overrides["api_keys"] = list(api_key)
    try:
        settings = ServeSettings(**overrides)
    except ValidationError as e:  # a setting out of range, an empty key
        raise CliError("invalid server settings: " + "; ".join(
            f"{'.'.join(map(str, x['loc']))}: {x['msg'].removeprefix('Value error, ')}" for x in e.errors())) from None
    if not settings.api_keys:
        settings.api_keys = [secrets.token_urlsafe(24)]
        console.print(f"no API key configured (TAXONOMIST_API_KEYS / --api-key): this run's key is {settings.api_keys[0]}",
                      highlight=False, markup=False)
    sock = _listen(host, port)  # before the banner: a taken port is one clear line and exit code 1
    console.print(f"review page: http://{host}:{port}/review · API docs: http://{host}:{port}/docs", highlight=False)
    # the model runs in a worker thread while the event loop takes requests: hand the GIL over every 0.5 ms
    # instead of 5 ms (a lower median latency under load: benchmarks/RESULTS.md, "Serving under load")
    sys.setswitchinterval(0.0005)
    # a served request allocates many short-lived objects beside a model of large dicts (vocabularies, caches):
    # with the default thresholds full collections were the p99 latency (benchmarks/RESULTS.md, "Serving under load")
    gc.set_threshold(50_000, 50, 100)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port, log_level=log_level))
    server.run(sockets=[sock])
    if not server.started:
        raise CliError("the server did not start (the reason is logged above)")


def _listen(host: str, port: int) -> Any:
    """A socket bound to ``host:port`` for uvicorn, or a :class:`CliError` that says why it cannot be."""
    import socket

    sock = None
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as e:
        if sock is not None:
            sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {e.strerror or e}; another server may be using the port "
                       "(choose another with --port) or the address is not this machine's (--host)") from None
    sock.set_inheritable(True)
    return sock




def _age_seconds(value: str, option: str) -> float:
    """``90d`` / ``12w`` / ``36h`` in seconds."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([hdw])\s*", value)
    if m is None:
        raise CliError(f"{option}: expected an age like 90d, 12w or 36h, got {value!r}")
    return float(m.group(1)) * {"h": 3600, "d": 86400, "w": 7 * 86400}[m.group(2)]


def _moment(value: str, option: str) -> float:
    """An age (``28d``: that long ago) or an ISO date / time (UTC when no zone is given) in Unix seconds."""
    import datetime as dt

    try:
        return time.time() - _age_seconds(value, option)
    except CliError:
        pass
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise CliError(f"{option}: expected an age like 28d or a date like 2026-11-01, got {value!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).timestamp()


@app.command()
def monitor(
    model: Annotated[Path, typer.Argument(help="The served model: a bundle, or a folder of versions (its latest).")],
    review_db: Annotated[str, typer.Option("--review-db", help="The service's store (TAXONOMIST_REVIEW_DB: a file or "
                                           "a postgresql:// URL), which keeps served predictions and reviewers' decisions.")],
    since: Annotated[str, typer.Option("--since", help="Start: an age (28d, 12w) or a date (2026-11-01).")] = "28d",
    until: Annotated[str | None, typer.Option("--until", help="End (default: now): an age or a date.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="The HTML report.")] = Path("monitor.html"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON.")] = None,
) -> None:
    """Is the served model going stale? Drift of the served predictions against the model's held-out reference
    (per day), the categories that grew or shrank, the products least like the training data, the live accuracy
    per week from reviews, and a verdict (exit code 0 either way; the verdict is the last line)."""
    from ..classifier import load
    from ..monitor_report import render_monitor
    from ..monitoring import monitor_summary
    from ..serving.registry import ModelRegistry
    from ..serving.store import ReviewStore, store_exists

    start, end = _moment(since, "--since"), (_moment(until, "--until") if until else time.time())
    if end <= start:
        raise CliError(f"--until must be after --since (got {since!r} to {until!r})")
    if not store_exists(review_db):
        raise CliError(f"expected the service's review store at {review_db}, but there is no such file")
    path = ModelRegistry(model).path_of(None)
    clf = load(path)
    store = ReviewStore(review_db)
    try:
        served, decided = store.served(start, end), store.decided(start)
    finally:
        store.close()
    decided = [d for d in decided if d["decided_at"] < end]
    if not served:
        console.print(f"no served predictions recorded in {review_db} in that period (the service records them "
                      "unless TAXONOMIST_LOG_PREDICTIONS=false)", style="yellow", highlight=False)
    summary = monitor_summary(clf.drift_reference_, served, decided, classifier=clf)
    fmt = "%Y-%m-%d %H:%M"
    period = f"{time.strftime(fmt, time.gmtime(start))} to {time.strftime(fmt, time.gmtime(end))} UTC"
    output.write_text(render_monitor(summary, title=f"taxonomist monitor: {path.name}", period=period), encoding="utf-8")
    if json_out:
        json_out.write_text(json.dumps({"period": period, "model": str(path), **summary}, indent=1), encoding="utf-8")
    out.print(f"{summary['n']:,} served predictions, {len(decided):,} review decisions ({period})\nreport: {output}")
    if served:  # what a running service answered in the last seconds may not be written yet
        newest = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(max(r["created"] for r in served)))
        out.print(f"newest record {newest} UTC; a running service writes its answers within about 2 s (a killed one "
                  "loses its last 2 s)", highlight=False)
    out.print(summary["verdict"], highlight=False)


@review_app.command("purge")
def review_purge(
    review_db: Annotated[str, typer.Argument(help="The review store (TAXONOMIST_REVIEW_DB of the service: a file or a postgresql:// URL).")],
    older_than: Annotated[str, typer.Option("--older-than", help="Age: 90d, 12w, 36h.")],
) -> None:
    """Delete review items, feedback and served-prediction records older than an age (products as customers and
    sellers sent them)."""
    from ..serving.store import ReviewStore, store_exists

    seconds = _age_seconds(older_than, "--older-than")
    if not store_exists(review_db):
        raise CliError(f"expected a review store at {review_db}, but there is no such file")
    store = ReviewStore(review_db)
    try:
        n_review, n_feedback, n_served = store.purge(time.time() - seconds)
    finally:
        store.close()
    console.print(f"deleted {n_review:,} review items, {n_feedback:,} feedback rows and {n_served:,} served-prediction "
                  f"records older than {older_than.strip()}", highlight=False)
