"""Why a person should look at a product whatever the model's confidence: keyword-stuffed titles and titles of
no known word. Read by the service, which queues such products for review."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .models.hierarchy import LevelIndex, level_probabilities
from .models.sparse import SparseClassifier
from .text import clean_text

__all__ = ["STUFFING_MIN_WORDS", "review_flags", "stuffing_flags"]

STUFFING_MIN_WORDS = 10
"""Titles shorter than this are never flagged as keyword stuffing (:func:`stuffing_flags`)."""


def stuffing_flags(sparse: SparseClassifier | None, titles: Sequence[str], min_words: int | None = None,
                   min_confidence: float = 0.6) -> list[bool]:
    """Which titles look keyword-stuffed: with at least ``min_words`` words, whose first and second halves the
    ``sparse`` model places, each with top-level confidence ``min_confidence`` or more, under two different
    top-level categories ("sandal ... watch wallet handbag belt"). Such products are queued for review rather
    than trusted; an ordinary title's halves agree."""
    min_words = STUFFING_MIN_WORDS if min_words is None else min_words
    words = [clean_text(t).split() for t in titles]
    long = [i for i, w in enumerate(words) if len(w) >= min_words]
    out = [False] * len(titles)
    if sparse is None or not long:
        return out
    halves = [" ".join(words[i][: len(words[i]) // 2]) for i in long] + \
             [" ".join(words[i][len(words[i]) // 2:]) for i in long]
    top = level_probabilities(sparse.predict_proba((halves, [""] * len(halves))),
                              LevelIndex.build(list(sparse.classes_)))[0]
    first, second = top[: len(long)], top[len(long):]
    for j, i in enumerate(long):
        a, b = int(first[j].argmax()), int(second[j].argmax())
        out[i] = a != b and first[j, a] >= min_confidence and second[j, b] >= min_confidence
    return out


def review_flags(sparse: SparseClassifier | None, titles: Sequence[str]) -> list[str | None]:
    """``"keyword_stuffing"`` (:func:`stuffing_flags`), ``"unrecognised"`` (no word of the title is in the
    ``sparse`` model's vocabulary: gibberish or another language; its near-zero margin must not put it first in
    the review queue), or ``None``, per title."""
    stuffed = stuffing_flags(sparse, titles)
    known = sparse.encoder_.known_words(titles) if sparse is not None else np.ones(len(titles), dtype=bool)
    return ["keyword_stuffing" if s else ("unrecognised" if not k and str(t or "").strip() else None)
            for s, k, t in zip(stuffed, known, titles, strict=True)]
