"""Zero-shot classification as a shop without labels meets it, against the plain MiniLM argmax.

    python benchmarks/zeroshot.py --data ../shared/data [--sample 400] [--only shops|catalogues|shop]

Three kinds of sets, each classified with ``TaxonomyClassifier.from_taxonomy`` and no options (the shipped default),
never trained on:

- **shop exports** (``DATA/shop_exports/``: real exports and Merchant Center feeds labelled by their merchants; no
  licence, so they are read from the data folder and never copied): each shop into the taxonomy its merchant used
  (Google's or Shopify's), and the Shopify-labelled ones also into Google's through Shopify's published mapping.
- **the 36 branded products** of ``benchmarks/shop/`` into Google's taxonomy, read from their Shopify export.
- **shared catalogues with their own taxonomies** (category names only): fashion, BigBasket, MWPD2020 (GS1 names),
  Cdiscount (French), a seeded sample of ``--sample`` products each.

"Right" is depth-tolerant, as merchants label at any depth: the answer is the true path, a descendant of it, or an
ancestor of it at depth >= 2 (or the true path itself at depth 1). "Exact" is the same path; "top" the same first
level; "leaf" (catalogues) the most probable leaf equals the true leaf, whatever was answered. Coverage at 90 %
precision: the largest share of products, taken by decreasing confidence of the answer, whose "right" rate stays
>= 0.90. The baseline ("argmax") is the ten-line zero-shot every practitioner writes: MiniLM title embedding, cosine
to each leaf's path text, argmax.

Prints one row per set and the means the issue's acceptance is stated in: mean "right" over the shops, the lowest
language, and the catalogues' mean leaf accuracy against the argmax. Writes everything to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).parent


@dataclass
class EvalSet:
    name: str
    kind: str  # "shop", "branded" or "catalogue"
    taxonomy: Any  # taxonomist.Taxonomy
    products: list[dict[str, str]]
    truth: list[tuple[str, ...]]
    lang: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def _google(data: Path) -> Any:
    from taxonomist.taxonomy import Taxonomy

    return Taxonomy.load(data / "taxonomies/google/taxonomy-with-ids.en-US.txt")


def _shopify(data: Path) -> Any:
    from taxonomist.taxonomy import Taxonomy

    return Taxonomy.load(data / "taxonomies/shopify/categories.txt")


def shop_sets(data: Path) -> list[EvalSet]:
    """One set per shop and taxonomy from ``DATA/shop_exports``."""
    from taxonomist.taxonomy import parse_path

    google, shopify = _google(data), _shopify(data)
    sets: list[EvalSet] = []
    g = pd.read_csv(data / "shop_exports/google_labelled.csv", dtype=str, keep_default_na=False)
    for (shop, lang), rows in g.groupby(["source", "lang"], sort=True):
        sets.append(EvalSet(f"{shop} (google)", "shop", google,
                            [{"title": t, "description": d} for t, d in zip(rows.title, rows.description, strict=True)],
                            [parse_path(c) for c in rows.google_category], lang))
    s = pd.read_csv(data / "shop_exports/shopify_labelled.csv", dtype=str, keep_default_na=False)
    for shop, rows in s.groupby("source", sort=True):
        prods = [{"title": t, "description": d} for t, d in zip(rows.title, rows.description, strict=True)]
        sets.append(EvalSet(f"{shop} (shopify)", "shop", shopify, prods,
                            [parse_path(c) for c in rows.shopify_category], ""))
        has = rows.google_category != ""
        if has.sum() >= 5:
            sets.append(EvalSet(f"{shop} (google via mapping)", "shop", google,
                                [p for p, h in zip(prods, has, strict=True) if h],
                                [parse_path(c) for c in rows.google_category[has]], ""))
    return sets


def branded_set(data: Path) -> EvalSet:
    from taxonomist.catalog import read_catalog

    google = _google(data)
    truth = {r["title"]: google.by_id(r["google_id"])
             for r in csv.DictReader((HERE / "shop/products.csv").open(encoding="utf-8"))}
    cat = read_catalog(HERE / "shop/shopify_products_export.csv")
    recs = cat.records()
    return EvalSet("36 branded products (Shopify export)", "branded", google,
                   [{k: str(v) for k, v in r.items() if k != "category"} for r in recs],
                   [truth[r["title"]] for r in recs], "en")


def catalogue_sets(data: Path, sample: int, seed: int = 0) -> list[EvalSet]:
    """The shared catalogues with their own taxonomies (the taxonomy is every path that occurs in the file)."""
    from taxonomist.taxonomy import Taxonomy

    frames: list[tuple[str, str, pd.DataFrame]] = []
    styles = pd.read_csv(data / "fashion/styles.csv", dtype=str, keep_default_na=False, on_bad_lines="skip")
    text = pd.read_csv(data / "fashion/styles_text.csv", dtype=str, keep_default_na=False, on_bad_lines="skip")
    n = min(len(styles), len(text))
    f = pd.DataFrame({"title": text.productDisplayName[:n].values, "description": "",
                      "path": (styles.masterCategory + " > " + styles.subCategory + " > " + styles.articleType)[:n].values})
    frames.append(("fashion", "en", f))
    b = pd.read_csv(data / "bigbasket/bigbasket.csv", dtype=str, keep_default_na=False)
    frames.append(("bigbasket", "en", pd.DataFrame({"title": b["product"], "description": "",
                                                    "path": b.category + " > " + b.sub_category + " > " + b["type"]})))
    rows = [json.loads(line) for line in (data / "mwpd2020/task2_testset_with_labels.json").open(encoding="utf-8")]
    name = lambda s: str(s).split("_", 1)[-1].strip()  # noqa: E731  "51000000_Healthcare" -> "Healthcare"
    frames.append(("mwpd2020", "en", pd.DataFrame({
        "title": [r.get("Name") or "" for r in rows], "description": [r.get("Description") or "" for r in rows],
        "path": [f"{name(r['lvl1'])} > {name(r['lvl2'])} > {name(r['lvl3'])}" for r in rows]})))
    c = pd.read_csv(data / "cdiscount/cdiscount_test.csv", dtype=str, keep_default_na=False)
    norm = lambda s: " ".join(str(s).split())  # noqa: E731
    frames.append(("cdiscount", "fr", pd.DataFrame({
        "title": c.Libelle, "description": c.Description,
        "path": c.Categorie1.map(norm) + " > " + c.Categorie2.map(norm) + " > " + c.Categorie3.map(norm)})))
    sets = []
    for name_, lang, df in frames:
        df = df[(df.title.str.strip() != "") & (df.path.str.strip() != "")]
        tax = Taxonomy.from_paths(sorted(set(df.path)), name=name_)
        df = df.sample(min(sample, len(df)), random_state=seed)
        sets.append(EvalSet(name_, "catalogue", tax,
                            [{"title": t, "description": d} for t, d in zip(df.title, df.description, strict=True)],
                            [tax._key(p) for p in df.path], lang, {"leaves": len(tax.leaves())}))
    return sets


# -- scoring -------------------------------------------------------------------------------------------------------
def is_right(pred: tuple[str, ...], true: tuple[str, ...]) -> bool:
    """The depth-tolerant rule: the same path, a descendant of the truth, or an ancestor of it at depth >= 2."""
    from taxonomist.shop import agrees

    return agrees(pred, true)


def coverage_at(right: np.ndarray, conf: np.ndarray, precision: float = 0.9) -> float:
    """The largest share of products, most confident first, whose rate of right answers stays >= ``precision``."""
    if not len(right):
        return 0.0
    order = np.argsort(-conf, kind="stable")
    rate = np.cumsum(right[order]) / np.arange(1, len(right) + 1)
    ok = np.flatnonzero(rate >= precision)
    return float((ok.max() + 1) / len(right)) if len(ok) else 0.0


def score(preds: list[Any], truth: list[tuple[str, ...]]) -> dict[str, float]:
    paths = [tuple(p.path) for p in preds]
    right = np.array([is_right(p, t) for p, t in zip(paths, truth, strict=True)], dtype=float)
    conf = np.array([p.score for p in preds])
    answered = np.array([bool(p) for p in paths])
    return {"n": len(truth), "right": float(right.mean()),
            "answered": float(answered.mean()),
            "precision": float(right[answered].mean()) if answered.any() else float("nan"),
            "exact": float(np.mean([p == t for p, t in zip(paths, truth, strict=True)])),
            "top": float(np.mean([bool(p) and p[0] == t[0] for p, t in zip(paths, truth, strict=True)])),
            "leaf": float(np.mean([tuple(p.leaf) == t for p, t in zip(preds, truth, strict=True)])),
            "leaf_right": float(np.mean([is_right(tuple(p.leaf), t) for p, t in zip(preds, truth, strict=True)])),
            "backed_off": float(np.mean([p.backed_off for p in preds])),
            "coverage_at_90": coverage_at(right, conf)}


class PlainArgmax:
    """The baseline: MiniLM title embedding · each leaf's path embedding, argmax (label vectors cached per taxonomy)."""

    def __init__(self) -> None:
        from taxonomist.encoders.transformer import load_text_encoder

        self.enc = load_text_encoder("minilm-en")

    def predict(self, es: EvalSet) -> dict[str, float]:
        from taxonomist.taxonomy import format_path

        leaves = es.taxonomy.leaves()
        L = self.enc.encode([format_path(p) for p in leaves])
        Q = self.enc.encode([p["title"] for p in es.products])
        best = [leaves[i] for i in np.argmax(Q @ L.T, axis=1)]
        return {"right": float(np.mean([is_right(b, t) for b, t in zip(best, es.truth, strict=True)])),
                "leaf": float(np.mean([b == t for b, t in zip(best, es.truth, strict=True)])),
                "top": float(np.mean([b[0] == t[0] for b, t in zip(best, es.truth, strict=True)]))}


