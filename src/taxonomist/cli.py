"""The ``taxonomist`` command line: train, evaluate, predict, embed, classify, query, search,
messages, users, demand, tune, serve, retrain, taxonomy show|check, demo.

Errors print one clear message and exit 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .exceptions import TaxonomistError
from .version import __version__

app = typer.Typer(
    name="taxonomist",
    help="Put every product of a catalogue into the right place of a category taxonomy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
taxonomy_app = typer.Typer(help="Inspect a taxonomy file or check catalogue labels against it.", no_args_is_help=True)
app.add_typer(taxonomy_app, name="taxonomy")
messages_app = typer.Typer(help="After-sales message routing: category, sentiment, issue type -> queue.", no_args_is_help=True)
app.add_typer(messages_app, name="messages")
search_app = typer.Typer(help="Category-aware product search: full text (SQLite FTS5) + embeddings + category boost.",
                         no_args_is_help=True)
app.add_typer(search_app, name="search")
users_app = typer.Typer(help="Shopper profiles and recommendations from behaviour events (view/fav/cart/buy).",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")
review_app = typer.Typer(help="The service's review queue and feedback store (a SQLite file).", no_args_is_help=True)
app.add_typer(review_app, name="review")

console = Console(stderr=True)
out = Console()
_state: dict[str, Any] = {"debug": False}
logger = logging.getLogger("taxonomist.cli")


class CliError(TaxonomistError):
    """A usage error found by the CLI itself."""


# -- shared options -----------------------------------------------------------------------------------------
MapOpt = Annotated[list[str] | None, typer.Option("--map", help="FIELD=COLUMN, e.g. --map title=productDisplayName (repeatable).")]
LabelColsOpt = Annotated[str | None, typer.Option("--label-columns", help="Build the path from these columns, top first: a,b,c.")]
SepOpt = Annotated[str, typer.Option("--sep", help="Path separator in the category column ('>' also matches ' > ').")]
WithOpt = Annotated[list[Path] | None, typer.Option("--with-columns", help="Add the columns of another file, row by row (repeatable).")]
EncOpt = Annotated[str | None, typer.Option("--encoding", help="Force the file encoding (default: detected).")]
DelimOpt = Annotated[str | None, typer.Option("--delimiter", help="Field delimiter of a CSV / TXT / TSV file: one character, or 'tab' (default: sniffed among , ; tab |).")]
NoHeaderOpt = Annotated[bool, typer.Option("--no-header", help="The file has no header row; columns are 0, 1, 2, ...")]
ColumnsOpt = Annotated[str | None, typer.Option("--columns", help="Names for a header-less file: id,title,category.")]
FormatOpt = Annotated[str, typer.Option("--format", help="Taxonomy format: auto, google, shopify, bestbuy, paths.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Reject the catalogue if any row is bad, instead of skipping it.")]


def _probability(value: float | None) -> float | None:
    """An option that is a probability: a number from 0 to 1 (inf, nan and negatives were accepted)."""
    if value is not None and not 0.0 <= value <= 1.0:  # (False for nan too)
        raise typer.BadParameter(f"expected a confidence from 0 to 1, got {value}")
    return value


MinConfOpt = Annotated[float | None, typer.Option(help="Back off to a parent below this confidence.", callback=_probability)]
ImageRootOpt = Annotated[Path | None, typer.Option("--image-root", help="Folder relative image paths resolve against (default: the catalogue's folder); no path may leave it.")]
TrackOpt = Annotated[bool, typer.Option("--track", help="Log parameters, metrics, report and bundle to MLflow.")]
TrackUriOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")]
ExperimentOpt = Annotated[str, typer.Option("--experiment", help="MLflow experiment name.")]
RegisterOpt = Annotated[str | None, typer.Option("--register", help="With --track: register the bundle as a new version of this MLflow model.")]


def _parse_map(items: list[str] | None) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in items or []:
        field, eq, column = item.partition("=")
        if not eq or not field.strip() or not column.strip():
            raise CliError(f"--map expects FIELD=COLUMN (e.g. --map title=productDisplayName), got {item!r}")
        mapping[field.strip()] = column.strip()
    return mapping


def _read(
    path: Path, mapping: list[str] | None, label_columns: str | None, sep: str, with_columns: list[Path] | None,
    encoding: str | None, no_header: bool, columns: str | None, strict: bool, require_labels: bool,
    taxonomy: Any = None, delimiter: str | None = None,
) -> Any:
    from .catalog import read_catalog

    options = _read_options(mapping, label_columns, sep, encoding, no_header, columns, strict, delimiter)
    with _spinner(f"reading {path.name}"):
        cat = read_catalog(path, **options,
                           with_columns=with_columns or (), require_labels=require_labels, taxonomy=taxonomy)
    rep = cat.report
    style = "green" if rep.ok else "yellow"
    console.print(rep.lines()[0], style=style, soft_wrap=True, markup=False, highlight=False)
    for line in rep.lines()[1:]:
        console.print(line, style="yellow", highlight=False, markup=False, soft_wrap=True)
    if len(cat) == 0:
        raise CliError(f"{path.name}: no usable products left after validation (see above)")
    return cat


@contextmanager
def _spinner(text: str) -> Iterator[None]:
    """A spinner on a terminal; elsewhere (CI logs, nohup, a pipe) a line when the work starts and when it ends."""
    if not console.is_terminal:
        start = time.perf_counter()
        console.print(f"{text} ...", highlight=False, markup=False, soft_wrap=True)
        yield
        console.print(f"{text}: done in {time.perf_counter() - start:,.1f} s", highlight=False, markup=False,
                      soft_wrap=True)
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as p:
        p.add_task(text, total=None)
        yield


class _LineProgress:
    """Rich's ``Progress`` interface for a console that is not a terminal: a line per task at most every
    ``every`` seconds and when it completes, instead of a bar that only a terminal can show."""

    def __init__(self, label: str, every: float = 10.0, disable: bool = False) -> None:
        self.label, self.every, self.disable = label, every, disable
        self.tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> _LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def stop(self) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        tid = len(self.tasks)
        now = time.perf_counter()
        self.tasks[tid] = {"total": total, "done": 0.0, "fields": fields, "start": now, "said": now}
        return tid

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def update(self, task: int, advance: float = 0, **fields: Any) -> None:
        t = self.tasks[task]
        t["done"] += advance
        t["fields"].update(fields)
        now = time.perf_counter()
        finished = t["total"] is not None and t["done"] >= t["total"]
        if self.disable or not (finished or now - t["said"] >= self.every):
            return
        t["said"] = now
        of = f" / {t['total']:,.0f}" if t["total"] is not None else ""
        extra = "".join(f", {k} {v}" for k, v in t["fields"].items())
        console.print(f"{self.label}: {t['done']:,.0f}{of}{extra} ({now - t['start']:,.0f} s)", highlight=False,
                      markup=False)


def _progress(label: str, *columns: Any, disable: bool = False) -> Any:
    """A progress bar (label, then ``columns``) on a terminal, progress lines elsewhere."""
    if not console.is_terminal:
        return _LineProgress(label, disable=disable)
    return Progress(TextColumn(label), *columns, console=console, transient=True, disable=disable)


def _metrics_table(ev: Any, title: str) -> Table:
    table = Table(title=title, show_header=False)
    for k, v in ev.summary_rows():
        table.add_row(k, v)
    return table


def _write_predictions(frame: Any, path: Path) -> None:
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        flat = frame.copy()
        for col in ("level_confidence", "alternatives", "explanation"):
            if col in flat.columns:
                flat[col] = [json.dumps(v, ensure_ascii=False) for v in flat[col]]
        flat.to_csv(path, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        raise CliError(f"-o {path}: unsupported output type {suffix!r}; use .csv, .jsonl or .parquet")


@contextmanager
def _tracking(track: bool, uri: str | None, experiment: str, command: str, run_name: str) -> Iterator[Any]:
    """An MLflow :class:`~taxonomist.tracking.Tracker` when ``--track`` is given, else ``None``."""
    if not track:
        yield None
        return
    from .tracking import start_run

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its "creating tables" notes are not for our users
    with start_run(command, tracking_uri=uri, experiment=experiment, run_name=run_name) as tracker:
        yield tracker
    out.print(f"MLflow run {tracker.run_id} (experiment {experiment!r})")


def _track_result(tracker: Any, ev: Any, report: Path | None, title: str, bundle: Path | None = None,
                  register: str | None = None) -> None:
    """Log an evaluation (every metric, the full JSON, the HTML report) and the bundle to an open run."""
    import tempfile

    tracker.log_metrics(ev.metrics)
    tracker.log_dict(ev.metrics, "metrics.json")
    with tempfile.TemporaryDirectory() as tmp:
        html = report if report is not None else ev.write_html(Path(tmp) / "report.html", title=title)
        tracker.log_artifact(html)
    if bundle is not None:
        tracker.log_artifact(bundle, "bundle")
        tracker.log_pyfunc(bundle)
        if register:
            out.print(f"registered as MLflow model {register!r} version {tracker.register_bundle(register)}")


# -- commands -----------------------------------------------------------------------------------------------
DEFAULT_TIER = "ensemble"


def _queue_unsure(frame: Any, result: Any, review_db: Path, below: float, version: str) -> None:
    """Products answered with a leaf confidence under ``below`` go to the review queue (personal data scrubbed,
    a product already pending not queued twice), as the service queues them."""
    from .serving.store import ReviewStore
    from .text import scrub_product

    canonical = ("id", "title", "description", "image", "category", "row")
    attrs = [c for c in frame.columns if c not in canonical]
    items: list[Mapping[str, Any]] = []
    for (_, row), (_, pred) in zip(frame.iterrows(), result.iterrows(), strict=True):
        if float(pred["leaf_confidence"]) >= below:
            continue
        product = scrub_product({"id": str(row["id"]), "title": str(row["title"]),
                                 "description": str(row.get("description", "") or ""),
                                 "attributes": {a: str(row[a]) for a in attrs if str(row[a])}})
        alts = [float(a["confidence"]) for a in pred["alternatives"]]
        margin = alts[0] - alts[1] if len(alts) > 1 else float(pred["leaf_confidence"])
        items.append({"product": product, "prediction": {"category": pred["category"], "leaf": pred["leaf"],
                                                         "leaf_confidence": float(pred["leaf_confidence"])},
                      "category": pred["leaf"], "confidence": float(pred["leaf_confidence"]), "margin": margin,
                      "reason": "low_confidence", "model_version": version})
    store = ReviewStore(review_db)
    try:
        ids = store.enqueue(items)
    finally:
        store.close()
    queued = sum(i is not None for i in ids)
    console.print(f"{queued:,} of {len(result):,} products answered below {below:.2f} queued for review in {review_db} "
                  "(review them with taxonomist serve ... --review-db, then taxonomist retrain)", highlight=False)


def _fill(catalog: Path | None, cat: Any, result: Any, fill: Path) -> None:
    """``--fill``: the catalogue file written back in its own format with the predicted categories (``cat``: the
    Catalog read from it, ``None`` for --text)."""
    if catalog is None or cat is None:
        raise CliError("--fill writes a catalogue file back with its categories: give the catalogue, not --text")
    if cat.report.issue("malformed_line").count:  # its rows would not line up with the file's records
        raise CliError(f"--fill: {catalog.name} has malformed lines (listed above); fix them before writing the file back")
    from .writeback import write_back

    column = write_back(catalog, cat.frame["row"].tolist(), result["category"].fillna("").astype(str).tolist(), fill)
    filled = int((result["category"].fillna("") != "").sum())
    console.print(f"{catalog.name} written to {fill} with {column!r} filled for {filled:,} of {len(result):,} products "
                  "(a product backed off to no category keeps its cell)", highlight=False)


def _predict_batches(clf: Any, frame: Any, batch_size: int, model: Path | None = None, **kwargs: Any) -> Any:
    """:func:`~taxonomist.batch.predict_batch` over ``frame`` in batches (bounded memory: n × categories per
    batch), with a progress bar."""
    import pandas as pd

    from .batch.work import model_version, predict_batch

    if batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {batch_size}")
    version = model_version(model) if model is not None else ""
    parts = []
    with _progress("classifying", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   disable=len(frame) <= batch_size) as progress:
        task = progress.add_task("predict", total=len(frame))
        for start in range(0, len(frame), batch_size):
            chunk = frame.iloc[start:start + batch_size]
            parts.append(predict_batch(clf, chunk, model_version=version, **kwargs))
            progress.advance(task, len(chunk))
    return pd.concat(parts, ignore_index=True)


def _run_batch_job(kind: str, model: str, source: Path, output: Path, engine: str, num_workers: int | None,
                   address: str | None, read: dict[str, Any], batch_size: int, overwrite: bool, **kwargs: Any) -> None:
    """A resumable sharded job (``taxonomist predict/embed`` into a folder), with a progress bar per shard."""
    from .batch import list_shards, run_job

    n = len(list_shards(source))
    with _progress(f"{kind} ({engine})", BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rows]} rows"),
                   TimeElapsedColumn()) as progress:
        task = progress.add_task(kind, total=n, rows="0")
        rows = [0]

        def on_shard(summary: dict[str, Any]) -> None:
            rows[0] += int(summary["rows"])
            progress.update(task, advance=1, rows=f"{rows[0]:,}")

        result = run_job(kind, model, source, output, engine=engine, num_workers=num_workers, address=address,
                         read=read, batch_size=batch_size, overwrite=overwrite, on_shard=on_shard, **kwargs)
        progress.update(task, completed=result.n_done_before + result.n_processed + len(result.failures))
    for item in result.issues:
        for line in item["lines"]:
            console.print(f"{Path(item['shard']).name}: {line.strip()}", style="yellow", markup=False, highlight=False,
                          soft_wrap=True)
    if result.n_done_before:
        out.print(f"resumed: {result.n_done_before} of {result.n_shards} shards were already done")
    out.print(f"{result.rows:,} rows from {result.n_processed} shards written to {output} in {result.seconds:.1f} s "
              f"({result.rows_per_second:,.0f} rows/s); {result.skipped_rows:,} bad rows skipped")
    if result.failures:
        for f in result.failures:
            console.print(f"failed: {f['shard']}: {f['error']}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise CliError(f"{len(result.failures)} of {result.n_shards} shards failed (listed above); fix them and run the "
                       "same command again: finished shards are kept")


def _read_options(map_: list[str] | None, label_columns: str | None, sep: str, encoding: str | None, no_header: bool,
                  columns: str | None, strict: bool, delimiter: str | None = None) -> dict[str, Any]:
    """``read_catalog`` keyword arguments from the shared reading options (for jobs that read in workers)."""
    if delimiter is not None:
        delimiter = "\t" if delimiter.strip().lower() in ("tab", "\\t") else delimiter
        if len(delimiter) != 1:
            raise CliError(f"--delimiter: expected one character (, ; | ...) or 'tab', got {delimiter!r}")
    return {"delimiter": delimiter, "mapping": _parse_map(map_),
            "label_columns": [c.strip() for c in label_columns.split(",") if c.strip()] if label_columns else None,
            "sep": sep, "encoding": encoding, "header": not no_header,
            "columns": [c.strip() for c in columns.split(",")] if columns else None, "strict": strict}


def _version(value: bool) -> None:
    if value:
        out.print(f"taxonomist {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", callback=_version,
                                          is_eager=True)] = False,
) -> None:
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    root = logging.getLogger("taxonomist")
    root.handlers[:] = [RichHandler(console=console, show_path=False, show_time=False)]
    root.setLevel(level)
    root.propagate = False
    # the catalogue report is printed by the CLI itself; keep the library's copy of it for -v
    logging.getLogger("taxonomist.catalog").setLevel(logging.INFO if verbose else logging.ERROR)


@app.command()
def train(
    catalog: Annotated[Path, typer.Argument(help="Labelled catalogue: CSV, TSV, JSONL or Parquet.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model bundle folder to write.")],
    test_size: Annotated[float, typer.Option(help="Share held out (grouped by title) for evaluation; 0 trains on all.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    taxonomy: Annotated[Path | None, typer.Option(help="Taxonomy file; labels not in it are skipped.")] = None,
    min_confidence: MinConfOpt = None,
    c: Annotated[float, typer.Option("--C", help="Regularisation of the sparse tier.")] = 0.5,
    report: Annotated[Path | None, typer.Option(help="Write the held-out HTML report here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the held-out metrics as JSON.")] = None,
    map_: MapOpt = None, label_columns: LabelColsOpt = None, sep: SepOpt = " > ", with_columns: WithOpt = None,
    encoding: EncOpt = None, delimiter: DelimOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
    tier: Annotated[str, typer.Option(help="ensemble (default: sparse + neighbours + zero-shot prior, encoder only where sparse is unsure), sparse (fastest, no transformer), embed, or finetune (transformer trained end to end + sparse).")] = DEFAULT_TIER,
    encoder: Annotated[str, typer.Option(help="Text encoder of the embedding tiers: auto, minilm-en, e5-multilingual, or a local model folder / .onnx file.")] = "auto",
    image_encoder: Annotated[str | None, typer.Option("--image-encoder", help="Also learn from product photos (the image column): effnet-lite0, effnet-lite2 or a local .onnx file; needs an embedding tier.")] = None,
    fusion: Annotated[str, typer.Option(help="How photos join the text: late (image head pooled with the text members) or early (one head on text + image features).")] = "late",
    image_views: Annotated[int, typer.Option("--image-views", min=1, max=4, help="Views of each photo averaged (test-time augmentation): 1 as it is, 2 + mirrored, 3 + centre crop, 4 + that mirrored; each view is one more pass of the image network.")] = 1,
    image_root: ImageRootOpt = None,
    track: TrackOpt = False, tracking_uri: TrackUriOpt = None, experiment: ExperimentOpt = "taxonomist",
    register: RegisterOpt = None,
    pseudo_queries: Annotated[bool, typer.Option("--pseudo-queries", help="Also train on query-shaped parts of the titles (last words, title without brand), for search-query classification.")] = False,
    refit: Annotated[bool, typer.Option(help="After the held-out evaluation, fit the saved model on every product (--no-refit saves the evaluated model, trained without the held-out part).")] = True,
    n_jobs: Annotated[int | None, typer.Option("--n-jobs", min=1, help="Worker processes of the sparse member's fits (default: all cores, at most 2; each holds a copy of the features).")] = None,
    hierarchy: Annotated[str, typer.Option(help="How the sparse member learns the taxonomy: flat (one-vs-rest over all leaves), two-level (top-level categories, then the leaves within each), top-down (one problem per inner node: each product against its siblings only), or auto (two-level for large catalogues, else flat).")] = "auto",
    engine: Annotated[str, typer.Option(help="Where the sparse member's fits run: local (worker processes) or ray (Ray tasks on the cluster in RAY_ADDRESS, or a local Ray; the same model).")] = "local",
    checkpoint: Annotated[Path | None, typer.Option(help="Folder (shared storage on a cluster) keeping the finished parts of the sparse member's fit: the same command resumes an interrupted training.")] = None,
) -> None:
    """Train a model bundle on a labelled catalogue (held-out evaluation included, then refitted on all rows)."""
    if hierarchy not in ("flat", "two-level", "top-down", "auto"):
        raise CliError(f"--hierarchy must be flat, two-level, top-down or auto, got {hierarchy!r}")
    if engine not in ("local", "ray"):
        raise CliError(f"--engine must be local or ray, got {engine!r}")
    if register and not track:
        raise CliError("--register needs --track (the bundle is registered from its MLflow run)")
    if tier not in ("sparse", "ensemble", "embed", "finetune"):
        raise CliError(f"--tier must be sparse, ensemble, embed or finetune, got {tier!r} (for no training data: taxonomist classify)")
    from .catalog import split_catalog
    from .classifier import TaxonomyClassifier
    from .evaluation import evaluate
    from .taxonomy import Taxonomy

    tax = Taxonomy.load(taxonomy) if taxonomy else None
    cat = _read(catalog, map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, True, tax, delimiter=delimiter)
    if test_size > 0:
        with _spinner("splitting (grouped by title, stratified by category)"):
            train_cat, test_cat = split_catalog(cat, test_size=test_size, seed=seed)
        console.print(f"train {len(train_cat):,} / held-out {len(test_cat):,} products, {cat.frame['category'].nunique()} categories")
    else:
        train_cat, test_cat = cat, None
    if image_encoder and tier == "sparse":
        raise CliError("--image-encoder needs an embedding tier: add --tier ensemble")
    if pseudo_queries:
        from .apps.query import with_pseudo_queries

        n = len(train_cat)
        train_cat = with_pseudo_queries(train_cat, seed=seed)
        console.print(f"+ {len(train_cat) - n:,} pseudo-queries from the training titles")
        if test_cat is not None and refit:
            cat = with_pseudo_queries(cat, seed=seed)
    clf = TaxonomyClassifier(tier=tier, min_confidence=min_confidence, C=c, random_state=seed, n_jobs=n_jobs,  # type: ignore[arg-type]
                             hierarchy=hierarchy, engine=engine,  # type: ignore[arg-type]
                             checkpoint=str(checkpoint) if checkpoint else None,
                             encoder=encoder, image_encoder=image_encoder, fusion=fusion,  # type: ignore[arg-type]
                             image_views=image_views, image_root=str(image_root) if image_root else None)
    with _tracking(track, tracking_uri, experiment, "train", f"train {catalog.name} ({tier})") as tracker:
        with _spinner(f"training the {tier} tier on {len(train_cat):,} products"):
            clf.fit(train_cat, taxonomy=tax)
        tree = getattr(clf.sparse_member, "tree_", None)
        if tree is not None:
            console.print(f"sparse member: {clf.hierarchy_}, {int((tree.sizes > 1).sum()):,} local problems over "
                          f"{len(clf.classes_):,} leaves", highlight=False)
        if image_encoder:
            st = clf.image_stats_
            console.print(f"photos: {st['with_image']:,} used, {st['without_image']:,} products without one, "
                          f"{st['unusable_image']:,} unusable (those products learn from their text)",
                          style="yellow" if st["unusable_image"] else None, highlight=False)
        metrics: dict[str, Any] = {}
        ev = None
        if test_cat is not None:
            with _spinner("evaluating on the held-out products"):
                ev = evaluate(clf, test_cat)
            metrics = {**ev.metrics, "split": {"test_size": test_size, "seed": seed, "n_test": len(test_cat),
                                               "n_train": len(train_cat), "refit": refit}}
            out.print(_metrics_table(ev, f"held-out evaluation ({len(test_cat):,} products)"))
            if min_confidence is None:  # back-off on by default, at the held-out 90 %-precision threshold
                _default_back_off(clf, ev)
            note = (f" — the saved model was then refitted on all {len(cat):,} products" if refit else "")
            if report:
                ev.write_html(report, title=f"taxonomist: {catalog.name} (held-out{note})")
                out.print(f"report: {report}")
            if json_out:
                ev.to_json(json_out)
        reference = _drift_reference(clf, test_cat, train_cat)
        if test_cat is not None and refit:
            clf = _refit(clf, cat, tax)
        clf.drift_reference_ = reference
        _say_stacking(clf)
        path = clf.save(output, metrics=metrics)
        out.print(f"model saved to {path}")
        if tracker is not None:
            tracker.log_params({"catalog": catalog.name, "test_size": test_size, "seed": seed,
                                "taxonomy": taxonomy.name if taxonomy else "", **clf.get_params()})
            tracker.set_tags({"data.fingerprint": clf.fingerprint_, "data.rows": len(train_cat),
                              "model.tier": tier, "model.classes": len(clf.classes_)})
            if ev is not None:
                _track_result(tracker, ev, report, f"taxonomist: {catalog.name} (held-out)", path, register)
            else:
                tracker.log_artifact(path, "bundle")
                tracker.log_pyfunc(path)
                if register:
                    out.print(f"registered as MLflow model {register!r} version {tracker.register_bundle(register)}")


def _drift_reference(clf: Any, test_cat: Any, train_cat: Any) -> Any:
    """What the model's answers look like on products it did not train on (the held-out split; without one, a
    sample of the training products, whose confidences are optimistic), kept in the bundle for ``serve`` to
    compare served predictions with (GET /v1/monitor)."""
    from .monitoring import DriftReference, brands

    if getattr(clf, "dp_epsilon", None) is not None:  # a private model keeps nothing computed from the rows
        return None
    source = "held-out" if test_cat is not None else "training sample"
    what = "the held-out products" if test_cat is not None else "a sample of the training products"
    with _spinner(f"drift reference: the model's answers on {what}"):
        return DriftReference.of(clf, (test_cat if test_cat is not None else train_cat).frame.to_dict("records"),
                                 source=source, brands=brands(train_cat.frame.to_dict("records")))


def _default_back_off(clf: Any, ev: Any) -> None:
    """Set the model's back-off threshold to the held-out confidence above which leaves are 90 % precise, and
    say so; ``--min-confidence`` overrides it (0: never back off)."""
    threshold = float(ev.metrics["threshold_at_90_precision"])
    if threshold > 1.0:
        console.print("back-off: no confidence reaches 90 % precision on the held-out products, so the model always "
                      "answers with a leaf; set one with --min-confidence", style="yellow", highlight=False)
        return
    clf.min_confidence = threshold
    ev.metrics["back_off_threshold"] = threshold  # shown by the report; the scores above are without back-off
    console.print(f"back-off: answers back off to the parent below confidence {threshold:.2f} (held-out: leaves at "
                  f"or above it are 90 % precise, {ev.metrics['coverage_at_90_precision']:.0%} of products); "
                  "change it with --min-confidence (0: never)", highlight=False)


def _refit(clf: Any, cat: Any, tax: Any, what: str = "the held-out") -> Any:
    """The same configuration fitted on every product: the held-out figures were measured, now no label is lost."""
    from sklearn.base import clone

    with _spinner(f"refitting on all {len(cat):,} products ({what} products included)"):
        full = clone(clf).fit(cat, taxonomy=tax)
    console.print(f"refitted on all {len(cat):,} products; the stored metrics are those of the evaluation above "
                  "(the saved model saw more data)", highlight=False)
    return full


def _say_stacking(clf: Any) -> None:
    """What cross-validation decided about the ensemble's members (one line)."""
    stack = getattr(clf, "stacking_", None)
    if not stack:
        return
    console.print(stack["summary"], highlight=False, soft_wrap=True)


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model bundle folder.")],
    catalog: Annotated[Path, typer.Argument(help="Labelled catalogue to evaluate on.")],
    report: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics as JSON here.")] = None,
    min_confidence: Annotated[float | None, typer.Option(help="Back-off threshold for hierarchical scores.", callback=_probability)] = None,
    map_: MapOpt = None, label_columns: LabelColsOpt = None, sep: SepOpt = " > ", with_columns: WithOpt = None,
    encoding: EncOpt = None, delimiter: DelimOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
    image_root: ImageRootOpt = None,
    track: TrackOpt = False, tracking_uri: TrackUriOpt = None, experiment: ExperimentOpt = "taxonomist",
) -> None:
    """Evaluate a model bundle on a labelled catalogue (text, image and fused scores when it uses photos)."""
    from .classifier import load
    from .evaluation import evaluate as run_evaluation
    from .products import fingerprint

    clf = load(model)
    if image_root:
        clf.image_root = str(image_root)
    cat = _read(catalog, map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, True, delimiter=delimiter)
    with _spinner(f"evaluating on {len(cat):,} products"):
        ev = run_evaluation(clf, cat, min_confidence=min_confidence)
    out.print(_metrics_table(ev, f"evaluation on {catalog.name}"))
    if ev.metrics.get("seen_in_training_share", 0) > 0.05:
        console.print(f"[yellow]warning: {ev.metrics['seen_in_training_share']:.1%} of these titles were in the training data; "
                      "the scores are inflated[/yellow]")
    if json_out:
        ev.to_json(json_out)
        out.print(f"metrics: {json_out}")
    if report:
        ev.write_html(report, title=f"taxonomist: {model.name} on {catalog.name}")
        out.print(f"report: {report}")
    with _tracking(track, tracking_uri, experiment, "evaluate", f"evaluate {model.name} on {catalog.name}") as tracker:
        if tracker is not None:
            tracker.log_params({"model": str(model), "catalog": catalog.name, "min_confidence": min_confidence,
                                "tier": clf.tier})
            tracker.set_tags({"data.fingerprint": fingerprint(cat.titles, cat.frame["category"]),
                              "data.rows": len(cat), "model.fingerprint": clf.fingerprint_})
            _track_result(tracker, ev, report, f"taxonomist: {model.name} on {catalog.name}")


