"""Self-contained HTML evaluation report: plots (matplotlib, embedded as PNG data URIs) and tables.

Every text that comes from the data is HTML-escaped and PII-scrubbed before it is written.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from typing import Any, Protocol

import numpy as np
import pandas as pd

from .metrics import coverage_at_precision
from .version import __version__

__all__ = ["Evaluated", "figure_uri", "look_alike_categories", "reliability_points", "render_report", "sibling_confusion", "threshold_table"]


class Evaluated(Protocol):
    """What a report is made of: an evaluation's figures and the products behind them
    (:class:`~taxonomist.evaluation.Evaluation` is one)."""

    metrics: dict[str, Any]
    per_class: pd.DataFrame
    confused_pairs: list[tuple[str, str, int]]
    errors: pd.DataFrame
    confidence: np.ndarray
    correct: np.ndarray
    y_true: list[str]
    y_pred: list[str]
    error_photos: list[dict[str, Any]]

    def summary_rows(self) -> list[tuple[str, str]]: ...


def figure_uri(fig: Any) -> str:
    """A matplotlib figure as a PNG data URI (for self-contained HTML reports); closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _short(label: str, n: int = 38) -> str:
    """A category path cut to ``n`` characters in the middle: its top level and its leaf stay readable."""
    if len(label) <= n:
        return label
    parts = label.split(" > ")
    if len(parts) > 1:
        head, leaf = parts[0], parts[-1]
        if len(head) + len(leaf) + 5 <= n:
            return f"{head} > … > {leaf}"
        leaf = leaf if len(leaf) <= n - 2 else leaf[: n - 3] + "…"
        return "… > " + leaf if len(leaf) + 4 <= n else leaf
    return label[: n - 1] + "…"


MIN_BIN = 20
"""The fewest products a reliability point stands for (fewer make points that zigzag)."""


