"""Operations: health and readiness, Prometheus metrics, the served model and its taxonomy, drift monitoring."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...taxonomy import format_path
from ..deps import READ, InferenceDep, ServiceDep, WatchDep

logger = logging.getLogger(__name__)

router = APIRouter()


@router.get("/healthz", tags=["ops"])
def healthz() -> dict[str, str]:
    """Liveness: the process answers (it does not touch the model)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
def readyz(inference: InferenceDep) -> JSONResponse:
    """Readiness: 200 with the served version once a model is loaded, 503 before."""
    if not inference.registry.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ready", "model_version": inference.model.version})


@router.get("/metrics", tags=["ops"], response_class=Response, dependencies=[READ])
def metrics(svc: ServiceDep) -> Response:
    """Prometheus metrics: requests, predictions, the review queue, reloads, drift signals."""
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/model", tags=["model"], dependencies=[READ])
def model_info(inference: InferenceDep) -> dict[str, Any]:
    """The served model: version, tier, categories, training data, held-out metrics, the versions in the store."""
    m = inference.model
    man = m.manifest
    return {
        "version": m.version, "tier": m.classifier.tier, "created": man.get("created"),
        "taxonomist_version": man.get("taxonomist_version"), "n_categories": len(m.classifier.classes_),
        "training_data": man.get("training_data"), "metrics": man.get("metrics", {}),
        "versions": inference.registry.versions(), "skipped_versions": inference.registry.skipped,
        "review_threshold": inference.settings.review_threshold,
    }


@router.get("/v1/taxonomy", tags=["model"], dependencies=[READ])
def taxonomy(inference: InferenceDep, q: Annotated[str | None, Query(max_length=200, description="Substring to search for.")] = None,
             limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
    """The served taxonomy as a tree, or the categories whose path contains ``q``."""
    tax = inference.model.classifier.taxonomy_
    if q:
        return {"query": q, "matches": [{"path": format_path(p), "leaf": tax.is_leaf(p)} for p in tax.search(q, limit)]}

    def node(p: tuple[str, ...]) -> dict[str, Any]:
        return {"name": p[-1], "path": format_path(p), "children": [node(c) for c in tax.children(p)]}

    return {"n_nodes": len(tax), "n_leaves": len(tax.leaves()), "tree": [node(c) for c in tax.children(())]}


@router.get("/v1/monitor", tags=["ops"], dependencies=[READ])
def monitor(watch: WatchDep) -> dict[str, Any]:
    """Drift of the served predictions against the model's reference (the last ``monitor_window`` answers):
    PSI and Jensen-Shannon divergence of the categories per level, confidence, back-off, unknown title words,
    new brands, the alerts firing; and the live accuracy per week from reviewers' decisions."""
    return watch.monitor_report()
