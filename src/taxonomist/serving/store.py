"""The review queue and the feedback store: one SQLite file in WAL mode (the default embedded store), or a
PostgreSQL database that several servers share.

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
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

__all__ = ["ReviewStore", "fingerprint", "is_database_url", "store_exists"]

_MIGRATIONS = Path(__file__).with_name("migrations")
_LEGACY_COLUMNS = (("fingerprint", "TEXT"), ("dismissed_as", "TEXT"), ("skipped", "INTEGER NOT NULL DEFAULT 0"))


def is_database_url(ref: str | Path) -> bool:
    """Whether a store reference is a database URL (``postgresql://…``) rather than a SQLite file."""
    return isinstance(ref, str) and "://" in ref


def store_exists(ref: str | Path) -> bool:
    """Whether a store is there to read: a SQLite file that exists, or any database URL (the server says)."""
    return is_database_url(ref) or Path(ref).is_file()


def _engine(ref: str | Path, synchronous: str) -> Any:
    import sqlalchemy as sa

    if is_database_url(ref):
        url = sa.engine.make_url(str(ref))
        if url.get_backend_name() != "postgresql":
            raise ValueError(f"expected a SQLite file or a postgresql:// URL for the review store, got {url.drivername}://")
        if url.drivername == "postgresql":  # psycopg 3, the maintained driver
            url = url.set(drivername="postgresql+psycopg")
        return sa.create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
    engine = sa.create_engine(f"sqlite:///{Path(ref)}", connect_args={"check_same_thread": False, "timeout": 30},
                              poolclass=sa.pool.StaticPool)

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi: Any, _: Any) -> None:
        dbapi.isolation_level = None  # transactions begun below, not by the driver
        for pragma in ("journal_mode=WAL", f"synchronous={synchronous}", "foreign_keys=ON"):
            dbapi.execute(f"PRAGMA {pragma}")

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # a write takes the write lock at once (no upgrade deadlock between writers); a read does not take it
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("store_read") else "BEGIN IMMEDIATE")

    return engine


