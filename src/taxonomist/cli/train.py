"""``taxonomist train``, ``evaluate``, ``tune`` and ``retrain``."""

from __future__ import annotations

import json
from enum import Enum
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
    DEFAULT_TIER,
    CliError,
    ColumnsOpt,
    DelimOpt,
    EncOpt,
    ExperimentOpt,
    ImageRootOpt,
    LabelColsOpt,
    MapOpt,
    MinConfOpt,
    NoHeaderOpt,
    Reading,
    RegisterOpt,
    SepOpt,
    SheetOpt,
    StrictOpt,
    TrackOpt,
    TrackUriOpt,
    WithOpt,
    app,
    check_probability,
    console,
    make_progress,
    metrics_table,
    out,
    read_input,
    spinner,
    track_result,
    tracking,
)


class Embed(str, Enum):
    """What the embedding members read (``TaxonomyClassifier(embed_context=...)``)."""

    TITLE = "title"
    CONTEXT = "context"
    AUTO = "auto"

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
    encoding: EncOpt = None, delimiter: DelimOpt = None, sheet: SheetOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
    tier: Annotated[str, typer.Option(help="ensemble (default: sparse + neighbours + zero-shot prior, encoder only where sparse is unsure), sparse (fastest, no transformer), embed, or finetune (transformer trained end to end + sparse).")] = DEFAULT_TIER,
    encoder: Annotated[str, typer.Option(help="Text encoder of the embedding tiers: auto, minilm-en, e5-multilingual, or a local model folder / .onnx file.")] = "auto",
    embed: Annotated[Embed, typer.Option("--embed", help="What the embedding members read: title; context (the title with the beginning of the description and attributes); auto (both compared by cross-validation, the context kept only when it helps beyond noise). title is the default: the others gained nothing on average across the benchmark catalogues and are slower (benchmarks/RESULTS.md).")] = Embed.TITLE,
    image_encoder: Annotated[str | None, typer.Option("--image-encoder", help="Also learn from product photos (the image column): effnet-lite0, effnet-lite2 or a local .onnx file; needs an embedding tier.")] = None,
    fusion: Annotated[str, typer.Option(help="How photos join the text: late (image head pooled with the text members) or early (one head on text + image features).")] = "late",
    image_views: Annotated[int, typer.Option("--image-views", min=1, max=4, help="Views of each photo averaged (test-time augmentation): 1 as it is, 2 + mirrored, 3 + centre crop, 4 + that mirrored; each view is one more pass of the image network.")] = 1,
    image_root: ImageRootOpt = None,
    track: TrackOpt = False, tracking_uri: TrackUriOpt = None, experiment: ExperimentOpt = "taxonomist",
    register: RegisterOpt = None,
    pseudo_queries: Annotated[bool, typer.Option("--pseudo-queries", help="Also train on query-shaped parts of the titles (last words, title without brand), for search-query classification.")] = False,
    refit: Annotated[bool, typer.Option(help="After the held-out evaluation, fit the saved model on every product (--no-refit saves the evaluated model, trained without the held-out part).")] = True,
    n_jobs: Annotated[int | None, typer.Option("--n-jobs", min=1, help="Worker processes of the sparse member's fits (default: all cores, at most 2; each holds a copy of the features, unless they pass 1 GB: then they are mapped from one file).")] = None,
    hierarchy: Annotated[str, typer.Option(help="How the sparse member learns the taxonomy: flat (one-vs-rest over all leaves), two-level (top-level categories, then the leaves within each), top-down (one problem per inner node: each product against its siblings only), or auto (two-level for large catalogues, else flat).")] = "auto",
    engine: Annotated[str, typer.Option(help="Where the sparse member's fits run: local (worker processes) or ray (Ray tasks on the cluster in RAY_ADDRESS, or a local Ray; the same model).")] = "local",
    checkpoint: Annotated[Path | None, typer.Option(help="Folder (shared storage on a cluster) keeping the finished parts of the sparse member's fit: the same command resumes an interrupted training.")] = None,
    max_problem_rows: Annotated[str, typer.Option(help="The most products one of the sparse member's local problems trains on (above: a sample in its categories' proportions): auto (200,000), none (all), or a number.")] = "auto",
    max_embedded: Annotated[str, typer.Option(help="The most training products an ensemble encodes for its embedding members and its cross-validation (above: a sample per category; the sparse member learns from all): a number (default 10000) or none (all).")] = "10000",
) -> None:
    """Train a model bundle on a labelled catalogue (held-out evaluation included, then refitted on all rows)."""
    _check_options(tier, hierarchy, engine, bool(register and not track), bool(image_encoder))
    from ..catalog import split_catalog
    from ..classifier import TaxonomyClassifier
    from ..taxonomy import load_taxonomy
    from ..training import train_bundle

    tax = load_taxonomy(taxonomy) if taxonomy else None
    cat = read_input(catalog, Reading.of(map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, delimiter, sheet), require_labels=True, taxonomy=tax)
    if test_size > 0:
        with spinner("splitting (grouped by title, stratified by category)"):
            train_cat, test_cat = split_catalog(cat, test_size=test_size, seed=seed)
        console.print(f"train {len(train_cat):,} / held-out {len(test_cat):,} products, {cat.frame['category'].nunique()} categories")
    else:
        train_cat, test_cat = cat, None
    if pseudo_queries:
        from ..apps.query import with_pseudo_queries

        n = len(train_cat)
        train_cat = with_pseudo_queries(train_cat, seed=seed)
        console.print(f"+ {len(train_cat) - n:,} pseudo-queries from the training titles")
        if test_cat is not None and refit:
            cat = with_pseudo_queries(cat, seed=seed)
    clf = TaxonomyClassifier(tier=tier, min_confidence=min_confidence, C=c, random_state=seed, n_jobs=n_jobs,  # type: ignore[arg-type]
                             hierarchy=hierarchy, engine=engine,  # type: ignore[arg-type]
                             checkpoint=str(checkpoint) if checkpoint else None,
                             max_problem_rows=_max_problem_rows(max_problem_rows),  # type: ignore[arg-type]
                             max_embedded=_max_embedded(max_embedded),
                             encoder=encoder, embed_context={"title": False, "context": True}.get(embed.value, "auto"),
                             image_encoder=image_encoder,
                             fusion=fusion,  # type: ignore[arg-type]
                             image_views=image_views, image_root=str(image_root) if image_root else None)
    with tracking(track, tracking_uri, experiment, "train", f"train {catalog.name} ({tier})") as tracker:
        result = train_bundle(clf, cat, test_size=test_size, seed=seed, split=(train_cat, test_cat), refit=refit,
                              taxonomy=tax, back_off=min_confidence is None, stage=spinner)
        _say_trained(result, "held-out", refit)
        ev = result.evaluation
        note = (f" — the saved model was then refitted on all {len(cat):,} products" if refit else "")
        if ev is not None and report:
            ev.write_html(report, title=f"taxonomist: {catalog.name} (held-out{note})")
            out.print(f"report: {report}")
        if ev is not None and json_out:
            ev.to_json(json_out)
        path = result.save(output)
        out.print(f"model saved to {path}")
        if tracker is not None:
            tracker.log_params({"catalog": catalog.name, "test_size": test_size, "seed": seed,
                                "taxonomy": taxonomy.name if taxonomy else "", **result.model.get_params()})
            _track_training(tracker, result.model, len(train_cat), ev, report, f"taxonomist: {catalog.name} (held-out)",
                            path, register)


