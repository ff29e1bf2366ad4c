"""The service state the endpoints share: settings, the model registry, the review store, the micro-batcher,
metrics, the drift monitor and the optional parts (message router, shopper profiles, search index).

:class:`Service` knows nothing of HTTP: a request it refuses raises :class:`ServiceError` (a status and a
detail), which the app turns into the HTTP answer at the route edge.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Any

from ..images import ImageError, decode_image_base64, is_image_file, resolve_image_path
from ..monitoring import DriftMonitor, live_accuracy, observations
from ..products import MAX_TEXT_CHARS, MAX_TITLE_CHARS
from ..taxonomy import format_path, parse_path
from ..text import scrub_pii, scrub_product
from .batcher import MicroBatcher, Stage
from .metrics import ServiceMetrics
from .registry import ModelRegistry, ServedModel
from .schemas import Product
from .settings import ServeSettings
from .shadow import Shadow
from .staged import first_stage, second_stage
from .store import ReviewStore, fingerprint

__all__ = ["Service", "ServiceError"]

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service refuses: the HTTP status and the detail the route edge answers with."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code, self.detail, self.headers = status_code, detail, headers


_CHUNK_CHARS = 20_000


class _Quota:
    """At most ``n`` events per client in any 60 s (a sliding window of timestamps, per client)."""

    def __init__(self, window_s: float = 60.0, max_clients: int = 100_000) -> None:
        self.window_s, self.max_clients = window_s, max_clients
        self._seen: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str, wanted: int, n: int) -> int:
        """How many of ``wanted`` events ``client`` may have now (they are counted)."""
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > self.max_clients:  # forget idle clients
                self._seen = {c: q for c, q in self._seen.items() if q and q[-1] > now - self.window_s}
            q = self._seen.setdefault(client, collections.deque())
            while q and q[0] <= now - self.window_s:
                q.popleft()
            granted = max(0, min(wanted, n - len(q)))
            q.extend([now] * granted)
            return granted


class _Budget:
    """Server time per client in any 60 s (seconds spent on its requests, charged when each ends), and requests
    in flight per client: what a keyless client may use of the model routes."""

    def __init__(self, window_s: float = 60.0, max_clients: int = 100_000) -> None:
        self.window_s, self.max_clients = window_s, max_clients
        self._spent: dict[str, collections.deque[tuple[float, float]]] = {}
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, client: str, seconds: float, concurrency: int) -> None:
        """Count a request of ``client`` in, or :class:`ServiceError` 429 when it spent ``seconds`` in the last
        minute or has ``concurrency`` requests running."""
        now = time.monotonic()
        with self._lock:
            if len(self._spent) > self.max_clients:  # forget idle clients
                self._spent = {c: q for c, q in self._spent.items() if q and q[-1][0] > now - self.window_s}
            q = self._spent.setdefault(client, collections.deque())
            while q and q[0][0] <= now - self.window_s:
                q.popleft()
            spent = sum(t for _, t in q)
            if spent >= seconds:
                # the minute frees up as the oldest charges leave it
                free, wait = spent, 1.0
                for at, t in q:
                    free -= t
                    wait = at + self.window_s - now
                    if free < seconds:
                        break
                raise ServiceError(429, f"this client used {spent:.1f} s of server time in the last minute, the most "
                                        f"a client without an API key may ({seconds:g} s); retry in {wait:.0f} s, "
                                        "or send an API key ('Authorization: Bearer <key>')",
                                   headers={"Retry-After": str(max(1, int(wait + 0.999)))})
            if self._running.get(client, 0) >= concurrency:
                raise ServiceError(429, f"this client has {concurrency} requests running, the most a client "
                                        "without an API key may; wait for them, or send an API key",
                                   headers={"Retry-After": "1"})
            self._running[client] = self._running.get(client, 0) + 1

    def leave(self, client: str, seconds: float) -> None:
        with self._lock:
            self._running[client] -= 1
            if not self._running[client]:
                del self._running[client]
            self._spent.setdefault(client, collections.deque()).append((time.monotonic(), seconds))


def _chunks(positions: list[int], sizes: list[int], limit: int) -> list[list[int]]:
    """``positions`` cut into consecutive runs whose ``sizes`` add up to about ``limit`` (at least one each)."""
    out: list[list[int]] = [[]]
    total = 0
    for p, n in zip(positions, sizes, strict=True):
        if out[-1] and total + n > limit:
            out.append([])
            total = 0
        out[-1].append(p)
        total += n
    return out


def _text_chars(items: list[Any]) -> int:
    """Characters of text in a batch of (record, top_k, min_confidence) items: what the first stage costs."""
    return sum(len(v) for record, *_ in items for v in record.values() if isinstance(v, str))


def _load_router(folder: FilePath) -> Any:
    from ..apps.routing import MessageRouter

    return MessageRouter.load(folder)


def _load_profiles(folder: FilePath) -> Any:
    from ..apps.profiles import ProfileStore

    return ProfileStore.load(folder)


def _load_search(folder: FilePath) -> Any:
    from ..apps.search import SearchIndex

    return SearchIndex.load(folder)


# the optional parts of a server (loaded on first use: each pulls in its own dependencies): setting, loader,
# what it is, how to make one
_RESOURCES: dict[str, tuple[str, Callable[[FilePath], Any], str, str]] = {
    "router": ("router_dir", _load_router, "message router", "train one with taxonomist messages train"),
    "profiles": ("profiles_dir", _load_profiles, "shopper profiles",
                 "build them from behaviour events with taxonomist users build"),
    "search": ("search_dir", _load_search, "search index", "build one over the catalogue with taxonomist search build"),
}


_LIVE_ACCURACY_WEEKS = 12
"""GET /v1/monitor's live accuracy covers the decisions of the last this many weeks."""
_SERVED_FLUSH_ROWS = 256
_LOGGED_CHARS = 200  # of a served title or brand, in the served-prediction log (the store keeps 200 too)
_SERVED_FLUSH_S = 2.0
"""The served-predictions log is written when this many records wait, or this many seconds passed."""


