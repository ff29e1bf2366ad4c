"""Prometheus metrics of the service (one registry per app, so several apps in one process do not clash)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily

__all__ = ["ServiceMetrics", "TimingMiddleware"]

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.latency = Histogram("taxonomist_request_duration_seconds", "Request latency by route.",
                                 ["method", "route", "status"], buckets=_LATENCY_BUCKETS, registry=r)
        self.request_products = Histogram("taxonomist_request_products", "Products per classify request.",
                                          buckets=_SIZE_BUCKETS, registry=r)
        self.model_batch = Histogram("taxonomist_model_batch_products", "Products per model call (after micro-batching).",
                                     buckets=_SIZE_BUCKETS, registry=r)
        self.predictions = Counter("taxonomist_predictions", "Predictions served, by predicted top-level category.",
                                   ["top_level"], registry=r)
        self.low_confidence = Counter("taxonomist_low_confidence_predictions", "Predictions below the review threshold.",
                                      registry=r)
        self.low_confidence_ratio = Gauge("taxonomist_low_confidence_ratio",
                                          "Share of predictions below the review threshold since start.", registry=r)
        self.queued = Counter("taxonomist_review_queued", "Predictions queued for review, by reason.", ["reason"], registry=r)
        self.not_queued = Counter("taxonomist_review_not_queued", "Predictions that needed review but were not queued: "
                                  "the client's quota (quota) or the queue's size cap (full).", ["why"], registry=r)
        self.served_not_logged = Counter("taxonomist_served_not_logged", "Served predictions left out of the "
                                         "prediction log: over the keyless client's quota (quota).", ["why"], registry=r)
        self.queue_depth = Gauge("taxonomist_review_queue_depth", "Pending items in the review queue.", registry=r)
        self.feedback = Counter("taxonomist_feedback", "Corrections recorded, by source.", ["source"], registry=r)
        self.model_info = Info("taxonomist_model", "The model version being served.", registry=r)
        self.reloads = Counter("taxonomist_model_reloads", "Model reloads, by outcome.", ["outcome"], registry=r)
        self.shadow_predictions = Counter("taxonomist_shadow_predictions", "Served products the shadow model also "
                                          "answered (in the background).", registry=r)
        self.shadow_agreements = Counter("taxonomist_shadow_agreements", "Of those, the ones where its leaf is the "
                                         "served leaf.", registry=r)
        self.shadow_dropped = Counter("taxonomist_shadow_dropped", "Served products left out of the shadow comparison "
                                      "(its queue was full).", registry=r)
        self._n = 0
        self._low = 0

    def observe_predictions(self, top_levels: list[str], low: int) -> None:
        for t in top_levels:
            self.predictions.labels(top_level=t or "(none)").inc()
        self.low_confidence.inc(low)
        self._n += len(top_levels)
        self._low += low
        self.low_confidence_ratio.set(self._low / self._n if self._n else 0.0)

    def track_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def track_drift(self, signals: Callable[[], dict[str, Any]]) -> None:
        """Export the drift monitor's signals (computed when Prometheus scrapes; NaN until the window is full
        enough)."""
        self.registry.register(_DriftCollector(signals))


class _DriftCollector:
    """The drift signals of :class:`taxonomist.monitoring.DriftMonitor` as gauges, computed at scrape time."""

    def __init__(self, signals: Callable[[], dict[str, Any]]) -> None:
        self.signals = signals

    def describe(self) -> list[Any]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Any:
        s = self.signals()

        def gauge(name: str, doc: str, value: Any, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=list(labels) if labels else None)
            g.add_metric(list(labels.values()) if labels else [], float("nan") if value is None else float(value))
            return g

        yield gauge("taxonomist_drift_window_predictions", "Predictions in the drift monitor's window.", s.get("n", 0))
        yield gauge("taxonomist_drift_reference_held_out", "1 when the model's drift reference is its answers on "
                    "held-out products (confidence alerts apply), 0 when it is a training sample.",
                    float(s.get("reference") == "held-out"))
        yield gauge("taxonomist_drift_alerts", "Drift alerts firing now (see GET /v1/monitor).", len(s.get("alerts", [])))
        for key, doc in (("psi", "Population stability index of the predicted categories against the bundle's "
                          "reference, per level."),
                         ("js", "Jensen-Shannon divergence (bits) of the predicted categories, per level.")):
            g = GaugeMetricFamily(f"taxonomist_drift_{key}", doc, labels=["level"])
            for level, value in (s.get(key) or {"level_1": None, "level_2": None}).items():
                g.add_metric([level.removeprefix("level_")], float("nan") if value is None else float(value))
            yield g
        yield gauge("taxonomist_drift_confidence_psi", "PSI of the leaf-confidence histogram.", s.get("confidence_psi"))
        for key, doc in (("mean_confidence", "Mean leaf confidence"), ("back_off_share", "Share of answers backed off "
                         "to a parent"), ("unknown_word_share", "Share of title words the sparse vocabulary lacks")):
            pair = s.get(key) or {}
            g = GaugeMetricFamily(f"taxonomist_drift_{key}", f"{doc}: in the window (current) and on the reference.",
                                  labels=["window"])
            for which in ("current", "reference"):
                value = pair.get(which)
                g.add_metric([which], float("nan") if value is None else float(value))
            yield g
        yield gauge("taxonomist_drift_new_brand_rate", "Share of branded products whose brand training never saw.",
                    s.get("new_brand_rate"))


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class TimingMiddleware:
    """Pure ASGI middleware: request latency per route template (not per raw path: bounded label values)."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "(unmatched)"
            method = scope.get("method", "")
            method = method if method in _METHODS else "OTHER"  # as sent, any string: one series each
            self.metrics.latency.labels(method, path, str(status[0])).observe(time.perf_counter() - start)
