"""The self-contained HTML page of ``taxonomist monitor``: drift over time, movers, unusual products, live accuracy."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping
from typing import Any

from .monitoring import ALERTS, MIN_WINDOW
from .report import figure_uri
from .version import __version__

__all__ = ["render_monitor"]


def _f(v: Any, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def _plots(summary: Mapping[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    daily = summary["daily"]
    if daily:
        days = [d["day"] for d in daily]
        x = range(len(days))
        fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
        axes[0].bar(x, [d["n"] for d in daily], color="#7a9cc6")
        axes[0].set(title="Served predictions per day")
        # a marker of its own per line (round dots of one size hid each other where the values met)
        for (key, label), marker in zip((("level_1", "PSI level 1"), ("level_2", "PSI level 2")), ("o", "s"),
                                        strict=True):
            axes[1].plot(x, [(d.get("psi") or {}).get(key) for d in daily], marker=marker, ms=7, mfc="none",
                         label=label)
        axes[1].plot(x, [d.get("confidence_psi") for d in daily], marker="^", ms=6, label="PSI confidence")
        axes[1].axhline(ALERTS["psi_level_1"], color="red", ls="--", lw=1, label="alert")
        axes[1].set(title="Distribution shift against the reference")
        axes[1].legend(fontsize=8)
        for (key, label), marker in zip((("mean_confidence", "mean confidence"),
                                         ("unknown_word_share", "unknown title words"),
                                         ("back_off_share", "backed off")), ("o", "s", "^"), strict=True):
            cur = [(d.get(key) or {}).get("current") for d in daily]
            line, = axes[2].plot(x, cur, marker=marker, ms=6, mfc="none", label=label)
            ref = next(((d.get(key) or {}).get("reference") for d in daily if d.get(key)), None)
            if ref is not None:
                axes[2].axhline(ref, color=line.get_color(), ls=":", lw=1)
        axes[2].set(title="Shares (dotted: reference)", ylim=(0, 1.02))
        axes[2].legend(fontsize=8)
        for ax in axes:
            ax.set_xticks(list(x), days, rotation=45, ha="right", fontsize=7)
        fig.tight_layout()
        out.append(figure_uri(fig))
    weekly = summary["live_accuracy"]
    if weekly:
        fig, ax = plt.subplots(figsize=(7, 3.4))
        weeks = sorted({w["week"] for w in weekly})
        for sample, colour in (("audit", "#2a7"), ("reviewed", "#c63")):
            rows = [w for w in weekly if w["sample"] == sample]
            if rows:
                xs = [weeks.index(w["week"]) for w in rows]
                ax.errorbar(xs, [w["accuracy"] for w in rows], capsize=3, marker="o", color=colour,
                            yerr=[[w["accuracy"] - w["low"] for w in rows], [w["high"] - w["accuracy"] for w in rows]],
                            label=f"{sample} (95 % interval)")
        ax.set_xticks(range(len(weeks)), weeks, fontsize=8)
        ax.set(title="Live accuracy from reviewers' decisions", ylim=(0, 1.02))
        ax.legend(fontsize=8)
        fig.tight_layout()
        out.append(figure_uri(fig))
    return out


def render_monitor(summary: Mapping[str, Any], title: str = "taxonomist monitor", period: str = "") -> str:
    """The page for a :func:`taxonomist.monitoring.monitor_summary`."""
    e = html.escape
    s = summary["signals"]
    alert = bool(s.get("alerts"))
    rows: list[tuple[str, str, str, bool]] = []  # signal, value, what it means and its threshold, over it
    if "psi" in s:
        psi_over = max(s["psi"]["level_1"] or 0, s["psi"]["level_2"] or 0) > ALERTS["psi_level_1"]
        rows += [("PSI, level 1 / level 2", f"{_f(s['psi']['level_1'])} / {_f(s['psi']['level_2'])}",
                  "population stability index: how much the share of each category moved against the reference "
                  f"(0: none; over {ALERTS['psi_level_1']}: a large shift, an alert)", psi_over),
                 ("Jensen-Shannon, level 1 / level 2 (bits)", f"{_f(s['js']['level_1'])} / {_f(s['js']['level_2'])}",
                  "another measure of the same shift, between 0 (the same) and 1 bit (nothing in common)", False),
                 ("PSI of the confidence histogram", _f(s["confidence_psi"]),
                  f"how much the model's confidence moved (alert above {ALERTS['confidence_psi']})",
                  (s["confidence_psi"] or 0) > ALERTS["confidence_psi"])]
        for key, label in (("mean_confidence", "mean confidence"), ("back_off_share", "backed off"),
                           ("unknown_word_share", "unknown title words")):
            rows.append((label, f"{_f(s[key]['current'])} (reference {_f(s[key]['reference'])})", "", False))
        rows.append(("brands training never saw", _f(s.get("new_brand_rate")), "share of branded products", False))
        if s.get("centroid_similarity"):
            c = s["centroid_similarity"]
            rows.append(("similarity to the category's training centroid (embeddings)",
                         f"{_f(c['current'])} (reference {_f(c['reference'])})", f"{c['n']:,} titles embedded; no alert",
                         False))
    signal_rows = "".join(f"<tr{' class=alerting' if over else ''}><th>{e(a)}</th><td>{e(b)}</td><td>{e(c)}</td></tr>"
                          for a, b, c, over in rows)
    judged = summary["n"] >= MIN_WINDOW and s.get("reference") is not None
    mood = "alert" if alert else ("ok" if judged else "neutral")

    def movers(items: list[dict[str, Any]]) -> str:
        return "".join(f"<tr><td>{e(m['category'])}</td><td>{m['reference']:.1%}</td><td>{m['current']:.1%}</td></tr>"
                       for m in items)

    def examples(items: list[dict[str, Any]]) -> str:
        return "".join(f"<tr><td>{e(str(r['title']))}</td><td>{e(str(r['leaf']))}</td><td>{float(r['confidence']):.2f}</td>"
                       f"<td>{_f(r.get('unknown_share'), '.0%')}</td><td>{e(str(r['model_version']))}</td></tr>"
                       for r in items)

    weekly = "".join(f"<tr><td>{e(w['week'])}</td><td>{e(w['sample'])}</td><td>{w['n']}</td><td>{w['accuracy']:.3f}</td>"
                     f"<td>{w['low']:.3f} – {w['high']:.3f}</td></tr>" for w in summary["live_accuracy"])
    by_top = "".join(f"<tr><td>{e(w['week'])}</td><td>{e(w['top_level'])}</td><td>{e(w['sample'])}</td><td>{w['n']}</td>"
                     f"<td>{w['accuracy']:.3f}</td><td>{w['low']:.3f} – {w['high']:.3f}</td></tr>"
                     for w in summary["live_accuracy_by_top_level"])
    versions = ", ".join(f"{e(v)}: {n:,}" for v, n in sorted(summary["versions"].items()))
    imgs = "".join(f'<figure><img src="{p}" alt="plot"></figure>' for p in _plots(summary))
    head = ("<tr><th>title (scrubbed)</th><th>predicted leaf</th><th>confidence</th><th>unknown words</th>"
            "<th>version</th></tr>")
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{e(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0;font-size:14px}} th,td{{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}}
th{{background:#f5f5f5}} figure{{display:inline-block;margin:0.5em}} img{{max-width:100%}}
.verdict{{padding:0.8em 1em;border-radius:6px;font-size:17px;font-weight:600}}
.alert{{background:#fde2e1;border:1px solid #e0a09c}} .ok{{background:#e3f4e6;border:1px solid #9cd0a6}}
.neutral{{background:#eef0f3;border:1px solid #c5cad3}} tr.alerting td,tr.alerting th{{background:#fde2e1}}
table{{display:block;overflow-x:auto;max-width:100%}}
.cols{{display:flex;gap:2em;flex-wrap:wrap}}
</style></head><body>
<h1>{e(title)}</h1>
<p>taxonomist {e(__version__)} · {e(created)} · {e(period)} · {summary['n']:,} served predictions · versions {versions or '–'}
· reference: {e(str(s.get('reference', 'none')))}</p>
<p class="verdict {mood}">{e(summary['verdict'])}</p>
<h2>Drift over the whole period</h2><table><tr><th>signal</th><th>value</th><th></th></tr>{signal_rows}</table>
{imgs}
<div class=cols><div><h2>Grew most (level 1)</h2><table><tr><th>category</th><th>reference</th><th>served</th></tr>{movers(s.get('grew', []))}</table></div>
<div><h2>Shrank most (level 1)</h2><table><tr><th>category</th><th>reference</th><th>served</th></tr>{movers(s.get('shrank', []))}</table></div></div>
<h2>Products least like the training data</h2>
<h3>Most title words the model does not know</h3><table>{head}{examples(summary['most_unknown_words'])}</table>
<h3>Least confident</h3><table>{head}{examples(summary['least_confident'])}</table>
<h2>Live accuracy from reviews</h2>
<p>The audit sample (a random share of confident predictions, queued for review) estimates the accuracy of what is
served without review; the reviewed items are the ones the model was unsure of.</p>
<table><tr><th>week</th><th>sample</th><th>decided</th><th>accuracy</th><th>95 % interval</th></tr>{weekly}</table>
<details><summary>per top-level category</summary><table><tr><th>week</th><th>top level</th><th>sample</th><th>decided</th>
<th>accuracy</th><th>95 % interval</th></tr>{by_top}</table></details>
</body></html>"""
