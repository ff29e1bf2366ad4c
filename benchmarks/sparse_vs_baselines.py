"""taxonomist's sparse tier vs plain scikit-learn TF-IDF + LinearSVC vs fastText, one process, same split.

    python benchmarks/sparse_vs_baselines.py --data ../shared/data [--datasets fashion,bigbasket]

For each dataset: read with taxonomist's reader (same rows for every method), split with the grouped,
stratified split (identical normalised titles never straddle train and test), then fit and predict each method
and print macro-F1, weighted-F1, accuracy, top-level accuracy, train seconds, predict rows/s (on the test set and
on its distinct titles), peak RSS growth
(sampled from /proc, so native memory such as fastText's counts too), and ratios to the two baselines.
taxonomist's train time includes saving its bundle; each timed prediction starts from a freshly loaded
bundle (cold caches). Baselines see the title (+ description) text, as practitioners run them; taxonomist is run twice: on the same
text only, and with its defaults (text attributes such as brand or colour added as context).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.svm import LinearSVC

import taxonomist as tx
from taxonomist.catalog import Catalog
from taxonomist.text import has_cjk, tokenize

DATASETS: dict[str, dict[str, Any]] = {
    "fashion": {
        "file": "fashion/styles.csv",
        "kwargs": {"with_columns": ["fashion/styles_text.csv"], "mapping": {"title": "productDisplayName"},
                   "label_columns": ["masterCategory", "subCategory", "articleType"]},
    },
    "bigbasket": {
        "file": "bigbasket/bigbasket.csv",
        "kwargs": {"label_columns": ["category", "sub_category", "type"]},
    },
}


class PeakRSS:
    """Samples this process's resident set size every 20 ms; ``peak - start`` is the method's footprint.

    ``tree=True`` sums the RSS of this process and all its descendants (worker processes), with psutil; pages
    they share (a file they all map, joblib's shared copy of the features) count once per process there. So it
    also samples, every 0.5 s, the sum of their proportional set sizes (``peak_pss``: each shared page divided
    among the processes that map it, so counted once in the sum) and the machine's used memory (``peak_used``:
    MemTotal - MemAvailable, page cache excluded)."""

    def __init__(self, tree: bool = False) -> None:
        self.tree = tree
        self.peak_pss = self.peak_used = 0

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        self.start_used = self._used()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _processes(self) -> list[Any]:
        import psutil

        me = psutil.Process()
        return [me, *me.children(recursive=True)]

    def _rss(self) -> int:
        if self.tree:
            import psutil

            total = 0
            for p in self._processes():
                try:
                    total += p.memory_info().rss
                except psutil.Error:  # a worker that ended between listing and reading
                    pass
            return total
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def pss(self) -> int:
        """The process tree's proportional set size now, in bytes."""
        import psutil

        total = 0
        for p in self._processes():
            try:
                total += p.memory_full_info().pss
            except (psutil.Error, AttributeError):
                pass
        return total

    @staticmethod
    def _used() -> int:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) * 1024
        return info["MemTotal"] - info["MemAvailable"]

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())
            tick += 1
            if self.tree and tick % 25 == 0:
                self.peak_pss = max(self.peak_pss, self.pss())
                self.peak_used = max(self.peak_used, self._used() - self.start_used)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())
        if self.tree:
            self.peak_pss = max(self.peak_pss, self.pss())

    @property
    def mb(self) -> float:
        return (self.peak - self.start) / 2**20


def _texts(cat: Catalog) -> list[str]:
    f = cat.frame
    return [t if not d else f"{t} {d}" for t, d in zip(f["title"], f["description"], strict=True)]


Method = tuple[Callable[[], Any], Callable[[Catalog], list[str]], Callable[[], None]]
"""(fit, predict, prepare): ``prepare`` runs, untimed, before each timed prediction."""


def _nothing() -> None:
    return None


