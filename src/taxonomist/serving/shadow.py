"""Shadow mode: a candidate model answers the served products in the background; only its agreement is kept.

The candidate never answers a request: after the served model's answer is sent, the same products go to a
bounded queue that one worker thread drains, and the two leaves are compared (counted in Prometheus and in
``GET /v1/monitor``; disagreements logged at debug level). When the queue is full, products are dropped from
the comparison (counted), never delayed.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Shadow"]

logger = logging.getLogger(__name__)

_STOP = object()


class Shadow:
    def __init__(self, path: str | Path, metrics: Any, max_pending: int = 64) -> None:
        from ..classifier import TaxonomyClassifier

        self.path = Path(path)
        self.version = self.path.name
        self.classifier = TaxonomyClassifier.load(self.path)  # verified; never unpickles
        self.metrics = metrics
        self.n = self.agreed = self.dropped = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._work, name="taxonomist-shadow", daemon=True)
        self._thread.start()
        logger.info("shadow model %s answers every classified product in the background", self.version)

    def submit(self, records: Sequence[dict[str, Any]], served_leaves: Sequence[tuple[str, ...]]) -> None:
        """Compare the candidate's leaves with ``served_leaves`` later (or drop them when the queue is full)."""
        try:
            self._queue.put_nowait((list(records), list(served_leaves)))
        except queue.Full:
            with self._lock:
                self.dropped += len(records)
            self.metrics.shadow_dropped.inc(len(records))

    def _work(self) -> None:
        while (job := self._queue.get()) is not _STOP:
            records, served = job
            try:
                preds = self.classifier.predict_products(records, top_k=1)
            except Exception:  # noqa: BLE001 -- a failing candidate must not touch serving; it is logged
                logger.exception("shadow model %s failed on %d products", self.version, len(records))
                continue
            agree = 0
            for r, p, s in zip(records, preds, served, strict=True):
                same = tuple(p.leaf) == tuple(s)
                agree += same
                if not same:
                    logger.debug("shadow %s disagrees on %r: %s (served: %s)", self.version, r.get("title"),
                                 " > ".join(p.leaf), " > ".join(s))
            with self._lock:
                self.n += len(records)
                self.agreed += agree
            self.metrics.shadow_predictions.inc(len(records))
            self.metrics.shadow_agreements.inc(agree)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"version": self.version, "compared": self.n, "agreement": self.agreed / self.n if self.n else None,
                    "dropped": self.dropped, "pending_batches": self._queue.qsize()}

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)
