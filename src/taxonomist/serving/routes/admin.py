"""Admin: hot reload of the served version, retraining jobs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, HTTPException

from ...exceptions import BundleError
from ..deps import WRITE, ServiceDep
from ..schemas import ReloadRequest

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[WRITE])
"""Every admin route needs a key (``WRITE``)."""


@router.post("/reload")
async def reload(svc: ServiceDep, req: ReloadRequest | None = None) -> dict[str, Any]:
    """Switch the served version atomically (in-flight requests finish on the old one), on this server and, through
    the review store, on every server sharing it. A bundle that fails its integrity check is refused (409) and the
    old version keeps serving."""
    old = svc.inference.model.version
    try:
        served = await asyncio.to_thread(svc.inference.registry.reload, req.version if req else None)
    except BundleError as e:
        svc.metrics.reloads.labels(outcome="refused").inc()
        logger.warning("reload refused, still serving %s: %s", old, e)
        raise HTTPException(409, f"refused: {e}; still serving version {old}") from None
    svc.metrics.reloads.labels(outcome="ok").inc()
    svc.metrics.model_info.info({"version": served.version, "tier": served.classifier.tier})
    # recorded in the review store: every server sharing it switches to the same version (model_poll_s)
    await asyncio.to_thread(svc.desk.review_store().set_served_version, served.version)
    return {"previous_version": old, "version": served.version}


@router.post("/retrain", status_code=202)
def retrain_start(svc: ServiceDep) -> dict[str, Any]:
    """Train a new version from the original data (TAXONOMIST_RETRAIN_DATA) + all feedback into the model
    store, in the background; GET /v1/admin/jobs/{id} follows it. The new version is served after a reload."""
    return svc.retrains.start()


@router.get("/jobs/{job_id}")
def job(svc: ServiceDep, job_id: str) -> dict[str, Any]:
    """A retraining job: its state, and the new version when it is done."""
    if job_id not in svc.retrains.jobs:
        raise HTTPException(404, f"no job {job_id}")
    return svc.retrains.jobs[job_id]
