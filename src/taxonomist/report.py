"""Self-contained HTML evaluation report: plots (matplotlib, embedded as PNG data URIs) and tables.

Every text that comes from the data is HTML-escaped and PII-scrubbed before it is written.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__

if TYPE_CHECKING:
    from .evaluation import Evaluation

__all__ = ["render_report"]


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _short(label: str, n: int = 38) -> str:
    return label if len(label) <= n else "…" + label[-(n - 1):]


def _plots(ev: Evaluation) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .evaluation import coverage_at_precision

    m = ev.metrics
    out: dict[str, str] = {}
    # per-level scores
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
    out["levels"] = _png(fig)
    # reliability diagram
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    bins = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(ev.confidence, bins[1:-1]), 0, 9)
    centers, accs, counts = [], [], []
    for b in range(10):
        sel = idx == b
        if sel.any():
            centers.append(float(ev.confidence[sel].mean()))
            accs.append(float(ev.correct[sel].mean()))
            counts.append(int(sel.sum()))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.plot(centers, accs, "o-")
    for c, a, n in zip(centers, accs, counts, strict=True):
        ax.annotate(str(n), (c, a), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {m['ece']:.3f})")
    out["reliability"] = _png(fig)
    # precision-coverage curve
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    order = np.argsort(-ev.confidence)
    corr = ev.correct[order].astype(float)
    prec = np.cumsum(corr) / np.arange(1, len(corr) + 1)
    cov = np.arange(1, len(corr) + 1) / len(corr)
    ax.plot(cov, prec)
    for target, style in ((0.90, ":"), (0.95, "--")):
        c, _ = coverage_at_precision(ev.confidence, ev.correct, target)
        ax.axhline(target, ls=style, color="grey", lw=1)
        ax.axvline(c, ls=style, color="tab:red", lw=1)
    ax.set_xlabel("coverage (most confident first)")
    ax.set_ylabel("precision")
    ax.set_ylim(max(0.0, float(prec.min()) - 0.05), 1.01)
    ax.set_title("Precision vs coverage")
    out["coverage"] = _png(fig)
    # confusion heat-map of the classes most involved in errors
    involved: dict[str, int] = {}
    for t, p, n in ev.confused_pairs:
        involved[t] = involved.get(t, 0) + n
        involved[p] = involved.get(p, 0) + n
    top = [c for c, _ in sorted(involved.items(), key=lambda kv: -kv[1])[:14]]
    if len(top) >= 2:
        pos = {c: i for i, c in enumerate(top)}
        mat = np.zeros((len(top), len(top)))
        for t, p in zip(ev.y_true, ev.y_pred, strict=True):
            if t in pos and p in pos:
                mat[pos[t], pos[p]] += 1
        rowsum = mat.sum(axis=1, keepdims=True)
        norm = np.divide(mat, rowsum, out=np.zeros_like(mat), where=rowsum > 0)
        fig, ax = plt.subplots(figsize=(7.5, 6.5))
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        labels = [_short(c, 34) for c in top]
        ax.set_xticks(range(len(top)), labels, rotation=75, ha="right", fontsize=7)
        ax.set_yticks(range(len(top)), labels, fontsize=7)
        for i in range(len(top)):
            for j in range(len(top)):
                if mat[i, j]:
                    ax.text(j, i, str(int(mat[i, j])), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("Confusion among the most-confused categories (row-normalised)")
        fig.colorbar(im, ax=ax, fraction=0.04)
        out["confusion"] = _png(fig)
    return out


def render_report(ev: Evaluation, title: str = "taxonomist evaluation") -> str:
    e = html.escape
    plots = _plots(ev)
    summary = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in ev.summary_rows())
    lv_rows = "".join(
        f"<tr><td>{lv['level']}</td><td>{lv['n_classes']}</td><td>{lv['accuracy']:.4f}</td><td>{lv['macro_precision']:.4f}</td>"
        f"<td>{lv['macro_recall']:.4f}</td><td>{lv['macro_f1']:.4f}</td><td>{lv['micro_f1']:.4f}</td><td>{lv['weighted_f1']:.4f}</td></tr>"
        for lv in ev.metrics["levels"]
    )
    worst = ev.per_class[ev.per_class["support"] > 0].head(25)
    worst_rows = []
    for r in worst.itertuples():
        ex = ev.errors[ev.errors["true"] == r.category].head(3)
        examples = "<br>".join(
            f"“{e(str(title))}” → {e(_short(str(pred), 60))} ({float(conf):.2f})"
            for title, pred, conf in zip(ex["title"], ex["predicted"], ex["confidence"], strict=True)
        )
        worst_rows.append(
            f"<tr><td>{e(str(r.category))}</td><td>{r.support}</td><td>{r.precision:.3f}</td><td>{r.recall:.3f}</td>"
            f"<td>{r.f1:.3f}</td><td class=ex>{examples}</td></tr>"
        )
    pairs = "".join(f"<tr><td>{e(t)}</td><td>{e(p)}</td><td>{n}</td></tr>" for t, p, n in ev.confused_pairs)
    img = "".join(
        f'<figure><img alt="{k}" src="{v}"></figure>' for k, v in plots.items() if k != "confusion"
    )
    confusion = f'<figure><img alt="confusion" src="{plots["confusion"]}"></figure>' if "confusion" in plots else "<p>No confusions.</p>"
    photos = "".join(
        f'<figure class=ph><img alt="product photo" src="{e(p["src"])}"><figcaption>{e(_short(p["title"], 50))}<br>'
        f'<b>true</b> {e(_short(p["true"], 50))}<br><b>predicted</b> {e(_short(p["predicted"], 50))} '
        f'({p["confidence"]:.2f})</figcaption></figure>'
        for p in ev.error_photos
    )
    photo_section = (f"<h2>Misclassified products with a photo</h2><div class=grid>{photos}</div>" if photos else "")
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0;font-size:14px}} th,td{{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}}
th{{background:#f5f5f5}} figure{{display:inline-block;margin:0.5em}} img{{max-width:100%}} td.ex{{font-size:12px;color:#555}}
.grid{{display:flex;flex-wrap:wrap}} figure.ph{{width:180px;font-size:11px;vertical-align:top}} figure.ph img{{max-height:110px}}
</style></head><body>
<h1>{e(title)}</h1>
<p>taxonomist {e(__version__)} · {e(created)} · {ev.metrics['n']:,} products</p>
<h2>Summary</h2><table>{summary}</table>
<h2>Per level</h2>
<table><tr><th>level</th><th>categories</th><th>accuracy</th><th>macro P</th><th>macro R</th><th>macro F1</th><th>micro F1</th><th>weighted F1</th></tr>{lv_rows}</table>
{img}
<h2>Most-confused categories</h2>{confusion}
<table><tr><th>true</th><th>predicted</th><th>count</th></tr>{pairs}</table>
<h2>Worst categories, with example errors</h2>
<table><tr><th>category</th><th>support</th><th>precision</th><th>recall</th><th>F1</th><th>errors (title → predicted, confidence)</th></tr>{''.join(worst_rows)}</table>
{photo_section}
</body></html>
"""
