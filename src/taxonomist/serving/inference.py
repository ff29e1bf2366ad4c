"""The inference core of a server: the model registry, the micro-batcher and the staged prediction it runs (the
sparse stage on the event loop, the encoder stage in its worker thread), and the checks of what a request asks
the model (products, categories, batch sizes)."""

from __future__ import annotations

import threading
from pathlib import Path as FilePath
from typing import Any

from ..images import ImageError, decode_image_base64, is_image_file, resolve_image_path
from ..products import MAX_TEXT_CHARS, MAX_TITLE_CHARS
from ..taxonomy import format_path, parse_path
from .batcher import MicroBatcher, Stage
from .limits import ServiceError
from .metrics import ServiceMetrics
from .registry import ModelRegistry, ServedModel
from .schemas import Product
from .settings import ServeSettings

__all__ = ["Inference"]

_CHUNK_CHARS = 20_000


def _chunks(positions: list[int], sizes: list[int], limit: int) -> list[list[int]]:
    """``positions`` cut into consecutive runs whose ``sizes`` add up to about ``limit`` (at least one each)."""
    out: list[list[int]] = [[]]
    total = 0
    for p, n in zip(positions, sizes, strict=True):
        if out[-1] and total + n > limit:
            out.append([])
            total = 0
        out[-1].append(p)
        total += n
    return out


def _text_chars(items: list[Any]) -> int:
    """Characters of text in a batch of (record, top_k, min_confidence) items: what the first stage costs."""
    return sum(len(v) for record, *_ in items for v in record.values() if isinstance(v, str))


