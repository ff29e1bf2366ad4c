"""Text vs image vs fused, with the oracle bound, on catalogues whose text is good, weak or missing.

    python benchmarks/images.py --data ../shared/data [--seeds 0 1] [--variants fashion,fashion-brand,...]
                                [--image-encoder effnet-lite0] [--views 1] [--out benchmarks/out/images.json]

Variants (each split by ``split_catalog(test_size=0.2, seed=s)``, the same split for every model):

* ``fashion``: the 9,583 fashion products with a photo (224 px product shots on white), 3-level paths
  (masterCategory > subCategory > articleType), titles from ``styles_text.csv``;
* ``fashion-brand``: the same products and split with every title (training and test) cut to its first word,
  usually the brand ("Nike", "Puma"): a catalogue whose text is weak;
* ``fashion-no-title``: the same products, half of them (seeded) with no title at all;
* ``fashion-photo-gaps``: full titles, a third of the products (seeded) without a photo;
* ``sample``: the bundled sample catalogue (3,176 products, 320 with a photo);
* ``grocery``: the Grocery Store photos (natural phone photos, no text; the dataset's own train + val / test
  split, the same for every seed): image only.

Rows per variant and seed: ``text`` (the default ensemble: sparse + neighbours + zero-shot over MiniLM), ``image``
(the image member alone: EfficientNet-Lite features -> logistic head; scored on the test products with a
photo), ``fused`` (the default ensemble with the
photos: cross-validation weighs them against the text model and keeps them only beyond noise) and ``oracle`` (the text model's answers with the
image model's put in exactly where the text is wrong and the image right: the most any choice between the two
answers could give); and ``image_lr``, scikit-learn's ``LogisticRegression(C=1)`` on the same photo vectors of the
training products with a photo, the reference the image member is checked against. Prints one line per fit and
a markdown table; writes every figure to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import taxonomist as tx

VARIANTS = ("fashion", "fashion-brand", "fashion-no-title", "fashion-photo-gaps", "sample", "grocery")


def fashion(data: Path, variant: str, seed: int) -> tuple[tx.Catalog, tx.Catalog, Path]:
    folder = data / "fashion"
    images = folder / "images"
    cat = tx.read_catalog(folder / "styles.csv", with_columns=[folder / "styles_text.csv"],
                          mapping={"title": "productDisplayName"},
                          label_columns=["masterCategory", "subCategory", "articleType"], require_labels=True)
    have = {p.stem for p in images.glob("*.jpg")}
    cat = cat.subset([i for i, v in enumerate(cat.frame["id"]) if v in have])
    cat.frame = cat.frame[["id", "title", "category"]].copy()  # the title is the text (no attribute columns)
    cat.frame["image"] = cat.frame["id"] + ".jpg"
    # every variant has the split of the full titles (split by brand-only titles, no test brand would be seen)
    train, test = tx.split_catalog(cat, test_size=0.2, seed=seed)
    rng = np.random.default_rng(1000 + seed)
    for part in (train, test):
        frame = part.frame = part.frame.copy()
        if variant == "fashion-brand":
            frame["title"] = [t.split()[0] if t.split() else t for t in frame["title"]]
        elif variant == "fashion-no-title":
            frame.loc[rng.random(len(frame)) < 0.5, "title"] = ""
        elif variant == "fashion-photo-gaps":
            frame.loc[rng.random(len(frame)) < 1 / 3, "image"] = ""
    return train, test, images


def sample(seed: int) -> tuple[tx.Catalog, tx.Catalog, Path]:
    from taxonomist.datasets import sample_path

    cat = tx.read_catalog(sample_path(), require_labels=True)
    train, test = tx.split_catalog(cat, test_size=0.2, seed=seed)
    return train, test, sample_path().parent


def grocery(data: Path) -> tuple[tx.Catalog, tx.Catalog, Path]:
    root = data / "grocery" / "dataset"

    def part(name: str) -> pd.DataFrame:
        rows = [line.split(",")[0].strip() for line in (root / f"{name}.txt").read_text().splitlines() if line.strip()]
        # train/Fruit/Apple/Golden-Delicious/x.jpg -> Fruit > Apple > Golden-Delicious; a class whose coarse and
        # fine names are one (train/Fruit/Banana/x.jpg) repeats it: Fruit > Banana > Banana
        paths = [r.split("/")[1:-1] for r in rows]
        return pd.DataFrame({"id": rows, "title": "", "image": rows,
                             "category": [" > ".join(p if len(p) == 3 else [*p, p[-1]]) for p in paths]})

    train = pd.concat([part("train"), part("val")], ignore_index=True)
    return tx.Catalog(train), tx.Catalog(part("test")), root


def scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"macro_f1": float(f1_score(truth, pred, average="macro")), "accuracy": float(accuracy_score(truth, pred))}


def run(variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    if variant == "grocery":
        train, test, root = grocery(args.data)
    elif variant == "sample":
        train, test, root = sample(seed)
    else:
        train, test, root = fashion(args.data, variant, seed)
    truth = test.frame["category"].astype(str).to_numpy()
    out: dict[str, Any] = {"variant": variant, "seed": seed, "train": len(train), "test": len(test),
                           "leaves": int(train.frame["category"].nunique())}
    print(f"\n{variant} seed {seed}: train {len(train):,} / test {len(test):,}, {out['leaves']} leaves", flush=True)
    has_photo = test.frame["image"].astype(str).str.strip().ne("").to_numpy()
    preds: dict[str, np.ndarray] = {}
    configs: dict[str, dict[str, Any]] = {"image": {"members": ["image"]}}
    if variant != "grocery":  # the grocery photos have no text
        configs = {"text": {}, **configs, "fused": {}}
    for name, kw in configs.items():
        if name != "text":
            kw = {**kw, "image_encoder": args.image_encoder, "image_views": args.views}
        t = time.perf_counter()
        model = tx.TaxonomyClassifier(tier="ensemble", image_root=str(root), random_state=seed, **kw).fit(train)
        fit_s = time.perf_counter() - t
        preds[name] = np.asarray(model.predict(test)).astype(str)
        # the image member alone is scored on the products with a photo (the others get the class prior)
        rows = has_photo if name == "image" else np.ones(len(truth), bool)
        out[name] = {**scores(truth[rows], preds[name][rows]), "products": int(rows.sum()), "fit_s": round(fit_s, 1),
                     "weights": {k: round(v, 3) for k, v in model.weights_.items()},
                     "prior_shift": model.prior_shift_}
        print(f"  {name:6s} macro-F1 {out[name]['macro_f1']:.4f}  accuracy {out[name]['accuracy']:.4f}  "
              f"fit {fit_s:.0f} s  weights {out[name]['weights']}", flush=True)
    # the reference for the image member: scikit-learn's logistic regression on the same photo vectors
    from sklearn.linear_model import LogisticRegression

    from taxonomist.encoders.image import load_image_encoder

    enc = load_image_encoder(args.image_encoder, views=args.views)
    a, b = (enc.encode(part.frame["image"].tolist(), root) for part in (train, test))
    t = time.perf_counter()
    head = LogisticRegression(C=1.0, max_iter=1000).fit(a.vectors[a.mask], train.frame["category"].to_numpy()[a.mask])
    out["image_lr"] = {**scores(truth[b.mask], head.predict(b.vectors[b.mask])), "products": int(b.mask.sum()),
                       "fit_s": round(time.perf_counter() - t, 1)}
    print(f"  plain logistic head on the same photo vectors: macro-F1 {out['image_lr']['macro_f1']:.4f}  "
          f"accuracy {out['image_lr']['accuracy']:.4f}", flush=True)
    if "text" in preds:
        fix = (preds["text"] != truth) & (preds["image"] == truth)
        out["oracle"] = {**scores(truth, np.where(fix, preds["image"], preds["text"])), "image_fixes": int(fix.sum()),
                         "text_errors": int((preds["text"] != truth).sum())}
        print(f"  oracle macro-F1 {out['oracle']['macro_f1']:.4f}  accuracy {out['oracle']['accuracy']:.4f}  "
              f"(the image is right on {out['oracle']['image_fixes']} of the text's {out['oracle']['text_errors']} "
              "errors)", flush=True)
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| variant | seeds | text | image (with photo) | plain logistic head | fused | oracle | fused − text |",
             "|---|---|---|---|---|---|---|---|"]
    for variant in dict.fromkeys(r["variant"] for r in results):
        rs = [r for r in results if r["variant"] == variant]

        def cell(name: str, rs: list[dict[str, Any]] = rs) -> str:
            if name not in rs[0]:
                return "–"
            return " / ".join(f"{np.mean([r[name][k] for r in rs]):.4f}" for k in ("macro_f1", "accuracy"))

        delta = "–" if "text" not in rs[0] else " / ".join(
            f"{np.mean([r['fused'][k] - r['text'][k] for r in rs]):+.4f}" for k in ("macro_f1", "accuracy"))
        lines.append(f"| {variant} | {len(rs)} | {cell('text')} | {cell('image')} | {cell('image_lr')} | {cell('fused')} | "
                     f"{cell('oracle')} | {delta} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--image-encoder", default="effnet-lite0")
    ap.add_argument("--views", type=int, default=1, help="Photo views averaged per product (test-time augmentation).")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/images.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TAXONOMIST_CACHE_DIR", tempfile.mkdtemp(prefix="taxonomist-bench-"))
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    results = []
    for variant in variants:
        for seed in ([0] if variant == "grocery" else args.seeds):
            results.append(run(variant, seed, args))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))
    print("\nmacro-F1 / accuracy on the test part, mean over seeds\n")
    print(table(results))
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
