"""What a shop without a labelled history already has: the categories some of its products carry.

``taxonomist classify`` reads them from the export (Shopify's ``Product Category``, a feed's
``google_product_category``, ids looked up, Shopify paths mapped into Google's taxonomy when that is the one
classified into) with :func:`known_categories`; the zero-shot model learns from them (semi-supervised adaptation,
:mod:`taxonomist.models.transduction`) and :func:`agreement` measures, with each product's own category hidden,
how often the answers agree with them -- an honest accuracy estimate of the run on this shop's own data.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .taxonomy import CategoryPath, Taxonomy, category_of, format_path, parse_path

__all__ = ["agreement", "agrees", "known_categories"]


def agrees(answer: Sequence[str], truth: Sequence[str]) -> bool:
    """Depth-tolerant agreement, as merchants label at any depth: the answer is the category itself, a descendant
    of it, or an ancestor of it at depth >= 2."""
    answer, truth = tuple(answer), tuple(truth)
    if not answer:
        return False
    if answer[: len(truth)] == truth:
        return True
    return len(answer) >= 2 and truth[: len(answer)] == answer


def known_categories(cells: Sequence[Any], taxonomy: Taxonomy) -> list[str]:
    """Each product's existing category as a path of ``taxonomy`` (``""`` where it has none or one the taxonomy
    lacks): numeric ids looked up, Shopify paths mapped into Google's taxonomy by Shopify's mapping."""
    out = []
    for cell in cells:
        text = "" if cell is None or (isinstance(cell, float) and np.isnan(cell)) else str(cell).strip()
        path: CategoryPath | None = None
        if text.isdigit():
            path = taxonomy.path_of_id(text)
        elif text:
            path = category_of(parse_path(text), taxonomy)
        out.append(format_path(path) if path else "")
    return out


def agreement(clf: Any, products: Any, known: Sequence[str], folds: int = 2, min_known: int = 10) -> dict[str, Any]:
    """How often the answers agree (:func:`agrees`) with the categories the shop gave, each product's own hidden:
    the known products split into ``folds`` by a hash of their position, each fold answered with the other folds'
    categories known. ``{"n": products compared, "agree": share, "exact": share}``; ``n`` 0 when fewer than
    ``min_known`` products have one."""
    have = [i for i, k in enumerate(known) if k]
    if len(have) < min_known:
        return {"n": 0, "agree": float("nan"), "exact": float("nan")}
    fold = {i: zlib.crc32(str(i).encode()) % folds for i in have}
    hits = exact = 0
    for f in range(folds):
        hidden = [i for i in have if fold[i] == f]
        if not hidden:
            continue
        hide = set(hidden)
        shown = [("" if i in hide else k) for i, k in enumerate(known)]
        preds = clf.predict_products(products, top_k=1, known=shown)
        for i in hidden:
            truth = parse_path(known[i])
            hits += agrees(preds[i].path, truth)
            exact += tuple(preds[i].path) == truth
    return {"n": len(have), "agree": hits / len(have), "exact": exact / len(have)}
