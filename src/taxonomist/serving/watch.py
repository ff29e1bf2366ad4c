"""What a server watches of its answers: the drift monitor over the served version's last answers, the
served-prediction log (buffered, written to the review store in one transaction), the shadow candidate's
agreement, and GET /v1/monitor's report of them with the live accuracy from reviewers' decisions."""

from __future__ import annotations

import threading
import time
from typing import Any

from ..monitoring import DriftMonitor, live_accuracy, observations
from ..taxonomy import format_path
from ..text import scrub_pii
from .desk import ReviewDesk
from .inference import Inference
from .limits import Quota
from .metrics import ServiceMetrics
from .settings import ServeSettings
from .shadow import Shadow

__all__ = ["Watch"]

_LIVE_ACCURACY_WEEKS = 12
"""GET /v1/monitor's live accuracy covers the decisions of the last this many weeks."""
_SERVED_FLUSH_ROWS = 256
_LOGGED_CHARS = 200  # of a served title or brand, in the served-prediction log (the store keeps 200 too)
_SERVED_FLUSH_S = 2.0
"""The served-predictions log is written when this many records wait, or this many seconds passed."""


class Watch:
    """The drift monitor, the served-prediction log and the shadow candidate of a server."""

    def __init__(self, settings: ServeSettings, metrics: ServiceMetrics, inference: Inference, desk: ReviewDesk) -> None:
        self.settings, self.metrics, self.inference, self.desk = settings, metrics, inference, desk
        self.monitor = DriftMonitor(None, settings.monitor_window)
        self.shadow: Shadow | None = None  # a candidate answering in the background (settings.shadow_model)
        self._served: list[dict[str, Any]] = []  # served-prediction records not yet written (flush_served)
        self._served_at = time.monotonic()
        self._served_lock = threading.Lock()
        self._served_quota = Quota()  # served-log records per keyless client per minute
        metrics.track_drift(self.monitor.signals)

    def observe_served(self, records: list[dict[str, Any]], results: list[tuple[Any, str, Any]],
                       monitored: bool = True, client: str | None = None) -> bool:
        """Add the answers of the served version to the drift monitor (a new version starts a new window; not when
        ``monitored`` is off: keyless traffic on a keyed server) and to the served-predictions log
        (``log_predictions``; a keyless ``client`` logs at most ``served_log_quota_per_minute`` a minute, a keyed
        one is given as None); True when the log's buffer is due to be written (:meth:`flush_served`)."""
        served = self.inference.model
        self.monitor.follow(served.version, getattr(served.classifier, "drift_reference_", None))
        keep = [i for i, (_, version, _) in enumerate(results) if version == served.version]
        obs = observations(served.classifier, [records[i] for i in keep], [results[i][0] for i in keep])
        if monitored:
            self.monitor.observe(obs)
        if not self.settings.log_predictions:
            return False
        if client is not None:
            allowed = self._served_quota.take(client, len(keep), self.settings.served_log_quota_per_minute)
            if allowed < len(keep):
                self.metrics.served_not_logged.labels(why="quota").inc(len(keep) - allowed)
            keep, obs = keep[:allowed], obs[:allowed]
        now = time.time()
        # cut before scrubbing (a long crafted title costs the scrubber twice the logged length, not its own; an
        # address across the cut is still whole), and the brand scrubbed and cut like the title
        rows = [{"created": now, "model_version": served.version,
                 "title": scrub_pii(str(records[i].get("title") or "")[:2 * _LOGGED_CHARS])[:_LOGGED_CHARS],
                 "leaf": format_path(o.leaf), "confidence": o.confidence, "backed_off": o.backed_off,
                 "unknown_share": None if o.unknown_share != o.unknown_share else o.unknown_share,
                 "brand": scrub_pii(o.brand[:2 * _LOGGED_CHARS])[:_LOGGED_CHARS] if o.brand else o.brand}
                for i, o in zip(keep, obs, strict=True)]
        with self._served_lock:
            self._served.extend(rows)
            return len(self._served) >= _SERVED_FLUSH_ROWS or time.monotonic() - self._served_at >= _SERVED_FLUSH_S

    def served_due(self) -> bool:
        """Whether buffered served-prediction records have waited ``_SERVED_FLUSH_S`` (the app writes them)."""
        with self._served_lock:
            return bool(self._served) and time.monotonic() - self._served_at >= _SERVED_FLUSH_S

    def flush_served(self) -> None:
        """Write the buffered served-prediction records to the store (one transaction)."""
        with self._served_lock:
            rows, self._served, self._served_at = self._served, [], time.monotonic()
        if rows and self.desk.store is not None:
            self.desk.store.log_served(rows, max_rows=self.settings.served_log_max_rows)

    def monitor_report(self) -> dict[str, Any]:
        """GET /v1/monitor: the drift signals of the window and the live accuracy from reviewers' decisions."""
        served = self.inference.model
        self.monitor.follow(served.version, getattr(served.classifier, "drift_reference_", None))
        recent = time.time() - _LIVE_ACCURACY_WEEKS * 7 * 86400
        report = {"model_version": served.version, **self.monitor.signals(),
                  "live_accuracy": live_accuracy(self.desk.review_store().decided(since=recent))}
        if self.shadow is not None:
            report["shadow"] = self.shadow.stats()
        return report