EngineOpt = Annotated[str, typer.Option(help="local (process pool) or ray (Ray Data actor pool); output is then a folder of Parquet parts.")]
WorkersOpt = Annotated[int | None, typer.Option("--num-workers", help="Worker processes / Ray actors (default: CPU count).")]
AddressOpt = Annotated[str | None, typer.Option(help="Ray cluster address (e.g. auto); default: a local Ray for this job.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing job output folder instead of resuming it.")]
_FILE_OUTPUTS = (".csv", ".jsonl", ".ndjson", ".parquet", ".pq")


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Model bundle folder.")],
    catalog: Annotated[Path | None, typer.Argument(help="Catalogue to classify (labels not needed): a file, or a folder of shards.")] = None,
    text: Annotated[list[str] | None, typer.Option("--text", help="Classify this title instead (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write .csv, .jsonl or .parquet; - for JSON Lines on stdout; or a folder (a resumable sharded job).")] = None,
    fill: Annotated[Path | None, typer.Option("--fill", help="Write the catalogue back in its own format (Shopify CSV, Merchant Center XML/TSV, WooCommerce CSV, CSV) with the predicted category filled in, ready to upload again.")] = None,
    top_k: Annotated[int, typer.Option(help="Alternatives per product.")] = 3,
    min_confidence: MinConfOpt = None,
    explain: Annotated[bool, typer.Option(help="Show the features behind each prediction.")] = False,
    batch_size: Annotated[int, typer.Option(help="Products per batch.")] = 2048,
    engine: EngineOpt = "local", num_workers: WorkersOpt = None, address: AddressOpt = None, overwrite: OverwriteOpt = False,
    image_root: ImageRootOpt = None,
    map_: MapOpt = None, label_columns: LabelColsOpt = None, sep: SepOpt = " > ", with_columns: WithOpt = None,
    encoding: EncOpt = None, delimiter: DelimOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
) -> None:
    """Classify a catalogue, a folder of shards or --text titles with a model bundle.

    A folder as input, a folder as -o (no .csv/.jsonl/.parquet suffix) or --engine ray runs a batch job: one
    Parquet part per input shard plus _manifest.json; the same command run again resumes it."""
    import pandas as pd

    from .classifier import load

    if (catalog is None) == (not text):
        raise CliError("give either a CATALOG file or one or more --text titles (not both, not neither)")
    if top_k < 1:
        raise CliError(f"--top-k must be at least 1, got {top_k}")
    to_stdout = output is not None and str(output) == "-"
    job = catalog is not None and not to_stdout and (engine != "local" or catalog.is_dir()
                                                     or (output is not None and output.suffix.lower() not in _FILE_OUTPUTS))
    if job:
        assert catalog is not None
        if output is None or output.suffix.lower() in _FILE_OUTPUTS:
            raise CliError(f"a batch job (folder input or --engine {engine}) writes a folder of Parquet parts: give "
                           "-o a folder name without a file suffix")
        if explain or with_columns:
            raise CliError("--explain and --with-columns work on a single catalogue file with a file -o, not in batch jobs")
        _run_batch_job("predict", str(model), catalog, output, engine, num_workers, address,
                       _read_options(map_, label_columns, sep, encoding, no_header, columns, strict, delimiter), batch_size,
                       overwrite, top_k=top_k, min_confidence=min_confidence,
                       image_root=str(image_root.resolve()) if image_root else None)
        return
    clf = load(model)
    cat = None
    if text:
        frame = pd.DataFrame({"id": [str(i + 1) for i in range(len(text))], "title": text})
    else:
        assert catalog is not None
        cat = _read(catalog, map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, False, delimiter=delimiter)
        frame = cat.frame
        clf.image_root = str(image_root or cat.base_dir)
    result = _predict_batches(clf, frame, batch_size, model, top_k=top_k, min_confidence=min_confidence, explain=explain)
    if fill is not None:
        _fill(catalog, cat, result, fill)
    if to_stdout:  # JSON Lines and nothing else on stdout (the reading report went to stderr)
        sys.stdout.write(result.to_json(orient="records", lines=True, force_ascii=False))
        sys.stdout.flush()
        return
    if output:
        _write_predictions(result, output)
        out.print(f"{len(result):,} predictions written to {output}")
        return
    table = Table(title=f"predictions ({min(len(result), 25)} of {len(result):,})")
    for col in ("id", "title", "category", "confidence", "backed_off"):
        table.add_column(col)
    if explain:
        table.add_column("because of")
    for rec in result.head(25).to_dict(orient="records"):
        row = [str(rec["id"]), str(rec["title"])[:60], str(rec["category"]) or "(unclassified)",
               f"{float(rec['confidence']):.3f}", "yes" if rec["backed_off"] else ""]
        if explain:
            why = ", ".join(str(e["feature"]) for e in rec["explanation"][:4])
            near = rec.get("neighbours") or []
            if near:
                why += (" | like: " if why else "like: ") + "; ".join(str(n["title"])[:40] for n in near[:2])
            row.append(why)
        table.add_row(*row)
    out.print(table)


