"""POST /v1/classify: products in, hierarchy-consistent categories out; uncertain answers queued for review."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request

from ..deps import BUDGET, READ, Credentials, ServiceDep, has_valid_key
from ..schemas import AttributeValue, ClassifyRequest, ClassifyResponse, ClassifyResult

logger = logging.getLogger(__name__)

router = APIRouter()


@router.post("/v1/classify", tags=["classify"], response_model=ClassifyResponse, response_model_exclude_none=True,
          dependencies=[READ, BUDGET])
async def classify(svc: ServiceDep, req: ClassifyRequest, request: Request, creds: Credentials) -> ClassifyResponse:
    """Categories for one product or a batch: the path (backed off to a parent when unsure), its confidence per
    level, the leaf, alternatives; unsure answers are queued for a person to review."""
    items = req.items()
    svc.inference.check_batch(len(items), "products")
    records = [svc.inference.product_record(p) for p in items]
    svc.metrics.request_products.observe(len(items))
    if req.explain:  # explanations are rare and slower: not micro-batched
        model = svc.inference.model
        preds = await asyncio.to_thread(model.classifier.predict_products, records, max(req.top_k, 2),
                                        req.min_confidence, True)
        flags = await asyncio.to_thread(model.classifier.review_flags, [r["title"] for r in records])
        results = [(p, model.version, f) for p, f in zip(preds, flags, strict=True)]
    else:
        results = await svc.inference.batcher.submit([(r, req.top_k, req.min_confidence) for r in records])
    out, queue = [], []
    low = 0
    # keyword-stuffed titles (halves pointing to two top-level categories) go to a person, however sure;
    # titles of no known word go too, queued behind the real uncertain products (ReviewStore.pending)
    for p, (pred, version, flag) in zip(items, results, strict=True):
        alts = pred.alternatives
        margin = alts[0][1] - alts[1][1] if len(alts) > 1 else (alts[0][1] if alts else 0.0)
        reason = None
        if pred.leaf_confidence < svc.settings.review_threshold:
            low += 1
        if flag == "unrecognised":
            reason = flag
        elif pred.leaf_confidence < svc.settings.review_threshold:
            reason = "low_confidence"
        elif flag == "keyword_stuffing":
            reason = flag
        elif svc.settings.audit_rate > 0 and svc.rng.random() < svc.settings.audit_rate:
            reason = "audit"
        d = pred.to_dict()  # the Prediction's own shape, with what the service adds
        res = ClassifyResult(**{**d, "alternatives": d["alternatives"][: req.top_k]}, id=p.id,
                             needs_review=reason is not None, review_reason=reason, model_version=version)
        out.append(res)
        if reason is not None:
            queue.append((len(out) - 1, {
                "product": p.model_dump(exclude_none=True),
                "prediction": res.model_dump(exclude_none=True, exclude={"needs_review", "review_id", "review_reason"}),
                "category": d["leaf"], "confidence": d["leaf_confidence"], "margin": margin, "reason": reason,
                "model_version": version}))
    if req.attributes:
        await asyncio.to_thread(_attributes, out, records, req.attributes, svc.inference.model.classifier)
        for i, q in queue:  # the reviewer sees them too
            found = out[i].attributes
            if found:
                q["prediction"]["attributes"] = {k: v.model_dump() for k, v in found.items()}
    svc.metrics.observe_predictions([r.path[0] if r.path else "" for r in out], low)
    if svc.watch.shadow is not None:
        svc.watch.shadow.submit(records, [pred.leaf for pred, _, _ in results])
    # with keys configured, the drift window counts keyed clients only (anyone could send keyless traffic)
    keyed = has_valid_key(svc, creds)
    monitored = svc.settings.monitor_keyless or not any(k.strip() for k in svc.settings.api_keys) or keyed
    client = None if keyed else (request.client.host if request.client is not None else "-")
    # off the event loop: reading each title against the vocabulary costs ~50 ms for 256 long titles
    if await asyncio.to_thread(svc.watch.observe_served, records, results, monitored, client):
        await asyncio.to_thread(svc.watch.flush_served)
    if queue:
        client = request.client.host if request.client is not None else "-"
        ids = await asyncio.to_thread(svc.desk.queue_for_review, client, [q for _, q in queue])
        for (i, q), rid in zip(queue, ids, strict=True):
            out[i].review_id = rid
            if rid is not None:
                svc.metrics.queued.labels(reason=q["reason"]).inc()
    return ClassifyResponse(model_version=out[0].model_version if out else svc.inference.model.version, results=out)


def _attributes(out: list[ClassifyResult], records: list[dict[str, Any]], names: Sequence[str], classifier: Any) -> None:
    """The attributes asked for (:func:`taxonomist.attributes.extract`), where the answered category has them."""
    from ...attributes import extract

    got = extract(records, names, categories=[r.category for r in out], taxonomy=classifier.taxonomy_.kind)
    for i, res in enumerate(out):
        values = {n: AttributeValue(value=got[f"attr_{n}"][i], confidence=round(float(got[f"attr_{n}_confidence"][i]), 4))
                  for n in names if got[f"attr_{n}"][i]}
        res.attributes = values or None
