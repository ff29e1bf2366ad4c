"""Applications built on the same models and taxonomy: search-query classification, category-aware
search, after-sales message routing."""

from __future__ import annotations

from .query import QueryClassifier
from .routing import MessageRouter, RoutingRule, load_rules
from .search import SearchHit, SearchIndex

__all__ = ["MessageRouter", "QueryClassifier", "RoutingRule", "SearchHit", "SearchIndex", "load_rules"]
