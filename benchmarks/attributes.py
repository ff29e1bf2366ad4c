"""Product attributes on the shared fashion catalogue (Myntra: baseColour, gender, usage, season): learned and
zero-shot, against a practitioner's baselines.

    python benchmarks/attributes.py --data ../shared/data [--seed 0] [--attributes baseColour,gender,usage,season]

Protocol: the catalogue read as generalise.py reads it, ``split_catalog(test_size=0.2, seed)``.

- **Learned** (``AttributeModels``): per attribute, trained on the training products whose cell is filled, scored
  on the held-out ones (top answer, no threshold): accuracy and macro-F1, against TF-IDF (word 1-2-grams + char_wb
  2-5-grams) + LinearSVC(C=0.5) trained on the same products and reading the same text (title, description and
  the other attribute columns).
- **Zero-shot** (``extract``, no training): colour and gender of the held-out products with every attribute column
  hidden, the truth mapped to the feed's values (baseColour "Navy Blue" → Navy, gender "Boys" → male; values the
  vocabulary cannot map are left out and counted): precision (answers that are right), coverage (products
  answered), precision at 70 % coverage (the surest answers first), and the precision of each kind of match
  (``CONFIDENCE``). The lexicon baseline: 25 colour words / 5 gender words in the title, then the description.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.svm import LinearSVC

sys.path.insert(0, str(Path(__file__).parent))

import taxonomist as tx  # noqa: E402
from taxonomist.attributes import ATTRIBUTES, AttributeModels, _found, _without, extract, normalise  # noqa: E402
from taxonomist.products import ProductBatch  # noqa: E402

LEXICON_COLORS = {w: normalise("color", w) for w in (
    "black", "white", "blue", "red", "green", "yellow", "pink", "purple", "grey", "gray", "brown", "orange",
    "beige", "gold", "silver", "navy", "maroon", "cream", "olive", "violet", "tan", "khaki", "teal", "turquoise",
    "multicolor")}
LEXICON_GENDER = {"men": "male", "women": "female", "boys": "male", "girls": "female", "unisex": "unisex"}


def lexicon(words: dict[str, str], title: str, context: str) -> str:
    for text in (title, context):
        for w in re.findall(r"[a-z]+", text.lower()):
            if w in words:
                return words[w]
    return ""


def svc_accuracy(train: ProductBatch, y_train: list[str], test: ProductBatch, column: str) -> list[str]:
    def text(b: ProductBatch) -> list[str]:
        cols = [c for c in b.text_columns() if c != column]
        return [f"{t} {c}" for t, c in zip(b.titles, b.contexts(cols), strict=True)]

    w = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    c = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
    xt = text(train)
    m = LinearSVC(C=0.5).fit(sp.hstack([w.fit_transform(xt), c.fit_transform(xt)]).tocsr(), y_train)
    xs = text(test)
    return list(m.predict(sp.hstack([w.transform(xs), c.transform(xs)]).tocsr()))


def learned(train: ProductBatch, test: ProductBatch, columns: list[str]) -> None:
    print("\n## Learned (held-out products with a filled cell)\n")
    print("| attribute | values | train / test | AttributeModels acc / macro-F1 | TF-IDF + SVC acc / macro-F1 | s ours / SVC |")
    print("|---|---|---|---|---|---|")
    for col in columns:
        tr = [i for i, v in enumerate(train.attributes[col]) if v]
        te = [i for i, v in enumerate(test.attributes[col]) if v]
        truth = [test.attributes[col][i] for i in te]
        t0 = time.perf_counter()
        models = AttributeModels([col], min_confidence=0.0).fit(train.subset(tr))
        ours = models.predict(test.subset(te))[f"attr_{col}"].tolist()
        t1 = time.perf_counter()
        svc = svc_accuracy(_without(train, col).subset(tr), [train.attributes[col][i] for i in tr],
                           _without(test, col).subset(te), col)
        t2 = time.perf_counter()
        acc = [float(np.mean([a == b for a, b in zip(p, truth, strict=True)])) for p in (ours, svc)]
        f1 = [f1_score(truth, p, average="macro") for p in (ours, svc)]
        print(f"| {col} | {len(set(truth))} | {len(tr):,} / {len(te):,} | {acc[0]:.4f} / {f1[0]:.4f} | "
              f"{acc[1]:.4f} / {f1[1]:.4f} | {t1 - t0:.0f} / {t2 - t1:.0f} |", flush=True)


def zero_shot(test: ProductBatch, truth_cols: dict[str, str]) -> None:
    hidden = ProductBatch(titles=test.titles, descriptions=test.descriptions, attributes={}, ids=test.ids)
    got = extract(hidden, list(truth_cols))
    print("\n## Zero-shot (every attribute column hidden)\n")
    print("| attribute | products with a mappable truth | precision | coverage | precision at 70 % coverage | "
          "lexicon precision / coverage |")
    print("|---|---|---|---|---|---|")
    kinds: dict[str, list[bool]] = {}
    for name, col in truth_cols.items():
        truth = [normalise(name, v) for v in test.attributes[col]]
        rows = [i for i, t in enumerate(truth) if t]
        value = got[f"attr_{name}"].tolist()
        conf = got[f"attr_{name}_confidence"].to_numpy()
        answered = [i for i in rows if value[i]]
        right = [value[i] == truth[i] for i in answered]
        order = sorted(answered, key=lambda i: -conf[i])
        k = int(np.ceil(0.7 * len(rows)))
        at70 = (float(np.mean([value[i] == truth[i] for i in order[:k]])) if len(order) >= k else float("nan"))
        words = LEXICON_COLORS if name == "color" else LEXICON_GENDER
        lex = [lexicon(words, test.titles[i], test.descriptions[i]) for i in rows]
        lex_right = [v == truth[i] for v, i in zip(lex, rows, strict=True) if v]
        print(f"| {name} ({col}) | {len(rows):,} of {len(truth):,} | {np.mean(right):.4f} | "
              f"{len(answered) / len(rows):.4f} | {at70:.4f} | {np.mean(lex_right):.4f} / "
              f"{len(lex_right) / len(rows):.4f} |")
        for i in rows:  # the precision of each kind of match
            found = _found(name, test.titles[i])
            kind = ("title_several" if len({v for v, _ in found}) > 1 else "title") if found else None
            if kind and value[i]:
                kinds.setdefault(f"{name}: {kind}", []).append(value[i] == truth[i])
    print("\nPrecision by kind of match: " + "; ".join(
        f"{k} {np.mean(v):.3f} ({len(v):,})" for k, v in sorted(kinds.items())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attributes", default="baseColour,gender,usage,season")
    args = ap.parse_args()
    import generalise

    cat = generalise.read("fashion", args.data, Path("benchmarks/out/attributes"))
    train, test = tx.split_catalog(cat, test_size=0.2, seed=args.seed)
    tr, te = ProductBatch.from_any(train), ProductBatch.from_any(test)
    print(f"# fashion: {len(tr):,} training, {len(te):,} held-out products (seed {args.seed}); "
          f"attributes known zero-shot: {sorted(ATTRIBUTES)}")
    zero_shot(te, {"color": "baseColour", "gender": "gender"})
    learned(tr, te, args.attributes.split(","))


if __name__ == "__main__":
    main()