def _say_trained(result: Any, held_out: str, refit: bool) -> None:
    """What a training run did, stage by stage: the sparse member's split and the photos, the held-out figures,
    the back-off threshold, the refit, what cross-validation decided, and the seconds of each stage."""
    clf = result.model
    _say_fitted(clf)
    if clf.description_chars_ is not None:
        console.print(f"descriptions: the first {clf.description_chars_} characters of each are read"
                      + (" (better than the whole on a held-out part of the training products)"
                         if clf.description_chars == "auto" else ""), highlight=False)
    ev = result.evaluation
    if ev is not None:
        out.print(metrics_table(ev, f"{held_out} evaluation ({ev.metrics['n']:,} products)"))
        if result.back_off is not None:
            console.print(f"back-off: answers back off to the parent below confidence {result.back_off:.2f} "
                          f"({held_out}: leaves at or above it are 90 % precise, "
                          f"{ev.metrics['coverage_at_90_precision']:.0%} of products); change it with "
                          "--min-confidence (0: never)", highlight=False)
        elif "back_off_threshold" not in ev.metrics and clf.min_confidence is None:
            console.print(f"back-off: no confidence reaches 90 % precision on the {held_out} products, so the model "
                          "always answers with a leaf; set one with --min-confidence", style="yellow", highlight=False)
        if refit:
            split = result.metrics["split"]
            console.print(f"refitted on all {split['n_train'] + split['n_test']:,} products ({held_out} products "
                          "included); the stored metrics are those of the evaluation above (the saved model saw "
                          "more data)", highlight=False)
    _say_stacking(clf)
    inner = (getattr(clf, "stacking_", None) or {}).get("seconds") or {}
    # (the ensemble's own stages are those of the last fit: the refit's when there was one)
    console.print("time: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in result.seconds.items())
                  + (" — of the last fit: " + ", ".join(f"{k} {v:.1f} s" for k, v in inner.items()) if inner else ""),
                  highlight=False)