@app.command()
def embed(
    model: Annotated[str, typer.Argument(help="A bundle with a text encoder, an encoder preset (minilm-en, e5-multilingual) or a local model folder.")],
    catalog: Annotated[Path, typer.Argument(help="Catalogue file or folder of shards.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder: Parquet parts (id, embedding, model_version) + _manifest.json.")],
    batch_size: Annotated[int, typer.Option(help="Products per batch.")] = 1024,
    engine: EngineOpt = "local", num_workers: WorkersOpt = None, address: AddressOpt = None, overwrite: OverwriteOpt = False,
    map_: MapOpt = None, label_columns: LabelColsOpt = None, sep: SepOpt = " > ",
    encoding: EncOpt = None, delimiter: DelimOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
) -> None:
    """Embed the titles of a catalogue (L2-normalised vectors) as a resumable batch job."""
    if output.suffix.lower() in _FILE_OUTPUTS:
        raise CliError(f"-o {output}: embed writes a folder of Parquet parts; give a folder name without a file suffix")
    _run_batch_job("embed", model, catalog, output, engine, num_workers, address,
                   _read_options(map_, label_columns, sep, encoding, no_header, columns, strict, delimiter), batch_size, overwrite)


@taxonomy_app.command("show")
def taxonomy_show(
    file: Annotated[Path, typer.Argument(help="Google, Shopify, Best Buy or plain-paths taxonomy file.")],
    depth: Annotated[int, typer.Option(help="Show nodes down to this depth.")] = 2,
    search: Annotated[str | None, typer.Option(help="Only nodes whose path contains this text.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many nodes.")] = 60,
    fmt: FormatOpt = "auto",
) -> None:
    """Summarise a taxonomy and print its top levels (or the nodes matching --search)."""
    from .taxonomy import Taxonomy, format_path

    tax = Taxonomy.load(file, format=fmt)  # type: ignore[arg-type]  # load() validates it
    out.print(f"{file.name}: {len(tax):,} categories, {len(tax.leaves()):,} leaves, depth {tax.max_depth}, "
              f"{len(tax.children()):,} top-level")
    nodes = tax.search(search, limit=limit) if search else [p for p in tax if len(p) <= depth][:limit]
    for p in nodes:
        node_id = tax.id_of(p)
        prefix = f"[dim]{node_id}[/dim] " if node_id else ""
        out.print(("  " * (len(p) - 1) if not search else "") + prefix + (p[-1] if not search else format_path(p)), highlight=False)


