"""The review desk of a server: the review store (opened by the app at start-up) and the policy of what joins the
queue -- a product already pending is not queued twice, each client's quota a minute, the queue's size, no
personal data stored, photos within a size."""

from __future__ import annotations

import logging
from typing import Any

from ..text import scrub_product
from .limits import ServiceError
from .metrics import ServiceMetrics
from .settings import ServeSettings
from .store import ReviewStore, fingerprint

__all__ = ["ReviewDesk"]

logger = logging.getLogger(__name__)


class ReviewDesk:
    """The review store and the rules of the queue."""

    def __init__(self, settings: ServeSettings, metrics: ServiceMetrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.store: ReviewStore | None = None

    def review_store(self) -> ReviewStore:
        if self.store is None:
            raise ServiceError(503, "the review store is not open yet")
        return self.store

    def queue_for_review(self, client: str, items: list[dict[str, Any]]) -> list[int | None]:
        """Queue predictions for review, within the limits: a product already pending is not queued again (its
        item's id is returned), each client adds at most ``review_quota_per_minute`` new items, the queue holds
        at most ``review_max_pending``, and a photo over ``review_max_image_bytes`` is not stored. ``None``:
        not queued (counted in ``taxonomist_review_not_queued_total``)."""
        s = self.settings
        keys = [fingerprint(it["product"]) for it in items]
        for it in items:
            it["product"] = scrub_product(it["product"])  # no e-mail, phone, order number or address is stored
            photo = it["product"].get("image_base64")
            if photo and len(photo) * 3 // 4 > s.review_max_image_bytes:
                it["product"] = {k: v for k, v in it["product"].items() if k != "image_base64"}
                it["product"]["image_dropped"] = f"over {s.review_max_image_bytes:,} bytes"
        store = self.review_store()
        out = store.pending_ids(keys)
        new = [i for i, rid in enumerate(out) if rid is None]
        # review items per client per minute, counted in the store: one quota for every server that shares it
        allowed = store.take_quota(client, len(new), s.review_quota_per_minute) if new else 0
        if allowed < len(new):
            self.metrics.not_queued.labels(why="quota").inc(len(new) - allowed)
        todo = new[:allowed]
        if not todo:  # (no write transaction for nothing)
            return out
        ids = store.enqueue([{**items[i], "fingerprint": keys[i]} for i in todo], s.review_max_pending)
        for i, rid in zip(todo, ids, strict=True):
            out[i] = rid
        if any(rid is None for rid in ids):
            self.metrics.not_queued.labels(why="full").inc(sum(rid is None for rid in ids))
            logger.warning("the review queue is full (%d pending items): predictions needing review are not queued",
                           s.review_max_pending)
        return out