def sklearn_baseline(train: Catalog, encoder: str | None = None) -> Method:
    """TF-IDF word 1-2-grams + char_wb 2-5-grams of title + description → LinearSVC(C=0.5): the practitioner's
    baseline. With ``encoder`` (e.g. ``"minilm-en"``) the L2-normalised sentence embeddings of the titles are
    stacked beside the TF-IDF columns in the same LinearSVC: the practitioner's "+MiniLM" anchor."""
    state: dict[str, Any] = {}

    def features(cat: Catalog, fit: bool) -> sp.csr_matrix:
        x = _texts(cat)
        blocks = ([state["w"].fit_transform(x), state["c"].fit_transform(x)] if fit
                  else [state["w"].transform(x), state["c"].transform(x)])
        if encoder is not None:
            emb = np.asarray(state["enc"].encode(cat.frame["title"].tolist()), dtype=np.float32)
            blocks.append(sp.csr_matrix(emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)))
        return sp.hstack(blocks).tocsr()

    def fit() -> None:
        state.update(w=TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                     c=TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))
        if encoder is not None:
            from taxonomist.encoders.transformer import load_text_encoder

            state["enc"] = load_text_encoder(encoder)
        state["m"] = LinearSVC(C=0.5).fit(features(train, True), train.frame["category"].to_numpy())

    def predict(test: Catalog) -> list[str]:
        return list(state["m"].predict(features(test, False)))

    return fit, predict, _nothing


def fasttext_baseline(train: Catalog) -> Method:
    import fasttext

    state: dict[str, Any] = {}
    labels = sorted(train.frame["category"].unique())
    code = {c: f"__label__{i}" for i, c in enumerate(labels)}

    def clean(s: str) -> str:
        s = re.sub(r"\s+", " ", s.lower()).strip()
        # fastText splits on spaces: Chinese text is segmented with jieba first, as practitioners run it
        return " ".join(tokenize(s)) if has_cjk(s) else s

    def fit() -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
            for t, c in zip(_texts(train), train.frame["category"], strict=True):
                fh.write(f"{code[c]} {clean(t)}\n")
        state["m"] = fasttext.train_supervised(fh.name, epoch=25, lr=0.5, wordNgrams=2, minn=3, maxn=5, dim=100, verbose=0)
        os.unlink(fh.name)

    def predict(test: Catalog) -> list[str]:
        m = state["m"]
        out = []
        for t in _texts(test):
            # the low-level call: fasttext-wheel's predict() breaks on numpy 2 (np.array(copy=False))
            (_, label), = m.f.predict(clean(t) + "\n", 1, 0.0, "strict")
            out.append(labels[int(label.removeprefix("__label__"))])
        return out

    return fit, predict, _nothing


def taxonomist_tier(train: Catalog, workdir: Path, state: dict[str, Any] | None = None, **params: Any) -> Method:
    """A taxonomist model with ``params``, saved as a bundle; ``state["m"]`` holds the model loaded for predicting."""
    state = state if state is not None else {}
    bundle = workdir / ("model-" + "-".join(f"{k}{v}" for k, v in params.items()))

    def fit() -> None:
        tx.TaxonomyClassifier(**params).fit(train).save(bundle)

    def predict(test: Catalog) -> list[str]:
        return list(state["m"].predict(test))

    def cold() -> None:
        # a freshly loaded bundle before each timed prediction: no cache is warm, as in a new `taxonomist predict`
        state["m"] = tx.load(bundle)

    return fit, predict, cold


def timed(method: Method, *tests: Catalog) -> tuple[list[np.ndarray], float, list[float], float]:
    """Fit, then for each test set prepare (untimed) and predict (timed), all inside one peak-memory sampler.

    Returns (predictions per test set, train seconds, predict seconds per test set, peak RSS growth in MB).
    """
    fit, predict, prepare = method
    gc.collect()
    preds, secs = [], []
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        fit()
        train_s = time.perf_counter() - t0
        for test in tests:
            prepare()
            t1 = time.perf_counter()
            preds.append(np.asarray(predict(test)))
            secs.append(time.perf_counter() - t1)
    return preds, train_s, secs, mem.mb