@taxonomy_app.command("check")
def taxonomy_check(
    file: Annotated[Path, typer.Argument(help="Taxonomy file.")],
    catalog: Annotated[Path, typer.Argument(help="Catalogue whose labels to check.")],
    map_: MapOpt = None, label_columns: LabelColsOpt = None, sep: SepOpt = " > ", with_columns: WithOpt = None,
    encoding: EncOpt = None, delimiter: DelimOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, fmt: FormatOpt = "auto",
) -> None:
    """Report catalogue labels that are not in the taxonomy (exit code 1 when there are any)."""
    from .taxonomy import Taxonomy

    tax = Taxonomy.load(file, format=fmt)  # type: ignore[arg-type]  # load() validates it
    cat = _read(catalog, map_, label_columns, sep, with_columns, encoding, no_header, columns, False, True, delimiter=delimiter)
    unknown = tax.check(cat.frame["category"])
    if not unknown:
        out.print(f"all {len(cat):,} labels are categories of {file.name}")
        return
    n = sum(unknown.values())
    table = Table(title=f"{len(unknown)} unknown categories ({n:,} of {len(cat):,} products)")
    table.add_column("category")
    table.add_column("products", justify="right")
    table.add_column("closest in taxonomy")
    for path, count in list(unknown.items())[:50]:
        from .taxonomy import format_path, parse_path

        close = tax.search(parse_path(path)[-1], limit=1)
        table.add_row(path, str(count), format_path(close[0]) if close else "")
    out.print(table)
    raise typer.Exit(1)


