"""The prediction service: FastAPI app with classify, taxonomy, model, review, feedback and admin endpoints.

``create_app(settings)`` builds it; ``taxonomist serve MODEL_DIR`` runs it with uvicorn. A product's way through
it: the request body is size-checked (413) and validated (422) → image references are checked against the image
root (400) → the product joins a micro-batch → ``TaxonomyClassifier.predict_products`` of the version being
served → low-confidence predictions (and an audit sample) are written to the review queue (SQLite, committed
before the answer) → JSON with the path, confidences, alternatives, ``needs_review`` and the model version.
"""
from __future__ import annotations

import asyncio
import collections
import importlib
import json
import logging
import random
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..exceptions import BundleError, TaxonomistError
from ..images import (
    MAX_IMAGE_BYTES,
    ImageError,
    decode_image_base64,
    is_image_file,
    read_image_bytes,
    resolve_image_path,
)
from ..models.hierarchy import decode
from ..monitoring import DriftMonitor, live_accuracy, observations
from ..taxonomy import format_path, parse_path
from ..text import scrub_pii, scrub_product
from ..version import __version__
from .batcher import MicroBatcher, Stage
from .metrics import ServiceMetrics, TimingMiddleware
from .registry import ModelRegistry, ServedModel
from .schemas import (
    Alternative,
    ClassifyRequest,
    ClassifyResponse,
    ClassifyResult,
    DemandRequest,
    DemandResponse,
    FeedbackRequest,
    MessageRoute,
    MessagesRequest,
    MessagesResponse,
    Product,
    QueryRequest,
    QueryResponse,
    QueryResult,
    RecommendationsResponse,
    ReloadRequest,
    ReviewDecision,
    ReviewItem,
    SearchRequest,
    SearchResponse,
    SearchResult,
    UserProfileResponse,
)
from .settings import ServeSettings
from .shadow import Shadow
from .store import ReviewStore, fingerprint

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

# review ids are SQLite integers: anything outside 1..2**63-1 is a 422, not an overflow in the driver
ReviewId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A review item id.")]
UserId = Annotated[str, Path(min_length=1, max_length=256, description="A shopper id, as in the behaviour events.")]

_IMAGE_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png", b"GIF87a": "image/gif",
                b"GIF89a": "image/gif"}


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


def _raster_type(data: bytes) -> str | None:
    """The media type of a JPEG, PNG, GIF or WebP file from its first bytes; ``None`` for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((t for magic, t in _IMAGE_TYPES.items() if data.startswith(magic)), None)


class BodyLimitMiddleware:
    """413 for request bodies over ``max_bytes`` (by Content-Length, or counted while streaming)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, _too_large_text(self.max_bytes))
            return message

        await self.app(scope, limited, send)


def _too_large_text(limit: int) -> str:
    return f"the request body is larger than the limit of {limit:,} bytes; send fewer products per request"


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": _too_large_text(limit)}, status_code=413)


# the optional parts of a server: setting, loader (a class with .load(folder)), what it is, how to make one
_RESOURCES = {
    "router": ("router_dir", "taxonomist.apps.routing.MessageRouter", "message router",
               "train one with taxonomist messages train"),
    "profiles": ("profiles_dir", "taxonomist.apps.profiles.ProfileStore", "shopper profiles",
                 "build them from behaviour events with taxonomist users build"),
    "search": ("search_dir", "taxonomist.apps.search.SearchIndex", "search index",
               "build one over the catalogue with taxonomist search build"),
}