class Inference:
    """The served model and how requests reach it: registry, micro-batcher, staged prediction, request checks."""

    def __init__(self, settings: ServeSettings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.registry = ModelRegistry(settings.model_dir, settings.image_root)
        self.batcher = MicroBatcher(self._predict_first, self._predict_second, settings.microbatch_window_ms / 1000.0,
                                    settings.microbatch_max, on_batch=metrics.model_batch.observe,
                                    cost=_text_chars, inline_max_cost=settings.inline_max_chars)
        self._query_models: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- model calls (run by the micro-batcher: first stage on the event loop, second in its worker thread) -----
    def _predict_first(self, items: list[tuple[dict[str, Any], int, float | None]]) -> Stage:
        """What the model answers at once (the sparse tier: everything; the cascade: the sure products); what it
        leaves is (the served model, [(positions in the batch, Pending)]) for :meth:`_predict_second`."""
        model = self.registry.current  # one version for the whole batch, even if a reload happens meanwhile
        results: list[tuple[Any, str, str | None] | None] = [None] * len(items)
        left: list[tuple[list[int], Any]] = []
        # keyword stuffing and unrecognised titles, in calls of about _CHUNK_CHARS like the predictions below
        flags: list[str | None] = []
        for idx in _chunks(list(range(len(items))), [len(r.get("title") or "") for r, _, _ in items], _CHUNK_CHARS):
            flags.extend(model.classifier.review_flags([items[i][0].get("title") or "" for i in idx]))
        # rows with the same min_confidence share one call; top_k is cut per request afterwards
        for mc in {mc for _, _, mc in items}:
            group = [i for i, (_, _, m) in enumerate(items) if m == mc]
            k = max(max(items[i][1] for i in group), 2)
            # long texts in calls of about _CHUNK_CHARS: one model call (a sparse matrix product that holds the
            # GIL) on 1 MB of text would keep the event loop from the GIL for its whole length
            for idx in _chunks(group, [_text_chars([items[i]]) for i in group], _CHUNK_CHARS):
                first, pending = model.classifier.defer([items[i][0] for i in idx], top_k=k, min_confidence=mc)
                for i, p in zip(idx, first, strict=True):
                    if p is not None:
                        results[i] = (p, model.version, flags[i])
                if pending is not None:
                    left.append(([i for i, p in zip(idx, first, strict=True) if p is None], pending))
        return results, ((model, left, flags) if left else None)

    @staticmethod
    def _predict_second(left: tuple[ServedModel, list[tuple[list[int], Any]], list[str | None]]) -> list[Any]:
        """What :meth:`_predict_first` left, in one encoder pass: the results of its positions, in batch order."""
        model, parts, flags = left
        later = model.classifier.complete([pending for _, pending in parts])
        answers = {i: (p, model.version, flags[i]) for (positions, _), preds in zip(parts, later, strict=True)
                   for i, p in zip(positions, preds, strict=True)}
        return [answers[i] for i in sorted(answers)]

    @property
    def model(self) -> ServedModel:
        return self.registry.current

    def query_classifier(self, model: ServedModel) -> Any:
        """The query classifier of ``model`` (its product model + a zero-shot scorer over its classes), built on
        first use and kept per served version."""
        from ..apps.query import QueryClassifier

        with self._lock:
            cached = self._query_models.get(model.version)
        if cached is None:
            cached = QueryClassifier(product_model=model.classifier)
            with self._lock:
                self._query_models = {model.version: cached}  # only the served version's
        return cached

    def check_category(self, category: str) -> str:
        clf = self.model.classifier
        path = parse_path(category)
        tax = clf.taxonomy_
        if not path or path not in tax:
            close = [format_path(p) for p in tax.search(path[-1] if path else category, limit=5)]
            raise ServiceError(422, f"the category {category!r} is not in the taxonomy; expected a path such as "
                                     f"{close or [format_path(tax.leaves()[0])]} (GET /v1/taxonomy?q=... searches it)")
        if not tax.is_leaf(path):
            kids = [format_path(p) for p in tax.children(path)[:5]]
            raise ServiceError(422, f"{category!r} is not a leaf category; pick one of its children, e.g. {kids}")
        return format_path(path)

    def check_batch(self, n: int, what: str, texts: list[str] | None = None) -> None:
        """413 for more than ``max_batch`` items in one request; 422 for a text (query, message) over
        ``max_text_chars``."""
        s = self.settings
        if n > s.max_batch:
            raise ServiceError(413, f"{n} {what} in one request, over the limit of {s.max_batch}; split the batch")
        if texts is not None and any(len(t) > s.max_text_chars for t in texts):
            raise ServiceError(422, f"a text of {what} is over the limit of {s.max_text_chars} characters")

    def product_record(self, p: Product) -> dict[str, Any]:
        """The row the classifier reads for ``p``, checked once: text lengths (the limits catalogue files are
        truncated at, or the lower ``max_text_chars``: 422), the image path inside the image root and an image
        file, the base64 photo valid and within ``max_image_bytes`` (400) -- decoded here, once."""
        s = self.settings
        texts = [("title", p.title, MAX_TITLE_CHARS), ("description", p.description or "", MAX_TEXT_CHARS)]
        texts += [(f"attributes.{k}", v, MAX_TEXT_CHARS) for k, v in (p.attributes or {}).items()]
        for name, value, most in texts:
            limit = min(most, s.max_text_chars)
            if len(value) > limit:
                raise ServiceError(422, f"{name} is {len(value):,} characters, over the limit of {limit:,}; "
                                        "shorten it (the model reads the first few hundred characters anyway)")
        image: str | bytes | None = None
        try:
            if p.image_base64 is not None:
                image = decode_image_base64(p.image_base64, s.max_image_bytes)
            elif p.image is not None:
                if not is_image_file(resolve_image_path(p.image, s.image_root)):
                    raise ServiceError(400, f"the image {p.image!r} does not exist under the image root")
                image = p.image  # (resolved again, inside the same root, when the photo is read)
        except ImageError as e:  # the answer names no server path: the root is the operator's business
            root = str(FilePath(s.image_root or ".").resolve())
            raise ServiceError(400, str(e).replace(f" {root}", "").replace(root, "<image root>")) from None
        return p.record(image)