class Service:
    """What the endpoints share: settings, the model registry, the review store, the batcher, metrics."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.registry = ModelRegistry(settings.model_dir, settings.image_root)
        self.metrics = ServiceMetrics()
        self.store: ReviewStore | None = None
        self.rng = random.Random(settings.audit_seed)
        self._quota = _Quota()  # review items per client per minute
        self._served_quota = _Quota()  # served-log records per keyless client per minute
        self.budget = _Budget()  # server time of keyless clients on the model routes
        self.batcher = MicroBatcher(self._predict_first, self._predict_second, settings.microbatch_window_ms / 1000.0,
                                    settings.microbatch_max, on_batch=self.metrics.model_batch.observe,
                                    cost=_text_chars, inline_max_cost=settings.inline_max_chars)
        self.shadow: Shadow | None = None  # a candidate answering in the background (settings.shadow_model)
        self.monitor = DriftMonitor(None, settings.monitor_window)
        self._served: list[dict[str, Any]] = []  # served-prediction records not yet written (flush_served)
        self._served_at = time.monotonic()
        self._served_lock = threading.Lock()
        self.metrics.track_drift(self.monitor.signals)
        self.jobs: dict[str, dict[str, Any]] = {}
        self._jobs_lock = threading.Lock()
        self._query_models: dict[str, Any] = {}
        self._resources: dict[str, Any] = {}

    # -- model calls (run by the micro-batcher: first stage on the event loop, second in its worker thread) -----
    def _predict_first(self, items: list[tuple[dict[str, Any], int, float | None]]) -> Stage:
        """What the model answers at once (the sparse tier: everything; the cascade: the sure products); what it
        leaves is (the served model, [(positions in the batch, Pending)]) for :meth:`_predict_second`."""
        model = self.registry.current  # one version for the whole batch, even if a reload happens meanwhile
        results: list[tuple[Any, str, str | None] | None] = [None] * len(items)
        left: list[tuple[list[int], Any]] = []
        # keyword stuffing and unrecognised titles, in calls of about _CHUNK_CHARS like the predictions below
        flags: list[str | None] = []
        for idx in _chunks(list(range(len(items))), [len(r.get("title") or "") for r, _, _ in items], _CHUNK_CHARS):
            flags.extend(model.classifier.review_flags([items[i][0].get("title") or "" for i in idx]))
        # rows with the same min_confidence share one call; top_k is cut per request afterwards
        for mc in {mc for _, _, mc in items}:
            group = [i for i, (_, _, m) in enumerate(items) if m == mc]
            k = max(max(items[i][1] for i in group), 2)
            # long texts in calls of about _CHUNK_CHARS: one model call (a sparse matrix product that holds the
            # GIL) on 1 MB of text would keep the event loop from the GIL for its whole length
            for idx in _chunks(group, [_text_chars([items[i]]) for i in group], _CHUNK_CHARS):
                first, pending = first_stage(model.classifier, [items[i][0] for i in idx], top_k=k,
                                                                          min_confidence=mc)
                for i, p in zip(idx, first, strict=True):
                    if p is not None:
                        results[i] = (p, model.version, flags[i])
                if pending is not None:
                    left.append(([i for i, p in zip(idx, first, strict=True) if p is None], pending))
        return results, ((model, left, flags) if left else None)

    @staticmethod
    def _predict_second(left: tuple[ServedModel, list[tuple[list[int], Any]], list[str | None]]) -> list[Any]:
        """What :meth:`_predict_first` left, in one encoder pass: the results of its positions, in batch order."""
        model, parts, flags = left
        later = second_stage(model.classifier, [pending for _, pending in parts])
        answers = {i: (p, model.version, flags[i]) for (positions, _), preds in zip(parts, later, strict=True)
                   for i, p in zip(positions, preds, strict=True)}
        return [answers[i] for i in sorted(answers)]

    @property
    def model(self) -> ServedModel:
        return self.registry.current

    def observe_served(self, records: list[dict[str, Any]], results: list[tuple[Any, str, Any]],
                       monitored: bool = True, client: str | None = None) -> bool:
        """Add the answers of the served version to the drift monitor (a new version starts a new window; not when
        ``monitored`` is off: keyless traffic on a keyed server) and to the served-predictions log
        (``log_predictions``; a keyless ``client`` logs at most ``served_log_quota_per_minute`` a minute, a keyed
        one is given as None); True when the log's buffer is due to be written (:meth:`flush_served`)."""
        served = self.model
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
        if rows and self.store is not None:
            self.store.log_served(rows, max_rows=self.settings.served_log_max_rows)

    def monitor_report(self) -> dict[str, Any]:
        """GET /v1/monitor: the drift signals of the window and the live accuracy from reviewers' decisions."""
        served = self.model
        self.monitor.follow(served.version, getattr(served.classifier, "drift_reference_", None))
        recent = time.time() - _LIVE_ACCURACY_WEEKS * 7 * 86400
        report = {"model_version": served.version, **self.monitor.signals(),
                  "live_accuracy": live_accuracy(self.review_store().decided(since=recent))}
        if self.shadow is not None:
            report["shadow"] = self.shadow.stats()
        return report

    def resource(self, kind: str) -> Any:
        """An optional part of the server (``router``, ``search``, ``profiles``) from the folder its setting names,
        loaded on first use; 404 when the setting is not given (a feature this server does not offer)."""
        setting, loader, what, hint = _RESOURCES[kind]
        folder = getattr(self.settings, setting)
        if folder is None:
            raise ServiceError(404, f"this server has no {what}: {hint} and set TAXONOMIST_{setting.upper()}")
        with self._jobs_lock:
            if kind not in self._resources:
                self._resources[kind] = loader(folder)
            return self._resources[kind]

    def query_classifier(self, model: ServedModel) -> Any:
        """The query classifier of ``model`` (its product model + a zero-shot scorer over its classes), built on
        first use and kept per served version."""
        from ..apps.query import QueryClassifier

        with self._jobs_lock:
            cached = self._query_models.get(model.version)
        if cached is None:
            cached = QueryClassifier(product_model=model.classifier)
            with self._jobs_lock:
                self._query_models = {model.version: cached}  # only the served version's
        return cached

    def review_store(self) -> ReviewStore:
        if self.store is None:
            raise ServiceError(503, "the review store is not open yet")
        return self.store

    def check_category(self, category: str) -> str:
        clf = self.model.classifier
        path = parse_path(category)
        tax = clf.taxonomy_
        if not path or path not in tax:
            close = [format_path(p) for p in tax.search(path[-1] if path else category, limit=5)]
            raise ServiceError(422, f"the category {category!r} is not in the taxonomy; expected a path such as "
                                     f"{close or [format_path(tax.leaves()[0])]} (GET /v1/taxonomy?q=... searches it)")
        if not tax.is_leaf(path):
            kids = [format_path(p) for p in tax.children(path)[:5]]
            raise ServiceError(422, f"{category!r} is not a leaf category; pick one of its children, e.g. {kids}")
        return format_path(path)

    def check_batch(self, n: int, what: str, texts: list[str] | None = None) -> None:
        """413 for more than ``max_batch`` items in one request; 422 for a text (query, message) over
        ``max_text_chars``."""
        s = self.settings
        if n > s.max_batch:
            raise ServiceError(413, f"{n} {what} in one request, over the limit of {s.max_batch}; split the batch")
        if texts is not None and any(len(t) > s.max_text_chars for t in texts):
            raise ServiceError(422, f"a text of {what} is over the limit of {s.max_text_chars} characters")

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
        allowed = self._quota.take(client, len(new), s.review_quota_per_minute)
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

    def product_record(self, p: Product) -> dict[str, Any]:
        """The row the classifier reads for ``p``, checked once: text lengths (the limits catalogue files are
        truncated at, or the lower ``max_text_chars``: 422), the image path inside the image root and an image
        file, the base64 photo valid and within ``max_image_bytes`` (400) -- decoded here, once."""
        s = self.settings
        texts = [("title", p.title, MAX_TITLE_CHARS), ("description", p.description or "", MAX_TEXT_CHARS)]
        texts += [(f"attributes.{k}", v, MAX_TEXT_CHARS) for k, v in (p.attributes or {}).items()]
        for name, value, most in texts:
            limit = min(most, s.max_text_chars)
            if len(value) > limit:
                raise ServiceError(422, f"{name} is {len(value):,} characters, over the limit of {limit:,}; "
                                        "shorten it (the model reads the first few hundred characters anyway)")
        image: str | bytes | None = None
        try:
            if p.image_base64 is not None:
                image = decode_image_base64(p.image_base64, s.max_image_bytes)
            elif p.image is not None:
                if not is_image_file(resolve_image_path(p.image, s.image_root)):
                    raise ServiceError(400, f"the image {p.image!r} does not exist under the image root")
                image = p.image  # (resolved again, inside the same root, when the photo is read)
        except ImageError as e:  # the answer names no server path: the root is the operator's business
            root = str(FilePath(s.image_root or ".").resolve())
            raise ServiceError(400, str(e).replace(f" {root}", "").replace(root, "<image root>")) from None
        return p.record(image)

    def start_retrain(self) -> dict[str, Any]:
        """Start training a new version from the original data (``retrain_data``) + all feedback into the model
        store, in a background thread; the job's record (``jobs``) follows it."""
        if self.settings.retrain_data is None:
            raise ServiceError(409, "retraining from the API needs the original training catalogue: set "
                                    "TAXONOMIST_RETRAIN_DATA (or retrain offline with the retrain command)")
        if not self.registry.is_store:
            raise ServiceError(409, "retraining from the API writes a new version into a model store; serve a folder "
                                    "of bundles (MODEL_DIR/v0001, ...) instead of a single bundle")
        with self._jobs_lock:
            if any(j["status"] == "running" for j in self.jobs.values()):
                raise ServiceError(409, "a retraining job is already running")
            job_id = uuid.uuid4().hex[:12]
            self.jobs[job_id] = {"id": job_id, "status": "running"}
        threading.Thread(target=_retrain_job, args=(self, job_id), daemon=True, name=f"retrain-{job_id}").start()
        return self.jobs[job_id]


def _retrain_job(svc: Service, job_id: str) -> None:
    from ..retrain import retrain

    try:
        target = svc.registry.next_version_path()
        result = retrain(svc.model.path, svc.review_store().feedback(), svc.settings.retrain_data, target)  # type: ignore[arg-type]
        svc.jobs[job_id] = {"id": job_id, "status": "done", "version": target.name, **result.summary()}
    except Exception as e:  # reported through the job, not lost
        logger.error("retraining job %s failed: %s: %s", job_id, type(e).__name__, scrub_pii(str(e))[:500])
        svc.jobs[job_id] = {"id": job_id, "status": "failed", "error": f"{type(e).__name__}: {e}"}