def sample_texts(products: list[dict[str, str]]) -> list[str]:
    """What the classifier is shown to choose its encoder: titles with the beginning of their descriptions."""
    return [f"{p['title']} {str(p.get('description') or '')[:300]}" for p in products[:2000]]


def run_set(es: EvalSet, kwargs: dict[str, Any], cache: dict[int, Any],
            sweep: bool = False) -> tuple[dict[str, Any], list[Any], float]:
    import taxonomist as tx

    key = id(es.taxonomy)
    t = time.perf_counter()
    if key not in cache:
        cache[key] = {}
    clf = tx.TaxonomyClassifier.from_taxonomy(es.taxonomy, sample_texts=sample_texts(es.products), **kwargs)
    build = time.perf_counter() - t
    t = time.perf_counter()
    preds = clf.predict_products(es.products, top_k=3)
    seconds = time.perf_counter() - t
    info = {"encoder": clf.encoder_.name, "build_s": round(build, 2)}
    if sweep:  # the same products answered down to the leaf, with each level's confidence, to choose a threshold
        leaves = clf.predict_products(es.products, top_k=1, min_confidence=0.0)
        info["sweep"] = {str(t): backed_off_at(leaves, es.truth, t) for t in THRESHOLDS}
    return {**score(preds, es.truth), **info}, preds, seconds


THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def backed_off_at(preds: list[Any], truth: list[tuple[str, ...]], threshold: float) -> dict[str, float]:
    """Answers backed off along each leaf's path to the deepest level whose confidence clears ``threshold``: how
    many products get an answer, and how many answers are right."""
    answered = right = 0
    for p, t in zip(preds, truth, strict=True):
        depth = max((d + 1 for d, c in enumerate(p.confidence) if c >= threshold), default=0)
        path = tuple(p.leaf)[:depth]
        answered += bool(path)
        right += is_right(path, t)
    return {"answered": answered, "right": right, "n": len(truth)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--sample", type=int, default=400, help="products per shared catalogue")
    ap.add_argument("--only", choices=("shops", "catalogues", "branded"), action="append")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="also the answered share and precision per back-off threshold")
    ap.add_argument("--set", dest="sets", action="append", help="only the sets whose name contains this")
    ap.add_argument("--kw", action="append", default=[], help="from_taxonomy keyword=value (JSON value), repeatable")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/zeroshot.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    kwargs = {k: json.loads(v) for k, v in (kw.split("=", 1) for kw in args.kw)}
    only = set(args.only or ("shops", "catalogues", "branded"))
    sets: list[EvalSet] = []
    if "shops" in only:
        sets += shop_sets(args.data)
    if "branded" in only:
        sets.append(branded_set(args.data))
    if "catalogues" in only:
        sets += catalogue_sets(args.data, args.sample)
    if args.sets:
        sets = [s for s in sets if any(x in s.name for x in args.sets)]
    base = None if args.no_baseline else PlainArgmax()
    results = []
    cache: dict[int, Any] = {}
    print(f"{'set':40s} {'lang':4s} {'n':>5s} {'right':>6s} {'exact':>6s} {'top':>6s} {'leaf':>6s} {'cov90':>6s} "
          f"{'backoff':>7s} {'argmax r/leaf':>13s} {'prod/s':>7s}  encoder")
    for es in sets:
        m, preds, seconds = run_set(es, kwargs, cache, args.sweep)
        b = base.predict(es) if base else {}
        langs = detect_languages(es)
        row = {"set": es.name, "kind": es.kind, "lang": es.lang or langs, **m,
               "products_per_s": round(len(es.products) / max(seconds, 1e-9), 1),
               "argmax": b, **es.meta}
        results.append(row)
        bb = f"{b.get('right', float('nan')):.3f}/{b.get('leaf', float('nan')):.3f}" if b else ""
        print(f"{es.name[:40]:40s} {row['lang']:4s} {m['n']:5d} {m['right']:6.3f} {m['exact']:6.3f} {m['top']:6.3f} "
              f"{m['leaf']:6.3f} {m['coverage_at_90']:6.3f} {m['backed_off']:7.3f} {bb:>13s} "
              f"{row['products_per_s']:7.1f}  {m['encoder']}", flush=True)
    summarise(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"kwargs": kwargs, "sets": results}, indent=1))


