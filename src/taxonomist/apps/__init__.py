"""Applications built on the same models and taxonomy: search-query classification, after-sales message routing."""

from __future__ import annotations

from .query import QueryClassifier
from .routing import MessageRouter, RoutingRule, load_rules

__all__ = ["MessageRouter", "QueryClassifier", "RoutingRule", "load_rules"]
