"""The review queue and the feedback store: one SQLite file in WAL mode (the default embedded store).

Every write is one transaction committed before the API answers. In WAL mode a committed transaction is in the
WAL file when the commit returns, so a write the server acknowledged survives the server process being killed
(tests/test_serving_live.py kills it with SIGKILL mid-load) with ``synchronous=NORMAL`` (the default here); only
an operating-system crash or power loss can lose the last commits, which ``synchronous="FULL"`` (an fsync per
commit) also covers -- at a cost under load: the requests that write a review item wait for the fsync and make
the tail latency (benchmarks/RESULTS.md, "Serving under load").
Products are kept as JSON as they were posted; corrections are labelled data for ``taxonomist retrain``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["ReviewStore", "fingerprint"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS review (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    product TEXT NOT NULL,           -- the product as posted (JSON)
    prediction TEXT NOT NULL,        -- the prediction served (JSON)
    category TEXT NOT NULL,          -- the suggested path
    confidence REAL NOT NULL,
    margin REAL NOT NULL,            -- top-1 minus top-2 leaf probability: smaller = more uncertain
    reason TEXT NOT NULL,            -- low_confidence | keyword_stuffing | unrecognised | audit
    model_version TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',   -- pending | accepted | corrected | dismissed
    decided_category TEXT,
    decided_at REAL,
    reviewer TEXT,
    fingerprint TEXT,                -- SHA-256 of the product's content: identical products are queued once
    dismissed_as TEXT,               -- a dismissed item: not_a_product | cant_tell
    skipped INTEGER NOT NULL DEFAULT 0,  -- times a reviewer skipped it: skipped items come after the others
    decided_attributes TEXT          -- the product's attributes as the reviewer left them (JSON), when it had any
);
CREATE INDEX IF NOT EXISTS review_pending ON review(status, margin);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    product TEXT NOT NULL,           -- JSON
    category TEXT NOT NULL,          -- the correct path
    source TEXT NOT NULL,            -- review | api
    review_id INTEGER REFERENCES review(id),
    model_version TEXT,
    attributes TEXT                  -- the product's attributes (colour, gender, ...: JSON), when known
);
CREATE TABLE IF NOT EXISTS served (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    model_version TEXT NOT NULL,
    title TEXT NOT NULL,             -- scrubbed of e-mail addresses, phone numbers and links; at most 200 characters
    leaf TEXT NOT NULL,              -- the most probable leaf
    confidence REAL NOT NULL,
    backed_off INTEGER NOT NULL,
    unknown_share REAL,              -- share of title words the model's vocabulary lacks
    brand TEXT
);
CREATE INDEX IF NOT EXISTS served_created ON served(created);
"""


