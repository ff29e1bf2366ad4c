"""FastAPI dependencies of the routes: the service state, the API-key checks of read and write endpoints, and
the server-time budget of keyless clients on the model routes."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .desk import ReviewDesk
from .inference import Inference
from .service import Service
from .watch import Watch

__all__ = ["BUDGET", "READ", "REVIEW_READ", "WRITE", "Credentials", "DeskDep", "InferenceDep", "ServiceDep", "WatchDep",
           "get_service", "has_valid_key", "keyless_budget", "require_read", "require_review_read", "require_write"]

# one bearer scheme per kind of check, so that the OpenAPI schema tells which routes need a key under the server's
# settings (app.py keeps the lock where one is needed and names a single "APIKey" scheme)
SCHEMES = ("read", "review", "write")
_BEARERS = {k: HTTPBearer(auto_error=False, scheme_name=k, description="An API key from TAXONOMIST_API_KEYS")
            for k in SCHEMES}
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARERS["read"])]
_ReviewCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARERS["review"])]
_WriteCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARERS["write"])]


def get_service(request: Request) -> Service:
    """The app's :class:`Service` (``create_app`` puts it on ``app.state``)."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def get_inference(service: ServiceDep) -> Inference:
    return service.inference


def get_desk(service: ServiceDep) -> ReviewDesk:
    return service.desk


def get_watch(service: ServiceDep) -> Watch:
    return service.watch


InferenceDep = Annotated[Inference, Depends(get_inference)]
"""The inference core: the served model, the batcher, the checks of a request."""
DeskDep = Annotated[ReviewDesk, Depends(get_desk)]
"""The review desk: the review store and the rules of the queue."""
WatchDep = Annotated[Watch, Depends(get_watch)]
"""The drift monitor, the served-prediction log and the shadow candidate."""


def has_valid_key(service: Service, creds: HTTPAuthorizationCredentials | None) -> bool:
    """Whether the request carries one of the configured keys (False when none is configured)."""
    keys = [k for k in service.settings.api_keys if k.strip()]  # (settings refuse empty keys; never match one)
    given = creds.credentials.encode() if creds is not None else b""
    # constant time, and every key compared (no early exit that would tell which key was close)
    return any([secrets.compare_digest(given, k.encode()) for k in keys])  # noqa: C419


def _check_key(service: Service, creds: HTTPAuthorizationCredentials | None, write: bool) -> None:
    if not write and not service.settings.read_requires_key:
        return
    if not any(k.strip() for k in service.settings.api_keys):
        raise HTTPException(401, "this endpoint needs an API key, and the server has none configured; "
                                 "set TAXONOMIST_API_KEYS", headers={"WWW-Authenticate": "Bearer"})
    if not has_valid_key(service, creds):
        raise HTTPException(401, "missing or wrong API key; send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})


def require_read(service: ServiceDep, creds: Credentials) -> None:
    """Read endpoints: a key when ``read_requires_key`` is set."""
    _check_key(service, creds, write=False)


def require_write(service: ServiceDep, creds: _WriteCredentials) -> None:
    """Write endpoints (feedback, review decisions, admin): always a key."""
    _check_key(service, creds, write=True)


def require_review_read(service: ServiceDep, creds: _ReviewCredentials) -> None:
    """Reading the review queue, which holds products as customers and sellers sent them: a key by default
    (``review_read_requires_key``)."""
    _check_key(service, creds, write=service.settings.review_read_requires_key)


async def keyless_budget(service: ServiceDep, request: Request, creds: Credentials) -> AsyncIterator[None]:
    """The model routes: a client without a valid key has ``keyless_seconds_per_minute`` of server time a minute
    and ``keyless_concurrency`` requests at once (429 past either); keyed clients are not limited."""
    if has_valid_key(service, creds):
        yield
        return
    client = request.client.host if request.client is not None else "-"
    s = service.settings
    service.budget.enter(client, s.keyless_seconds_per_minute, s.keyless_concurrency)
    start = time.perf_counter()
    try:
        yield
    finally:
        service.budget.leave(client, time.perf_counter() - start)


READ = Depends(require_read)
BUDGET = Depends(keyless_budget)
WRITE = Depends(require_write)
REVIEW_READ = Depends(require_review_read)