@app.command()
def tune(
    catalog: Annotated[Path, typer.Argument(help="Labelled catalogue to tune on.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle folder for the best model.")],
    trials: Annotated[int, typer.Option("--trials", help="Trials to run in this call.")] = 20,
    timeout: Annotated[float | None, typer.Option(help="Start no new trial after this many seconds.")] = None,
    metric: Annotated[str, typer.Option(help="macro_f1, accuracy, weighted_f1, hierarchical_f1 or top_level_accuracy.")] = "macro_f1",
    storage: Annotated[str | None, typer.Option(help="Optuna storage, e.g. sqlite:///tune.db (makes the search resumable).")] = None,
    study: Annotated[str, typer.Option(help="Study name inside the storage.")] = "taxonomist",
    seed: Annotated[int, typer.Option(help="Seed of the split and the sampler.")] = 0,
    valid_size: Annotated[float, typer.Option(help="Share of title groups held out for scoring.")] = 0.2,
    tier: Annotated[str, typer.Option(help="sparse, ensemble or embed (these also search the prior shift and neighbours per vote).")] = "sparse",
    encoder: Annotated[str, typer.Option(help="Text encoder of the embedding tiers.")] = "auto",
    map_: MapOpt = None, label_columns: LabelColsOpt = None, sep: SepOpt = " > ", with_columns: WithOpt = None,
    encoding: EncOpt = None, delimiter: DelimOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
    track: TrackOpt = False, tracking_uri: TrackUriOpt = None, experiment: ExperimentOpt = "taxonomist",
    register: RegisterOpt = None,
    refit: Annotated[bool, typer.Option(help="After evaluating the best configuration, fit the saved model on every product (--no-refit: on the training part only).")] = True,
) -> None:
    """Search hyper-parameters with Optuna, then train, evaluate and save the best model (refitted on all rows)."""
    from .evaluation import evaluate as run_evaluation
    from .tuning import tune as run_tuning

    if register and not track:
        raise CliError("--register needs --track (the bundle is registered from its MLflow run)")
    cat = _read(catalog, map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, True, delimiter=delimiter)
    with _tracking(track, tracking_uri, experiment, "tune", f"tune {catalog.name}") as tracker, \
            _progress("tuning", BarColumn(), MofNCompleteColumn(), TextColumn("best {task.fields[best]}"),
                      TimeElapsedColumn()) as progress:
        task = progress.add_task("tune", total=trials, best="-")

        def on_trial(st: Any, trial: Any) -> None:
            # pruned trials keep their half-data score: only complete ones count as "best"
            done = [t.value for t in st.trials if t.state.name == "COMPLETE"]
            progress.update(task, advance=1, best=f"{max(done):.4f}" if done else "-")
            if tracker is not None:  # one nested MLflow run per trial
                child = tracker.child(f"trial {trial.number}")
                child.log_params(trial.params)
                child.set_tags({"optuna.state": trial.state.name.lower(), "optuna.trial": trial.number})
                if trial.value is not None:
                    child.log_metrics({f"validation_{metric}": trial.value})
                child.end("FINISHED" if trial.state.name == "COMPLETE" else "KILLED")

        result = run_tuning(cat, n_trials=trials, timeout=timeout, metric=metric, valid_size=valid_size, seed=seed,
                            storage=storage, study_name=study, callbacks=[on_trial], tier=tier, encoder=encoder)
        progress.stop()
        table = Table(title=f"best trials by validation {metric} ({result.n_trials} trials, {result.n_pruned} pruned)")
        knobs = list(result.best_params)
        for col in ("trial", metric, *knobs, "seconds"):
            table.add_column(col)
        # pruned trials carry their half-data score; rank complete trials only
        done = sorted((t for t in result.trials if t["state"] == "complete"), key=lambda t: -t["value"])
        for t in done[:8]:
            table.add_row(str(t["number"]), f"{t['value']:.4f}",
                          *(f"{t[k]:.3f}" if isinstance(t.get(k), float) else str(t.get(k)) for k in knobs),
                          f"{t['seconds']:.1f}" if t["seconds"] else "")
        out.print(table)
        default = f"{result.default_score:.4f}" if result.default_score is not None else "n/a"
        verdict = ("" if result.default_score is None else "  -- tuning beat the defaults"
                   if result.best_score > result.default_score else "  -- the defaults were already the best found")
        out.print(f"validation {metric}: default {default} → tuned {result.best_score:.4f}{verdict}  (best: {result.best_params})")
        console.print("note: the search selected on this validation split, so the tuned score is optimistic; "
                      "check it on held-out products with: taxonomist evaluate", style="yellow", soft_wrap=True)
        train_cat, valid_cat = result.train, result.valid
        assert train_cat is not None and valid_cat is not None
        with _spinner("training the best configuration"):
            clf = result.model(random_state=seed).fit(train_cat)
            ev = run_evaluation(clf, valid_cat)
        out.print(_metrics_table(ev, f"tuned model on the validation split ({len(valid_cat):,} products)"))
        _default_back_off(clf, ev)
        if refit:
            clf = _refit(clf, cat, None, "the validation")
        path = clf.save(output, metrics={**ev.metrics, "tuning": result.to_dict(),
                                         "split": {"n_train": len(train_cat), "n_test": len(valid_cat), "refit": refit}})
        out.print(f"model saved to {path}")
        if tracker is not None:
            tracker.log_params({"catalog": catalog.name, "tier": tier, "trials": trials, "metric": metric, "seed": seed,
                                "valid_size": valid_size, "storage": storage or "", "study": study,
                                **{f"best.{k}": v for k, v in result.best_params.items()}})
            tracker.log_metrics({f"default_{metric}": result.default_score, f"tuned_{metric}": result.best_score,
                                 "n_trials": result.n_trials, "n_pruned": result.n_pruned})
            tracker.set_tags({"data.fingerprint": clf.fingerprint_, "data.rows": len(train_cat)})
            tracker.log_dict(result.trials, "trials.json")
            _track_result(tracker, ev, None, f"taxonomist: tuned on {catalog.name}", path, register)


