"""``taxonomist demo``: the main job on the bundled sample, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .apps import search_build, search_query, users_build, users_recommend, users_synthesize
from .common import DEFAULT_TIER, app, out
from .predict import classify, predict
from .train import train


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where to write the model, report and predictions.")] = Path("runs/demo"),
) -> None:
    """Train, evaluate, report and predict on the bundled fashion sample; then zero-shot with no training data,
    photos, category-aware search and shopper recommendations."""
    from ..classifier import load
    from ..datasets import sample_path

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
