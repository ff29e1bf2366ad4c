"""``taxonomist predict``, ``embed``, ``classify`` (zero-shot), ``query``, ``map-taxonomy``, ``add-category`` and
``taxonomy show|check``."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .common import (
    FILE_OUTPUTS,
    AddressOpt,
    CliError,
    ColumnsOpt,
    DelimOpt,
    EncOpt,
    EngineOpt,
    FormatOpt,
    ImageRootOpt,
    LabelColsOpt,
    MapOpt,
    MinConfOpt,
    NoHeaderOpt,
    OverwriteOpt,
    Reading,
    SafeCsvOpt,
    SepOpt,
    SheetOpt,
    StrictOpt,
    WithOpt,
    WorkersOpt,
    app,
    check_probability,
    console,
    make_progress,
    out,
    products_in,
    read_input,
    spinner,
    taxonomy_app,
    write_predictions,
)

FILL_HELP = ("Write the catalogue back in its own format (Shopify CSV, Merchant Center XML/TSV, WooCommerce CSV, CSV), "
             "ready to upload again: empty category cells filled (a Shopify export: Shopify paths in Product Category, "
             "Google paths in its Google column), the categories it has kept unless --overwrite; a change report "
             "(FILE.changes.csv) beside it.")


def _queue_unsure(frame: Any, result: Any, review_db: str, below: float, version: str) -> None:
    """Products answered with a leaf confidence under ``below`` go to the review queue (personal data scrubbed,
    a product already pending not queued twice), as the service queues them."""
    from ..serving.store import ReviewStore
    from ..text import scrub_product

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
        before = store.depth()
        store.enqueue(items)
        added = store.depth() - before
    finally:
        store.close()
    # what the database holds: identical products (another id, the same content) share one review item
    shared = "; identical products share one item, or were already pending" if added < len(items) else ""
    console.print(f"{added:,} review items added to {review_db} for the {len(items):,} of {len(result):,} products "
                  f"answered below {below:.2f}{shared} (review them with taxonomist serve ... --review-db, then "
                  "taxonomist retrain)", highlight=False)


AttributesOpt = Annotated[str | None, typer.Option("--attributes", help="Also read these product attributes: color,gender,age_group from each product's words (or learnt from the catalogue's own filled cells where that reads them better), any other from the catalogue's column of that name (columns attr_NAME and attr_NAME_confidence; unsure: empty). With --fill they go to the feed's own columns where empty: a Merchant feed's color / gender / age_group, a Shopify export's Google Shopping gender / age group.")]


def _with_attributes(result: Any, frame: Any, attributes: str | None, taxonomy: str | None) -> list[str]:
    """``--attributes``: the products' attributes (:func:`taxonomist.attributes.read_attributes`: learnt from the
    catalogue's own filled cells where that reads them better, else from the products' words; a value only where
    the predicted category has the attribute) added to ``result`` as columns; the names asked for."""
    if not attributes:
        return []
    from ..attributes import read_attributes

    names = [a.strip() for a in attributes.split(",") if a.strip()]
    try:
        got, how = read_attributes(frame, names, categories=result["category"].fillna("").astype(str).tolist(),
                                   taxonomy=taxonomy)
    except ValueError as e:
        raise CliError(f"--attributes: {e}") from None
    for col in got.columns:
        result[col] = got[col].to_numpy()
    for n in names:
        console.print(f"{n}: {int((got[f'attr_{n}'] != '').sum()):,} of {len(got):,} products, {how[n]}",
                      highlight=False)
    return names


def _fill(catalog: Path | None, cat: Any, result: Any, fill: Path, overwrite: bool,
          attributes: Sequence[str] = ()) -> None:
    """``--fill``: the catalogue file written back in its own format with the predicted categories in its empty
    category cells (all of them with ``overwrite``), and ``attributes`` (columns ``attr_<name>`` of ``result``) in
    its attribute columns likewise; a change report beside it (``cat``: the Catalog read from it, ``None`` for
    --text)."""
    if catalog is None or cat is None:
        raise CliError("--fill writes a catalogue file back with its categories: give the catalogue, not --text")
    if cat.report.issue("malformed_line").count:  # its rows would not line up with the file's records
        raise CliError(f"--fill: {catalog.name} has malformed lines (listed above); fix them before writing the file back")
    from ..writeback import write_back

    report = write_back(catalog, cat.frame["row"].tolist(), result["category"].fillna("").astype(str).tolist(), fill,
                        overwrite=overwrite, confidences=result["confidence"].astype(float).tolist(),
                        ids=result["id"].astype(str).tolist(), titles=result["title"].astype(str).tolist(),
                        attributes={a: result[f"attr_{a}"].fillna("").astype(str).tolist() for a in attributes},
                        attribute_confidences={a: result[f"attr_{a}_confidence"].astype(float).tolist()
                                               for a in attributes})
    changes = report.write_csv(fill.with_name(f"{fill.stem}.changes.csv"))
    if not report.columns:
        console.print(f"{catalog.name}: no answer is a category of its column's taxonomy, so nothing was written to "
                      f"{fill} (see {changes})", style="yellow", highlight=False)
        return
    console.print(f"{catalog.name} written to {fill}: {report.summary(changes)}; every product's old and new category "
                  f"in {changes}" + ("" if overwrite else " (--overwrite replaces categories the file already has)"),
                  highlight=False)


def _apply_crosswalk(rows: list[dict[str, Any]], feed: Path, fill: Path, overwrite: bool, target: Path,
                     tgt: Any) -> None:
    """``map-taxonomy --apply``: each product of ``feed`` gets the target category its own category maps to
    (empty where it has none, or one the crosswalk does not know), written back like ``classify --fill``."""
    from ..taxonomy import format_path, parse_path
    from ..writeback import write_back

    cat = read_input(feed)
    if cat.report.issue("malformed_line").count:
        raise CliError(f"--apply: {feed.name} has malformed lines (listed above); fix them before writing it back")
    mapped = {r["source"]: (r["target"], float(r["product_share"] if r["by"] == "products" else r["name_similarity"]))
              for r in rows}
    own = [format_path(parse_path(str(c))) for c in cat.frame["category"].fillna("")]
    answers = [mapped.get(c, ("", 0.0)) if c else ("", 0.0) for c in own]
    column = {"google": "google_product_category", "shopify": "shopify_product_category"}.get(
        getattr(tgt, "kind", None) or "", f"{target.stem}_category")
    report = write_back(feed, cat.frame["row"].tolist(), [a for a, _ in answers], fill, overwrite=overwrite,
                        confidences=[c for _, c in answers], ids=cat.frame["id"].astype(str).tolist(),
                        titles=cat.frame["title"].astype(str).tolist(), column=column)
    changes = report.write_csv(fill.with_name(f"{fill.stem}.changes.csv"))
    unknown = sorted({c for c, (a, _) in zip(own, answers, strict=True) if c and not a})
    console.print(f"{feed.name} written to {fill} through the crosswalk: {report.summary(changes)}; every product's "
                  f"old and new category in {changes}" + (f"; {len(unknown):,} of its categories are not in the "
                  f"source taxonomy (e.g. {unknown[0]!r})" if unknown else ""), highlight=False)


def _predict_batches(clf: Any, frame: Any, batch_size: int, model: Path | None = None, **kwargs: Any) -> Any:
    """:func:`~taxonomist.batch.predict_batch` over ``frame`` in batches (bounded memory: n × categories per
    batch), with a progress bar."""
    import pandas as pd

    from ..batch.work import model_version, predict_batch

    if batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {batch_size}")
    version = model_version(model) if model is not None else ""
    parts = []
    with make_progress("classifying", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   disable=len(frame) <= batch_size) as progress:
        task = progress.add_task("predict", total=len(frame))
        known = kwargs.pop("known", None)
        for start in range(0, len(frame), batch_size):
            chunk = frame.iloc[start:start + batch_size]
            if known is not None:
                kwargs["known"] = known[start:start + batch_size]
            parts.append(predict_batch(clf, chunk, model_version=version, **kwargs))
            progress.advance(task, len(chunk))
    return pd.concat(parts, ignore_index=True)


def _run_batch_job(kind: str, model: str, source: Path, output: Path, engine: str, num_workers: int | None,
                   address: str | None, read: dict[str, Any], batch_size: int, overwrite: bool, **kwargs: Any) -> None:
    """A resumable sharded job (``taxonomist predict/embed`` into a folder), with a progress bar per shard."""
    from ..batch import list_shards, run_job

    n = len(list_shards(source))
    with make_progress(f"{kind} ({engine})", BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rows]} rows"),
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


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Model bundle folder.")],
    catalog: Annotated[Path | None, typer.Argument(help="Catalogue to classify (labels not needed): a file, or a folder of shards.")] = None,
    text: Annotated[list[str] | None, typer.Option("--text", help="Classify this title instead (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write .csv, .jsonl or .parquet; - for JSON Lines on stdout; or a folder (a resumable sharded job).")] = None,
    fill: Annotated[Path | None, typer.Option("--fill", help=FILL_HELP)] = None,
    top_k: Annotated[int, typer.Option(help="Alternatives per product.")] = 3,
    min_confidence: MinConfOpt = None,
    explain: Annotated[bool, typer.Option(help="Show the features behind each prediction.")] = False,
    attributes: AttributesOpt = None,
    batch_size: Annotated[int, typer.Option(help="Products per batch.")] = 2048,
    engine: EngineOpt = "local", num_workers: WorkersOpt = None, address: AddressOpt = None, overwrite: OverwriteOpt = False,
    image_root: ImageRootOpt = None, spreadsheet_safe: SafeCsvOpt = True,
    map_: MapOpt = None, label_columns: LabelColsOpt = None, sep: SepOpt = " > ", with_columns: WithOpt = None,
    encoding: EncOpt = None, delimiter: DelimOpt = None, sheet: SheetOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
) -> None:
    """Classify a catalogue, a folder of shards or --text titles with a model bundle.

    A folder as input, a folder as -o (no .csv/.jsonl/.parquet suffix) or --engine ray runs a batch job: one
    Parquet part per input shard plus _manifest.json; the same command run again resumes it."""

    from ..classifier import load

    if (catalog is None) == (not text):
        raise CliError("give either a CATALOG file or one or more --text titles (not both, not neither)")
    if top_k < 1:
        raise CliError(f"--top-k must be at least 1, got {top_k}")
    to_stdout = output is not None and str(output) == "-"
    job = catalog is not None and not to_stdout and (engine != "local" or catalog.is_dir()
                                                     or (output is not None and output.suffix.lower() not in FILE_OUTPUTS))
    if job:
        assert catalog is not None
        if output is None or output.suffix.lower() in FILE_OUTPUTS:
            raise CliError(f"a batch job (folder input or --engine {engine}) writes a folder of Parquet parts: give "
                           "-o a folder name without a file suffix")
        if explain or with_columns or attributes:
            raise CliError("--explain, --attributes and --with-columns work on a single catalogue file with a file -o, "
                           "not in batch jobs")
        _run_batch_job("predict", str(model), catalog, output, engine, num_workers, address,
                       Reading.of(map_, label_columns, sep, None, encoding, no_header, columns, strict, delimiter, sheet).catalog_options(), batch_size,
                       overwrite, top_k=top_k, min_confidence=min_confidence,
                       image_root=str(image_root.resolve()) if image_root else None)
        return
    clf = load(model)
    frame, cat = products_in(text, catalog, Reading.of(map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, delimiter, sheet))
    if cat is not None:
        clf.image_root = str(image_root or cat.base_dir)
    result = _predict_batches(clf, frame, batch_size, model, top_k=top_k, min_confidence=min_confidence, explain=explain)
    names = _with_attributes(result, frame, attributes, clf.taxonomy_.kind)
    if fill is not None:
        _fill(catalog, cat, result, fill, overwrite, names)
    if to_stdout:  # JSON Lines and nothing else on stdout (the reading report went to stderr)
        sys.stdout.write(result.to_json(orient="records", lines=True, force_ascii=False))
        sys.stdout.flush()
        return
    if output:
        write_predictions(result, output, safe=spreadsheet_safe)
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
    encoding: EncOpt = None, delimiter: DelimOpt = None, sheet: SheetOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
) -> None:
    """Embed the titles of a catalogue (L2-normalised vectors) as a resumable batch job."""
    if output.suffix.lower() in FILE_OUTPUTS:
        raise CliError(f"-o {output}: embed writes a folder of Parquet parts; give a folder name without a file suffix")
    _run_batch_job("embed", model, catalog, output, engine, num_workers, address,
                   Reading.of(map_, label_columns, sep, None, encoding, no_header, columns, strict, delimiter, sheet).catalog_options(), batch_size, overwrite)


@taxonomy_app.command("show")
def taxonomy_show(
    file: Annotated[Path, typer.Argument(help="Google, Shopify, Best Buy or plain-paths taxonomy file.")],
    depth: Annotated[int, typer.Option(help="Show nodes down to this depth.")] = 2,
    search: Annotated[str | None, typer.Option(help="Only nodes whose path contains this text.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many nodes.")] = 60,
    fmt: FormatOpt = "auto",
) -> None:
    """Summarise a taxonomy and print its top levels (or the nodes matching --search)."""
    from ..taxonomy import format_path, load_taxonomy

    tax = load_taxonomy(file, format=fmt)  # type: ignore[arg-type]  # load() validates it
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
    encoding: EncOpt = None, delimiter: DelimOpt = None, sheet: SheetOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, fmt: FormatOpt = "auto",
) -> None:
    """Report catalogue labels that are not in the taxonomy (exit code 1 when there are any)."""
    from ..taxonomy import load_taxonomy

    tax = load_taxonomy(file, format=fmt)  # type: ignore[arg-type]  # load() validates it
    cat = read_input(catalog, Reading.of(map_, label_columns, sep, with_columns, encoding, no_header, columns, False, delimiter, sheet), require_labels=True)
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
        from ..taxonomy import format_path, parse_path

        close = tax.search(parse_path(path)[-1], limit=1)
        table.add_row(path, str(count), format_path(close[0]) if close else "")
    out.print(table)
    raise typer.Exit(1)


@app.command("map-taxonomy")
def map_taxonomy(
    source: Annotated[Path, typer.Argument(help="Your taxonomy (plain paths, Google, Shopify or Best Buy file).")],
    target: Annotated[Path, typer.Argument(help="The taxonomy to map into (e.g. Google's taxonomy-with-ids file).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the crosswalk as CSV.")] = None,
    catalog: Annotated[Path | None, typer.Option(help="Products labelled in YOUR taxonomy: where they land in the target decides, when they agree.")] = None,
    encoder: Annotated[str, typer.Option(help="minilm-en, e5-multilingual (Chinese names), or a local model.")] = "minilm-en",
    top_k: Annotated[int, typer.Option(help="Alternatives by name per category.", min=1, max=20)] = 3,
    apply: Annotated[Path | None, typer.Option("--apply", help="A catalogue or feed whose products carry categories of SOURCE: written to --fill FILE with each product's TARGET category (a Shopify export: its Google column; a Merchant feed: google_product_category; another table: a new column named after TARGET).")] = None,
    fill: Annotated[Path | None, typer.Option("--fill", help="With --apply: the file to write (the feed in its own format, a change report FILE.changes.csv beside it).")] = None,
    overwrite: Annotated[bool, typer.Option(help="With --apply: replace the target categories the feed already has (otherwise only empty cells are filled).")] = False,
) -> None:
    """Propose a crosswalk from your taxonomy into another one (e.g. Google's, for Merchant Center feeds): by the
    categories' names and, with --catalog, by where your labelled products land in it; with --apply, write a
    feed's categories through it."""
    import csv

    from ..classifier import TaxonomyClassifier
    from ..models.zeroshot import crosswalk
    from ..taxonomy import load_taxonomy

    src, tgt = load_taxonomy(source), load_taxonomy(target)
    console.print(f"embedding {len(src.leaves()):,} + {len(tgt.leaves()):,} categories (cached after the first run)",
                  highlight=False)
    model = TaxonomyClassifier.from_taxonomy(tgt, encoder=encoder) if catalog is not None else None
    cat = read_input(catalog, require_labels=True) if catalog is not None else None
    if model is not None:
        enc = model.encoder_
    else:
        from ..encoders.transformer import load_text_encoder

        enc = load_text_encoder(encoder)
    if (apply is None) != (fill is None):
        raise CliError("--apply FEED and --fill FILE go together: the feed to map and where to write it")
    rows = crosswalk(src, tgt, enc, top_k=top_k, catalog=cat, target_model=model)
    if apply is not None and fill is not None:
        _apply_crosswalk(rows, apply, fill, overwrite, target, tgt)
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
    taxonomy: Annotated[Path | None, typer.Option(help="google or shopify (shipped with taxonomist), or a taxonomy file (Google, Shopify, Best Buy, plain paths).")] = None,
    text: Annotated[list[str] | None, typer.Option("--text", help="Classify this title instead (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write .csv, .jsonl or .parquet.")] = None,
    fill: Annotated[Path | None, typer.Option("--fill", help=FILL_HELP)] = None,
    overwrite: Annotated[bool, typer.Option(help="With --fill: replace the categories the file already has (otherwise only empty cells are filled).")] = False,
    save: Annotated[Path | None, typer.Option(help="Also save the zero-shot model as a bundle here.")] = None,
    learn: Annotated[bool, typer.Option(help="Learn from the categories the catalogue already has (and estimate the run's accuracy on them).")] = True,
    attributes: AttributesOpt = None,
    review_db: Annotated[str | None, typer.Option("--review-db", help="Queue the products answered below --review-below for people to review (the service's review database: a file or a postgresql:// URL; review them at /review, then taxonomist retrain).")] = None,
    review_below: Annotated[float, typer.Option(help="With --review-db: the leaf confidence under which a product is queued.", callback=check_probability)] = 0.9,
    encoder: Annotated[str, typer.Option(help="auto (e5-multilingual for a catalogue not in English or CJK, else minilm-en+e5-multilingual), minilm-en, e5-multilingual, a+b, or a local model.")] = "auto",
    tax_format: FormatOpt = "auto",
    top_k: Annotated[int, typer.Option(help="Alternatives per product.")] = 3,
    min_confidence: MinConfOpt = None,
    batch_size: Annotated[int, typer.Option(help="Products per batch.")] = 1024,
    spreadsheet_safe: SafeCsvOpt = True,
    map_: MapOpt = None, label_columns: LabelColsOpt = None, sep: SepOpt = " > ", with_columns: WithOpt = None,
    encoding: EncOpt = None, delimiter: DelimOpt = None, sheet: SheetOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
) -> None:
    """Zero-shot: classify products into a taxonomy from its category names alone, with no training data."""

    from ..classifier import ZERO_SHOT_MIN_CONFIDENCE, TaxonomyClassifier
    from ..taxonomy import load_taxonomy

    if taxonomy is None:
        raise CliError("give the taxonomy to classify into: --taxonomy google, --taxonomy shopify (both shipped) or --taxonomy FILE")
    if (catalog is None) == (not text):
        raise CliError("give either a CATALOG file or one or more --text titles (not both, not neither)")
    if encoder == "auto" or "e5-multilingual" in encoder.split("+"):
        from ..encoders.e5 import prepare_e5

        prepare_e5()  # a first run on a new machine builds e5 while it reads the products and loads the rest
    tax = load_taxonomy(taxonomy, format=tax_format)  # type: ignore[arg-type]
    frame, cat = products_in(text, catalog, Reading.of(map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, delimiter, sheet))
    # Google's and Shopify's category vectors ship with the package; another taxonomy's are embedded once (with a
    # progress bar) and cached
    console.print(f"preparing the {len(tax.leaves()):,} categories of {taxonomy.name}", highlight=False)
    sample = frame.head(2000)
    texts = (sample["title"].astype(str) + " " + (sample["description"].fillna("").astype(str).str[:300]
                                                    if "description" in sample else "")).tolist()
    clf = TaxonomyClassifier.from_taxonomy(tax, encoder=encoder, sample_texts=texts,
                                           min_confidence=ZERO_SHOT_MIN_CONFIDENCE if min_confidence is None
                                           else min_confidence)
    console.print(f"zero-shot into {len(clf.classes_):,} categories with the {clf.encoder_.name} encoder")
    known = None
    if learn and cat is not None and "category" in frame.columns:
        from ..shop import agreement, known_categories

        known = known_categories(frame["category"].tolist(), tax)
        n_known = sum(bool(k) for k in known)
        if n_known:
            est = agreement(clf, frame.head(batch_size), known[:batch_size])
            how = (f"; with each one's own category hidden, the answers agree with {est['agree']:.0%} of the "
                   f"{est['n']:,} (exact {est['exact']:.0%}): an estimate of this run's accuracy" if est["n"] else "")
            console.print(f"{n_known:,} of {len(frame):,} products already have a category of {taxonomy.name}: "
                          f"learnt from{how}", highlight=False)
    result = _predict_batches(clf, frame, batch_size, top_k=top_k, min_confidence=min_confidence, explain=False,
                              known=known)
    names = _with_attributes(result, frame, attributes, tax.kind)
    if fill is not None:
        _fill(catalog, cat, result, fill, overwrite, names)
    if review_db is not None:
        # the version the service will name: the saved bundle's folder (a store's v0001), else the taxonomy's
        _queue_unsure(frame, result, review_db, review_below, save.name if save else f"zero-shot:{taxonomy.name}")
    if save:
        clf.save(save)
        out.print(f"zero-shot model saved to {save}")
    if output:
        write_predictions(result, output, safe=spreadsheet_safe)
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
    min_confidence: Annotated[float, typer.Option(help="Back off to a parent below this confidence (vague queries).", callback=check_probability)] = 0.5,
    no_zero_shot: Annotated[bool, typer.Option("--no-zero-shot", help="Use the product model alone.")] = False,
    query_log: Annotated[Path | None, typer.Option("--query-log", help="Labelled queries (columns query, category; categories may stop at any level): a query model trained on them joins the pool.")] = None,
) -> None:
    """Classify search queries ("turquoise pillows") into categories, at the level each query supports."""
    from ..apps.query import QueryClassifier
    from ..classifier import load
    from ..taxonomy import load_taxonomy

    if not queries:
        raise CliError("give one or more queries, e.g. taxonomist query MODEL_DIR \"running shoes\"")
    if model == "-" and taxonomy is None:
        raise CliError("MODEL '-' means no product model: give --taxonomy FILE to classify into (zero-shot)")
    if tax_format not in ("auto", "google", "shopify", "bestbuy", "paths"):
        raise CliError(f"--format must be auto, google, shopify, bestbuy or paths, got {tax_format!r}")
    tax = load_taxonomy(taxonomy, format=tax_format) if taxonomy else None  # type: ignore[arg-type]
    with spinner("preparing the query classifier"):
        query_model = None
        if query_log is not None:
            from ..classifier import TaxonomyClassifier

            log = read_input(query_log, Reading(mapping={"title": "query"}), require_labels=True)
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


@app.command("add-category")
def add_category(
    model: Annotated[Path, typer.Argument(help="Model bundle folder (an embedding tier: ensemble, embed, zero-shot).")],
    path: Annotated[str, typer.Argument(help='The new category path, e.g. "Accessories > Toys > Chess Sets".')],
    description: Annotated[str | None, typer.Option(help="A sentence describing the category.")] = None,
    example: Annotated[list[str] | None, typer.Option("--example", help="An example product title (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the new bundle here (default: in place).")] = None,
) -> None:
    """Add a category to a trained model without retraining."""
    from ..classifier import load

    clf = load(model)
    clf.add_category(path, description=description, examples=example or [])
    dest = clf.save(output or model)
    out.print(f"added {path!r} ({len(example or [])} examples); {len(clf.classes_):,} categories; saved to {dest}")
