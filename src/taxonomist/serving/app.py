"""The prediction service: ``create_app(settings)`` builds the FastAPI app; ``taxonomist serve MODEL_DIR`` runs it
with uvicorn.

The app is assembled here (lifespan, middleware, error handlers); the routes live in :mod:`.routes` (one module
per resource), their dependencies in :mod:`.deps`, the state they share in :class:`.service.Service`.

A product's way through it: the request body is size-checked (413) and validated (422) → image references are
checked against the image root (400) → the product joins a micro-batch → the first stage of the served model
(the sparse member) answers the products it is sure of, a worker thread the rest (`TaxonomyClassifier.defer` / `complete`) →
low-confidence predictions (and an audit sample) are written to the review queue (SQLite, committed before the
answer) → JSON with the path, confidences, alternatives, ``needs_review`` and the model version.
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..exceptions import TaxonomistError
from ..text import scrub_pii
from ..version import __version__
from .metrics import TimingMiddleware
from .routes import ROUTERS
from .service import Service, ServiceError
from .settings import ServeSettings
from .shadow import Shadow
from .store import ReviewStore

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


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


def _honest_openapi(app: FastAPI, settings: ServeSettings, svc: Service) -> None:
    """The OpenAPI schema as this server runs: a lock (one "APIKey" bearer scheme) only on the routes that need a
    key with its settings, and the feedback example's category one of the served taxonomy's leaves."""
    from fastapi.openapi.utils import get_openapi

    keyed = {"write"} | ({"review"} if settings.review_read_requires_key else set()) | (
        {"read"} if settings.read_requires_key else set())

    def schema() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for ops in spec.get("paths", {}).values():
            for op in ops.values():
                if any(set(req) & keyed for req in op.pop("security", [])):
                    op["security"] = [{"APIKey": []}]
        components = spec.setdefault("components", {})
        components["securitySchemes"] = {"APIKey": {"type": "http", "scheme": "bearer",
                                                    "description": "An API key from TAXONOMIST_API_KEYS"}}
        if svc.inference.registry.ready:
            leaf = str(svc.inference.model.classifier.classes_[0])
            for ex in components.get("schemas", {}).get("FeedbackRequest", {}).get("examples", []):
                ex["category"] = leaf
            app.openapi_schema = spec  # (cached once the model is known)
        return spec

    app.openapi = schema  # type: ignore[method-assign]


_REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def _offline_redoc(app: FastAPI) -> None:
    """/redoc from fastapi-offline's ReDoc bundle, less the one thing it fetches from the internet: the logo of
    its "API docs by Redocly" footer (hidden instead: an image that fails to load is not shown)."""
    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html

    static = Path(fastapi_offline.__file__).parent / "static"
    bundle = (static / "redoc.standalone.js").read_bytes().replace(_REDOC_LOGO.encode(), b"data:,")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}/redoc.standalone.js", with_google_fonts=False,
                              redoc_favicon_url=f"{root}/static-offline-docs/favicon.png")

    @app.get("/redoc.standalone.js", include_in_schema=False)
    async def redoc_js() -> Response:
        return Response(bundle, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})


def _recorded_version(registry: Any, store: ReviewStore) -> str | None:
    """The version a reload recorded in the review store, when this server's model store has it."""
    version = store.served_version()
    if version is None or not registry.is_store or version not in registry.versions():
        return None
    return version


def _follow(svc: Service, store: ReviewStore) -> None:
    """Switch to the version a reload on another server recorded in the shared review store (if it differs)."""
    version = _recorded_version(svc.inference.registry, store)
    if version is not None and version != svc.inference.model.version:
        served = svc.inference.registry.reload(version)
        svc.metrics.reloads.labels(outcome="followed").inc()
        svc.metrics.model_info.info({"version": served.version, "tier": served.classifier.tier})


async def _flush_served_regularly(svc: Service) -> None:
    """The prediction log written within ~2 s of an answer, not only when the next request comes."""
    while True:
        await asyncio.sleep(1.0)
        if svc.watch.served_due():
            await asyncio.to_thread(svc.watch.flush_served)


async def _follow_the_served_version(svc: Service, store: ReviewStore, settings: ServeSettings) -> None:
    """A reload on another server sharing the review store: this one switches to the same version."""
    while settings.model_poll_s > 0 and settings.model_version is None:
        await asyncio.sleep(settings.model_poll_s)
        try:
            await asyncio.to_thread(_follow, svc, store)
        except Exception as e:  # noqa: BLE001 -- the store or the bundle unreadable now: serve on, log it
            logger.warning("could not follow the version recorded in the review store: %s", e)


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """The service for ``settings`` (default: from ``TAXONOMIST_*`` environment variables / ``.env``)."""
    settings = settings or ServeSettings()
    svc = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.desk.store = store = ReviewStore(settings.review_db, settings.review_db_sync)
        svc.metrics.track_queue(store.depth)
        served = await asyncio.to_thread(svc.inference.registry.start, settings.model_version or
                                         _recorded_version(svc.inference.registry, store))
        svc.metrics.model_info.info({"version": served.version, "tier": served.classifier.tier})
        if settings.shadow_model is not None:
            svc.watch.shadow = await asyncio.to_thread(Shadow, settings.shadow_model, svc.metrics)
        await svc.inference.batcher.start()

        flusher = asyncio.create_task(_flush_served_regularly(svc))
        follower = asyncio.create_task(_follow_the_served_version(svc, store, settings))
        try:
            yield
        finally:
            flusher.cancel()
            follower.cancel()
            await svc.inference.batcher.stop()
            if svc.watch.shadow is not None:
                svc.watch.shadow.close()
            svc.watch.flush_served()
            store.close()

    from fastapi_offline import FastAPIOffline

    # /docs and /redoc with Swagger UI and ReDoc served from the installed fastapi-offline package, not a CDN
    app = FastAPIOffline(title="taxonomist", version=__version__, lifespan=lifespan, redoc_url=None,
                  description="Product categorisation with a human review queue. Write endpoints need an API key.")
    _offline_redoc(app)
    _honest_openapi(app, settings, svc)
    app.state.service = svc
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(TimingMiddleware, metrics=svc.metrics)
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

    @app.exception_handler(ServiceError)
    async def refused(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    for router in ROUTERS:
        app.include_router(router)
    return app
