"""The prediction service (``taxonomist serve``): FastAPI app, review queue, model versions, metrics."""
from __future__ import annotations

from .app import create_app
from .settings import ServeSettings
from .store import ReviewStore

__all__ = ["ReviewStore", "ServeSettings", "create_app"]