@app.command("map-taxonomy")
def map_taxonomy(
    source: Annotated[Path, typer.Argument(help="Your taxonomy (plain paths, Google, Shopify or Best Buy file).")],
    target: Annotated[Path, typer.Argument(help="The taxonomy to map into (e.g. Google's taxonomy-with-ids file).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the crosswalk as CSV.")] = None,
    catalog: Annotated[Path | None, typer.Option(help="Products labelled in YOUR taxonomy: where they land in the target decides, when they agree.")] = None,
    encoder: Annotated[str, typer.Option(help="minilm-en, e5-multilingual (Chinese names), or a local model.")] = "minilm-en",
    top_k: Annotated[int, typer.Option(help="Alternatives by name per category.", min=1, max=20)] = 3,
) -> None:
    """Propose a crosswalk from your taxonomy into another one (e.g. Google's, for Merchant Center feeds): by the
    categories' names and, with --catalog, by where your labelled products land in it."""
    import csv

    from .classifier import TaxonomyClassifier
    from .models.zeroshot import crosswalk
    from .taxonomy import Taxonomy

    src, tgt = Taxonomy.load(source), Taxonomy.load(target)
    console.print(f"embedding {len(src.leaves()):,} + {len(tgt.leaves()):,} categories (cached after the first run)",
                  highlight=False)
    model = TaxonomyClassifier.from_taxonomy(tgt, encoder=encoder) if catalog is not None else None
    cat = _read(catalog, None, None, " > ", None, None, False, None, False, True) if catalog is not None else None
    if model is not None:
        enc = model.encoder_
    else:
        from .encoders.transformer import load_text_encoder

        enc = load_text_encoder(encoder)
    rows = crosswalk(src, tgt, enc, top_k=top_k, catalog=cat, target_model=model)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["source", "target", "by", "name_similarity", "products", "product_share", "alternatives"])
            for r in rows:
                w.writerow([r["source"], r["target"], r["by"], r["name_similarity"], r["products"],
                            "" if r["product_share"] is None else r["product_share"],
                            " | ".join(f"{t} ({v:.2f})" for t, v in r["alternatives"])])
        out.print(f"crosswalk of {len(rows):,} categories written to {output}")
        return
    table = Table(title=f"{source.name} → {target.name} ({len(rows):,} categories)")
    for col in ("your category", "proposed", "by", "similarity / share"):
        table.add_column(col)
    for r in rows[:50]:
        how = f"{r['product_share']:.0%} of {r['products']}" if r["by"] == "products" else f"{r['name_similarity']:.2f}"
        table.add_row(r["source"], r["target"], r["by"], how)
    out.print(table)


@app.command()
def classify(
    catalog: Annotated[Path | None, typer.Argument(help="Catalogue to classify (no labels needed).")] = None,
    taxonomy: Annotated[Path | None, typer.Option(help="Taxonomy file (Google, Shopify, Best Buy, plain paths).")] = None,
    text: Annotated[list[str] | None, typer.Option("--text", help="Classify this title instead (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write .csv, .jsonl or .parquet.")] = None,
    fill: Annotated[Path | None, typer.Option("--fill", help="Write the catalogue back in its own format (Shopify CSV, Merchant Center XML/TSV, WooCommerce CSV, CSV) with the category filled in, ready to upload again.")] = None,
    save: Annotated[Path | None, typer.Option(help="Also save the zero-shot model as a bundle here.")] = None,
    review_db: Annotated[Path | None, typer.Option("--review-db", help="Queue the products answered below --review-below for people to review (the service's review database; review them at /review, then taxonomist retrain).")] = None,
    review_below: Annotated[float, typer.Option(help="With --review-db: the leaf confidence under which a product is queued.", callback=_probability)] = 0.9,
    encoder: Annotated[str, typer.Option(help="auto (e5-multilingual for CJK text), minilm-en, e5-multilingual, or a local model.")] = "auto",
    tax_format: FormatOpt = "auto",
    top_k: Annotated[int, typer.Option(help="Alternatives per product.")] = 3,
    min_confidence: MinConfOpt = None,
    batch_size: Annotated[int, typer.Option(help="Products per batch.")] = 1024,
    map_: MapOpt = None, label_columns: LabelColsOpt = None, sep: SepOpt = " > ", with_columns: WithOpt = None,
    encoding: EncOpt = None, delimiter: DelimOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
) -> None:
    """Zero-shot: classify products into a taxonomy from its category names alone, with no training data."""
    import pandas as pd

    from .classifier import TaxonomyClassifier
    from .taxonomy import Taxonomy

    if taxonomy is None:
        raise CliError("give the taxonomy to classify into: --taxonomy FILE (e.g. Google's taxonomy-with-ids.en-US.txt)")
    if (catalog is None) == (not text):
        raise CliError("give either a CATALOG file or one or more --text titles (not both, not neither)")
    tax = Taxonomy.load(taxonomy, format=tax_format)  # type: ignore[arg-type]
    cat = None
    if text:
        frame = pd.DataFrame({"id": [str(i + 1) for i in range(len(text))], "title": text})
    else:
        assert catalog is not None
        cat = _read(catalog, map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, False, delimiter=delimiter)
        frame = cat.frame
    # the label embeddings show their own progress bar (a first run over Google's 5,595 nodes takes minutes on a
    # CPU; they are cached after it)
    console.print(f"embedding the {len(tax.leaves()):,} categories of {taxonomy.name} (cached after the first run)",
                  highlight=False)
    clf = TaxonomyClassifier.from_taxonomy(tax, encoder=encoder, sample_texts=frame["title"].head(2000).tolist(),
                                           min_confidence=min_confidence)
    console.print(f"zero-shot into {len(clf.classes_):,} categories with the {clf.encoder_.name} encoder")
    result = _predict_batches(clf, frame, batch_size, top_k=top_k, min_confidence=min_confidence, explain=False)
    if fill is not None:
        _fill(catalog, cat, result, fill)
    if review_db is not None:
        _queue_unsure(frame, result, review_db, review_below, f"zero-shot:{taxonomy.name}")
    if save:
        clf.save(save)
        out.print(f"zero-shot model saved to {save}")
    if output:
        _write_predictions(result, output)
        out.print(f"{len(result):,} predictions written to {output}")
        return
    table = Table(title=f"zero-shot predictions ({min(len(result), 25)} of {len(result):,})")
    for col in ("id", "title", "category", "confidence"):
        table.add_column(col)
    for rec in result.head(25).to_dict(orient="records"):
        table.add_row(str(rec["id"]), str(rec["title"])[:60], str(rec["category"]) or "(unclassified)",
                      f"{float(rec['confidence']):.3f}")
    out.print(table)


@app.command()
def query(
    model: Annotated[str, typer.Argument(help="Product model bundle (its categories), or - with --taxonomy for zero-shot only.")],
    queries: Annotated[list[str] | None, typer.Argument(help="Search queries.")] = None,
    taxonomy: Annotated[Path | None, typer.Option(help="Classify into this taxonomy (zero-shot) instead of / besides the model's.")] = None,
    tax_format: Annotated[str, typer.Option("--format", help="Taxonomy format: auto, google, shopify, bestbuy, paths.")] = "auto",
    top_k: Annotated[int, typer.Option(help="Leaves shown per query.")] = 3,
    min_confidence: Annotated[float, typer.Option(help="Back off to a parent below this confidence (vague queries).", callback=_probability)] = 0.5,
    no_zero_shot: Annotated[bool, typer.Option("--no-zero-shot", help="Use the product model alone.")] = False,
    query_log: Annotated[Path | None, typer.Option("--query-log", help="Labelled queries (columns query, category; categories may stop at any level): a query model trained on them joins the pool.")] = None,
) -> None:
    """Classify search queries ("turquoise pillows") into categories, at the level each query supports."""
    from .apps.query import QueryClassifier
    from .classifier import load
    from .taxonomy import Taxonomy

    if not queries:
        raise CliError("give one or more queries, e.g. taxonomist query MODEL_DIR \"running shoes\"")
    if model == "-" and taxonomy is None:
        raise CliError("MODEL '-' means no product model: give --taxonomy FILE to classify into (zero-shot)")
    if tax_format not in ("auto", "google", "shopify", "bestbuy", "paths"):
        raise CliError(f"--format must be auto, google, shopify, bestbuy or paths, got {tax_format!r}")
    tax = Taxonomy.load(taxonomy, format=tax_format) if taxonomy else None  # type: ignore[arg-type]
    with _spinner("preparing the query classifier"):
        query_model = None
        if query_log is not None:
            from .classifier import TaxonomyClassifier

            log = _read(query_log, ["title=query"], None, " > ", None, None, False, None, False, True)
            query_model = TaxonomyClassifier(tier="sparse").fit(log)
        qc = QueryClassifier(product_model=load(model) if model != "-" else None, taxonomy=tax, query_model=query_model,
                             zero_shot=not no_zero_shot or model == "-", min_confidence=min_confidence)
        preds = qc.classify(queries, top_k=top_k)
    table = Table(title=f"queries ({', '.join(qc.sources)})")
    for col in ("query", "category", "confidence", "top leaves"):
        table.add_column(col)
    for q, p in zip(queries, preds, strict=True):
        table.add_row(q, p.category or "(too vague)", f"{p.score:.3f}" if p.path else "",
                      "; ".join(f"{c} ({v:.2f})" for c, v in p.alternatives))
    out.print(table)


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

    from .apps.routing import MessageRouter, load_rules, sentiment_label
    from .catalog import split_catalog

    if dp_epsilon is not None and tier != "sparse":
        raise CliError(f"--dp-epsilon trains the sparse tier only, got --tier {tier}; use --tier sparse")
    mapping = {"title": text_column, "category": category_column}
    cat = _read(data, [f"{k}={v}" for k, v in mapping.items()], None, " > ", None, None, False, None, False, True)
    for col in (sentiment_column, issue_column):
        if col and col not in cat.frame.columns:
            raise CliError(f"column {col!r} not found; the file has {sorted(cat.frame.columns)}")
    train_cat, test_cat = split_catalog(cat, test_size=test_size, seed=seed) if test_size > 0 else (cat, None)

    def labels(c: Any, col: str | None) -> Any:
        return c.frame[col].tolist() if col else None

    with _spinner(f"training the router on {len(train_cat):,} messages"):
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
        with _spinner("evaluating on the held-out messages"):
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
    from .apps.routing import MessageRouter

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
    encoding: EncOpt = None, delimiter: DelimOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
) -> None:
    """Build a search index (full text + title embeddings) over a catalogue, for taxonomist search query and
    POST /v1/search (TAXONOMIST_SEARCH_DIR)."""
    from .apps.search import SearchIndex
    from .classifier import load

    cat = _read(catalog, map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, False, delimiter=delimiter)
    with _spinner(f"indexing {len(cat):,} products"):
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
    from .apps.query import QueryClassifier
    from .apps.search import SearchIndex
    from .classifier import load

    if k < 1:
        raise CliError(f"-k must be at least 1, got {k}")
    idx = SearchIndex.load(index)
    qc = QueryClassifier(product_model=load(model)) if model else None
    with _spinner("searching"):
        hits = idx.search(query, k=k, mode=mode, query_classifier=qc, boost=boost, category=category)  # type: ignore[arg-type]
    table = Table(title=f"{query!r}: {len(hits)} results ({mode}{', category boost' if qc and boost else ''})")
    for col in ("id", "title", "category", "score"):
        table.add_column(col)
    for h in hits:
        table.add_row(h.id, h.title[:60], h.category, f"{h.score:.4f}")
    out.print(table)


