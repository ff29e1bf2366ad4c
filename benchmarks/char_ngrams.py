"""The sparse encoder's char_wb features of products it has not seen: new words cut as integer codes all at once
(``encoders/ngram_codes.py``) against one by one, in the same process.

    python benchmarks/char_ngrams.py --data ../shared/data [--dataset mwpd2020] [--repeats 5] [--description-chars N]

The encoder is fitted on the training part of ``split_catalog(test_size=0.2, seed=0)`` (title + description, as the
default model reads them; ``--description-chars`` cuts descriptions as its reading choice may); each repeat then
builds the char index afresh (an empty word cache, as a freshly loaded bundle has) and transforms the held-out
titles and descriptions both ways, alternating. Prints the seconds of each way (the codes' one-off build from the
vocabulary included), their ratio, and whether the two matrices are equal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import taxonomist as tx
from taxonomist.encoders.sparse import SparseTextEncoder, _CharWbIndex
from taxonomist.text import normalize_for_sparse

sys.path.insert(0, str(Path(__file__).parent))
from generalise import DATASETS, read  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--dataset", default="mwpd2020", choices=DATASETS)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--description-chars", type=int, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cat = read(args.dataset, args.data, Path(tmp))
    train, test = tx.split_catalog(cat, test_size=0.2, seed=0)

    def texts(c: tx.Catalog) -> tuple[list[str], list[str]]:
        d = c.frame["description"].fillna("").astype(str).tolist() if "description" in c.frame else [""] * len(c)
        return c.frame["title"].fillna("").astype(str).tolist(), [x[:args.description_chars] for x in d]

    enc = SparseTextEncoder().fit(*texts(train))
    titles, descriptions = texts(test)
    docs = [normalize_for_sparse(x) for x in titles + descriptions]
    words = sum(len(d.split()) for d in docs)
    print(f"# {args.dataset}: {len(train):,} training products, {len(enc.char_.vocabulary_):,} char n-grams; "
          f"{len(test):,} new products, {words:,} words")
    times: dict[str, list[float]] = {"codes": [], "one by one": []}
    out = {}
    for _ in range(args.repeats):
        for way in times:
            t0 = time.perf_counter()
            index = _CharWbIndex(enc.char_, codes=way == "codes")
            out[way] = index.transform(docs)
            times[way].append(time.perf_counter() - t0)
    for way, t in times.items():
        print(f"{way:>11}: median {statistics.median(t):.3f} s, min {min(t):.3f} s ({', '.join(f'{x:.3f}' for x in t)})")
    ratio = statistics.median(times["one by one"]) / statistics.median(times["codes"])
    same = (out["codes"] != out["one by one"]).nnz == 0
    print(f"one by one / codes: {ratio:.2f}x (medians); the same matrix: {same}")


if __name__ == "__main__":
    main()