def reliability_points(confidence: np.ndarray, correct: np.ndarray,
                       bins: int = 15) -> list[tuple[float, float, int, float, float]]:
    """(mean confidence, accuracy, products, 95 % interval low, high) per point of the reliability diagram: the
    products sorted by confidence and cut into at most ``bins`` groups of similar size, at least
    :data:`MIN_BIN` products each (equal products per point, not equal widths: a model sure of most products
    leaves equal-width bins nearly empty), never cutting between equal confidences."""
    from .monitoring import wilson_interval

    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    n = len(conf)
    if not n:
        return []
    order = np.argsort(conf, kind="stable")
    c, k = conf[order], ok[order]
    groups = max(1, min(bins, n // MIN_BIN))
    cuts = [int(round(i * n / groups)) for i in range(1, groups)]
    # move each cut past a run of equal confidences (an isotonic map gives a handful of values)
    cuts = sorted({int(np.searchsorted(c, c[x], side="right")) if x < n else n for x in cuts})
    edges = [0, *[x for x in cuts if 0 < x < n], n]
    out: list[tuple[float, float, int, float, float, int]] = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b - a < MIN_BIN and out:  # a short tail joins the point before it
            a = int(out.pop()[5])
        hits = int(k[a:b].sum())
        acc = hits / (b - a)
        lo, hi = wilson_interval(hits, b - a)
        out.append((float(c[a:b].mean()), acc, b - a, min(lo, acc), max(hi, acc), a))  # (rounding at 0 and 1)
    return [p[:5] for p in out]


def threshold_table(confidence: np.ndarray, correct: np.ndarray,
                    thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)) -> list[dict[str, float]]:
    """For each confidence threshold: the share of products answered with their leaf at or above it, and the
    precision of those answers."""
    rows = []
    for t in thresholds:
        kept = confidence >= t
        rows.append({"threshold": t, "coverage": float(kept.mean()) if len(kept) else 0.0,
                     "precision": float(correct[kept].mean()) if kept.any() else float("nan")})
    return rows


def headline(confidence: np.ndarray, correct: np.ndarray, targets: tuple[float, ...] = (0.95, 0.9)) -> str:
    """The report's first line, what a catalogue manager can do with the model: the largest share of products
    answered at or above one confidence whose answers reach the first precision of ``targets`` that any does,
    and the share left to review."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    if not len(conf):
        return "No products evaluated."
    order = np.argsort(-conf, kind="stable")
    c, hit = conf[order], ok[order].astype(float)
    precision = np.cumsum(hit) / np.arange(1, len(c) + 1)
    ends = np.flatnonzero(np.r_[c[1:] != c[:-1], True])  # the last product of each run of equal confidences
    for target in targets:
        good = ends[precision[ends] >= target]
        if len(good):
            k = int(good[-1])
            share = (k + 1) / len(c)
            return (f"Auto-accept {share:.0%} of products (confidence ≥ {c[k]:.2f}) at {precision[k]:.0%} precision; "
                    f"review {1 - share:.0%}.")
    return (f"On these products no confidence reaches {min(targets):.0%} precision: review every answer, or train "
            "on more labelled products.")


def sibling_confusion(y_true: list[str], y_pred: list[str]) -> list[dict[str, Any]]:
    """Per parent node of the true leaves: products, errors, and how many errors stay among its children (a
    sibling was predicted) -- the parents whose children the model cannot tell apart."""
    stats: dict[str, list[int]] = {}
    for t, p in zip(y_true, y_pred, strict=True):
        parent = t.rsplit(" > ", 1)[0] if " > " in t else "(top level)"
        row = stats.setdefault(parent, [0, 0, 0])
        row[0] += 1
        if t != p:
            row[1] += 1
            same = (p.rsplit(" > ", 1)[0] if " > " in p else "(top level)") == parent
            row[2] += same
    out = [{"parent": k, "products": v[0], "errors": v[1], "among_siblings": v[2]} for k, v in stats.items() if v[1]]
    return sorted(out, key=lambda r: (-r["among_siblings"], -r["errors"]))


def look_alike_categories(classes: list[str], y_true: list[str], y_pred: list[str]) -> list[dict[str, Any]]:
    """Pairs of categories whose names look like duplicates -- the same leaf name under two parents ("Wallets >
    Wallets" and "Bags > Wallets"), or one leaf name the start of the other ("Skin" and "Skin Care") -- with how
    often the model confused them either way."""
    import re
    from collections import Counter

    def words(c: str) -> list[str]:
        return re.findall(r"\w+", c.rsplit(" > ", 1)[-1].lower())

    confused = Counter((t, p) for t, p in zip(y_true, y_pred, strict=True) if t != p)
    by_first: dict[str, list[str]] = {}
    for c in sorted(set(classes)):
        w = words(c)
        if w:
            by_first.setdefault(w[0], []).append(c)
    out = []
    for group in by_first.values():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                wa, wb = words(a), words(b)
                short, long = (wa, wb) if len(wa) <= len(wb) else (wb, wa)
                if long[: len(short)] == short:
                    out.append({"a": a, "b": b, "confused": confused[(a, b)] + confused[(b, a)]})
    return sorted(out, key=lambda r: -r["confused"])


def _plots(ev: Evaluated) -> dict[str, str]:
    """The report's figures as data URIs: scores per level, reliability, precision vs coverage and, when errors
    involve two categories or more, the confusions among the categories most involved."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = {"levels": _plot_levels(plt, ev), "reliability": _plot_reliability(plt, ev),
           "coverage": _plot_coverage(plt, ev)}
    confusion = _plot_confusion(plt, ev)
    if confusion is not None:
        out["confusion"] = confusion
    return out


def _plot_levels(plt: Any, ev: Evaluated) -> str:
    """Accuracy and macro-F1 per level, and the hierarchical precision and F1."""
    m = ev.metrics
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    names = [f"level {lv['level']}" for lv in m["levels"]] + ["hierarchical"]
    acc = [lv["accuracy"] for lv in m["levels"]] + [m["hierarchical_precision"]]
    f1 = [lv["macro_f1"] for lv in m["levels"]] + [m["hierarchical_f1"]]
    x = np.arange(len(names))
    ax.bar(x - 0.2, acc, 0.4, label="accuracy (hier.: precision)")
    ax.bar(x + 0.2, f1, 0.4, label="macro F1 (hier.: F1)")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8, frameon=False)
    ax.set_title("Scores per level")
    return figure_uri(fig)