EventColsOpt = Annotated[str | None, typer.Option("--columns", help="Column names of a header-less events file, in order (default user,item,category,event,timestamp).")]
EventCatalogOpt = Annotated[Path | None, typer.Option("--catalog", help="Catalogue of the items: categories for events without one, titles, items nobody touched yet.")]
EventEncoderOpt = Annotated[str, typer.Option(help="Title encoder for item similarity (needs --catalog): auto, minilm-en, e5-multilingual, a folder, or none (co-visitation).")]


def _events_and_items(events: Path, columns: str | None, strict: bool, catalog: Path | None,
                      model: Path | None) -> tuple[Any, Any, Any]:
    from .apps.profiles import read_events
    from .classifier import load

    with _spinner(f"reading {events.name}"):
        ev = read_events(events, columns=columns.split(",") if columns else None, strict=strict)
    for line in ev.report.lines():
        console.print(line, style="green" if ev.report.ok else "yellow", markup=False, highlight=False, soft_wrap=True)
    cat = _read(catalog, None, None, " > ", None, None, False, None, False, False) if catalog else None
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
    from .apps.profiles import ProfileStore

    ev, cat, clf = _events_and_items(events, columns, strict, catalog, model)
    with _spinner(f"building profiles from {len(ev):,} events"):
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
    from .apps.profiles import ProfileStore

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
    from .apps.profiles import ProfileStore

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
    from .apps.profiles import evaluate_leave_last_out

    ev, cat, clf = _events_and_items(events, columns, strict, catalog, model)
    with _spinner("fitting on all but each user's last event and ranking"):
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
    from .apps.profiles import synthetic_events

    cat = _read(catalog, None, None, " > ", None, None, False, None, False, True)
    with _spinner(f"simulating {n_users:,} shoppers"):
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
    from .apps.demand import forecast_demand

    ev, cat, clf = _events_and_items(events, columns, strict, catalog, model)
    with _spinner("backtesting and forecasting"):
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


@app.command("add-category")
def add_category(
    model: Annotated[Path, typer.Argument(help="Model bundle folder (an embedding tier: ensemble, embed, zero-shot).")],
    path: Annotated[str, typer.Argument(help='The new category path, e.g. "Accessories > Toys > Chess Sets".')],
    description: Annotated[str | None, typer.Option(help="A sentence describing the category.")] = None,
    example: Annotated[list[str] | None, typer.Option("--example", help="An example product title (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the new bundle here (default: in place).")] = None,
) -> None:
    """Add a category to a trained model without retraining."""
    from .classifier import load

    clf = load(model)
    clf.add_category(path, description=description, examples=example or [])
    dest = clf.save(output or model)
    out.print(f"added {path!r} ({len(example or [])} examples); {len(clf.classes_):,} categories; saved to {dest}")


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="A model bundle, or a model store (a folder of bundles, one per version).")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    review_db: Annotated[Path | None, typer.Option(help="SQLite file of the review queue and feedback.")] = None,
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

        from .serving import ServeSettings, create_app
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
    # instead of 5 ms (measured: server-side p50 40 -> 25 ms under 32 clients)
    sys.setswitchinterval(0.0005)
    # a served request allocates many short-lived objects beside a model of large dicts (vocabularies, caches):
    # with the default thresholds full collections were the p99 (measured, sparse, 32 clients: p99 162 -> 49 ms)
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


@app.command()
def retrain(
    model_dir: Annotated[Path, typer.Argument(help="The model bundle to improve (with --auto: the model store the service serves).")],
    feedback: Annotated[Path, typer.Option("--feedback", help="The review/feedback SQLite file of the service.")],
    data: Annotated[Path, typer.Option("--data", help="The original labelled training catalogue.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder for the new bundle (e.g. a new version in a model store); not with --auto.")] = None,
    map_: MapOpt = None, label_columns: LabelColsOpt = None, sep: SepOpt = " > ", with_columns: WithOpt = None,
    encoding: EncOpt = None, delimiter: DelimOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
    refit: Annotated[bool, typer.Option(help="After the comparison, fit the new version on every product (--no-refit: on the training part only).")] = True,
    accept_above: Annotated[float, typer.Option(help="From a zero-shot model: its answers at or above this confidence label the products nobody reviewed.", callback=_probability)] = 0.9,
    tier: Annotated[str, typer.Option(help="From a zero-shot model: the tier to train (ensemble, sparse, ...).")] = "ensemble",
    auto: Annotated[bool, typer.Option("--auto", help="The scheduled job: with enough new labels, retrain the store's serving version, gate the candidate against it and promote it to the next version folder only when it is not worse beyond noise.")] = False,
    min_new_labels: Annotated[int, typer.Option("--min-new-labels", min=1, help="--auto: reviewer labels recorded since the serving version was trained that a retraining needs.")] = 200,
    golden: Annotated[Path | None, typer.Option("--golden", help="--auto: a frozen labelled catalogue the gate also compares the two models on.")] = None,
    gate_share: Annotated[float, typer.Option("--gate-share", help="--auto: share of the new labels held out of training for the gate.", callback=_probability)] = 0.2,
    reload_url: Annotated[str | None, typer.Option("--reload-url", help="--auto: after a promotion, POST here (the service's /v1/admin/reload) with the key in $TAXONOMIST_API_KEY.")] = None,
) -> None:
    """Train a new version from the original data + the corrections people made; compare it with the old one.
    From a zero-shot model (your own taxonomy, `classify --save`), the catalogue need not be labelled: reviewed
    products and the zero-shot model's sure answers become the training labels. With --auto, a champion /
    challenger gate decides whether the new version serves."""
    from .retrain import retrain as run_retrain
    from .serving.store import ReviewStore

    if not feedback.is_file():
        raise CliError(f"expected the feedback database at {feedback}, but there is no such file "
                       "(it is the service's TAXONOMIST_REVIEW_DB)")
    if auto:
        def read_labelled(path: Path) -> Any:  # --with-columns belongs to the catalogue, not to the golden file
            extra = with_columns if path == data else None
            return _read(path, map_, label_columns, sep, extra, encoding, no_header, columns, strict, True, delimiter=delimiter)

        _auto_retrain(model_dir, feedback, data, golden, min_new_labels, gate_share, reload_url, read_labelled)
        return
    if output is None:
        raise CliError("give the folder for the new bundle with -o (or use --auto with a model store)")
    try:
        base_tier = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))["tier"]
    except (OSError, ValueError, KeyError):
        raise CliError(f"{model_dir} is not a model bundle (no readable manifest.json)") from None
    zero_shot = base_tier == "zeroshot"  # a shop's own taxonomy: the catalogue need not be labelled
    cat = _read(data, map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, not zero_shot, delimiter=delimiter)
    store = ReviewStore(feedback)
    try:
        items = store.feedback()
    finally:
        store.close()
    with _spinner(f"retraining with {len(items)} corrections"):
        result = run_retrain(model_dir, items, cat, output, refit=refit, accept_above=accept_above, tier=tier)
    s = result.stats
    out.print(f"feedback: {s['feedback']} corrections of {s['distinct_products']} products → "
              f"{s['relabelled']} catalogue rows relabelled, {s['added']} products added")
    if zero_shot:
        out.print(f"from the zero-shot model: {s['human_labelled']:,} products labelled by people, "
                  f"{s['accepted_from_zero_shot']:,} of its answers accepted (confidence ≥ {accept_above:.2f}), "
                  f"{s['unlabelled_left']:,} left out; the comparison below holds out reviewed products only")
        if not result.new_metrics:
            console.print("fewer than 10 reviewed products: the new model was not compared with the zero-shot one",
                          style="yellow")
    table = Table(title=f"same held-out products ({result.new_metrics.get('n', '?')})")
    table.add_column("metric")
    table.add_column("old", justify="right")
    table.add_column("new", justify="right")
    for k in result.compared:
        o, n = result.old_metrics.get(k), result.new_metrics.get(k)
        table.add_row(k, f"{o:.4f}" if isinstance(o, float) else str(o), f"{n:.4f}" if isinstance(n, float) else str(n))
    out.print(table)
    if refit:
        out.print("the new version was then refitted on every product; the figures above are of the compared one")
    out.print(f"new model saved to {result.output}")