class ReviewStore:
    """Review items and feedback in one SQLite database (thread-safe; one connection behind a lock)."""

    def __init__(self, path: str | Path, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        # stores written before products were fingerprinted, or items dismissed: add the columns (old items never
        # match a new one; none was dismissed)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(review)")}
        for column, kind in (("fingerprint", "TEXT"), ("dismissed_as", "TEXT"), ("skipped", "INTEGER NOT NULL DEFAULT 0"),
                             ("decided_attributes", "TEXT")):
            if column not in have:
                self._db.execute(f"ALTER TABLE review ADD COLUMN {column} {kind}")
        if "attributes" not in {r[1] for r in self._db.execute("PRAGMA table_info(feedback)")}:
            self._db.execute("ALTER TABLE feedback ADD COLUMN attributes TEXT")
        self._db.execute("CREATE INDEX IF NOT EXISTS review_fingerprint ON review(fingerprint, status)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- review queue --------------------------------------------------------------------------------------
    def enqueue(self, items: list[Mapping[str, Any]], max_pending: int | None = None) -> list[int | None]:
        """Add predictions to the queue; each item has product, prediction, category, confidence, margin,
        reason, model_version (and may have its product's ``fingerprint``, else computed from the product as
        stored). Returns their ids: an item whose product (its content, whatever its id) is
        already pending gets that item's id; ``None`` where the queue already holds ``max_pending`` items."""
        ids: list[int | None] = []
        now = time.time()
        with self._tx() as db:
            depth = int(db.execute("SELECT count(*) FROM review WHERE status = 'pending'").fetchone()[0])
            for it in items:
                key = it.get("fingerprint") or fingerprint(it["product"])
                same = db.execute("SELECT id FROM review WHERE fingerprint = ? AND status = 'pending'", (key,)).fetchone()
                if same is not None:
                    ids.append(int(same[0]))
                    continue
                if max_pending is not None and depth >= max_pending:
                    ids.append(None)
                    continue
                cur = db.execute(
                    "INSERT INTO review (created, product, prediction, category, confidence, margin, reason, model_version,"
                    " fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (now, json.dumps(it["product"], ensure_ascii=False), json.dumps(it["prediction"], ensure_ascii=False),
                     it["category"], float(it["confidence"]), float(it["margin"]), it["reason"], it["model_version"], key),
                )
                ids.append(int(cur.lastrowid or 0))
                depth += 1
        return ids

    def pending_ids(self, fingerprints: list[str]) -> list[int | None]:
        """The pending item with each product fingerprint (:func:`fingerprint`), or ``None``."""
        with self._lock:
            return [None if (r := self._db.execute("SELECT id FROM review WHERE fingerprint = ? AND status = 'pending'",
                                                   (f,)).fetchone()) is None else int(r[0])
                    for f in fingerprints]

    def pending(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Pending items, most uncertain (smallest margin) first; skipped ones after those never skipped;
        unrecognised titles (no word the model knows: gibberish has a margin of ~0 too) after all the others."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM review WHERE status = 'pending' ORDER BY reason = 'unrecognised', skipped ASC, margin ASC, "
                "id ASC "
                "LIMIT ? OFFSET ?",
                (limit, offset)).fetchall()
        return [_review_row(r) for r in rows]

    def get(self, review_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM review WHERE id = ?", (review_id,)).fetchone()
        return _review_row(row) if row is not None else None

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM review WHERE status = 'pending'").fetchone()[0])

    def decide(self, review_id: int, category: str | None, reviewer: str | None = None,
               attributes: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """Accept the suggestion (``category`` None or equal to it) or correct it, with the attributes the
        prediction suggested as ``attributes`` corrects them (a value ``""``: none); the decision is also recorded
        as feedback. Returns the updated item, or None when there is no such item."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT * FROM review WHERE id = ?", (review_id,)).fetchone()
            if row is None:
                return None
            final = category or row["category"]
            status = "accepted" if final == row["category"] else "corrected"
            suggested = {k: v["value"] for k, v in (json.loads(row["prediction"]).get("attributes") or {}).items()}
            decided = {k: v for k, v in {**suggested, **(attributes or {})}.items() if v}
            attrs = json.dumps(decided, ensure_ascii=False) if decided or attributes else None
            db.execute("UPDATE review SET status = ?, decided_category = ?, decided_at = ?, reviewer = ?, "
                       "decided_attributes = ? WHERE id = ?", (status, final, now, reviewer, attrs, review_id))
            # a second decision on the same item revises the first: one feedback row per review item
            revised = db.execute("UPDATE feedback SET created = ?, category = ?, attributes = ? WHERE review_id = ? "
                                 "AND source = 'review'", (now, final, attrs, review_id)).rowcount
            if not revised:
                db.execute("INSERT INTO feedback (created, product, category, source, review_id, model_version, "
                           "attributes) VALUES (?, ?, ?, 'review', ?, ?, ?)",
                           (now, row["product"], final, review_id, row["model_version"], attrs))
            row = db.execute("SELECT * FROM review WHERE id = ?", (review_id,)).fetchone()
        return _review_row(row)

    def dismiss(self, review_id: int, why: str, reviewer: str | None = None) -> dict[str, Any] | None:
        """Take an item off the queue without a category (``why``: not_a_product, cant_tell): no feedback, no
        accuracy; a decision made on it before is withdrawn. None when there is no such item."""
        with self._tx() as db:
            if db.execute("SELECT id FROM review WHERE id = ?", (review_id,)).fetchone() is None:
                return None
            db.execute("UPDATE review SET status = 'dismissed', decided_category = NULL, decided_at = ?, reviewer = ?, "
                       "dismissed_as = ?, decided_attributes = NULL WHERE id = ?", (time.time(), reviewer, why, review_id))
            db.execute("DELETE FROM feedback WHERE review_id = ? AND source = 'review'", (review_id,))
            row = db.execute("SELECT * FROM review WHERE id = ?", (review_id,)).fetchone()
        return _review_row(row)

    def skip(self, review_id: int) -> dict[str, Any] | None:
        """A reviewer put the item off: it moves behind the items skipped fewer times. None when there is none."""
        with self._tx() as db:
            db.execute("UPDATE review SET skipped = skipped + 1 WHERE id = ?", (review_id,))
            row = db.execute("SELECT * FROM review WHERE id = ?", (review_id,)).fetchone()
        return _review_row(row) if row is not None else None

    def undo(self, review_id: int) -> dict[str, Any] | None:
        """A decided or dismissed item back to pending, its feedback withdrawn; None when there is no such item,
        :class:`ValueError` when it is pending."""
        with self._tx() as db:
            row = db.execute("SELECT status FROM review WHERE id = ?", (review_id,)).fetchone()
            if row is None:
                return None
            if row["status"] == "pending":
                raise ValueError(f"review item {review_id} is pending: there is no decision to undo")
            db.execute("UPDATE review SET status = 'pending', decided_category = NULL, decided_at = NULL, "
                       "reviewer = NULL, dismissed_as = NULL, decided_attributes = NULL WHERE id = ?", (review_id,))
            db.execute("DELETE FROM feedback WHERE review_id = ? AND source = 'review'", (review_id,))
            row = db.execute("SELECT * FROM review WHERE id = ?", (review_id,)).fetchone()
        return _review_row(row)

    # -- feedback --------------------------------------------------------------------------------------------
    def add_feedback(self, product: Mapping[str, Any], category: str, model_version: str | None = None) -> int:
        with self._tx() as db:
            cur = db.execute("INSERT INTO feedback (created, product, category, source, model_version)"
                             " VALUES (?, ?, ?, 'api', ?)",
                             (time.time(), json.dumps(dict(product), ensure_ascii=False), category, model_version))
            return int(cur.lastrowid or 0)

    def feedback(self) -> list[dict[str, Any]]:
        """All feedback, oldest first (a later correction of the same product wins when retraining)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM feedback ORDER BY id").fetchall()
        return [{**dict(r), "product": json.loads(r["product"]),
                 "attributes": json.loads(r["attributes"]) if r["attributes"] else None} for r in rows]

    # -- served predictions (for taxonomist monitor) -----------------------------------------------------------
    def log_served(self, rows: Sequence[Mapping[str, Any]], max_rows: int | None = None) -> None:
        """Record served predictions: created, model_version, title (already scrubbed), leaf, confidence,
        backed_off, unknown_share, brand; with ``max_rows``, the log keeps only its newest ``max_rows`` records."""
        if not rows:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO served (created, model_version, title, leaf, confidence, backed_off, unknown_share, brand)"
                " VALUES (:created, :model_version, :title, :leaf, :confidence, :backed_off, :unknown_share, :brand)",
                [{**r, "title": str(r["title"])[:200], "brand": None if r.get("brand") is None else str(r["brand"])[:200],
                  "backed_off": int(bool(r["backed_off"]))} for r in rows])
            if max_rows is not None:  # ids only grow: the newest max_rows have the largest (a range on the key)
                db.execute("DELETE FROM served WHERE id <= (SELECT MAX(id) FROM served) - ?", (max_rows,))

    def served(self, since: float = 0.0, until: float = float("inf")) -> list[dict[str, Any]]:
        """Served predictions with ``since <= created < until``, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM served WHERE created >= ? AND created < ? ORDER BY created, id",
                                    (since, until if until != float("inf") else 1e18)).fetchall()
        return [dict(r) for r in rows]

    def purge(self, before: float) -> tuple[int, int, int]:
        """Delete review items, feedback and served-prediction records created before ``before`` (Unix seconds):
        (items, feedback rows, served records)."""
        with self._tx() as db:
            n_served = db.execute("DELETE FROM served WHERE created < ?", (before,)).rowcount
            n_feedback = db.execute("DELETE FROM feedback WHERE created < ?", (before,)).rowcount
            # feedback kept from a purged item loses its link, not its label
            db.execute("UPDATE feedback SET review_id = NULL WHERE review_id IN (SELECT id FROM review WHERE created < ?)",
                       (before,))
            n_review = db.execute("DELETE FROM review WHERE created < ?", (before,)).rowcount
        with self._lock:
            self._db.execute("VACUUM")  # the deleted rows' bytes leave the file too
        return n_review, n_feedback, n_served

    def decided(self, since: float | None = None) -> list[dict[str, Any]]:
        """Decided review items (status, decided_at, reason, suggested category), oldest decision first: what
        :func:`taxonomist.monitoring.live_accuracy` reads."""
        with self._lock:
            rows = self._db.execute(
                "SELECT status, decided_at, reason, category, model_version FROM review WHERE status IN ('accepted', "
                "'corrected')"
                " AND decided_at >= ? ORDER BY decided_at", (since or 0.0,)).fetchall()
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, count(*) FROM review GROUP BY status").fetchall()
            n_fb = int(self._db.execute("SELECT count(*) FROM feedback").fetchone()[0])
        return {**{str(s): int(n) for s, n in rows}, "feedback": n_fb}


def fingerprint(product: Mapping[str, Any]) -> str:
    """SHA-256 of a product's content (every field but its id): identical products share it."""
    content = {k: v for k, v in product.items() if k != "id"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _review_row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    d["product"] = json.loads(d["product"])
    d["prediction"] = json.loads(d["prediction"])
    d["decided_attributes"] = json.loads(d["decided_attributes"]) if d.get("decided_attributes") else None
    return d