def _check_options(tier: str, hierarchy: str, engine: str, register_untracked: bool, images: bool) -> None:
    """The train options that are refused before the catalogue is read."""
    if hierarchy not in ("flat", "two-level", "top-down", "auto"):
        raise CliError(f"--hierarchy must be flat, two-level, top-down or auto, got {hierarchy!r}")
    if engine not in ("local", "ray"):
        raise CliError(f"--engine must be local or ray, got {engine!r}")
    if register_untracked:
        raise CliError("--register needs --track (the bundle is registered from its MLflow run)")
    if tier not in ("sparse", "ensemble", "embed", "finetune"):
        raise CliError(f"--tier must be sparse, ensemble, embed or finetune, got {tier!r} (for no training data: taxonomist classify)")
    if images and tier == "sparse":
        raise CliError("--image-encoder needs an embedding tier: add --tier ensemble")


def _max_problem_rows(value: str) -> int | str | None:
    """``--max-problem-rows``: ``auto``, ``none`` or a number of at least 2."""
    if value.lower() in ("auto", "none"):
        return "auto" if value.lower() == "auto" else None
    if not value.isdigit() or int(value) < 2:
        raise CliError(f"--max-problem-rows must be auto, none or a number of at least 2, got {value!r}")
    return int(value)


def _max_embedded(value: str) -> int | None:
    """``--max-embedded``: ``none`` or a number of at least 1."""
    if value.lower() == "none":
        return None
    digits = value.replace(",", "").replace("_", "")  # (10,000 and 10_000 as written)
    if not digits.isdigit() or int(digits) < 1:
        raise CliError(f"--max-embedded must be none or a number of at least 1, got {value!r}")
    return int(digits)


def _say_fitted(clf: Any) -> None:
    """How the sparse member split the taxonomy, and how many photos were used."""
    tree = getattr(clf.sparse_member, "tree_", None)
    if tree is not None:
        console.print(f"sparse member: {clf.hierarchy_}, {int((tree.sizes > 1).sum()):,} local problems over "
                      f"{len(clf.classes_):,} leaves", highlight=False)
    if clf.image_encoder_ is not None:
        st = clf.image_stats_
        console.print(f"photos: {st['with_image']:,} used, {st['without_image']:,} products without one, "
                      f"{st['unusable_image']:,} unusable (those products learn from their text)",
                      style="yellow" if st["unusable_image"] else None, highlight=False)