def _auto_retrain(store: Path, feedback: Path, data: Path, golden: Path | None, min_new_labels: int, gate_share: float,
                  reload_url: str | None, read: Any) -> None:
    """``retrain --auto``: new labels -> candidate -> promotion gate -> next version (or kept aside)."""
    import os
    import urllib.request

    from .promotion import auto_retrain
    from .serving.store import ReviewStore

    db = ReviewStore(feedback)
    try:
        items = db.feedback()
    finally:
        db.close()
    cat = read(data)
    gold = read(golden) if golden is not None else None
    with _spinner(f"checking {len(items):,} labels; retraining and gating when enough are new"):
        result = auto_retrain(store, items, cat, golden=gold, min_new_labels=min_new_labels, gate_share=gate_share)
    if result.gate is not None:
        g = result.gate
        table = Table(title=f"promotion gate: {g.n:,} products ({', '.join(f'{k} {v:,}' for k, v in g.sources.items())})")
        for col in ("metric", "serving", "candidate", "Δ (95 % interval)"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for m, d in g.delta.items():
            table.add_row(m, f"{g.champion[m]:.4f}", f"{g.challenger[m]:.4f}",
                          f"{d['delta']:+.4f} ({d['low']:+.4f} .. {d['high']:+.4f})")
        out.print(table)
    out.print(f"{result.action}: {result.message}", highlight=False)
    if result.action == "promoted" and reload_url:
        req = urllib.request.Request(reload_url, method="POST", data=b"{}", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {os.environ.get('TAXONOMIST_API_KEY', '')}"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 -- the operator's own service URL
                out.print(f"reloaded: {resp.read().decode('utf-8', 'replace')}", highlight=False)
        except OSError as e:
            raise CliError(f"promoted {result.version}, but the reload request to {reload_url} failed ({e}); "
                           "reload the service yourself (POST /v1/admin/reload)") from None


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where to write the model, report and predictions.")] = Path("runs/demo"),
) -> None:
    """Train, evaluate, report and predict on the bundled fashion sample; then zero-shot with no training data,
    photos, category-aware search and shopper recommendations."""
    from .classifier import load
    from .datasets import sample_path

    sample = sample_path("products")
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir, report, metrics = workdir / "model", workdir / "report.html", workdir / "metrics.json"
    out.rule("taxonomist demo: train → evaluate → report → predict")
    out.print(f"catalogue: {sample} (bundled fashion sample)")
    train(sample, model_dir, test_size=0.2, seed=0, taxonomy=None, min_confidence=None, c=0.5, report=report,
          json_out=metrics, map_=None, label_columns=None, sep=" > ", with_columns=None, encoding=None,
          no_header=False, columns=None, strict=False, tier=DEFAULT_TIER, encoder="auto")
    examples = ["Nike Men Running Shoes", "Titan Women Gold Analog Watch", "Lakme Absolute Matte Lipstick",
                "Wildcraft Unisex Blue Backpack", "Puma Kids Yellow T-shirt", "Something completely different"]
    predict(model_dir, None, text=examples, output=None, top_k=3, min_confidence=0.5, explain=True, batch_size=2048,
            map_=None, label_columns=None, sep=" > ", with_columns=None, encoding=None, no_header=False, columns=None,
            strict=False)
    out.rule("zero-shot: the same products into the same taxonomy, from the category names alone")
    taxonomy_file = workdir / "taxonomy.txt"
    labels = sorted(set(load(model_dir).classes_.tolist()))
    taxonomy_file.write_text("\n".join(labels) + "\n", encoding="utf-8")
    classify(None, taxonomy=taxonomy_file, text=examples, output=None, save=None, encoder="auto", tax_format="paths",
             top_k=3, min_confidence=None, batch_size=1024, map_=None, label_columns=None, sep=" > ", with_columns=None, encoding=None,
             no_header=False, columns=None, strict=False)
    out.rule("text + photos: the ensemble tier with EfficientNet-Lite image features (late fusion)")
    photo_dir, photo_report = workdir / "model-photos", workdir / "report-photos.html"
    train(sample, photo_dir, test_size=0.2, seed=0, taxonomy=None, min_confidence=None, c=0.5, report=photo_report,
          json_out=workdir / "metrics-photos.json", map_=None, label_columns=None, sep=" > ", with_columns=None,
          encoding=None, no_header=False, columns=None, strict=False, tier="ensemble", encoder="auto",
          image_encoder="effnet-lite0", fusion="late", image_root=None)
    out.rule("using the categories: category-aware search and shopper recommendations")
    search_build(sample, workdir / "search", model=None, encoder="auto", overwrite=True, map_=None, label_columns=None,
                 sep=" > ", with_columns=None, encoding=None, no_header=False, columns=None, strict=False)
    search_query(workdir / "search", "black leather", model=model_dir, k=5, mode="hybrid", boost=1.0, category=None)
    users_synthesize(sample, workdir / "events.csv", n_users=300, seed=0)
    users_build(workdir / "events.csv", workdir / "profiles", catalog=sample, model=None, encoder="auto",
                half_life_days=14.0, columns=None, strict=False)
    users_recommend(workdir / "profiles", "u0", k=5, exclude_seen=False)
    out.print(f"\nHTML report: {report.resolve()}\nmetrics JSON: {metrics.resolve()}\nmodel bundle: {model_dir.resolve()}"
              f"\nwith photos: {photo_report.resolve()} (text / image / fused scores, misclassified photos)")


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
    review_db: Annotated[Path, typer.Option("--review-db", help="The service's store (TAXONOMIST_REVIEW_DB), which "
                                            "keeps served predictions and reviewers' decisions.")],
    since: Annotated[str, typer.Option("--since", help="Start: an age (28d, 12w) or a date (2026-11-01).")] = "28d",
    until: Annotated[str | None, typer.Option("--until", help="End (default: now): an age or a date.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="The HTML report.")] = Path("monitor.html"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON.")] = None,
) -> None:
    """Is the served model going stale? Drift of the served predictions against the model's held-out reference
    (per day), the categories that grew or shrank, the products least like the training data, the live accuracy
    per week from reviews, and a verdict (exit code 0 either way; the verdict is the last line)."""
    from .classifier import load
    from .monitor_report import render_monitor
    from .monitoring import monitor_summary
    from .serving.registry import ModelRegistry
    from .serving.store import ReviewStore

    start, end = _moment(since, "--since"), (_moment(until, "--until") if until else time.time())
    if end <= start:
        raise CliError(f"--until must be after --since (got {since!r} to {until!r})")
    if not review_db.is_file():
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
    out.print(summary["verdict"], highlight=False)


@review_app.command("purge")
def review_purge(
    review_db: Annotated[Path, typer.Argument(help="The review store (TAXONOMIST_REVIEW_DB of the service).")],
    older_than: Annotated[str, typer.Option("--older-than", help="Age: 90d, 12w, 36h.")],
) -> None:
    """Delete review items, feedback and served-prediction records older than an age (products as customers and
    sellers sent them)."""
    from .serving.store import ReviewStore

    seconds = _age_seconds(older_than, "--older-than")
    if not review_db.is_file():
        raise CliError(f"expected a review store at {review_db}, but there is no such file")
    store = ReviewStore(review_db)
    try:
        n_review, n_feedback, n_served = store.purge(time.time() - seconds)
    finally:
        store.close()
    console.print(f"deleted {n_review:,} review items, {n_feedback:,} feedback rows and {n_served:,} served-prediction "
                  f"records older than {older_than.strip()}", highlight=False)


def main() -> None:
    """Entry point: taxonomist errors become one clear line and exit code 1 (``--debug`` shows the traceback).

    Typer runs in standalone mode, so usage errors, ``--help`` and exit codes are handled (and exited) by it.
    """
    try:
        app()
    except TaxonomistError as e:
        if _state["debug"]:
            raise
        console.print("error:", str(e), style="bold red", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except Exception as e:  # anything unexpected: still one line, the traceback behind --debug
        if _state["debug"]:
            raise
        console.print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", style="bold red",
                      highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
