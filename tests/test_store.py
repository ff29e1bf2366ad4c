"""The review store on both backends -- a SQLite file and a real PostgreSQL (tests/postgres.py) -- and what several
servers sharing one database must agree on (issue 38): one review queue, a product pending once, one quota."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from taxonomist.serving.store import ReviewStore

HEAD = "0004"


def item(title: str, margin: float = 0.1, **extra: Any) -> dict[str, Any]:
    return {"product": {"title": title}, "prediction": {"category": "A > B", **extra}, "category": "A > B",
            "confidence": 0.4, "margin": margin, "reason": "low_confidence", "model_version": "v1"}


def test_the_queue_keeps_a_product_pending_once_and_a_decision_becomes_feedback(store_ref) -> None:
    store = ReviewStore(store_ref)
    try:
        assert store.schema_version() == HEAD
        a, b, again = store.enqueue([item("red shirt", 0.2), item("blue mug", 0.05), item("red shirt")])
        assert a == again and a != b and store.depth() == 2
        assert [i["product"]["title"] for i in store.pending()] == ["blue mug", "red shirt"]  # the least sure first
        assert store.enqueue([item("green hat")], max_pending=2) == [None]
        done = store.decide(a, "A > C", reviewer="ana")
        assert done is not None and done["status"] == "corrected" and done["reviewer"] == "ana"
        assert store.decide(a, None) is not None  # a second decision revises the first
        fb = store.feedback()
        assert len(fb) == 1 and fb[0]["category"] == "A > B" and fb[0]["product"] == {"title": "red shirt"}
        assert store.undo(a)["status"] == "pending" and store.feedback() == []
        with pytest.raises(ValueError, match="pending"):
            store.undo(a)
        assert store.dismiss(b, "not_a_product")["dismissed_as"] == "not_a_product"
        assert store.skip(a)["skipped"] == 1 and store.get(12345) is None and store.decide(12345, None) is None
        fid = store.add_feedback({"title": "tee"}, "Apparel > Tshirts", "v1")
        assert store.feedback()[-1]["id"] == fid
        assert store.counts() == {"pending": 1, "dismissed": 1, "feedback": 1}
    finally:
        store.close()


def test_two_servers_on_one_database_share_one_queue_one_quota_and_the_served_log(store_ref) -> None:
    first, second = ReviewStore(store_ref), ReviewStore(store_ref)  # two replicas
    try:
        ids: list[list[int | None]] = []
        barrier = threading.Barrier(8)

        def queue(store: ReviewStore) -> None:
            barrier.wait()
            ids.append(store.enqueue([item("same product")]))

        threads = [threading.Thread(target=queue, args=(s,)) for s in (first, second) * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({i[0] for i in ids}) == 1 and first.depth() == second.depth() == 1  # queued once, seen by both
        granted: list[int] = []

        def take(store: ReviewStore) -> None:
            granted.append(store.take_quota("client-a", 2, 5))

        threads = [threading.Thread(target=take, args=(s,)) for s in (first, second) * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(granted) == 5  # one quota across both servers, however the requests arrive
        assert first.take_quota("client-b", 3, 5) == 3 and second.take_quota("client-b", 3, 5) == 2
        # an address is kept no longer than the quota's window needs it, whichever client comes next
        assert first.take_quota("client-c", 1, 5, window_s=0.0) == 1
        with first._read() as db:
            assert db.execute("SELECT count(*) FROM quota_event").scalar() <= 1
        rows = [{"created": 10.0 + i, "model_version": "v1", "title": f"t{i}", "leaf": "A", "confidence": 0.9,
                 "backed_off": False} for i in range(5)]
        first.log_served(rows[:3])
        second.log_served(rows[3:], max_rows=4)
        assert [r["title"] for r in first.served()] == ["t1", "t2", "t3", "t4"]
        assert first.purge(12.0)[2] == 1 and len(second.served()) == 3
        assert first.served_version() is None
        first.set_served_version("v0002")
        second.set_served_version("v0003")  # the last reload wins, for every server
        assert first.served_version() == second.served_version() == "v0003"
    finally:
        first.close()
        second.close()


def test_a_store_of_an_earlier_revision_is_upgraded_in_place(store_ref) -> None:
    """A database at the first schema revision, with an item and its feedback, opened by this release: upgraded to
    the newest revision, nothing lost, the new columns there."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from taxonomist.serving.store import _MIGRATIONS, _engine

    engine = _engine(store_ref, "NORMAL")
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(sa.text("INSERT INTO review (created, product, prediction, category, confidence, margin, reason, "
                             "model_version, fingerprint) VALUES (1, :p, '{}', 'A', 0.4, 0.1, 'audit', 'v0', 'x')"),
                     {"p": json.dumps({"title": "old item"})})
        conn.execute(sa.text("INSERT INTO feedback (created, product, category, source) VALUES (1, '{}', 'A', 'api')"))
    engine.dispose()
    store = ReviewStore(store_ref)
    try:
        assert store.schema_version() == HEAD
        assert [i["product"]["title"] for i in store.pending()] == ["old item"] and len(store.feedback()) == 1
        assert store.decide(store.pending()[0]["id"], None, attributes={"color": "Red"})["decided_attributes"] == {
            "color": "Red"}
    finally:
        store.close()


PREVIOUS_RELEASE = """
CREATE TABLE review (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, product TEXT NOT NULL,
  prediction TEXT NOT NULL, category TEXT NOT NULL, confidence REAL NOT NULL, margin REAL NOT NULL, reason TEXT NOT NULL,
  model_version TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', decided_category TEXT, decided_at REAL,
  reviewer TEXT, fingerprint TEXT);
CREATE INDEX review_pending ON review(status, margin);
CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, product TEXT NOT NULL,
  category TEXT NOT NULL, source TEXT NOT NULL, review_id INTEGER REFERENCES review(id), model_version TEXT);
CREATE TABLE served (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, model_version TEXT NOT NULL,
  title TEXT NOT NULL, leaf TEXT NOT NULL, confidence REAL NOT NULL, backed_off INTEGER NOT NULL, unknown_share REAL,
  brand TEXT);
"""


def test_a_sqlite_store_of_a_release_before_migrations_opens_and_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "review.db"
    db = sqlite3.connect(path)
    db.executescript(PREVIOUS_RELEASE)
    db.execute("INSERT INTO review (created, product, prediction, category, confidence, margin, reason, model_version, "
               "status, decided_category, fingerprint) VALUES (1, '{\"title\": \"mug\"}', '{}', 'A', 0.4, 0.1, "
               "'low_confidence', 'v0', 'corrected', 'B', 'f1')")
    db.execute("INSERT INTO feedback (created, product, category, source, review_id) VALUES (1, '{}', 'B', 'review', 1)")
    db.commit()
    db.close()
    store = ReviewStore(path)
    try:
        assert store.schema_version() == HEAD
        assert store.get(1)["decided_category"] == "B" and store.get(1)["skipped"] == 0
        assert store.feedback()[0]["review_id"] == 1 and store.counts() == {"corrected": 1, "feedback": 1}
    finally:
        store.close()
    assert ReviewStore(path).schema_version() == HEAD  # opened again: nothing to do
