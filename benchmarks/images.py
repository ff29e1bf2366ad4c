"""Text-only vs image-only vs text + image fusion on the fashion products that have a photo.

    python benchmarks/images.py --data ../shared/data [--image-encoder effnet-lite0] [--skip-early]

The 9,583 fashion products with a photo (``images/<id>.jpg``, 224x224 px), titles from ``styles_text.csv``,
3-level paths (masterCategory > subCategory > articleType); one grouped split (``split_catalog(test_size=0.2,
seed=0)``) shared by every row. Rows: the text ensemble (sparse + neighbours + zero-shot over MiniLM), the image
tier alone (EfficientNet-Lite features -> logistic head), the oracle bound of any fusion of those two (the
image's answer exactly where the text's is wrong and the image's right), late fusion (the image head pooled with the text
members, weights fitted on validation) and early fusion (one head on text embedding + image features, pooled
with the text members). Prints macro-F1 / accuracy per row, image encoding speed (ONNX Runtime, empty cache) and
the peak RSS of this process.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

import taxonomist as tx
from taxonomist.encoders.image import load_image_encoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--image-encoder", default="effnet-lite0")
    ap.add_argument("--skip-early", action="store_true")
    ap.add_argument("--only", choices=["fashion", "grocery"], default=None, help="Run one of the two parts.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TAXONOMIST_CACHE_DIR", tempfile.mkdtemp(prefix="taxonomist-bench-"))
    if args.only != "grocery":
        fashion_part(args)
    if args.only != "fashion":
        grocery_part(args)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


def grocery_part(args: argparse.Namespace) -> None:
    """Grocery Store dataset: natural phone photos, no titles; its own train/val/test split; path group > coarse >
    fine. Image-only (the only modality the products have); accuracy at the fine (81) and coarse (43) level."""
    import pandas as pd

    root = args.data / "grocery" / "dataset"

    def part(name: str) -> pd.DataFrame:
        rows = [line.split(",")[0].strip() for line in (root / f"{name}.txt").read_text().splitlines() if line.strip()]
        # train/Fruit/Apple/Golden-Delicious/x.jpg -> Fruit > Apple > Golden-Delicious; a class whose coarse and
        # fine names are one (train/Fruit/Banana/x.jpg) repeats it: Fruit > Banana > Banana
        paths = [r.split("/")[1:-1] for r in rows]
        return pd.DataFrame({"id": rows, "title": "", "image": rows,
                             "category": [" > ".join(p if len(p) == 3 else [*p, p[-1]]) for p in paths]})

    train = tx.Catalog.from_frame(pd.concat([part("train"), part("val")], ignore_index=True), require_labels=True)
    test = tx.Catalog.from_frame(part("test"), require_labels=True)
    print(f"\ngrocery: train+val {len(train):,} photos, test {len(test):,}; "
          f"{train.frame['category'].nunique()} fine classes")
    t = time.perf_counter()
    model = tx.TaxonomyClassifier(tier="ensemble", members=["image"], image_encoder=args.image_encoder,
                                  image_root=str(root)).fit(train)
    ev = tx.evaluate(model, test)
    levels = {lv["level"]: lv for lv in ev.metrics["levels"]}
    print(f"grocery image-only ({args.image_encoder}): fine (81) accuracy {levels[3]['accuracy']:.4f} macro-F1 "
          f"{levels[3]['macro_f1']:.4f}; coarse (43) accuracy {levels[2]['accuracy']:.4f}; group (3) accuracy "
          f"{levels[1]['accuracy']:.4f}  ({time.perf_counter() - t:.0f} s incl. encoding)")


def fashion_part(args: argparse.Namespace) -> None:
    fashion = args.data / "fashion"
    images = fashion / "images"
    cat = tx.read_catalog(fashion / "styles.csv", with_columns=[fashion / "styles_text.csv"],
                          mapping={"title": "productDisplayName"},
                          label_columns=["masterCategory", "subCategory", "articleType"], require_labels=True)
    have = {p.stem for p in images.glob("*.jpg")}
    keep = [i for i, v in enumerate(cat.frame["id"]) if v in have]
    cat = cat.subset(keep)
    cat.frame["image"] = cat.frame["id"] + ".jpg"
    train, test = tx.split_catalog(cat, test_size=0.2, seed=0)
    print(f"fashion with photos: {len(cat):,} products, {cat.frame['category'].nunique()} leaves; "
          f"train {len(train):,} / test {len(test):,}")

    # image encoding speed on an empty cache (the models below then reuse the cached vectors)
    enc = load_image_encoder(args.image_encoder)
    refs = cat.frame["image"].tolist()
    t0 = time.perf_counter()
    batch = enc.encode(refs, images)
    dt = time.perf_counter() - t0
    print(f"image encoding ({args.image_encoder}, ONNX Runtime, {os.cpu_count()} cores): {len(refs) / dt:.1f} images/s "
          f"({len(refs):,} photos in {dt:.1f} s, {int(batch.mask.sum()):,} usable)")

    rows = []

    def run(name: str, **kw: object) -> tx.TaxonomyClassifier:
        """Fit on the training part, score on the test part, print and keep the row."""
        t = time.perf_counter()
        model = tx.TaxonomyClassifier(tier="ensemble", image_root=str(images), **kw).fit(train)  # type: ignore[arg-type]
        fit_s = time.perf_counter() - t
        ev = tx.evaluate(model, test)
        rows.append((name, ev.metrics["macro_f1"], ev.metrics["accuracy"], fit_s, model.weights_))
        print(f"{name:32s} macro-F1 {ev.metrics['macro_f1']:.4f}  accuracy {ev.metrics['accuracy']:.4f}  "
              f"fit {fit_s:.0f} s  weights {({k: round(v, 2) for k, v in model.weights_.items()})}", flush=True)
        return model

    text = run("text (sparse + knn + zeroshot)")
    image = run("image only (EfficientNet-Lite head)", members=["image"], image_encoder=args.image_encoder)
    # the most any fusion of these two models' answers could give: the image's answer exactly where the text's is
    # wrong and the image's right (an upper bound for choosing between them; it needs the true labels)
    from sklearn.metrics import accuracy_score, f1_score

    truth = test.frame["category"].astype(str).to_numpy()
    pt, pi = (np.asarray(m.predict(test)).astype(str) for m in (text, image))
    fix = (pt != truth) & (pi == truth)
    oracle = np.where(fix, pi, pt)
    print(f"{'oracle bound (image where only it is right)':32s} macro-F1 {f1_score(truth, oracle, average='macro'):.4f}  "
          f"accuracy {accuracy_score(truth, oracle):.4f}  ({int(fix.sum())} of the text's {int((pt != truth).sum())} "
          "errors the image gets right)", flush=True)
    late = run("late fusion (text members + image)", image_encoder=args.image_encoder, fusion="late")
    # where photos should matter: poor titles. The same test products with the title cut to its first word
    # (usually the brand: "Nike", "Puma"), the same models
    poor = test.subset(range(len(test)))
    poor.frame["title"] = [t.split()[0] if t.split() else t for t in poor.frame["title"]]
    for name, model in (("text", text), ("late fusion", late)):
        ev = tx.evaluate(model, poor)
        print(f"poor titles (first word only), {name:11s}: macro-F1 {ev.metrics['macro_f1']:.4f} "
              f"accuracy {ev.metrics['accuracy']:.4f}")
    if not args.skip_early:
        run("early fusion (text members + fused)", image_encoder=args.image_encoder, fusion="early")
    per = tx.evaluate(late, test).metrics["modalities"]
    print("late-fusion model by modality (taxonomist evaluate reports the same):",
          {k: ({m: round(x, 4) for m, x in v.items()} if isinstance(v, dict) else v) for k, v in per.items()})
    best_single = max(r[1] for r in rows[:2])
    print("\n| model | macro-F1 | accuracy | fit (s) |\n|---|---|---|---|")
    for name, f1, acc, fit_s, _ in rows:
        print(f"| {name} | {f1:.4f} | {acc:.4f} | {fit_s:.0f} |")
    print(f"\nbest single modality macro-F1 {best_single:.4f}; fusion gain: "
          + ", ".join(f"{r[0].split(' (')[0]} {r[1] - best_single:+.4f}" for r in rows[2:]))


if __name__ == "__main__":
    main()
