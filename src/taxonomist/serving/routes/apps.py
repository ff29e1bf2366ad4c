"""The catalogue's other uses: search-query classification, message routing, search, shopper profiles and
recommendations, demand forecasts."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from ...exceptions import TaxonomistError
from ...models.hierarchy import decode
from ..deps import BUDGET, READ, ServiceDep
from ..schemas import (
    Alternative,
    DemandRequest,
    DemandResponse,
    MessagesRequest,
    MessagesResponse,
    QueryRequest,
    QueryResponse,
    QueryResult,
    RecommendationsResponse,
    SearchRequest,
    SearchResponse,
    SearchResult,
    UserProfileResponse,
)
from ..service import Service

UserId = Annotated[str, Path(min_length=1, max_length=256, description="A shopper id, as in the behaviour events.")]

logger = logging.getLogger(__name__)

router = APIRouter()


@router.post("/v1/query/classify", tags=["classify"], response_model=QueryResponse, dependencies=[READ, BUDGET])
async def classify_queries(svc: ServiceDep, req: QueryRequest) -> QueryResponse:
    """Categories of search queries: a distribution over the leaves, backed off to a broad category when the query
    is vague."""
    svc.inference.check_batch(len(req.queries), "queries", req.queries)
    model = svc.inference.model
    qc = await asyncio.to_thread(svc.inference.query_classifier, model)
    preds = await asyncio.to_thread(qc.classify, req.queries, req.top_k, req.min_confidence)
    results = [_query_result(q, p) for q, p in zip(req.queries, preds, strict=True)]
    return QueryResponse(model_version=model.version, sources=qc.sources, results=results)


@router.post("/v1/messages/route", tags=["classify"], response_model=MessagesResponse, dependencies=[READ, BUDGET])
async def route_messages(svc: ServiceDep, req: MessagesRequest) -> MessagesResponse:
    """After-sales messages routed: category, sentiment and issue type, and the queue a rule sends them to."""
    svc.inference.check_batch(len(req.messages), "messages", req.messages)
    router = await asyncio.to_thread(svc.resources.get, "router")
    routes = await asyncio.to_thread(router.route, req.messages)
    return MessagesResponse(results=routes)


@router.post("/v1/search", tags=["search"], response_model=SearchResponse, response_model_exclude_none=True,
          dependencies=[READ, BUDGET])
async def search(svc: ServiceDep, req: SearchRequest) -> SearchResponse:
    """Search the served catalogue: full text + embeddings, boosted by the query's predicted category."""
    svc.inference.check_batch(1, "queries", [req.query])
    index = await asyncio.to_thread(svc.resources.get, "search")
    model = svc.inference.model
    qc = await asyncio.to_thread(svc.inference.query_classifier, model)
    proba = await asyncio.to_thread(qc.predict_proba, [req.query])
    pred = decode(proba, qc.levels_, top_k=3, min_confidence=qc.min_confidence)[0]
    scores = dict(zip(qc.classes_, proba[0], strict=True))
    hits = await asyncio.to_thread(index.search, req.query, req.k, req.mode, None, scores, req.boost, req.category)
    return SearchResponse(model_version=model.version, query=req.query,
                          query_category=_query_result(req.query, pred),
                          results=[SearchResult(**h.to_dict()) for h in hits])


def _shopper(svc: Service, user_id: str) -> Any:
    store = svc.resources.get("profiles")
    if user_id not in store:
        raise HTTPException(404, f"unknown user {user_id!r}: no events of this user were in the profile build")
    return store


@router.get("/v1/users/{user_id}/profile", tags=["users"], response_model=UserProfileResponse, dependencies=[READ, BUDGET])
async def user_profile(svc: ServiceDep, user_id: UserId) -> UserProfileResponse:
    """A shopper's category affinity, recent items and purchases."""
    store = await asyncio.to_thread(_shopper, svc, user_id)
    p = store.profile(user_id)
    return UserProfileResponse(**{**p.to_dict(), "categories": [{"category": c, "share": v} for c, v in p.categories]})


@router.get("/v1/users/{user_id}/recommendations", tags=["users"], response_model=RecommendationsResponse,
         dependencies=[READ, BUDGET])
async def user_recommendations(svc: ServiceDep,
    user_id: UserId, k: Annotated[int, Query(ge=1, le=100, description="How many items.")] = 10,
    exclude_seen: Annotated[bool, Query(description="Leave out items the user already touched, not only bought.")] = False,
) -> RecommendationsResponse:
    """Items for a shopper: their categories, items like the recently seen ones, popularity; never bought ones."""
    store = await asyncio.to_thread(_shopper, svc, user_id)
    recs = await asyncio.to_thread(store.recommend, user_id, k, None, exclude_seen)
    return RecommendationsResponse(user=user_id, results=recs)


@router.post("/v1/demand/forecast", tags=["demand"], response_model=DemandResponse, dependencies=[READ, BUDGET])
async def demand_forecast(svc: ServiceDep, req: DemandRequest) -> DemandResponse:
    """Category demand from the events sent: ETS or seasonal naive chosen by backtest, against naive."""
    return await asyncio.to_thread(_demand, req)


def _demand(req: DemandRequest) -> DemandResponse:
    import numpy as np
    import pandas as pd

    from ...apps.demand import forecast_demand
    from ...apps.profiles import read_events

    frame = pd.DataFrame([{"user": e.user or "-", "item": e.item or "-", "category": e.category, "event": e.event,
                           "timestamp": str(e.timestamp)} for e in req.events])
    try:
        events = read_events(frame, strict=True)
        rep = forecast_demand(events, freq=req.freq, horizon=req.horizon, origins=req.origins, top=req.top,
                              event=req.event)
    except TaxonomistError as e:
        raise HTTPException(422, str(e)) from None
    cats = []
    for f in rep.forecasts:
        fc = [] if f.forecast is None else [{"period": str(p), "value": round(float(v), 3)} for p, v in f.forecast.items()]
        errors = {m: {k: (None if np.isnan(v) else round(v, 4)) for k, v in e.items()} for m, e in f.errors.items()}
        cats.append({"category": f.category, "total": f.total, "chosen": f.chosen, "errors": errors,
                     "beats_naive": f.beats_naive, "forecast": fc})
    return DemandResponse(verdict=rep.verdict(), periods=rep.periods, horizon=rep.horizon, categories=cats)


def _query_result(query: str, p: Any) -> QueryResult:
    return QueryResult(query=query, category=p.category, path=list(p.path), confidence=p.confidence,
                       distribution=[Alternative(category=c, confidence=v) for c, v in p.alternatives],
                       backed_off=p.backed_off)


