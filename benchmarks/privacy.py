"""Differential privacy of the message router: accuracy against the privacy budget ε on customer reviews.

    python benchmarks/privacy.py --data ../shared/data [--seeds 0 1] [--epsilons 1 3 8 inf] [--out FILE]

online_shopping_zh (62k Chinese product reviews; distinct texts, split 80/20 per seed) gives two tasks of the
router: the product category a review is about (10 classes) and its sentiment (2). Rows, per task:

* ``tf-idf svm (not private)``: the sparse tier as the router trains it without ``--dp-epsilon``;
* ``dp-sgd ε=…``: :class:`~taxonomist.models.private.PrivateLinearClassifier` at its defaults (hashed n-grams,
  DP-SGD, Opacus's accountant) -- what ``messages train --dp-epsilon`` trains; ``ε=inf`` is the same recipe
  without noise;
* ``objective perturbation ε=…``: diffprivlib's ``LogisticRegression`` (ε-DP by objective perturbation, one-vs-rest
  with the budget split over the classes) on the same kind of hashed features at ``--objective-features`` columns
  per block (its noise grows with the dimension, and it takes dense arrays only), rows scaled to norm ≤ 1.
  diffprivlib 0.6 imports three constants scikit-learn 1.8 no longer has (for its decision trees);
  :func:`_import_diffprivlib` sets them before importing it.

``--sweep`` instead searches the DP-SGD hyperparameters (hashed columns, learning rate, epochs, batch size) at
ε = 1, 3, 8 on a validation part of the first seed's training messages (never its test part): the defaults of
``PrivateLinearClassifier`` come from it.

ε is the budget of one model; a router of a category and a sentiment model trained with
``--dp-epsilon E`` gives each model E/2. Prints accuracy / macro-F1 (mean over seeds) and training seconds;
writes every run to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

from taxonomist.encoders.sparse import SparseTextEncoder
from taxonomist.models.private import N_FEATURES, PrivateLinearClassifier
from taxonomist.models.sparse import SparseClassifier
from taxonomist.vectors import l2_normalize


def _score(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(y, pred)), "macro_f1": float(f1_score(y, pred, average="macro"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0, math.inf])
    ap.add_argument("--objective-features", type=int, default=2**11)
    ap.add_argument("--no-objective", action="store_true", help="skip diffprivlib's objective perturbation")
    ap.add_argument("--sweep", action="store_true", help="search DP-SGD's hyperparameters on a validation part")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/privacy.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    df = pd.read_csv(args.data / "online_shopping_zh" / "online_shopping_10_cats.csv", dtype=str, keep_default_na=False)
    df = df[df["review"].str.strip() != ""].drop_duplicates("review")
    if args.sweep:
        sweep(df, args.seeds[0], args.out.with_name(args.out.stem + "-sweep.json"))
        return
    runs: list[dict] = []
    hashed = SparseTextEncoder(n_features=N_FEATURES, cjk=True).fit([], [])
    small = SparseTextEncoder(n_features=args.objective_features, cjk=True).fit([], [])
    for seed in args.seeds:
        tr, te = train_test_split(df, test_size=0.2, random_state=seed)
        t0 = time.perf_counter()
        Xtr, Xte = hashed.transform(tr["review"].tolist()), hashed.transform(te["review"].tolist())
        enc_s = time.perf_counter() - t0
        if not args.no_objective:  # rows of norm <= 1, the data_norm diffprivlib's guarantee assumes
            Str = l2_normalize(small.transform(tr["review"].tolist())).toarray().astype(np.float64)
            Ste = l2_normalize(small.transform(te["review"].tolist())).toarray().astype(np.float64)
        for task, col in (("category", "cat"), ("sentiment", "label")):
            ytr, yte = tr[col].to_numpy(), te[col].to_numpy()

            def record(method: str, eps: float, pred: np.ndarray, seconds: float, *, _seed: int = seed,
                       _task: str = task, _y: np.ndarray = yte, **extra: float) -> None:
                run = {"seed": _seed, "task": _task, "method": method, "epsilon": eps, "train_s": round(seconds, 1),
                       **_score(_y, pred), **extra}
                runs.append(run)
                print(json.dumps(run), flush=True)

            t = time.perf_counter()
            svm = SparseClassifier().fit(tr["review"].tolist(), ytr)
            record("tf-idf svm (not private)", math.inf, svm.predict(te["review"].tolist()), time.perf_counter() - t)
            for eps in args.epsilons:
                t = time.perf_counter()
                clf = PrivateLinearClassifier(epsilon=eps, random_state=seed)
                clf.encoder_ = hashed
                clf.classes_, y_idx = np.unique(ytr, return_inverse=True)
                clf._fit_features(Xtr, y_idx)
                pred = clf.classes_[np.argmax(Xte @ clf._coef_t.toarray() + clf.intercept_, axis=1)]
                record("dp-sgd", eps, pred, time.perf_counter() - t + enc_s, spent=clf.epsilon_,
                       noise_multiplier=clf.noise_multiplier_)
                if args.no_objective or math.isinf(eps):
                    continue
                LogisticRegression = _import_diffprivlib()
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    lr = LogisticRegression(epsilon=eps, data_norm=1.0, C=1.0, max_iter=200,
                                            random_state=seed).fit(Str, ytr)
                record("objective perturbation", eps, lr.predict(Ste), time.perf_counter() - t)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(runs, indent=1))
    table = pd.DataFrame(runs).groupby(["task", "method", "epsilon"], sort=False)[["accuracy", "macro_f1", "train_s"]].mean()
    print(table.round(4).to_string())


def _import_diffprivlib() -> type:
    import sklearn.tree._tree as tree

    for name, value in (("DOUBLE", np.float64), ("DTYPE", np.float32)):  # gone from scikit-learn 1.8
        if not hasattr(tree, name):
            setattr(tree, name, value)
    from diffprivlib.models import LogisticRegression

    return LogisticRegression


def sweep(df: pd.DataFrame, seed: int, out: Path) -> None:
    import itertools

    tr, _ = train_test_split(df, test_size=0.2, random_state=seed)
    fit, val = train_test_split(tr, test_size=0.2, random_state=seed + 1)
    runs = []
    for nf in (2**14, 2**16):
        enc = SparseTextEncoder(n_features=nf, cjk=True).fit([], [])
        Xf, Xv = enc.transform(fit["review"].tolist()), enc.transform(val["review"].tolist())
        for task, col in (("category", "cat"), ("sentiment", "label")):
            yf, yv = fit[col].to_numpy(), val[col].to_numpy()
            for eps, lr, epochs, bs in itertools.product((1.0, 3.0, 8.0), (0.005, 0.01, 0.02, 0.1), (5, 15, 30), (1024, 4096)):
                clf = PrivateLinearClassifier(epsilon=eps, learning_rate=lr, epochs=epochs, batch_size=bs, random_state=seed)
                clf.encoder_ = enc
                clf.classes_, y_idx = np.unique(yf, return_inverse=True)
                clf._fit_features(Xf, y_idx)
                pred = clf.classes_[np.argmax(Xv @ clf._coef_t.toarray() + clf.intercept_, axis=1)]
                run = {"task": task, "n_features": nf, "epsilon": eps, "learning_rate": lr, "epochs": epochs,
                       "batch_size": bs, **_score(yv, pred)}
                runs.append(run)
                print(json.dumps(run), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(runs, indent=1))
    table = pd.DataFrame(runs).groupby(["n_features", "learning_rate", "epochs", "batch_size"])["accuracy"].mean()
    print(table.sort_values(ascending=False).head(10).round(4).to_string())


if __name__ == "__main__":
    main()
