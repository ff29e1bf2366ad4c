"""What the commands share: the Typer apps, the console, common options, reading a catalogue, progress,
prediction output and MLflow tracking; ``main`` turns errors into one line and exit code 1."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..exceptions import TaxonomistError
from ..version import __version__

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


STATE: dict[str, Any] = {"debug": False}


logger = logging.getLogger("taxonomist.cli")


class CliError(TaxonomistError):
    """A usage error found by the CLI itself."""


# -- shared options -----------------------------------------------------------------------------------------
MapOpt = Annotated[list[str] | None, typer.Option("--map", help="FIELD=COLUMN, e.g. --map title=productDisplayName (repeatable).")]


LabelColsOpt = Annotated[str | None, typer.Option("--label-columns", help="Build the path from these columns, top first: a,b,c.")]


SepOpt = Annotated[str, typer.Option("--sep", help="Path separator in the category column ('>' also matches ' > ').")]


WithOpt = Annotated[list[Path] | None, typer.Option("--with-columns", help="Add the columns of another file, row by row (repeatable).")]


EncOpt = Annotated[str | None, typer.Option("--encoding", help="Force the file encoding (default: detected).")]


SheetOpt = Annotated[str | None, typer.Option("--sheet", help="The sheet of an Excel .xlsx workbook to read: its name or 0-based position (default: the first).")]
DelimOpt = Annotated[str | None, typer.Option("--delimiter", help="Field delimiter of a CSV / TXT / TSV file: one character, or 'tab' (default: sniffed among , ; tab |).")]


NoHeaderOpt = Annotated[bool, typer.Option("--no-header", help="The file has no header row; columns are 0, 1, 2, ...")]


ColumnsOpt = Annotated[str | None, typer.Option("--columns", help="Names for a header-less file: id,title,category.")]


FormatOpt = Annotated[str, typer.Option("--format", help="Taxonomy format: auto, google, shopify, bestbuy, paths.")]


StrictOpt = Annotated[bool, typer.Option("--strict", help="Reject the catalogue if any row is bad, instead of skipping it.")]


def check_probability(value: float | None) -> float | None:
    """An option that is a probability: a number from 0 to 1 (inf, nan and negatives were accepted)."""
    if value is not None and not 0.0 <= value <= 1.0:  # (False for nan too)
        raise typer.BadParameter(f"expected a confidence from 0 to 1, got {value}")
    return value


MinConfOpt = Annotated[float | None, typer.Option(help="Back off to a parent below this confidence.", callback=check_probability)]


ImageRootOpt = Annotated[Path | None, typer.Option("--image-root", help="Folder relative image paths resolve against (default: the catalogue's folder); no path may leave it.")]


TrackOpt = Annotated[bool, typer.Option("--track", help="Log parameters, metrics, report and bundle to MLflow.")]


TrackUriOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")]


ExperimentOpt = Annotated[str, typer.Option("--experiment", help="MLflow experiment name.")]


RegisterOpt = Annotated[str | None, typer.Option("--register", help="With --track: register the bundle as a new version of this MLflow model.")]


def parse_map(items: list[str] | None) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in items or []:
        field, eq, column = item.partition("=")
        if not eq or not field.strip() or not column.strip():
            raise CliError(f"--map expects FIELD=COLUMN (e.g. --map title=productDisplayName), got {item!r}")
        mapping[field.strip()] = column.strip()
    return mapping


@dataclass(frozen=True)
class Reading:
    """How a command reads its catalogue files: the shared reading options (``--map``, ``--label-columns``,
    ``--sep``, ``--with-columns``, ``--encoding``, ``--no-header``, ``--columns``, ``--strict``, ``--delimiter``,
    ``--sheet``), parsed and checked once by :meth:`of`; the defaults read a plain file."""

    mapping: dict[str, str] = field(default_factory=dict)
    label_columns: list[str] | None = None
    sep: str = " > "
    with_columns: tuple[Path, ...] = ()
    encoding: str | None = None
    header: bool = True
    columns: list[str] | None = None
    strict: bool = False
    delimiter: str | None = None
    sheet: str | None = None

    @classmethod
    def of(cls, map_: list[str] | None = None, label_columns: str | None = None, sep: str = " > ",
           with_columns: list[Path] | None = None, encoding: str | None = None, no_header: bool = False,
           columns: str | None = None, strict: bool = False, delimiter: str | None = None,
           sheet: str | None = None) -> Reading:
        """The options as the command line gives them."""
        if delimiter is not None:
            delimiter = "\t" if delimiter.strip().lower() in ("tab", "\\t") else delimiter
            if len(delimiter) != 1:
                raise CliError(f"--delimiter: expected one character (, ; | ...) or 'tab', got {delimiter!r}")
        return cls(parse_map(map_), [c.strip() for c in label_columns.split(",") if c.strip()] if label_columns else None,
                   sep, tuple(with_columns or ()), encoding, not no_header,
                   [c.strip() for c in columns.split(",")] if columns else None, strict, delimiter, sheet)

    def catalog_options(self) -> dict[str, Any]:
        """``read_catalog`` keyword arguments but ``with_columns`` (jobs that read their shards in workers)."""
        return {"delimiter": self.delimiter, "sheet": self.sheet, "mapping": self.mapping,
                "label_columns": self.label_columns, "sep": self.sep, "encoding": self.encoding,
                "header": self.header, "columns": self.columns, "strict": self.strict}

    def without_columns(self) -> Reading:
        """The same options for a file that the ``--with-columns`` files do not belong to (a golden set)."""
        return replace(self, with_columns=())


PLAIN = Reading()


def read_input(path: Path, reading: Reading = PLAIN, require_labels: bool = False, taxonomy: Any = None) -> Any:
    """The catalogue file read and validated (its report printed; no usable product left: an error)."""
    from ..catalog import read_catalog

    with spinner(f"reading {path.name}"):
        cat = read_catalog(path, **reading.catalog_options(), with_columns=reading.with_columns,
                           require_labels=require_labels, taxonomy=taxonomy)
    rep = cat.report
    style = "green" if rep.ok else "yellow"
    console.print(rep.lines()[0], style=style, soft_wrap=True, markup=False, highlight=False)
    for line in rep.lines()[1:]:
        console.print(line, style="yellow", highlight=False, markup=False, soft_wrap=True)
    if len(cat) == 0:
        raise CliError(f"{path.name}: no usable products left after validation (see above)")
    return cat


def products_in(text: list[str] | None, catalog: Path | None, reading: Reading = PLAIN) -> tuple[Any, Any]:
    """A command's products, as (frame, catalogue): the ``--text`` titles (ids 1, 2, ...; no catalogue), or the
    catalogue file read and validated."""
    import pandas as pd

    if text:
        return pd.DataFrame({"id": [str(i + 1) for i in range(len(text))], "title": text}), None
    assert catalog is not None
    cat = read_input(catalog, reading)
    return cat.frame, cat


@contextmanager
def spinner(text: str) -> Iterator[None]:
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


class LineProgress:
    """Rich's ``Progress`` interface for a console that is not a terminal: a line per task at most every
    ``every`` seconds and when it completes, instead of a bar that only a terminal can show."""

    def __init__(self, label: str, every: float = 10.0, disable: bool = False) -> None:
        self.label, self.every, self.disable = label, every, disable
        self.tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> LineProgress:
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


def make_progress(label: str, *columns: Any, disable: bool = False) -> Any:
    """A progress bar (label, then ``columns``) on a terminal, progress lines elsewhere."""
    if not console.is_terminal:
        return LineProgress(label, disable=disable)
    return Progress(TextColumn(label), *columns, console=console, transient=True, disable=disable)


def metrics_table(ev: Any, title: str) -> Table:
    table = Table(title=title, show_header=False)
    for k, v in ev.summary_rows():
        table.add_row(k, v)
    return table


def write_predictions(frame: Any, path: Path, safe: bool = True) -> None:
    """Predictions as ``.csv`` (text cells spreadsheet-safe unless ``safe`` is off), ``.jsonl`` or ``.parquet``."""
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        flat = frame.copy()
        for col in ("level_confidence", "alternatives", "explanation"):
            if col in flat.columns:
                flat[col] = [json.dumps(v, ensure_ascii=False) for v in flat[col]]
        if safe:
            from ..tables import spreadsheet_safe

            for col in flat.columns:
                if flat[col].dtype == object or str(flat[col].dtype).startswith("str"):
                    flat[col] = flat[col].map(spreadsheet_safe)
        flat.to_csv(path, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        raise CliError(f"-o {path}: unsupported output type {suffix!r}; use .csv, .jsonl or .parquet")


@contextmanager
def tracking(track: bool, uri: str | None, experiment: str, command: str, run_name: str) -> Iterator[Any]:
    """An MLflow :class:`~taxonomist.tracking.Tracker` when ``--track`` is given, else ``None``."""
    if not track:
        yield None
        return
    from ..tracking import start_run

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its "creating tables" notes are not for our users
    with start_run(command, tracking_uri=uri, experiment=experiment, run_name=run_name) as tracker:
        yield tracker
    out.print(f"MLflow run {tracker.run_id} (experiment {experiment!r})")


def track_result(tracker: Any, ev: Any, report: Path | None, title: str, bundle: Path | None = None,
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
    STATE["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    root = logging.getLogger("taxonomist")
    root.handlers[:] = [RichHandler(console=console, show_path=False, show_time=False)]
    root.setLevel(level)
    root.propagate = False
    # the catalogue report is printed by the CLI itself; keep the library's copy of it for -v
    logging.getLogger("taxonomist.catalog").setLevel(logging.INFO if verbose else logging.ERROR)
    # progress lines of long work (embedding a taxonomy's categories) where the output is not a terminal
    logging.getLogger("taxonomist.progress").setLevel(logging.DEBUG if debug else logging.INFO)


EngineOpt = Annotated[str, typer.Option(help="local (process pool) or ray (Ray Data actor pool); output is then a folder of Parquet parts.")]


WorkersOpt = Annotated[int | None, typer.Option("--num-workers", help="Worker processes / Ray actors (default: CPU count).")]


AddressOpt = Annotated[str | None, typer.Option(help="Ray cluster address (e.g. auto); default: a local Ray for this job.")]


SafeCsvOpt = Annotated[bool, typer.Option("--spreadsheet-safe/--no-spreadsheet-safe", help="In a .csv output, prefix with a quote the text cells a spreadsheet would run as formulas (beginning = + - @, a tab or a carriage return).")]
OverwriteOpt = Annotated[bool, typer.Option(help="A batch job: replace an existing output folder instead of resuming it. With --fill: replace the categories the file already has (otherwise only empty cells are filled).")]


FILE_OUTPUTS = (".csv", ".jsonl", ".ndjson", ".parquet", ".pq")


EventColsOpt = Annotated[str | None, typer.Option("--columns", help="Column names of a header-less events file, in order (default user,item,category,event,timestamp).")]


EventCatalogOpt = Annotated[Path | None, typer.Option("--catalog", help="Catalogue of the items: categories for events without one, titles, items nobody touched yet.")]


EventEncoderOpt = Annotated[str, typer.Option(help="Title encoder for item similarity (needs --catalog): auto, minilm-en, e5-multilingual, a folder, or none (co-visitation).")]


# how the command line spells the parameters library errors name (TaxonomistError.options)
OPTION_FLAGS = {
    "mapping": "--map FIELD=COLUMN", "label_columns": "--label-columns a,b,c", "with_columns": "--with-columns FILE",
    "strict": "--strict", "encoding": "--encoding NAME", "columns": "--columns a,b,c", "header": "--no-header",
    "overwrite": "--overwrite", "num_workers": "--num-workers N", "engine": "--engine local|ray",
    "image_root": "--image-root DIR", "format": "--format paths", "track": "--track", "tier": "--tier",
    "trials": "--trials N", "timeout": "--timeout SECONDS", "auto": "retrain --auto",
    "taxonomy": "taxonomist classify --taxonomy FILE", "sheet": "--sheet NAME",
}


def error_text(e: TaxonomistError) -> str:
    """A library error as the command line prints it: its message, then the flags of the parameters it names."""
    if getattr(e, "cli", None):
        return str(e.cli)
    flags = [OPTION_FLAGS[o] for o in getattr(e, "options", ()) if o in OPTION_FLAGS]
    return str(e) + (f" (command line: {', '.join(flags)})" if flags else "")


_GLOBAL_FLAGS = ("--debug", "--verbose")


def main() -> None:
    """Entry point: taxonomist errors become one clear line and exit code 1 (``--debug`` shows the traceback).

    Typer runs in standalone mode, so usage errors, ``--help`` and exit codes are handled (and exited) by it.
    """
    # the global options work after the command too (`taxonomist predict … --debug`): moved in front of it
    tail = sys.argv[2:]
    moved = [a for a in tail if a in _GLOBAL_FLAGS and "--" not in tail[:tail.index(a)]]
    if moved:
        sys.argv = [sys.argv[0], *moved, sys.argv[1], *[a for a in tail if a not in moved]]
    try:
        app()
    except TaxonomistError as e:
        if STATE["debug"]:
            raise
        console.print("error:", error_text(e), style="bold red", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except Exception as e:  # anything unexpected: still one line, the traceback behind --debug
        if STATE["debug"]:
            raise
        console.print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", style="bold red",
                      highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
