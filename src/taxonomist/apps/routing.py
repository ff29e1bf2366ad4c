"""After-sales message routing: a customer message (review, ticket) → the product category it concerns, its
sentiment, its issue type (when the user has labelled types) → a queue, by a rule file.

Each prediction is a :class:`~taxonomist.TaxonomyClassifier` (any tier; messages are read as titles), so the
category model can be the very product model of the catalogue. A router is a folder: ``router.json`` (the rules
and what the router was trained on) and one bundle per model (``category/``, ``sentiment/``, ``issue/``).

Rules (CSV with a header, or a JSON list of objects) have the fields ``category``, ``issue_type``,
``sentiment`` and ``queue``; ``*`` (or empty) matches anything, a category matches itself and its descendants
(``Electronics`` matches ``Electronics > Phones``); the first matching rule wins, else ``default_queue``.

With ``dp_epsilon`` every model is trained with differential privacy per message
(:class:`~taxonomist.models.private.PrivateLinearClassifier`); the budget is split evenly over the models trained
on the same messages, so the router as a whole is (ε, δ)-private by basic composition, and ``router.json`` records
what each model spent.

Example rules.csv::

    category,issue_type,sentiment,queue
    手机,*,negative,phones-escalation
    *,*,negative,complaints
    *,*,*,general
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..exceptions import TaxonomistError
from ..taxonomy import format_path, parse_path

__all__ = ["MessageRouter", "Route", "RoutingRule", "load_rules", "sentiment_label"]

logger = logging.getLogger(__name__)

_RULE_FIELDS = ("category", "issue_type", "sentiment", "queue")
_SENTIMENT = {"1": "positive", "0": "negative", "pos": "positive", "neg": "negative", "positive": "positive",
              "negative": "negative", "neutral": "neutral"}


def sentiment_label(value: Any) -> str:
    """A sentiment label as a word: ``1``/``pos`` → ``positive``, ``0``/``neg`` → ``negative``; others kept."""
    return _SENTIMENT.get(str(value).strip().lower(), str(value).strip())


@dataclass(frozen=True)
class RoutingRule:
    category: str = "*"
    issue_type: str = "*"
    sentiment: str = "*"
    queue: str = "general"

    def matches(self, category: str, issue_type: str | None, sentiment: str | None) -> bool:
        def any_(v: str) -> bool:
            return v in ("", "*")

        if not any_(self.category):
            rule, cat = parse_path(self.category), parse_path(category)
            if cat[: len(rule)] != rule:
                return False
        if not any_(self.issue_type) and self.issue_type != (issue_type or ""):
            return False
        return any_(self.sentiment) or self.sentiment == (sentiment or "")


def load_rules(path: str | Path) -> list[RoutingRule]:
    """Rules from a CSV (header ``category,issue_type,sentiment,queue``) or a JSON list of objects."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise TaxonomistError(f"cannot read the rules file {p}: {e}") from None
    if p.suffix.lower() == ".json":
        try:
            rows = json.loads(text)
        except ValueError as e:
            raise TaxonomistError(f"{p.name}: not valid JSON ({e}); expected a list of rule objects") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise TaxonomistError(f"{p.name}: expected a JSON list of objects with fields {list(_RULE_FIELDS)}")
    else:
        rows = list(csv.DictReader(text.splitlines()))
    rules = []
    for i, row in enumerate(rows, start=1):
        unknown = set(row) - set(_RULE_FIELDS)
        if unknown or not str(row.get("queue") or "").strip():
            raise TaxonomistError(
                f"{p.name} rule {i}: expected the fields {list(_RULE_FIELDS)} with a non-empty queue, found "
                f"{sorted(row)}; fix the header or the row"
            )
        rules.append(RoutingRule(**{k: str(row.get(k) or "*").strip() for k in _RULE_FIELDS}))
    return rules