def _track_training(tracker: Any, clf: Any, n_train: int, ev: Any, report: Path | None, title: str, path: Path,
                    register: str | None) -> None:
    """Tags, metrics, report and bundle of a training run in MLflow (and the bundle registered when asked)."""
    tracker.set_tags({"data.fingerprint": clf.fingerprint_, "data.rows": n_train,
                      "model.tier": clf.tier, "model.classes": len(clf.classes_)})
    if ev is not None:
        track_result(tracker, ev, report, title, path, register)
        return
    tracker.log_artifact(path, "bundle")
    tracker.log_pyfunc(path)
    if register:
        out.print(f"registered as MLflow model {register!r} version {tracker.register_bundle(register)}")


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
    min_confidence: Annotated[float | None, typer.Option(help="Back-off threshold for hierarchical scores.", callback=check_probability)] = None,
    map_: MapOpt = None, label_columns: LabelColsOpt = None, sep: SepOpt = " > ", with_columns: WithOpt = None,
    encoding: EncOpt = None, delimiter: DelimOpt = None, sheet: SheetOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
    image_root: ImageRootOpt = None,
    attributes: Annotated[str | None, typer.Option("--attributes", help="Also score how color,gender,age_group are read from the products' words, against the catalogue's own columns of them.")] = None,
    track: TrackOpt = False, tracking_uri: TrackUriOpt = None, experiment: ExperimentOpt = "taxonomist",
) -> None:
    """Evaluate a model bundle on a labelled catalogue (text, image and fused scores when it uses photos)."""
    from ..classifier import load
    from ..evaluation import evaluate as run_evaluation
    from ..products import fingerprint

    clf = load(model)
    if image_root:
        clf.image_root = str(image_root)
    cat = read_input(catalog, Reading.of(map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, delimiter, sheet), require_labels=True)
    with spinner(f"evaluating on {len(cat):,} products"):
        ev = run_evaluation(clf, cat, min_confidence=min_confidence,
                            attributes=[a.strip() for a in (attributes or "").split(",") if a.strip()])
    out.print(metrics_table(ev, f"evaluation on {catalog.name}"))
    if ev.metrics.get("seen_in_training_share", 0) > 0.05:
        console.print(f"[yellow]warning: {ev.metrics['seen_in_training_share']:.1%} of these titles were in the training data; "
                      "the scores are inflated[/yellow]")
    if json_out:
        ev.to_json(json_out)
        out.print(f"metrics: {json_out}")
    if report:
        ev.write_html(report, title=f"taxonomist: {model.name} on {catalog.name}")
        out.print(f"report: {report}")
    with tracking(track, tracking_uri, experiment, "evaluate", f"evaluate {model.name} on {catalog.name}") as tracker:
        if tracker is not None:
            tracker.log_params({"model": str(model), "catalog": catalog.name, "min_confidence": min_confidence,
                                "tier": clf.tier})
            tracker.set_tags({"data.fingerprint": fingerprint(cat.titles, cat.frame["category"]),
                              "data.rows": len(cat), "model.fingerprint": clf.fingerprint_})
            track_result(tracker, ev, report, f"taxonomist: {model.name} on {catalog.name}")


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
    encoding: EncOpt = None, delimiter: DelimOpt = None, sheet: SheetOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
    track: TrackOpt = False, tracking_uri: TrackUriOpt = None, experiment: ExperimentOpt = "taxonomist",
    register: RegisterOpt = None,
    refit: Annotated[bool, typer.Option(help="After evaluating the best configuration, fit the saved model on every product (--no-refit: on the training part only).")] = True,
) -> None:
    """Search hyper-parameters with Optuna, then train, evaluate and save the best model (refitted on all rows)."""
    from ..training import train_bundle
    from ..tuning import tune as run_tuning

    if register and not track:
        raise CliError("--register needs --track (the bundle is registered from its MLflow run)")
    cat = read_input(catalog, Reading.of(map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, delimiter, sheet), require_labels=True)
    with tracking(track, tracking_uri, experiment, "tune", f"tune {catalog.name}") as tracker, \
            make_progress("tuning", BarColumn(), MofNCompleteColumn(), TextColumn("best {task.fields[best]}"),
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
        trained = train_bundle(result.model(random_state=seed), cat, test_size=valid_size, seed=seed,
                               split=(train_cat, valid_cat),
                               refit=refit, stage=spinner)
        _say_trained(trained, "validation", refit)
        clf, ev = trained.model, trained.evaluation
        path = trained.save(output, tuning=result.to_dict())
        out.print(f"model saved to {path}")
        if tracker is not None:
            tracker.log_params({"catalog": catalog.name, "tier": tier, "trials": trials, "metric": metric, "seed": seed,
                                "valid_size": valid_size, "storage": storage or "", "study": study,
                                **{f"best.{k}": v for k, v in result.best_params.items()}})
            tracker.log_metrics({f"default_{metric}": result.default_score, f"tuned_{metric}": result.best_score,
                                 "n_trials": result.n_trials, "n_pruned": result.n_pruned})
            tracker.set_tags({"data.fingerprint": clf.fingerprint_, "data.rows": len(train_cat)})
            tracker.log_dict(result.trials, "trials.json")
            track_result(tracker, ev, None, f"taxonomist: tuned on {catalog.name}", path, register)


@app.command()
def retrain(
    model_dir: Annotated[Path, typer.Argument(help="The model bundle to improve (with --auto: the model store the service serves).")],
    feedback: Annotated[str, typer.Option("--feedback", help="The service's review/feedback store: a SQLite file or a postgresql:// URL.")],
    data: Annotated[Path, typer.Option("--data", help="The original labelled training catalogue.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder for the new bundle (e.g. a new version in a model store); not with --auto.")] = None,
    map_: MapOpt = None, label_columns: LabelColsOpt = None, sep: SepOpt = " > ", with_columns: WithOpt = None,
    encoding: EncOpt = None, delimiter: DelimOpt = None, sheet: SheetOpt = None, no_header: NoHeaderOpt = False, columns: ColumnsOpt = None, strict: StrictOpt = False,
    refit: Annotated[bool, typer.Option(help="After the comparison, fit the new version on every product (--no-refit: on the training part only).")] = True,
    accept_above: Annotated[float, typer.Option(help="From a zero-shot model: its answers at or above this confidence label the products nobody reviewed.", callback=check_probability)] = 0.9,
    tier: Annotated[str, typer.Option(help="From a zero-shot model: the tier to train (ensemble, sparse, ...).")] = "ensemble",
    auto: Annotated[bool, typer.Option("--auto", help="The scheduled job: with enough new labels, retrain the store's serving version, gate the candidate against it and promote it to the next version folder only when it is not worse beyond noise.")] = False,
    min_new_labels: Annotated[int, typer.Option("--min-new-labels", min=1, help="--auto: reviewer labels recorded since the serving version was trained that a retraining needs.")] = 200,
    golden: Annotated[Path | None, typer.Option("--golden", help="--auto: a frozen labelled catalogue the gate also compares the two models on.")] = None,
    gate_share: Annotated[float, typer.Option("--gate-share", help="--auto: share of the new labels held out of training for the gate.", callback=check_probability)] = 0.2,
    reload_url: Annotated[str | None, typer.Option("--reload-url", help="--auto: after a promotion, POST here (the service's /v1/admin/reload) with the key in $TAXONOMIST_API_KEY.")] = None,
) -> None:
    """Train a new version from the original data + the corrections people made; compare it with the old one.
    From a zero-shot model (your own taxonomy, `classify --save`), the catalogue need not be labelled: reviewed
    products and the zero-shot model's sure answers become the training labels. With --auto, a champion /
    challenger gate decides whether the new version serves."""
    from ..retrain import retrain as run_retrain
    from ..serving.store import ReviewStore, store_exists

    if not store_exists(feedback):
        raise CliError(f"expected the feedback database at {feedback}, but there is no such file "
                       "(it is the service's TAXONOMIST_REVIEW_DB)")
    if auto:
        reading = Reading.of(map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, delimiter, sheet)

        def read_labelled(path: Path) -> Any:  # --with-columns belongs to the catalogue, not to the golden file
            return read_input(path, reading if path == data else reading.without_columns(), require_labels=True)

        _auto_retrain(model_dir, feedback, data, golden, min_new_labels, gate_share, reload_url, read_labelled)
        return
    if output is None:
        raise CliError("give the folder for the new bundle with -o (or use --auto with a model store)")
    try:
        base_tier = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))["tier"]
    except (OSError, ValueError, KeyError):
        raise CliError(f"{model_dir} is not a model bundle (no readable manifest.json)") from None
    zero_shot = base_tier == "zeroshot"  # a shop's own taxonomy: the catalogue need not be labelled
    cat = read_input(data, Reading.of(map_, label_columns, sep, with_columns, encoding, no_header, columns, strict, delimiter, sheet), require_labels=not zero_shot)
    store = ReviewStore(feedback)
    try:
        items = store.feedback()
    finally:
        store.close()
    # a reviewer's accept is a label as much as a correction: "labels from people", not "corrections"
    with spinner(f"retraining with {len(items)} labels from people"):
        result = run_retrain(model_dir, items, cat, output, refit=refit, accept_above=accept_above, tier=tier)
    s = result.stats
    out.print(f"feedback: {s['feedback']} labels from people (review decisions and POST /v1/feedback) of "
              f"{s['distinct_products']} products → {s['relabelled']} catalogue rows relabelled, {s['added']} "
              "products added")
    if zero_shot:
        out.print(f"from the zero-shot model: {s['human_labelled']:,} products labelled by people, "
                  f"{s['accepted_from_zero_shot']:,} of its answers accepted (confidence ≥ {accept_above:.2f}), "
                  f"{s['unlabelled_left']:,} left out; the comparison below holds out reviewed products only")
        if s["categories_without_labels"]:
            missing = s["categories_without_labels"]
            console.print(f"{len(missing):,} of the zero-shot model's categories have no label yet (no reviewed product, "
                          f"no sure answer) and are not in the new model: {', '.join(missing[:10])}"
                          f"{' …' if len(missing) > 10 else ''}; review products of them to add them", style="yellow",
                          highlight=False)
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


def _auto_retrain(store: Path, feedback: str, data: Path, golden: Path | None, min_new_labels: int, gate_share: float,
                  reload_url: str | None, read: Any) -> None:
    """``retrain --auto``: new labels -> candidate -> promotion gate -> next version (or kept aside)."""
    import os
    import urllib.request

    from ..promotion import auto_retrain
    from ..serving.store import ReviewStore

    db = ReviewStore(feedback)
    try:
        items = db.feedback()
    finally:
        db.close()
    cat = read(data)
    gold = read(golden) if golden is not None else None
    with spinner(f"checking {len(items):,} labels; retraining and gating when enough are new"):
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