_LIVE_ACCURACY_WEEKS = 12
"""GET /v1/monitor's live accuracy covers the decisions of the last this many weeks."""
_SERVED_FLUSH_ROWS = 256
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
        # keyword stuffing and unrecognised titles, for the whole micro-batch at once
        flags = model.classifier.review_flags([r.get("title") or "" for r, _, _ in items])
        # rows with the same min_confidence share one call; top_k is cut per request afterwards
        for mc in {mc for _, _, mc in items}:
            group = [i for i, (_, _, m) in enumerate(items) if m == mc]
            k = max(max(items[i][1] for i in group), 2)
            # long texts in calls of about _CHUNK_CHARS: one model call (a sparse matrix product that holds the
            # GIL) on 1 MB of text would keep the event loop from the GIL for its whole length
            for idx in _chunks(group, [_text_chars([items[i]]) for i in group], _CHUNK_CHARS):
                first, pending = model.classifier.predict_products_staged([items[i][0] for i in idx], top_k=k,
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
        later = model.classifier.predict_pending([pending for _, pending in parts])
        answers = {i: (p, model.version, flags[i]) for (positions, _), preds in zip(parts, later, strict=True)
                   for i, p in zip(positions, preds, strict=True)}
        return [answers[i] for i in sorted(answers)]

    @property
    def model(self) -> ServedModel:
        return self.registry.current

    def observe_served(self, records: list[dict[str, Any]], results: list[tuple[Any, str, Any]]) -> bool:
        """Add the answers of the served version to the drift monitor (a new version starts a new window) and to
        the served-predictions log (``log_predictions``); True when the log's buffer is due to be written
        (:meth:`flush_served`)."""
        served = self.model
        self.monitor.follow(served.version, getattr(served.classifier, "drift_reference_", None))
        keep = [i for i, (_, version, _) in enumerate(results) if version == served.version]
        obs = observations(served.classifier, [records[i] for i in keep], [results[i][0] for i in keep])
        self.monitor.observe(obs)
        if not self.settings.log_predictions:
            return False
        now = time.time()
        rows = [{"created": now, "model_version": served.version, "title": scrub_pii(str(records[i].get("title") or "")),
                 "leaf": format_path(o.leaf), "confidence": o.confidence, "backed_off": o.backed_off,
                 "unknown_share": None if o.unknown_share != o.unknown_share else o.unknown_share, "brand": o.brand}
                for i, o in zip(keep, obs, strict=True)]
        with self._served_lock:
            self._served.extend(rows)
            return len(self._served) >= _SERVED_FLUSH_ROWS or time.monotonic() - self._served_at >= _SERVED_FLUSH_S

    def flush_served(self) -> None:
        """Write the buffered served-prediction records to the store (one transaction)."""
        with self._served_lock:
            rows, self._served, self._served_at = self._served, [], time.monotonic()
        if rows and self.store is not None:
            self.store.log_served(rows)

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
        setting, target, what, hint = _RESOURCES[kind]
        folder = getattr(self.settings, setting)
        if folder is None:
            raise HTTPException(404, f"this server has no {what}: {hint} and set TAXONOMIST_{setting.upper()}")
        with self._jobs_lock:
            if kind not in self._resources:
                module, name = target.rsplit(".", 1)
                self._resources[kind] = getattr(importlib.import_module(module), name).load(folder)
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
            raise HTTPException(503, "the review store is not open yet")
        return self.store

    def check_category(self, category: str) -> str:
        clf = self.model.classifier
        path = parse_path(category)
        tax = clf.taxonomy_
        if not path or path not in tax:
            close = [format_path(p) for p in tax.search(path[-1] if path else category, limit=5)]
            raise HTTPException(422, f"the category {category!r} is not in the taxonomy; expected a path such as "
                                     f"{close or [format_path(tax.leaves()[0])]} (GET /v1/taxonomy?q=... searches it)")
        if not tax.is_leaf(path):
            kids = [format_path(p) for p in tax.children(path)[:5]]
            raise HTTPException(422, f"{category!r} is not a leaf category; pick one of its children, e.g. {kids}")
        return format_path(path)

    def check_batch(self, n: int, what: str, texts: list[str] | None = None) -> None:
        """413 for more than ``max_batch`` items in one request; 422 for a text (query, message) over
        ``max_text_chars``."""
        s = self.settings
        if n > s.max_batch:
            raise HTTPException(413, f"{n} {what} in one request, over the limit of {s.max_batch}; split the batch")
        if texts is not None and any(len(t) > s.max_text_chars for t in texts):
            raise HTTPException(422, f"a text of {what} is over the limit of {s.max_text_chars} characters")

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

    def check_product(self, p: Product) -> None:
        s = self.settings
        texts = [("title", p.title), ("description", p.description or "")]
        texts += [(f"attributes.{k}", v) for k, v in (p.attributes or {}).items()]
        for name, value in texts:
            if len(value) > s.max_text_chars:
                raise HTTPException(422, f"{name} is {len(value):,} characters, over the limit of {s.max_text_chars:,}; "
                                         "shorten it (the model reads the first few hundred characters anyway)")
        try:
            if p.image is not None:
                if not is_image_file(resolve_image_path(p.image, s.image_root)):
                    raise HTTPException(400, f"the image {p.image!r} does not exist under the image root")
            if p.image_base64 is not None:
                decode_image_base64(p.image_base64, s.max_image_bytes)
        except ImageError as e:
            raise HTTPException(400, str(e)) from None


# module level: FastAPI resolves the (string) annotations of dependencies in the module's globals
_BEARER = HTTPBearer(auto_error=False, description="An API key from TAXONOMIST_API_KEYS")


def _auth(service: Service, write: bool) -> Any:
    def check(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        keys = [k for k in service.settings.api_keys if k.strip()]  # (settings refuse empty keys; never match one)
        if not write and not service.settings.read_requires_key:
            return
        if not keys:
            raise HTTPException(401, "this endpoint needs an API key, and the server has none configured; "
                                     "set TAXONOMIST_API_KEYS", headers={"WWW-Authenticate": "Bearer"})
        given = creds.credentials.encode() if creds is not None else b""
        # constant time, and every key compared (no early exit that would tell which key was close)
        if not any([secrets.compare_digest(given, k.encode()) for k in keys]):  # noqa: C419
            raise HTTPException(401, "missing or wrong API key; send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})

    return Depends(check)


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """The service for ``settings`` (default: from ``TAXONOMIST_*`` environment variables / ``.env``)."""
    settings = settings or ServeSettings()
    svc = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.store = ReviewStore(settings.review_db, settings.review_db_sync)
        svc.metrics.track_queue(svc.store.depth)
        served = await asyncio.to_thread(svc.registry.start, settings.model_version)
        svc.metrics.model_info.info({"version": served.version, "tier": served.classifier.tier})
        if settings.shadow_model is not None:
            svc.shadow = await asyncio.to_thread(Shadow, settings.shadow_model, svc.metrics)
        await svc.batcher.start()
        try:
            yield
        finally:
            await svc.batcher.stop()
            if svc.shadow is not None:
                svc.shadow.close()
            svc.flush_served()
            svc.store.close()

    from fastapi_offline import FastAPIOffline

    # /docs and /redoc with Swagger UI and ReDoc served from the installed fastapi-offline package, not a CDN
    app = FastAPIOffline(title="taxonomist", version=__version__, lifespan=lifespan,
                  description="Product categorisation with a human review queue. Write endpoints need an API key.")
    app.state.service = svc
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(TimingMiddleware, metrics=svc.metrics)
    read, write = _auth(svc, write=False), _auth(svc, write=True)
    # the review queue holds products as customers and sellers sent them: reading it needs a key by default
    review_read = write if settings.review_read_requires_key else read

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        logger.error("internal error %s on %s %s: %s: %s", error_id, request.method, request.url.path,
                     type(exc).__name__, scrub_pii(str(exc))[:500])
        return JSONResponse({"detail": "internal server error", "error_id": error_id}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own handler echoes the input, and an input with a lone surrogate cannot be encoded as UTF-8
        # (a 500 found by fuzzing): the same body, ASCII-escaped
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(TaxonomistError)
    async def user_error(request: Request, exc: TaxonomistError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    # -- health, model, metrics ----------------------------------------------------------------------------
    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> JSONResponse:
        if not svc.registry.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready", "model_version": svc.model.version})

    @app.get("/metrics", tags=["ops"], response_class=Response, dependencies=[read])
    def metrics() -> Response:
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model", tags=["model"], dependencies=[read])
    def model_info() -> dict[str, Any]:
        m = svc.model
        man = m.manifest
        return {
            "version": m.version, "tier": m.classifier.tier, "created": man.get("created"),
            "taxonomist_version": man.get("taxonomist_version"), "n_categories": len(m.classifier.classes_),
            "training_data": man.get("training_data"), "metrics": man.get("metrics", {}),
            "versions": svc.registry.versions(), "skipped_versions": svc.registry.skipped,
            "review_threshold": settings.review_threshold,
        }

    @app.get("/v1/taxonomy", tags=["model"], dependencies=[read])
    def taxonomy(q: Annotated[str | None, Query(max_length=200, description="Substring to search for.")] = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        tax = svc.model.classifier.taxonomy_
        if q:
            return {"query": q, "matches": [{"path": format_path(p), "leaf": tax.is_leaf(p)} for p in tax.search(q, limit)]}

        def node(p: tuple[str, ...]) -> dict[str, Any]:
            return {"name": p[-1], "path": format_path(p), "children": [node(c) for c in tax.children(p)]}

        return {"n_nodes": len(tax), "n_leaves": len(tax.leaves()), "tree": [node(c) for c in tax.children(())]}

    # -- classify --------------------------------------------------------------------------------------------
    @app.post("/v1/classify", tags=["classify"], response_model=ClassifyResponse, response_model_exclude_none=True,
              dependencies=[read])
    async def classify(req: ClassifyRequest, request: Request) -> ClassifyResponse:
        items = req.items()
        svc.check_batch(len(items), "products")
        for p in items:
            svc.check_product(p)
        svc.metrics.request_products.observe(len(items))
        records = [p.record() for p in items]
        if req.explain:  # explanations are rare and slower: not micro-batched
            model = svc.model
            preds = await asyncio.to_thread(model.classifier.predict_products, records, max(req.top_k, 2),
                                            req.min_confidence, True)
            flags = await asyncio.to_thread(model.classifier.review_flags, [r["title"] for r in records])
            results = [(p, model.version, f) for p, f in zip(preds, flags, strict=True)]
        else:
            results = await svc.batcher.submit([(r, req.top_k, req.min_confidence) for r in records])
        out, queue = [], []
        low = 0
        # keyword-stuffed titles (halves pointing to two top-level categories) go to a person, however sure;
        # titles of no known word go too, queued behind the real uncertain products (ReviewStore.pending)
        for p, (pred, version, flag) in zip(items, results, strict=True):
            alts = pred.alternatives
            margin = alts[0][1] - alts[1][1] if len(alts) > 1 else (alts[0][1] if alts else 0.0)
            reason = None
            if pred.leaf_confidence < settings.review_threshold:
                low += 1
            if flag == "unrecognised":
                reason = flag
            elif pred.leaf_confidence < settings.review_threshold:
                reason = "low_confidence"
            elif flag == "keyword_stuffing":
                reason = flag
            elif settings.audit_rate > 0 and svc.rng.random() < settings.audit_rate:
                reason = "audit"
            d = pred.to_dict()
            res = ClassifyResult(
                id=p.id, category=d["category"], path=d["path"], confidence=d["confidence"], leaf=d["leaf"],
                leaf_confidence=d["leaf_confidence"], alternatives=d["alternatives"][: req.top_k],
                backed_off=d["backed_off"], needs_review=reason is not None, review_reason=reason,
                explanation=d.get("explanation"),
                neighbours=d.get("neighbours"), model_version=version)
            out.append(res)
            if reason is not None:
                queue.append((len(out) - 1, {
                    "product": p.model_dump(exclude_none=True),
                    "prediction": res.model_dump(exclude_none=True, exclude={"needs_review", "review_id", "review_reason"}),
                    "category": d["leaf"], "confidence": d["leaf_confidence"], "margin": margin, "reason": reason,
                    "model_version": version}))
        svc.metrics.observe_predictions([r.path[0] if r.path else "" for r in out], low)
        if svc.shadow is not None:
            svc.shadow.submit(records, [pred.leaf for pred, _, _ in results])
        if svc.observe_served(records, results):
            await asyncio.to_thread(svc.flush_served)
        if queue:
            client = request.client.host if request.client is not None else "-"
            ids = await asyncio.to_thread(svc.queue_for_review, client, [q for _, q in queue])
            for (i, q), rid in zip(queue, ids, strict=True):
                out[i].review_id = rid
                if rid is not None:
                    svc.metrics.queued.labels(reason=q["reason"]).inc()
        return ClassifyResponse(model_version=out[0].model_version if out else svc.model.version, results=out)

    # -- review queue and feedback ---------------------------------------------------------------------------
    @app.get("/v1/review", tags=["review"], response_model=list[ReviewItem], dependencies=[review_read])
    def review_list(limit: Annotated[int, Query(ge=1, le=500)] = 50,
                    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0) -> list[dict[str, Any]]:
        """Pending items, most uncertain (smallest top-1 / top-2 margin) first."""
        return svc.review_store().pending(limit, offset)

    @app.get("/v1/review/{review_id}", tags=["review"], response_model=ReviewItem, dependencies=[review_read])
    def review_get(review_id: ReviewId) -> dict[str, Any]:
        item = svc.review_store().get(review_id)
        if item is None:
            raise HTTPException(404, f"no review item {review_id}")
        return item

    @app.get("/v1/review/{review_id}/image", tags=["review"], dependencies=[review_read], response_class=Response)
    def review_image(review_id: ReviewId) -> Response:
        item = svc.review_store().get(review_id)
        if item is None:
            raise HTTPException(404, f"no review item {review_id}")
        product = item["product"]
        try:
            if product.get("image_base64"):
                data = decode_image_base64(product["image_base64"], settings.max_image_bytes)
            elif product.get("image"):
                path = resolve_image_path(product["image"], settings.image_root)
                if not is_image_file(path):
                    raise HTTPException(404, "the product's image file is gone")
                # within the size limit, and never a pipe or a device (the file may have changed since)
                data = read_image_bytes(product["image"], settings.image_root, max_bytes=MAX_IMAGE_BYTES)[0]
            else:
                raise HTTPException(404, "this product has no image")
        except ImageError as e:
            raise HTTPException(400, str(e)) from None
        # the type is sniffed from the bytes, never taken from the file name: only raster types are served (an
        # SVG is a document that can run script in the reviewer's page), in a sandbox that allows nothing
        media = _raster_type(data)
        if media is None:
            raise HTTPException(415, "the stored file is not a JPEG, PNG, GIF or WebP image")
        return Response(data, media_type=media, headers={"X-Content-Type-Options": "nosniff",
                                                         "Content-Security-Policy": "sandbox; default-src 'none'"})

    @app.post("/v1/review/{review_id}", tags=["review"], response_model=ReviewItem, dependencies=[write])
    def review_decide(review_id: ReviewId, decision: ReviewDecision) -> dict[str, Any]:
        """Accept the suggestion (no category) or correct it; the decision is recorded as feedback."""
        category = svc.check_category(decision.category) if decision.category else None
        item = svc.review_store().decide(review_id, category, decision.reviewer)
        if item is None:
            raise HTTPException(404, f"no review item {review_id}")
        svc.metrics.feedback.labels(source="review").inc()
        return item

    # -- search queries ------------------------------------------------------------------------------------
    @app.post("/v1/query/classify", tags=["classify"], response_model=QueryResponse, dependencies=[read])
    async def classify_queries(req: QueryRequest) -> QueryResponse:
        svc.check_batch(len(req.queries), "queries", req.queries)
        model = svc.model
        qc = await asyncio.to_thread(svc.query_classifier, model)
        preds = await asyncio.to_thread(qc.classify, req.queries, req.top_k, req.min_confidence)
        results = [_query_result(q, p) for q, p in zip(req.queries, preds, strict=True)]
        return QueryResponse(model_version=model.version, sources=qc.sources, results=results)

    @app.post("/v1/messages/route", tags=["classify"], response_model=MessagesResponse, dependencies=[read])
    async def route_messages(req: MessagesRequest) -> MessagesResponse:
        svc.check_batch(len(req.messages), "messages", req.messages)
        router = await asyncio.to_thread(svc.resource, "router")
        routes = await asyncio.to_thread(router.route, req.messages)
        return MessagesResponse(results=[MessageRoute(**r.to_dict()) for r in routes])

    @app.post("/v1/search", tags=["search"], response_model=SearchResponse, response_model_exclude_none=True,
              dependencies=[read])
    async def search(req: SearchRequest) -> SearchResponse:
        """Search the served catalogue: full text + embeddings, boosted by the query's predicted category."""
        svc.check_batch(1, "queries", [req.query])
        index = await asyncio.to_thread(svc.resource, "search")
        model = svc.model
        qc = await asyncio.to_thread(svc.query_classifier, model)
        proba = await asyncio.to_thread(qc.predict_proba, [req.query])
        pred = decode(proba, qc.levels_, top_k=3, min_confidence=qc.min_confidence)[0]
        scores = dict(zip(qc.classes_, proba[0], strict=True))
        hits = await asyncio.to_thread(index.search, req.query, req.k, req.mode, None, scores, req.boost, req.category)
        return SearchResponse(model_version=model.version, query=req.query,
                              query_category=_query_result(req.query, pred),
                              results=[SearchResult(**h.to_dict()) for h in hits])

    def shopper(user_id: str) -> Any:
        store = svc.resource("profiles")
        if user_id not in store:
            raise HTTPException(404, f"unknown user {user_id!r}: no events of this user were in the profile build")
        return store

    @app.get("/v1/users/{user_id}/profile", tags=["users"], response_model=UserProfileResponse, dependencies=[read])
    async def user_profile(user_id: UserId) -> UserProfileResponse:
        """A shopper's category affinity, recent items and purchases."""
        store = await asyncio.to_thread(shopper, user_id)
        p = store.profile(user_id)
        return UserProfileResponse(**{**p.to_dict(), "categories": [{"category": c, "share": v} for c, v in p.categories]})

    @app.get("/v1/users/{user_id}/recommendations", tags=["users"], response_model=RecommendationsResponse,
             dependencies=[read])
    async def user_recommendations(
        user_id: UserId, k: Annotated[int, Query(ge=1, le=100, description="How many items.")] = 10,
        exclude_seen: Annotated[bool, Query(description="Leave out items the user already touched, not only bought.")] = False,
    ) -> RecommendationsResponse:
        """Items for a shopper: their categories, items like the recently seen ones, popularity; never bought ones."""
        store = await asyncio.to_thread(shopper, user_id)
        recs = await asyncio.to_thread(store.recommend, user_id, k, None, exclude_seen)
        return RecommendationsResponse(user=user_id, results=[r.to_dict() for r in recs])

    @app.post("/v1/demand/forecast", tags=["demand"], response_model=DemandResponse, dependencies=[read])
    async def demand_forecast(req: DemandRequest) -> DemandResponse:
        """Category demand from the events sent: ETS or seasonal naive chosen by backtest, against naive."""
        return await asyncio.to_thread(_demand, req)

    @app.post("/v1/feedback", tags=["review"], status_code=201, dependencies=[write])
    def feedback(fb: FeedbackRequest) -> dict[str, Any]:
        """Record the correct category of any product (labelled data for ``taxonomist retrain``)."""
        svc.check_product(fb.product)
        category = svc.check_category(fb.category)
        fid = svc.review_store().add_feedback(scrub_product(fb.product.model_dump(exclude_none=True)), category,
                                              svc.model.version)
        svc.metrics.feedback.labels(source="api").inc()
        return {"id": fid, "category": category}

    @app.get("/v1/monitor", tags=["ops"], dependencies=[read])
    def monitor() -> dict[str, Any]:
        """Drift of the served predictions against the model's reference (the last ``monitor_window`` answers):
        PSI and Jensen-Shannon divergence of the categories per level, confidence, back-off, unknown title words,
        new brands, the alerts firing; and the live accuracy per week from reviewers' decisions."""
        return svc.monitor_report()

    @app.get("/v1/review-stats", tags=["review"], dependencies=[review_read])
    def review_stats() -> dict[str, int]:
        return svc.review_store().counts()

    # -- admin -----------------------------------------------------------------------------------------------
    @app.post("/v1/admin/reload", tags=["admin"], dependencies=[write])
    async def reload(req: ReloadRequest | None = None) -> dict[str, Any]:
        """Switch the served version atomically (in-flight requests finish on the old one). A bundle that fails
        its integrity check is refused (409) and the old version keeps serving."""
        old = svc.model.version
        try:
            served = await asyncio.to_thread(svc.registry.reload, req.version if req else None)
        except BundleError as e:
            svc.metrics.reloads.labels(outcome="refused").inc()
            logger.warning("reload refused, still serving %s: %s", old, e)
            raise HTTPException(409, f"refused: {e}; still serving version {old}") from None
        svc.metrics.reloads.labels(outcome="ok").inc()
        svc.metrics.model_info.info({"version": served.version, "tier": served.classifier.tier})
        return {"previous_version": old, "version": served.version}

    @app.post("/v1/admin/retrain", tags=["admin"], status_code=202, dependencies=[write])
    def retrain_start() -> dict[str, Any]:
        """Train a new version from the original data (TAXONOMIST_RETRAIN_DATA) + all feedback into the model
        store, in the background; GET /v1/admin/jobs/{id} follows it. The new version is served after a reload."""
        if settings.retrain_data is None:
            raise HTTPException(409, "retraining from the API needs the original training catalogue: set "
                                     "TAXONOMIST_RETRAIN_DATA (or run: taxonomist retrain MODEL_DIR --feedback DB ...)")
        if not svc.registry.is_store:
            raise HTTPException(409, "retraining from the API writes a new version into a model store; serve a folder "
                                     "of bundles (MODEL_DIR/v0001, ...) instead of a single bundle")
        with svc._jobs_lock:
            if any(j["status"] == "running" for j in svc.jobs.values()):
                raise HTTPException(409, "a retraining job is already running")
            job_id = uuid.uuid4().hex[:12]
            svc.jobs[job_id] = {"id": job_id, "status": "running"}
        threading.Thread(target=_retrain_job, args=(svc, job_id), daemon=True, name=f"retrain-{job_id}").start()
        return svc.jobs[job_id]

    @app.get("/v1/admin/jobs/{job_id}", tags=["admin"], dependencies=[write])
    def job(job_id: str) -> dict[str, Any]:
        if job_id not in svc.jobs:
            raise HTTPException(404, f"no job {job_id}")
        return svc.jobs[job_id]

    # -- the review page -------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/review")

    @app.get("/review", include_in_schema=False, response_class=HTMLResponse)
    def review_page() -> HTMLResponse:
        html = resources.files("taxonomist.serving").joinpath("static/review.html").read_text(encoding="utf-8")
        # frame-ancestors / X-Frame-Options: no other site may frame the page (clickjacking a reviewer)
        return HTMLResponse(html, headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                           "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
                                           "frame-ancestors 'none'", "X-Frame-Options": "DENY"})

    return app


def _demand(req: DemandRequest) -> DemandResponse:
    import numpy as np
    import pandas as pd

    from ..apps.demand import forecast_demand
    from ..apps.profiles import read_events

    frame = pd.DataFrame([{"user": e.user or "-", "item": e.item or "-", "category": e.category, "event": e.event,
                           "timestamp": str(e.timestamp)} for e in req.events])
    try:
        events = read_events(frame, strict=True)
        rep = forecast_demand(events, freq=req.freq, horizon=req.horizon, origins=req.origins, top=req.top,
                              event=req.event)
    except TaxonomistError as e:
        raise HTTPException(422, str(e)) from None
    cats = []
    for f in rep.forecasts:
        fc = [] if f.forecast is None else [{"period": str(p), "value": round(float(v), 3)} for p, v in f.forecast.items()]
        errors = {m: {k: (None if np.isnan(v) else round(v, 4)) for k, v in e.items()} for m, e in f.errors.items()}
        cats.append({"category": f.category, "total": f.total, "chosen": f.chosen, "errors": errors,
                     "beats_naive": f.beats_naive, "forecast": fc})
    return DemandResponse(verdict=rep.verdict(), periods=rep.periods, horizon=rep.horizon, categories=cats)


def _query_result(query: str, p: Any) -> QueryResult:
    return QueryResult(query=query, category=p.category, path=list(p.path), confidence=p.confidence,
                       distribution=[Alternative(category=c, confidence=v) for c, v in p.alternatives],
                       backed_off=p.backed_off)


def _retrain_job(svc: Service, job_id: str) -> None:
    from ..retrain import retrain

    try:
        target = svc.registry.next_version_path()
        result = retrain(svc.model.path, svc.review_store().feedback(), svc.settings.retrain_data, target)  # type: ignore[arg-type]
        svc.jobs[job_id] = {"id": job_id, "status": "done", "version": target.name, **result.summary()}
    except Exception as e:  # reported through the job, not lost
        logger.error("retraining job %s failed: %s: %s", job_id, type(e).__name__, scrub_pii(str(e))[:500])
        svc.jobs[job_id] = {"id": job_id, "status": "failed", "error": f"{type(e).__name__}: {e}"}
