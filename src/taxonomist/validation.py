"""What reading a table found: :class:`ValidationReport` counts each kind of bad row with its first examples.

Shared by catalogues (:mod:`taxonomist.catalog`), table files (:mod:`taxonomist.tables`) and behaviour events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .text import scrub_pii

__all__ = ["MAX_TEXT_CHARS", "MAX_TITLE_CHARS", "ValidationIssue", "ValidationReport"]

MAX_TITLE_CHARS = 2_000
MAX_TEXT_CHARS = 20_000
_N_EXAMPLES = 5

_ISSUE_TEXT = {
    "malformed_line": "malformed lines (wrong number of fields or invalid JSON)",
    "empty_title": "rows with an empty title",
    "image_only": "rows with an empty title but a photo (kept: classified from the photo by image models)",
    "missing_label": "rows without a category label",
    "unknown_label": "rows whose category is not in the taxonomy",
    "duplicate": "exact duplicate rows (all fields equal to an earlier row)",
    "duplicate_id": "rows whose id repeats an earlier row's id with other content (kept)",
    "missing_user_item": "events without a user or an item",
    "unknown_event": "events whose type is not view / fav / cart / buy (or pv, click, purchase, ...)",
    "bad_timestamp": "events whose timestamp is neither Unix seconds nor a date",
    "not_utf8": "lines that were not UTF-8 in a UTF-8 file (decoded as cp1252, kept; check them)",
    "long_text": f"rows whose title was longer than {MAX_TITLE_CHARS:,} or description longer than "
    f"{MAX_TEXT_CHARS:,} characters (truncated, kept)",
}
_FEED_NAMES = {"shopify": "Shopify products", "merchant": "Google Merchant Center", "woocommerce": "WooCommerce products"}
_KEPT_ISSUES = {"duplicate_id", "long_text", "image_only", "not_utf8"}
STRICT_ISSUES = {"not_utf8"}  # kept, but --strict rejects them: the repair is a guess


@dataclass
class ValidationIssue:
    """One kind of problem: how many rows had it and the first few, as (row number, excerpt)."""

    kind: str
    count: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)

    def add(self, row: int, excerpt: str) -> None:
        self.count += 1
        if len(self.examples) < _N_EXAMPLES:
            self.examples.append((row, scrub_pii(excerpt[:80])))

    @property
    def skipped(self) -> bool:
        return self.kind not in _KEPT_ISSUES


@dataclass
class ValidationReport:
    """What reading a catalogue found. Row numbers count data rows from 1 (line 1 is the header in a CSV)."""

    source: str = ""
    n_read: int = 0
    n_kept: int = 0
    issues: dict[str, ValidationIssue] = field(default_factory=dict)
    feed: str | None = None  # the shop export recognised by its header (taxonomist.feeds), if any
    n_folded: int = 0  # its variant / image rows folded into their product
    notes: list[str] = field(default_factory=list)  # how the file was read (the sheet, the encoding guessed)

    def issue(self, kind: str) -> ValidationIssue:
        return self.issues.setdefault(kind, ValidationIssue(kind))

    @property
    def n_skipped(self) -> int:
        return self.n_read - self.n_kept

    @property
    def ok(self) -> bool:
        return not any(i.count for i in self.issues.values())

    def lines(self) -> list[str]:
        out = [f"{self.source}: read {self.n_read:,} rows, kept {self.n_kept:,}, skipped {self.n_skipped:,}"]
        if self.feed:
            out[0] += f" (a {_FEED_NAMES.get(self.feed, self.feed)} export" + (
                f"; {self.n_folded:,} variant / image rows folded into their product)" if self.n_folded else ")")
        out.extend(f"  {note}" for note in self.notes)
        for issue in self.issues.values():
            if not issue.count:
                continue
            action = "skipped" if issue.skipped else "kept"
            ex = "; ".join(f"row {r}: {t!r}" for r, t in issue.examples)
            out.append(f"  {issue.count:,} {_ISSUE_TEXT.get(issue.kind, issue.kind)} [{action}] e.g. {ex}")
        return out

    def summary(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_read": self.n_read,
            "n_kept": self.n_kept,
            "feed": self.feed,
            "n_folded": self.n_folded,
            "notes": list(self.notes),
            "issues": {
                k: {"count": v.count, "examples": [list(e) for e in v.examples]}
                for k, v in self.issues.items()
                if v.count
            },
        }
