"""The service's routes, one module per resource; :func:`taxonomist.serving.app.create_app` includes them."""

from __future__ import annotations

from . import admin, apps, classify, ops, review

ROUTERS = (ops.router, classify.router, review.router, apps.router, admin.router)

__all__ = ["ROUTERS"]