def run(name: str, data: Path, seed: int, workdir: Path) -> list[dict[str, Any]]:
    spec = DATASETS[name]
    kwargs = dict(spec["kwargs"])
    kwargs["with_columns"] = [data / p for p in kwargs.get("with_columns", [])]
    cat = tx.read_catalog(data / spec["file"], require_labels=True, **kwargs)
    train, test = tx.split_catalog(cat, test_size=0.2, seed=seed)
    y = test.frame["category"].to_numpy()
    # speed is also measured on the test products with repeated titles removed: taxonomist vectorises each
    # distinct text once, which helps on real catalogues (full of repeats) but should not flatter the figure
    distinct = test.subset(np.flatnonzero(~test.frame["title"].duplicated().to_numpy()))
    print(f"\n## {name}: {len(cat):,} products, {cat.frame['category'].nunique()} leaves; "
          f"train {len(train):,} / test {len(test):,} (grouped by normalised title, seed {seed})", flush=True)
    methods = {
        "sklearn TF-IDF + LinearSVC": sklearn_baseline(train),
        "fastText supervised": fasttext_baseline(train),
        "taxonomist sparse (same text)": taxonomist_tier(train, workdir, use_attributes=False),
        "taxonomist sparse (default)": taxonomist_tier(train, workdir, use_attributes=True),
    }
    rows = []
    for label, method in methods.items():
        (pred, _), train_s, (predict_s, distinct_s), mb = timed(method, test, distinct)
        top = lambda v: np.array([s.split(" > ")[0] for s in v])  # noqa: E731
        rows.append({
            "method": label,
            "macro_f1": f1_score(y, pred, average="macro", zero_division=0),
            "weighted_f1": f1_score(y, pred, average="weighted", zero_division=0),
            "accuracy": float((pred == y).mean()),
            "top_level_accuracy": float((top(pred) == top(y)).mean()),
            "train_s": train_s,
            "predict_rows_s": len(y) / predict_s,
            "distinct_rows_s": len(distinct) / distinct_s,
            "peak_rss_mb": mb,
        })
        r = rows[-1]
        print(f"  {label:<30} macro-F1 {r['macro_f1']:.4f}  weighted-F1 {r['weighted_f1']:.4f}  acc {r['accuracy']:.4f}  "
              f"top-level {r['top_level_accuracy']:.4f}  train {r['train_s']:.1f}s  predict {r['predict_rows_s']:,.0f} rows/s "
              f"({r['distinct_rows_s']:,.0f} on distinct titles)  "
              f"peak +{r['peak_rss_mb']:.0f} MB", flush=True)
    base = {r["method"]: r for r in rows}
    svc, ft = base["sklearn TF-IDF + LinearSVC"], base["fastText supervised"]
    print(f"\n| {name} | macro-F1 | weighted-F1 | accuracy | top-level acc | train s | predict rows/s (distinct titles) | "
          "peak RSS MB | Δ macro-F1 vs SVC | rows/s ÷ SVC (distinct) | Δ macro-F1 vs fastText | rows/s ÷ fastText (distinct) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['macro_f1']:.4f} | {r['weighted_f1']:.4f} | {r['accuracy']:.4f} | "
              f"{r['top_level_accuracy']:.4f} | {r['train_s']:.1f} | {r['predict_rows_s']:,.0f} ({r['distinct_rows_s']:,.0f}) | "
              f"{r['peak_rss_mb']:.0f} | {r['macro_f1'] - svc['macro_f1']:+.4f} | "
              f"{r['predict_rows_s'] / svc['predict_rows_s']:.2f} ({r['distinct_rows_s'] / svc['distinct_rows_s']:.2f}) | "
              f"{r['macro_f1'] - ft['macro_f1']:+.4f} | "
              f"{r['predict_rows_s'] / ft['predict_rows_s']:.2f} ({r['distinct_rows_s'] / ft['distinct_rows_s']:.2f}) |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder with fashion/ and bigbasket/")
    ap.add_argument("--datasets", default="fashion,bigbasket")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"# sparse tier vs baselines — {dt.date.today()} — {platform.node()} ({os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, taxonomist {tx.__version__})")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            run(name.strip(), args.data, args.seed, Path(tmp))


if __name__ == "__main__":
    main()