def _plot_reliability(plt: Any, ev: Evaluated) -> str:
    """The reliability diagram, with the confidence histogram under it."""
    m = ev.metrics
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(4.4, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    points = reliability_points(ev.confidence, ev.correct)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfectly calibrated")
    if points:
        cs, accs, ns, los, his = (np.asarray(v) for v in zip(*points, strict=True))
        ax.errorbar(cs, accs, yerr=[accs - los, his - accs], fmt="o", ms=5, capsize=3, zorder=3,
                    label="accuracy, 95 % interval")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    per = f"~{int(np.median([p[2] for p in points]))} products each" if points else "no products"
    ax.set_title(f"Reliability (ECE {m['ece']:.3f}; {len(points)} points, {per})", fontsize=10)
    hx.hist(ev.confidence, bins=20, range=(0, 1), color="tab:blue", alpha=0.7)
    hx.set_xlabel("confidence")
    hx.set_ylabel("products")
    return figure_uri(fig)


def _plot_coverage(plt: Any, ev: Evaluated) -> str:
    """Precision against coverage (most confident first), with the back-off threshold."""
    m = ev.metrics
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    order = np.argsort(-ev.confidence)
    corr = ev.correct[order].astype(float)
    prec = np.cumsum(corr) / np.arange(1, len(corr) + 1)
    cov = np.arange(1, len(corr) + 1) / len(corr)
    ax.plot(cov, prec)
    for target, style in ((0.90, ":"), (0.95, "--")):
        c, _ = coverage_at_precision(ev.confidence, ev.correct, target)
        ax.axhline(target, ls=style, color="grey", lw=1)
        ax.axvline(c, ls=style, color="tab:red", lw=1, label=f"{target:.0%} precision: {c:.0%} covered")
    threshold = m.get("min_confidence", m.get("back_off_threshold"))
    if threshold is not None:  # the back-off threshold the model answers with
        c = float((ev.confidence >= threshold).mean())
        ax.axvline(c, color="black", lw=1.5, label=f"back-off at confidence {threshold:.2f}: {c:.0%} answered")
    ax.legend(loc="lower left", fontsize=7, frameon=True)
    ax.set_xlabel("coverage (most confident first)")
    ax.set_ylabel("precision")
    ax.set_ylim(max(0.0, float(prec.min()) - 0.05), 1.01)
    ax.set_title("Precision vs coverage")
    return figure_uri(fig)


def _plot_confusion(plt: Any, ev: Evaluated) -> str | None:
    """The confusion heat-map of the categories most involved in errors (``None``: fewer than two)."""
    involved: dict[str, int] = {}
    for t, p, n in ev.confused_pairs:
        involved[t] = involved.get(t, 0) + n
        involved[p] = involved.get(p, 0) + n
    top = sorted(c for c, _ in sorted(involved.items(), key=lambda kv: -kv[1])[:14])  # siblings side by side
    if len(top) < 2:
        return None
    from matplotlib.colors import LogNorm

    pos = {c: i for i, c in enumerate(top)}
    mat = np.zeros((len(top), len(top)))
    for t, p in zip(ev.y_true, ev.y_pred, strict=True):
        if t in pos and p in pos:
            mat[pos[t], pos[p]] += 1
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    shown = np.where(mat > 0, mat, np.nan)
    im = ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(2.0, float(mat.max()))))
    labels = [_short(c, 40) for c in top]
    ax.set_xticks(range(len(top)), labels, rotation=75, ha="right", fontsize=7)
    ax.set_yticks(range(len(top)), labels, fontsize=7)
    parents = [c.rsplit(" > ", 1)[0] for c in top]
    for i in range(1, len(top)):  # lines between parents
        if parents[i] != parents[i - 1]:
            ax.axhline(i - 0.5, color="grey", lw=0.6)
            ax.axvline(i - 0.5, color="grey", lw=0.6)
    for i in range(len(top)):
        for j in range(len(top)):
            if mat[i, j]:
                ax.text(j, i, str(int(mat[i, j])), ha="center", va="center", fontsize=6,
                        color="white" if mat[i, j] > mat.max() ** 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Most-confused categories: products (log colour scale; grouped by parent)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    return figure_uri(fig)


_MEANING = {  # one line per figure of the summary, for a reader who is not a statistician
    "accuracy": "share of products whose leaf is right",
    "macro F1": "F1 (precision and recall together) of each category, averaged with equal weight: rare categories "
                "count as much as common ones",
    "weighted F1": "the categories' F1 averaged by their number of products",
    "hierarchical F1": "partial credit for a path right at the top levels: the share of path nodes predicted and true "
                       "in common",
    "top-level accuracy": "share of products in the right top-level category",
    "top-3 accuracy": "share of products whose right leaf is among the three most probable",
    "coverage @ 90% precision": "share of products the model can answer alone if 9 in 10 answers must be right",
    "coverage @ 95% precision": "the same at 19 in 20",
    "expected calibration error": "how far the stated confidence is from the accuracy at that confidence (0 = a "
                                  "confidence of 80 % is right 80 % of the time)",
    "titles seen in training": "share of these products the model was trained on (above 5 %: scores inflated)",
}


def _worst_rows(ev: Evaluated, min_support: int) -> str:
    """Table rows of the 25 lowest-F1 categories with at least ``min_support`` test products, 3 errors each."""
    e = html.escape
    worst = ev.per_class[ev.per_class["support"] >= min_support].head(25)
    rows = []
    for r in worst.itertuples():
        ex = ev.errors[ev.errors["true"] == r.category].head(3)
        examples = "<br>".join(
            f"“{e(str(title))}” → {e(_short(str(pred), 60))} ({float(conf):.2f})"
            for title, pred, conf in zip(ex["title"], ex["predicted"], ex["confidence"], strict=True)
        )
        rows.append(
            f"<tr><td>{e(str(r.category))}</td><td>{r.support}</td><td>{r.precision:.3f}</td><td>{r.recall:.3f}</td>"
            f"<td>{r.f1:.3f}</td><td class=ex>{examples}</td></tr>"
        )
    return "".join(rows)


def _photo_section(ev: Evaluated) -> str:
    """The grid of misclassified products with a photo (empty without any)."""
    e = html.escape
    photos = "".join(
        f'<figure class=ph><img alt="product photo" src="{e(p["src"])}"><figcaption>{e(_short(p["title"], 50))}<br>'
        f'<b>true</b> {e(_short(p["true"], 50))}<br><b>predicted</b> {e(_short(p["predicted"], 50))} '
        f'({p["confidence"]:.2f})</figcaption></figure>'
        for p in ev.error_photos
    )
    return f"<h2>Misclassified products with a photo</h2><div class=grid>{photos}</div>" if photos else ""


def _attribute_section(ev: Evaluated) -> str:
    """Per attribute read from the products' words: precision, coverage, and per value (empty without any)."""
    e = html.escape
    scores = ev.metrics.get("attributes") or {}
    if not scores:
        return ""

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{v:.1%}"

    rows = "".join(
        f"<tr><td>{e(name)} ({e(s['column'])})</td><td>{s['n']:,}</td><td>{pct(s['precision'])}</td>"
        f"<td>{pct(s['coverage'])}</td><td>{pct(s['precision_at_70_coverage'])}</td><td class=ex>"
        + ", ".join(f"{e(v['value'])} {pct(v['precision'])} of {v['answered']}" for v in s["values"] if v["answered"])
        + "</td></tr>" for name, s in scores.items())
    return ("<h2>Attributes read from the products' words</h2><p>Each attribute's own column taken as the truth and "
            "hidden from the reading.</p><table><tr><th>attribute (column)</th><th>products</th><th>precision</th>"
            "<th>coverage</th><th>precision of the surest 70 %</th><th>per value: precision of the answers</th></tr>"
            + rows + "</table>")


_STYLE = """<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:14px;display:block;overflow-x:auto;max-width:100%} th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} figure{display:inline-block;margin:0.5em} img{max-width:100%} td.ex{font-size:12px;color:#555}
td.what{color:#555;font-size:12px;max-width:34em} .warning{background:#fde2e1;border:1px solid #d33;padding:.6em 1em;font-weight:600} .headline{font-size:1.25em}
.grid{display:flex;flex-wrap:wrap} tr.mark td{background:#fff3c4;font-weight:600} figure.ph{width:180px;font-size:11px;vertical-align:top} figure.ph img{max-height:110px}
</style>"""


def render_report(ev: Evaluated, title: str = "taxonomist evaluation") -> str:
    e = html.escape
    plots = _plots(ev)
    summary = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td><td class=what>{e(_MEANING.get(k, ''))}</td></tr>"
                      for k, v in ev.summary_rows())
    lv_rows = "".join(
        f"<tr><td>{lv['level']}</td><td>{lv['n_classes']}</td><td>{lv['accuracy']:.4f}</td><td>{lv['macro_precision']:.4f}</td>"
        f"<td>{lv['macro_recall']:.4f}</td><td>{lv['macro_f1']:.4f}</td><td>{lv['micro_f1']:.4f}</td><td>{lv['weighted_f1']:.4f}</td></tr>"
        for lv in ev.metrics["levels"]
    )
    min_support = max(2, int(np.median(ev.per_class["support"]))) if len(ev.per_class) else 2
    pairs = "".join(f"<tr><td>{e(t)}</td><td>{e(p)}</td><td>{n}</td></tr>" for t, p, n in ev.confused_pairs)
    mc = ev.metrics.get("min_confidence", ev.metrics.get("back_off_threshold"))
    levels = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    thresholds = "".join(  # the model's own threshold gets a row of its own, highlighted
        f"<tr{' class=mark' if mc is not None and r['threshold'] == mc else ''}>"
        f"<td>{r['threshold']:.2f}</td><td>{r['coverage']:.1%}</td><td>{r['precision']:.1%}</td></tr>"
        for r in threshold_table(ev.confidence, ev.correct, tuple(sorted({*levels, *([mc] if mc is not None else [])}))))
    siblings = "".join(
        f"<tr><td>{e(r['parent'])}</td><td>{r['products']}</td><td>{r['errors']}</td><td>{r['among_siblings']}</td></tr>"
        for r in sibling_confusion(ev.y_true, ev.y_pred)[:20])
    alike = look_alike_categories(list(ev.per_class["category"]) + list(set(ev.y_pred)), ev.y_true, ev.y_pred)
    alike_rows = "".join(f"<tr><td>{e(r['a'])}</td><td>{e(r['b'])}</td><td>{r['confused']}</td></tr>" for r in alike[:20])
    per_class = "".join(
        f"<tr><td>{e(str(r.category))}</td><td>{r.support}</td><td>{r.precision:.3f}</td><td>{r.recall:.3f}</td>"
        f"<td>{r.f1:.3f}</td></tr>"
        for r in ev.per_class.sort_values(["support", "category"], ascending=[False, True]).itertuples())
    threshold_note = (f"The model backs off to a parent below confidence {mc:.2f} (highlighted)." if mc is not None
                      else "The model always answers with a leaf (no back-off threshold).")
    img = "".join(
        f'<figure><img alt="{k}" src="{v}"></figure>' for k, v in plots.items() if k != "confusion"
    )
    confusion = f'<figure><img alt="confusion" src="{plots["confusion"]}"></figure>' if "confusion" in plots else "<p>No confusions.</p>"
    photo_section = _photo_section(ev)
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    seen = float(ev.metrics.get("seen_in_training_share", 0.0) or 0.0)
    warning = (f"<p class=warning>Warning: {seen:.0%} of these products have a title the model was trained on, so "
               "the scores below are inflated. Evaluate on products the model has not seen (taxonomist train keeps "
               "a held-out split).</p>" if seen > 0.05 else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
{_STYLE}</head><body>
<h1>{e(title)}</h1>
<p>taxonomist {e(__version__)} · {e(created)} · {ev.metrics['n']:,} products</p>
{warning}<p class=headline>{e(headline(ev.confidence, ev.correct))}</p>
<h2>Summary</h2><table>{summary}</table>
<h2>Per level</h2>
<table><tr><th>level</th><th>categories</th><th>accuracy</th><th>macro P</th><th>macro R</th><th>macro F1</th><th>micro F1</th><th>weighted F1</th></tr>{lv_rows}</table>
{img}
<h2>Most-confused categories</h2>{confusion}
<table><tr><th>true</th><th>predicted</th><th>count</th></tr>{pairs}</table>
<h2>Confidence thresholds</h2>
<p>{e(threshold_note)} Leaves answered at or above each threshold, and how often they are right:</p>
<table><tr><th>threshold</th><th>products answered with their leaf</th><th>precision</th></tr>{thresholds}</table>
<h2>Errors among siblings</h2>
<p>Per parent of the true category: errors where the model picked another child of the same parent.</p>
<table><tr><th>parent</th><th>products</th><th>errors</th><th>among its children</th></tr>{siblings}</table>
<h2>Categories that look like duplicates</h2>
{"<p>None: no two leaf names repeat or extend each other.</p>" if not alike_rows else
 "<p>Same leaf name under two parents, or one name the start of the other; merge or rename them if products fit both.</p>"
 "<table><tr><th>category</th><th>looks like</th><th>confused (either way)</th></tr>" + alike_rows + "</table>"}
<h2>Worst categories, with example errors</h2>
<p>Categories with at least {min_support} test products (the median support), lowest F1 first.</p>
<table><tr><th>category</th><th>support</th><th>precision</th><th>recall</th><th>F1</th><th>errors (title → predicted, confidence)</th></tr>{_worst_rows(ev, min_support)}</table>
<details><summary>Every category: support, precision, recall, F1</summary>
<table><tr><th>category</th><th>support</th><th>precision</th><th>recall</th><th>F1</th></tr>{per_class}</table></details>
{photo_section}
{_attribute_section(ev)}
</body></html>
"""
