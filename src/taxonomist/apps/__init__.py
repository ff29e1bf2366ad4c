"""Applications built on the same models and taxonomy: search-query classification (more to come)."""

from __future__ import annotations

from .query import QueryClassifier

__all__ = ["QueryClassifier"]
