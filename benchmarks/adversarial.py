"""Adversarial titles: how often does a seller's trick change the predicted category?

    python benchmarks/adversarial.py --data ../shared/data [--tier ensemble] [--n 10000] [--out FILE]

For fashion and BigBasket (a seeded sample of ``--n`` products each, grouped split 80/20), a model of ``--tier``
is trained on the training part; every attack is applied to each held-out product's title and the attack
*succeeds* on a product when its predicted category changes. Attacks:

* ``homoglyph``: Latin letters swapped for look-alike Cyrillic ones (а е о р с х у і), every second word;
* ``zero-width``: a zero-width space inside every word;
* ``bidi``: every word wrapped in right-to-left override / pop-directional-formatting controls;
* ``misspelling``: two neighbouring letters swapped in every word of 4+ letters;
* ``stuffing``: eight frequent title words of another top-level category appended;
* ``brand``: the first word replaced by the most frequent first word (brand) of another top-level category.

Prints the success rate per attack, the accuracy under attack, the share of titles the model flags as keyword
stuffing (``TaxonomyClassifier.stuffing_flags``: queued for review by the service), and the clean accuracy;
writes them to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

import taxonomist as tx

_CYRILLIC = str.maketrans({"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "y": "у", "i": "і"})


def _homoglyph(title: str, rng: np.random.Generator, other: dict[str, list[str]]) -> str:
    return " ".join(w.translate(_CYRILLIC) if i % 2 == 0 else w for i, w in enumerate(title.split()))


def _zero_width(title: str, rng: np.random.Generator, other: dict[str, list[str]]) -> str:
    return " ".join(w[: len(w) // 2] + "\u200b" + w[len(w) // 2:] if len(w) > 1 else w for w in title.split())


def _bidi(title: str, rng: np.random.Generator, other: dict[str, list[str]]) -> str:
    return " ".join(f"\u202e{w}\u202c" for w in title.split())


def _misspelling(title: str, rng: np.random.Generator, other: dict[str, list[str]]) -> str:
    def swap(w: str) -> str:
        if len(w) < 4 or not w.isalpha():
            return w
        i = int(rng.integers(1, len(w) - 2))
        return w[:i] + w[i + 1] + w[i] + w[i + 2:]
    return " ".join(swap(w) for w in title.split())


def _stuffing(title: str, rng: np.random.Generator, other: dict[str, list[str]]) -> str:
    return f"{title} {' '.join(other['words'])}"


def _brand(title: str, rng: np.random.Generator, other: dict[str, list[str]]) -> str:
    words = title.split()
    return " ".join([other["brand"][0], *words[1:]]) if words else title


ATTACKS: dict[str, Callable[[str, np.random.Generator, dict[str, list[str]]], str]] = {
    "homoglyph": _homoglyph, "zero-width": _zero_width, "bidi": _bidi, "misspelling": _misspelling,
    "stuffing": _stuffing, "brand": _brand,
}


def catalogues(data: Path) -> dict[str, tx.Catalog]:
    fashion = data / "fashion"
    bigbasket = data / "bigbasket" / "bigbasket.csv"
    return {
        "fashion": tx.read_catalog(fashion / "styles.csv", with_columns=[fashion / "styles_text.csv"],
                                   mapping={"title": "productDisplayName"},
                                   label_columns=["masterCategory", "subCategory", "articleType"], require_labels=True),
        "bigbasket": tx.read_catalog(bigbasket, mapping={"title": "product"},
                                     label_columns=["category", "sub_category", "type"], require_labels=True),
    }


def run(name: str, cat: tx.Catalog, args: argparse.Namespace) -> dict[str, object]:
    rng = np.random.default_rng(0)
    if len(cat) > args.n:
        cat = cat.subset(np.sort(rng.choice(len(cat), args.n, replace=False)))
    train, test = tx.split_catalog(cat, test_size=0.2, seed=0)
    t = time.perf_counter()
    model = tx.TaxonomyClassifier(tier=args.tier).fit(train)
    fit_s = time.perf_counter() - t
    frame = test.frame.reset_index(drop=True)
    clean = np.asarray(model.predict(frame)).astype(str)
    truth = frame["category"].astype(str).to_numpy()
    # per top-level category: its frequent title words and its most frequent first word (brand)
    top = train.frame["category"].str.split(" > ").str[0]
    words: dict[str, list[str]] = {}
    brands: dict[str, str] = {}
    for t_name, titles in train.frame["title"].groupby(top):
        counts = Counter(w.lower() for s in titles for w in str(s).split() if w.isalpha() and len(w) > 2)
        words[t_name] = [w for w, _ in counts.most_common(8)]
        brands[t_name] = Counter(str(s).split()[0] for s in titles if str(s).split()).most_common(1)[0][0]
    tops = sorted(words)
    if hasattr(model, "stuffing_flags"):
        print(f"  clean titles flagged as stuffing: {np.mean(model.stuffing_flags(frame['title'].astype(str).tolist())):.3f}")
    out: dict[str, object] = {"catalogue": name, "tier": args.tier, "train": len(train), "test": len(test),
                              "clean_accuracy": float((clean == truth).mean()), "fit_s": round(fit_s, 1)}
    print(f"\n{name}: {len(train):,} train / {len(test):,} test, {args.tier} tier, clean accuracy "
          f"{out['clean_accuracy']:.4f} (fit {fit_s:.0f} s)", flush=True)
    for attack, fn in ATTACKS.items():
        arng = np.random.default_rng(1)
        titles = []
        for title, cat_path in zip(frame["title"].astype(str), truth, strict=True):
            own = cat_path.split(" > ")[0]
            other_top = tops[(tops.index(own) + 1 + int(arng.integers(0, len(tops) - 1))) % len(tops)] if own in tops else tops[0]
            titles.append(fn(title, arng, {"words": words[other_top], "brand": [brands[other_top]]}))
        attacked = frame.copy()
        attacked["title"] = titles
        pred = np.asarray(model.predict(attacked)).astype(str)
        changed = float((pred != clean).mean())
        acc = float((pred == truth).mean())
        flagged = float(np.mean(model.stuffing_flags(titles))) if hasattr(model, "stuffing_flags") else float("nan")
        out[attack] = {"success": changed, "accuracy": acc, "flagged": flagged}
        print(f"  {attack:12s} success {changed:.3f}  accuracy under attack {acc:.4f}  flagged as stuffing "
              f"{flagged:.3f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--tier", default="ensemble")
    ap.add_argument("--n", type=int, default=10_000, help="products sampled per catalogue")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/adversarial.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = [run(name, cat, args) for name, cat in catalogues(args.data).items()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print("\n| attack | " + " | ".join(r["catalogue"] for r in results) + " |")  # type: ignore[str-bytes-safe]
    print("|---|" + "---|" * len(results))
    for attack in ATTACKS:
        print(f"| {attack} | " + " | ".join(f"{r[attack]['success']:.3f}" for r in results) + " |")  # type: ignore[index]
    print("| (clean accuracy) | " + " | ".join(f"{r['clean_accuracy']:.4f}" for r in results) + " |")



if __name__ == "__main__":
    main()