def detect_languages(es: EvalSet) -> str:
    """The set's main language (the library's detector over titles with their descriptions)."""
    from taxonomist.text import main_language

    return main_language(sample_texts(es.products))[0]


def summarise(results: list[dict[str, Any]]) -> None:
    shops = [r for r in results if r["kind"] == "shop"]
    if shops:
        for tax in ("google", "shopify"):
            sel = [r for r in shops if f"({tax}" in r["set"]]
            if sel:
                print(f"shops into {tax:8s}: mean right {np.mean([r['right'] for r in sel]):.3f} over {len(sel)} shops "
                      f"({sum(r['n'] for r in sel):,} products, pooled {np.average([r['right'] for r in sel], weights=[r['n'] for r in sel]):.3f})")
        by_lang: dict[str, list[float]] = defaultdict(list)
        for r in shops:
            by_lang[r["lang"]].append(r["right"])
        print("shops, mean right: " + f"{np.mean([r['right'] for r in shops]):.3f}; by language: " +
              ", ".join(f"{k} {np.mean(v):.3f}" for k, v in sorted(by_lang.items())))
    cats = [r for r in results if r["kind"] == "catalogue"]
    if cats and all(r["argmax"] for r in cats):
        ours, plain = np.mean([r["leaf"] for r in cats]), np.mean([r["argmax"]["leaf"] for r in cats])
        print(f"catalogues, mean leaf accuracy: {ours:.3f} vs plain argmax {plain:.3f} ({ours - plain:+.3f})")
    for kind in ("shop", "catalogue"):
        sel = [r for r in results if r["kind"] == kind]
        if sel:
            w = [r["n"] * r["answered"] for r in sel]
            print(f"{kind}s: answered {np.average([r['answered'] for r in sel], weights=[r['n'] for r in sel]):.3f} of "
                  f"the products (the rest backed off to no category), right among the answered (pooled) "
                  f"{np.average([np.nan_to_num(r['precision']) for r in sel], weights=w):.3f}")
    for kind in ("shop", "catalogue"):
        sel = [r for r in results if r["kind"] == kind and "sweep" in r]
        for t in THRESHOLDS if sel else ():
            a = sum(r["sweep"][str(t)]["answered"] for r in sel)
            k = sum(r["sweep"][str(t)]["right"] for r in sel)
            n = sum(r["sweep"][str(t)]["n"] for r in sel)
            print(f"{kind}s, back-off at {t:.1f}: answered {a / n:.3f}, right {k / n:.3f}, right among the answered "
                  f"{k / max(a, 1):.3f}")
    br = [r for r in results if r["kind"] == "branded"]
    for r in br:
        print(f"branded products: {round(r['right'] * r['n'])} of {r['n']} right")


if __name__ == "__main__":
    sys.exit(main())
