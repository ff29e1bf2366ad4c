"""Background jobs of a server: retraining a new version from the original catalogue and every piece of feedback
(POST /v1/admin/retrain), followed through its record."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from ..text import scrub_pii
from .desk import ReviewDesk
from .inference import Inference
from .limits import ServiceError
from .settings import ServeSettings

__all__ = ["RetrainJobs"]

logger = logging.getLogger(__name__)


class RetrainJobs:
    """Retraining jobs (one at a time) and their records (``jobs``: id → status, version or error)."""

    def __init__(self, settings: ServeSettings, inference: Inference, desk: ReviewDesk) -> None:
        self.settings, self.inference, self.desk = settings, inference, desk
        self.jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def start(self) -> dict[str, Any]:
        """Start training a new version from the original data (``retrain_data``) + all feedback into the model
        store, in a background thread; the job's record (``jobs``) follows it."""
        if self.settings.retrain_data is None:
            raise ServiceError(409, "retraining from the API needs the original training catalogue: set "
                                    "TAXONOMIST_RETRAIN_DATA (or retrain offline with the retrain command)")
        if not self.inference.registry.is_store:
            raise ServiceError(409, "retraining from the API writes a new version into a model store; serve a folder "
                                    "of bundles (MODEL_DIR/v0001, ...) instead of a single bundle")
        with self._lock:
            if any(j["status"] == "running" for j in self.jobs.values()):
                raise ServiceError(409, "a retraining job is already running")
            job_id = uuid.uuid4().hex[:12]
            self.jobs[job_id] = {"id": job_id, "status": "running"}
        threading.Thread(target=_retrain_job, args=(self, job_id), daemon=True, name=f"retrain-{job_id}").start()
        return self.jobs[job_id]



def _retrain_job(svc: RetrainJobs, job_id: str) -> None:
    from ..retrain import retrain

    try:
        target = svc.inference.registry.next_version_path()
        result = retrain(svc.inference.model.path, svc.desk.review_store().feedback(), svc.settings.retrain_data, target)  # type: ignore[arg-type]
        svc.jobs[job_id] = {"id": job_id, "status": "done", "version": target.name, **result.summary()}
    except Exception as e:  # reported through the job, not lost
        logger.error("retraining job %s failed: %s: %s", job_id, type(e).__name__, scrub_pii(str(e))[:500])
        svc.jobs[job_id] = {"id": job_id, "status": "failed", "error": f"{type(e).__name__}: {e}"}