class ReviewStore:
    """Review items, feedback, served predictions and review quotas in one database: a SQLite file (WAL; the
    default, embedded) or PostgreSQL (``postgresql://user@host/db``: several servers share it). The schema is
    created or upgraded in place when the store opens (:mod:`taxonomist.serving.migrations`).

    Thread-safe: on SQLite one connection behind a lock; on PostgreSQL a connection pool, each write one
    transaction, what replicas could race on (one pending item per product, a client's quota) kept atomic by the
    database."""

    def __init__(self, path: str | Path, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.url = str(path) if is_database_url(path) else None
        self.path = Path(path) if self.url is None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._engine = _engine(path, synchronous.upper())
        self.dialect = self._engine.dialect.name
        self._lock: Any = threading.Lock() if self.dialect == "sqlite" else nullcontext()
        self._migrate()

    def _migrate(self) -> None:
        """Create the schema, or upgrade the database's to the newest revision; a store written before
        migrations (no version table) gets the columns its release lacked, is marked as the first revision,
        then upgraded."""
        import sqlalchemy as sa
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        with self._lock, self._engine.begin() as conn:
            if self.dialect == "postgresql":  # one replica migrates at a time
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7261001)")
            tables = set(sa.inspect(conn).get_table_names())
            cfg.attributes["connection"] = conn
            if "review" in tables and "alembic_version" not in tables:
                have = {c["name"] for c in sa.inspect(conn).get_columns("review")}
                for column, kind in _LEGACY_COLUMNS:
                    if column not in have:
                        conn.exec_driver_sql(f"ALTER TABLE review ADD COLUMN {column} {kind}")
                conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS review_fingerprint ON review(fingerprint, status)")
                command.stamp(cfg, "0001")
            command.upgrade(cfg, "head")

    def schema_version(self) -> str:
        """The database's schema revision (``alembic_version``)."""
        with self._read() as db:
            return str(db.execute("SELECT version_num FROM alembic_version").scalar())

    def close(self) -> None:
        with self._lock:
            self._engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """One write transaction (on SQLite, holding the write lock from its start)."""
        with self._lock, self._engine.begin() as conn:
            yield _Conn(conn)

    @contextmanager
    def _read(self) -> Iterator[Any]:
        with self._lock, self._engine.connect() as conn:
            yield _Conn(conn.execution_options(store_read=True))

    # -- review queue --------------------------------------------------------------------------------------
    def enqueue(self, items: list[Mapping[str, Any]], max_pending: int | None = None) -> list[int | None]:
        """Add predictions to the queue; each item has product, prediction, category, confidence, margin,
        reason, model_version (and may have its product's ``fingerprint``, else computed from the product as
        stored). Returns their ids: an item whose product (its content, whatever its id) is
        already pending gets that item's id -- also when another server queued it at the same moment (a unique
        index keeps one); ``None`` where the queue already holds ``max_pending`` items."""
        ids: list[int | None] = []
        now = time.time()
        with self._tx() as db:
            depth = int(db.execute("SELECT count(*) FROM review WHERE status = 'pending'").scalar())
            for it in items:
                key = it.get("fingerprint") or fingerprint(it["product"])
                same = db.execute("SELECT id FROM review WHERE fingerprint = ? AND status = 'pending'", (key,)).scalar()
                if same is not None:
                    ids.append(int(same))
                    continue
                if max_pending is not None and depth >= max_pending:
                    ids.append(None)
                    continue
                new = db.execute(
                    "INSERT INTO review (created, product, prediction, category, confidence, margin, reason, model_version,"
                    " fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (fingerprint) WHERE status = 'pending'"
                    " DO NOTHING RETURNING id",
                    (now, json.dumps(it["product"], ensure_ascii=False), json.dumps(it["prediction"], ensure_ascii=False),
                     it["category"], float(it["confidence"]), float(it["margin"]), it["reason"], it["model_version"], key),
                ).scalar()
                if new is None:  # another server queued the same product since the read above
                    new = db.execute("SELECT id FROM review WHERE fingerprint = ? AND status = 'pending'", (key,)).scalar()
                else:
                    depth += 1
                ids.append(int(new))
        return ids

    def pending_ids(self, fingerprints: list[str]) -> list[int | None]:
        """The pending item with each product fingerprint (:func:`fingerprint`), or ``None``."""
        with self._read() as db:
            found = [db.execute("SELECT id FROM review WHERE fingerprint = ? AND status = 'pending'", (f,)).scalar()
                     for f in fingerprints]
        return [None if r is None else int(r) for r in found]

    def pending(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Pending items, most uncertain (smallest margin) first; skipped ones after those never skipped;
        unrecognised titles (no word the model knows: gibberish has a margin of ~0 too) after all the others."""
        with self._read() as db:
            rows = db.rows("SELECT * FROM review WHERE status = 'pending' ORDER BY reason = 'unrecognised', skipped ASC, "
                           "margin ASC, id ASC LIMIT ? OFFSET ?", (limit, offset))
        return [_review_row(r) for r in rows]

    def get(self, review_id: int) -> dict[str, Any] | None:
        with self._read() as db:
            row = db.row("SELECT * FROM review WHERE id = ?", (review_id,))
        return _review_row(row) if row is not None else None

    def depth(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT count(*) FROM review WHERE status = 'pending'").scalar())

    def decide(self, review_id: int, category: str | None, reviewer: str | None = None,
               attributes: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """Accept the suggestion (``category`` None or equal to it) or correct it, with the attributes the
        prediction suggested as ``attributes`` corrects them (a value ``""``: none); the decision is also recorded
        as feedback. Returns the updated item, or None when there is no such item."""
        now = time.time()
        with self._tx() as db:
            row = db.row(f"SELECT * FROM review WHERE id = ?{db.for_update}", (review_id,))
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
            row = db.row("SELECT * FROM review WHERE id = ?", (review_id,))
        return _review_row(row)

    def dismiss(self, review_id: int, why: str, reviewer: str | None = None) -> dict[str, Any] | None:
        """Take an item off the queue without a category (``why``: not_a_product, cant_tell): no feedback, no
        accuracy; a decision made on it before is withdrawn. None when there is no such item."""
        with self._tx() as db:
            if db.row(f"SELECT id FROM review WHERE id = ?{db.for_update}", (review_id,)) is None:
                return None
            db.execute("UPDATE review SET status = 'dismissed', decided_category = NULL, decided_at = ?, reviewer = ?, "
                       "dismissed_as = ?, decided_attributes = NULL WHERE id = ?", (time.time(), reviewer, why, review_id))
            db.execute("DELETE FROM feedback WHERE review_id = ? AND source = 'review'", (review_id,))
            row = db.row("SELECT * FROM review WHERE id = ?", (review_id,))
        return _review_row(row)

    def skip(self, review_id: int) -> dict[str, Any] | None:
        """A reviewer put the item off: it moves behind the items skipped fewer times. None when there is none."""
        with self._tx() as db:
            db.execute("UPDATE review SET skipped = skipped + 1 WHERE id = ?", (review_id,))
            row = db.row("SELECT * FROM review WHERE id = ?", (review_id,))
        return _review_row(row) if row is not None else None

    def undo(self, review_id: int) -> dict[str, Any] | None:
        """A decided or dismissed item back to pending, its feedback withdrawn; None when there is no such item,
        :class:`ValueError` when it is pending."""
        with self._tx() as db:
            row = db.row(f"SELECT status FROM review WHERE id = ?{db.for_update}", (review_id,))
            if row is None:
                return None
            if row["status"] == "pending":
                raise ValueError(f"review item {review_id} is pending: there is no decision to undo")
            db.execute("UPDATE review SET status = 'pending', decided_category = NULL, decided_at = NULL, "
                       "reviewer = NULL, dismissed_as = NULL, decided_attributes = NULL WHERE id = ?", (review_id,))
            db.execute("DELETE FROM feedback WHERE review_id = ? AND source = 'review'", (review_id,))
            row = db.row("SELECT * FROM review WHERE id = ?", (review_id,))
        return _review_row(row)

    # -- quotas -------------------------------------------------------------------------------------------------
    def take_quota(self, client: str, wanted: int, n: int, window_s: float = 60.0) -> int:
        """How many of ``wanted`` events ``client`` may have now, at most ``n`` in any ``window_s`` seconds (they
        are counted): one count for every server on the database, taken atomically."""
        now = time.time()
        with self._tx() as db:
            if self.dialect == "postgresql":  # one taker per client at a time, on every server
                db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (client,))
            # every client's expired events go: an address is kept no longer than the quota needs it
            db.execute("DELETE FROM quota_event WHERE at <= ?", (now - window_s,))
            used = int(db.execute("SELECT count(*) FROM quota_event WHERE client = ?", (client,)).scalar())
            granted = max(0, min(wanted, n - used))
            if granted:
                db.executemany("INSERT INTO quota_event (client, at) VALUES (?, ?)", [(client, now)] * granted)
        return granted

    # -- the version served --------------------------------------------------------------------------------------
    def set_served_version(self, version: str) -> None:
        """Record the model version served (after a reload): every server on the database follows it."""
        with self._tx() as db:
            db.execute("INSERT INTO serving (key, value, updated) VALUES ('version', ?, ?) ON CONFLICT (key) "
                       "DO UPDATE SET value = excluded.value, updated = excluded.updated", (version, time.time()))

    def served_version(self) -> str | None:
        """The model version the servers on the database should serve (``None``: none recorded)."""
        with self._read() as db:
            found = db.execute("SELECT value FROM serving WHERE key = 'version'").scalar()
        return None if found is None else str(found)

    # -- feedback --------------------------------------------------------------------------------------------
    def add_feedback(self, product: Mapping[str, Any], category: str, model_version: str | None = None) -> int:
        with self._tx() as db:
            return int(db.execute("INSERT INTO feedback (created, product, category, source, model_version)"
                                  " VALUES (?, ?, ?, 'api', ?) RETURNING id",
                                  (time.time(), json.dumps(dict(product), ensure_ascii=False), category,
                                   model_version)).scalar())

    def feedback(self) -> list[dict[str, Any]]:
        """All feedback, oldest first (a later correction of the same product wins when retraining)."""
        with self._read() as db:
            rows = db.rows("SELECT * FROM feedback ORDER BY id")
        return [{**dict(r), "product": json.loads(r["product"]),
                 "attributes": json.loads(r["attributes"]) if r["attributes"] else None} for r in rows]

    # -- served predictions (for taxonomist monitor) -----------------------------------------------------------
    def log_served(self, rows: Sequence[Mapping[str, Any]], max_rows: int | None = None) -> None:
        """Record served predictions (one batched insert): created, model_version, title (already scrubbed),
        leaf, confidence, backed_off, unknown_share, brand; with ``max_rows``, the log keeps only its newest
        ``max_rows`` records."""
        if not rows:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO served (created, model_version, title, leaf, confidence, backed_off, unknown_share, brand)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(r["created"], r["model_version"], str(r["title"])[:200], r["leaf"], r["confidence"],
                  int(bool(r["backed_off"])), r.get("unknown_share"),
                  None if r.get("brand") is None else str(r["brand"])[:200]) for r in rows])
            if max_rows is not None:  # ids only grow: the newest max_rows have the largest (a range on the key)
                db.execute("DELETE FROM served WHERE id <= (SELECT MAX(id) FROM served) - ?", (max_rows,))

    def served(self, since: float = 0.0, until: float = float("inf")) -> list[dict[str, Any]]:
        """Served predictions with ``since <= created < until``, oldest first."""
        with self._read() as db:
            rows = db.rows("SELECT * FROM served WHERE created >= ? AND created < ? ORDER BY created, id",
                           (since, until if until != float("inf") else 1e18))
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
            db.execute("DELETE FROM quota_event WHERE at < ?", (before,))
        # the deleted rows' bytes leave the file too (PostgreSQL: its autovacuum reuses them)
        if self.dialect == "sqlite":
            with self._lock:
                raw = self._engine.raw_connection()  # (in autocommit: VACUUM cannot run inside a transaction)
                try:
                    raw.driver_connection.execute("VACUUM")
                finally:
                    raw.close()
        return n_review, n_feedback, n_served

    def decided(self, since: float | None = None) -> list[dict[str, Any]]:
        """Decided review items (status, decided_at, reason, suggested category), oldest decision first: what
        :func:`taxonomist.monitoring.live_accuracy` reads."""
        with self._read() as db:
            rows = db.rows("SELECT status, decided_at, reason, category, model_version FROM review WHERE status IN "
                           "('accepted', 'corrected') AND decided_at >= ? ORDER BY decided_at", (since or 0.0,))
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._read() as db:
            rows = db.rows("SELECT status, count(*) AS n FROM review GROUP BY status")
            n_fb = int(db.execute("SELECT count(*) FROM feedback").scalar())
        return {**{str(r["status"]): int(r["n"]) for r in rows}, "feedback": n_fb}


class _Conn:
    """A connection running the store's SQL (``?`` parameters) on SQLite's driver or psycopg's (``%s``)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        self.for_update = " FOR UPDATE" if self.pg else ""  # (SQLite's transaction holds the write lock already)

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.pg else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.exec_driver_sql(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.exec_driver_sql(self._sql(sql), [tuple(r) for r in rows])

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.execute(sql, params).mappings().fetchall())

    def row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).mappings().fetchone()


def fingerprint(product: Mapping[str, Any]) -> str:
    """SHA-256 of a product's content (every field but its id): identical products share it."""
    content = {k: v for k, v in product.items() if k != "id"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _review_row(r: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(r)
    d["product"] = json.loads(d["product"])
    d["prediction"] = json.loads(d["prediction"])
    d["decided_attributes"] = json.loads(d["decided_attributes"]) if d.get("decided_attributes") else None
    return d