@dataclass
class Route:
    """One message's routing: what it is about, how it feels, what kind of issue, where it goes and why."""

    category: str
    category_confidence: float
    sentiment: str | None
    sentiment_confidence: float | None
    issue_type: str | None
    issue_confidence: float | None
    queue: str
    rule: int | None  # the 1-based number of the rule that matched; None: the default queue

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MessageRouter:
    """Route customer messages with a category model, optional sentiment and issue-type models, and rules."""

    def __init__(self, category_model: Any, sentiment_model: Any = None, issue_model: Any = None,
                 rules: Sequence[RoutingRule] = (), default_queue: str = "general",
                 privacy: Mapping[str, Any] | None = None) -> None:
        self.privacy = dict(privacy) if privacy else None
        self.category_model = category_model
        self.sentiment_model = sentiment_model
        self.issue_model = issue_model
        self.rules = list(rules)
        self.default_queue = default_queue
        self.check_rules()

    def check_rules(self) -> None:
        """Refuse rules that can never match: a category outside the category model's taxonomy, a sentiment or
        issue type the models do not predict."""
        tax = self.category_model.taxonomy_
        sentiments = {str(c) for c in self.sentiment_model.classes_} if self.sentiment_model is not None else set()
        issues = {str(c) for c in self.issue_model.classes_} if self.issue_model is not None else set()
        for i, r in enumerate(self.rules, start=1):
            if r.category not in ("", "*") and parse_path(r.category) not in tax:
                raise TaxonomistError(f"rule {i}: the category {r.category!r} is not in the category model's taxonomy")
            if r.sentiment not in ("", "*") and r.sentiment not in sentiments:
                raise TaxonomistError(f"rule {i}: sentiment {r.sentiment!r} is not predicted; expected one of "
                                      f"{sorted(sentiments) or '(no sentiment model)'}")
            if r.issue_type not in ("", "*") and r.issue_type not in issues:
                raise TaxonomistError(f"rule {i}: issue type {r.issue_type!r} is not predicted; expected one of "
                                      f"{sorted(issues) or '(no issue-type model)'}")

    @classmethod
    def fit(cls, messages: Sequence[str], categories: Sequence[str], sentiments: Sequence[Any] | None = None,
            issue_types: Sequence[str] | None = None, rules: Sequence[RoutingRule] = (), tier: str = "sparse",
            default_queue: str = "general", dp_epsilon: float | None = None, dp_delta: float = 1e-6,
            **params: Any) -> MessageRouter:
        """Train the models on labelled messages (sentiment labels 1/0, pos/neg or words; issue types any
        strings) with the given tier and classifier parameters; with ``dp_epsilon``, (ε, δ)-differentially
        private per message for the router as a whole (sparse tier only)."""
        import pandas as pd

        from ..classifier import TaxonomyClassifier

        n_models = 1 + (sentiments is not None) + (issue_types is not None)
        if dp_epsilon is not None:  # basic composition: the models see the same messages
            params.update(dp_epsilon=dp_epsilon / n_models, dp_delta=dp_delta / n_models)

        def model(labels: Sequence[Any]) -> TaxonomyClassifier:
            frame = pd.DataFrame({"title": [str(m) for m in messages], "category": [str(v) for v in labels]})
            return TaxonomyClassifier(tier=tier, **params).fit(frame)  # type: ignore[arg-type]

        senti = None
        if sentiments is not None:
            senti = model([sentiment_label(s) for s in sentiments])
        cat = model(categories)
        issue = model(issue_types) if issue_types is not None else None
        privacy = None
        if dp_epsilon is not None:
            spent = {name: m.model_.privacy() for name, m in (("category", cat), ("sentiment", senti), ("issue", issue))
                     if m is not None}
            privacy = {"epsilon": sum(p["epsilon"] for p in spent.values()), "delta": dp_delta, "unit": "message",
                       "composition": "basic (sum over the models)", "models": spent}
            logger.info("router trained with differential privacy: epsilon %.3f, delta %.2g", privacy["epsilon"], dp_delta)
        return cls(cat, senti, issue, rules, default_queue, privacy)

    def route(self, messages: Sequence[str]) -> list[Route]:
        if isinstance(messages, str):
            raise TypeError("expected a list of messages, got a single string; wrap it in a list")
        texts = [str(m) for m in messages]
        cats = self.category_model.predict_products(texts, top_k=1)
        sents = self.sentiment_model.predict_products(texts, top_k=1) if self.sentiment_model is not None else None
        iss = self.issue_model.predict_products(texts, top_k=1) if self.issue_model is not None else None
        out = []
        for i, c in enumerate(cats):
            category = c.category or format_path(c.leaf)
            sentiment = format_path(sents[i].leaf) if sents is not None else None
            issue = format_path(iss[i].leaf) if iss is not None else None
            rule = next((k for k, r in enumerate(self.rules, start=1) if r.matches(category, issue, sentiment)), None)
            out.append(Route(category, round(c.score if c.path else c.leaf_confidence, 6), sentiment,
                             round(sents[i].leaf_confidence, 6) if sents is not None else None, issue,
                             round(iss[i].leaf_confidence, 6) if iss is not None else None,
                             self.rules[rule - 1].queue if rule else self.default_queue, rule))
        return out

    # -- persistence (bundles + JSON; no pickle) --------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        models = {"category": self.category_model, "sentiment": self.sentiment_model, "issue": self.issue_model}
        for name, m in models.items():
            if m is not None:
                m.save(d / name)
        meta = {"format": "taxonomist-router", "models": [k for k, m in models.items() if m is not None],
                "rules": [asdict(r) for r in self.rules], "default_queue": self.default_queue,
                "privacy": self.privacy}
        (d / "router.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> MessageRouter:
        from ..classifier import load

        d = Path(directory)
        try:
            meta: Mapping[str, Any] = json.loads((d / "router.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TaxonomistError(f"{d} is not a message router folder (router.json: {e}); build one with "
                                  "taxonomist messages train") from None
        models = {name: load(d / name) for name in meta.get("models", [])}
        if "category" not in models:
            raise TaxonomistError(f"{d}/router.json lists no category model")
        return cls(models["category"], models.get("sentiment"), models.get("issue"),
                   [RoutingRule(**r) for r in meta.get("rules", [])], str(meta.get("default_queue", "general")),
                   meta.get("privacy"))
