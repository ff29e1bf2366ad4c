"""Request and response bodies of the service (pydantic; they make the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..apps.profiles import Recommendation
from ..apps.routing import Route

__all__ = [
    "Alternative", "ClassifyRequest", "ClassifyResponse", "ClassifyResult", "FeedbackRequest", "Product",
    "MessagesRequest", "MessagesResponse", "QueryRequest", "QueryResponse", "QueryResult", "ReloadRequest", "ReviewDecision", "ReviewItem",
    "SearchRequest", "SearchResponse", "SearchResult", "UserProfileResponse", "RecommendationsResponse",
    "DemandRequest", "DemandResponse",
]


def _check_utf8(*texts: str | None) -> None:
    """JSON can carry a lone surrogate (``"\\ud800"``), which no UTF-8 consumer (tokenizer, SQLite) accepts: 422."""
    for text in texts:
        try:
            (text or "").encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a text field is not valid unicode (a lone surrogate); send UTF-8 text") from None


class _Body(BaseModel):
    """Request bodies: unknown fields are refused (422)."""

    model_config = ConfigDict(extra="forbid")


class Product(_Body):
    """A product to classify. Texts longer than catalogue files are read (title 2,000 characters, others 20,000) or
    than the server setting ``max_text_chars`` are refused (422)."""

    id: str | None = Field(None, max_length=256, description="Your product id, echoed back.")
    title: str = Field("", description="Product title (required unless a photo is given).")
    description: str | None = Field(None, description="Free-text description.")
    attributes: dict[str, str] | None = Field(None, description="Attribute columns the model was trained with (brand, colour, ...).")
    image: str | None = Field(None, description="Path of the product photo, inside the server's image root.")
    image_base64: str | None = Field(None, description="The product photo as base64 (within the server's size limit).")

    @model_validator(mode="after")
    def _title_or_photo(self) -> Product:
        _check_utf8(self.id, self.title, self.description, self.image, *(self.attributes or {}).keys(),
                    *(self.attributes or {}).values())
        if not self.title.strip() and not self.image and not self.image_base64:
            raise ValueError("give a non-empty 'title' (or, for models that use photos, an 'image' / 'image_base64')")
        return self

    def record(self, image: str | bytes | None = None) -> dict[str, Any]:
        """The row the classifier reads: id, title, description, the attribute columns, and ``image`` (the photo's
        bytes or a path inside the server's image root, as the service checked it)."""
        row: dict[str, Any] = {k: v for k, v in (self.attributes or {}).items()
                               if k not in ("id", "title", "description", "category", "image")}
        row.update(id=self.id, title=self.title, description=self.description or "")
        if image is not None:
            row["image"] = image
        return row


class ClassifyRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"products": [{"id": "sku-1", "title": "Nike Men Running Shoes", "description": "Lightweight mesh trainers"},
                      {"id": "sku-2", "title": "Cotton crew neck T-shirt, navy"}], "top_k": 3}]})

    product: Product | None = Field(None, description="One product ...")
    products: list[Product] | None = Field(None, description="... or a batch (at most the server's max_batch).")
    top_k: int = Field(3, ge=1, le=20, description="Alternative leaves to return.")
    explain: bool = Field(False, description="Attach the n-grams and nearest training products behind each prediction.")
    min_confidence: float | None = Field(None, ge=0.0, le=1.0, description="Back off to a parent below this confidence.")
    attributes: list[Literal["color", "gender", "age_group"]] | None = Field(
        None, description="Also read these attributes from each product's words, in Merchant Center values "
                          "(offered only where the predicted category has the attribute; unsure: left out).")

    @model_validator(mode="after")
    def _one_of(self) -> ClassifyRequest:
        if (self.product is None) == (self.products is None):
            raise ValueError("give exactly one of 'product' (one product) or 'products' (a batch)")
        if self.products is not None and not self.products:
            raise ValueError("'products' is empty; send at least one product")
        return self

    def items(self) -> list[Product]:
        return [self.product] if self.product is not None else list(self.products or [])


class Alternative(BaseModel):
    category: str
    confidence: float


class AttributeValue(BaseModel):
    value: str
    confidence: float


class ClassifyResult(BaseModel):
    id: str | None
    category: str = Field(description="The predicted path (backed off to a parent when unsure; empty when unclassified).")
    path: list[str]
    confidence: list[float] = Field(description="Confidence of each level of the path.")
    leaf: str = Field(description="The most probable leaf, even when the path backed off from it.")
    leaf_confidence: float
    alternatives: list[Alternative]
    backed_off: bool
    needs_review: bool = Field(description="Queued for a person to check (low confidence, keyword stuffing, a title of no known word, or the audit sample).")
    review_reason: Literal["low_confidence", "keyword_stuffing", "unrecognised", "audit"] | None = Field(
        None, description="Why the product needs review.")
    review_id: int | None = None
    explanation: list[dict[str, Any]] | None = None
    neighbours: list[dict[str, Any]] | None = None
    attributes: dict[str, AttributeValue] | None = Field(
        None, description="The attributes asked for that the product's words give: value and confidence.")
    model_version: str


class ClassifyResponse(BaseModel):
    model_version: str
    results: list[ClassifyResult]


class ReviewDecision(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reviewer": "ana"}, {"dismiss": "not_a_product"}]})

    category: str | None = Field(None, max_length=1000, description="The correct path; omit to accept the suggestion.")
    dismiss: Literal["not_a_product", "cant_tell"] | None = Field(
        None, description="Take the item off the queue without a category: not a product (junk, contact details) or "
                          "cannot tell from what was sent. It teaches nothing and counts in no accuracy.")
    reviewer: str | None = Field(None, max_length=200, description="Who decided (the review page sends the name "
                                                                   "entered there).")
    attributes: dict[str, str] | None = Field(
        None, description="Corrections of the attributes the prediction suggested, e.g. {\"color\": \"Red\"} "
                          "(\"\" removes one); the others are accepted as suggested.")


class ReviewItem(BaseModel):
    id: int
    created: float
    product: dict[str, Any]
    prediction: dict[str, Any]
    category: str
    confidence: float
    margin: float
    reason: str
    model_version: str
    status: str
    decided_category: str | None = None
    decided_at: float | None = None
    reviewer: str | None = None
    dismissed_as: str | None = None
    skipped: int = 0
    decided_attributes: dict[str, str] | None = None


class FeedbackRequest(_Body):
    # (the service puts one of its own leaves in the example's category: see app.py)
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"product": {"title": "Nike Men Running Shoes"}, "category": "A > Leaf > Of > The > Taxonomy"}]})

    product: Product
    category: str = Field(..., min_length=1, max_length=1000, description="The correct category path.")


class ReloadRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{}]})

    version: str | None = Field(None, max_length=200, description="Version to serve (default: the newest in the store).")


class QueryRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"queries": ["running shoes for men", "gift for her"]}]})

    queries: list[str] = Field(..., min_length=1, description="Search queries (at most the server's max_batch).")
    top_k: int = Field(5, ge=1, le=50, description="Leaves in the distribution of each query.")
    min_confidence: float | None = Field(None, ge=0.0, le=1.0,
                                         description="Back off to a parent below this (default 0.5: vague queries get a broad category).")


class QueryResult(BaseModel):
    query: str
    category: str = Field(description="The path at the level the query supports (empty when even the top level is unsure).")
    path: list[str]
    confidence: list[float]
    distribution: list[Alternative] = Field(description="The top-k leaves with their probabilities.")
    backed_off: bool


class QueryResponse(BaseModel):
    model_version: str
    sources: list[str] = Field(description="What scored the queries: the product model and the zero-shot scorer.")
    results: list[QueryResult]


class MessagesRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"messages": ["The parcel arrived damaged, I want my money back"]}]})

    messages: list[str] = Field(..., min_length=1, description="Customer messages (reviews, tickets).")


class MessagesResponse(BaseModel):
    results: list[Route] = Field(description="Per message: category, sentiment, issue type (with confidences), the queue "
                                               "and the number of the rule that matched (1-based; null: the default queue).")


class SearchRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"query": "red summer dress", "k": 10}]})

    query: str = Field(..., min_length=1, description="What the shopper typed (at most the server's max_text_chars).")
    k: int = Field(10, ge=1, le=100, description="Results to return.")
    mode: Literal["hybrid", "bm25", "vector"] = Field("hybrid", description="Full text + embeddings fused, or one of them.")
    boost: float = Field(1.0, ge=0.0, le=10.0, description="Strength of the category boost (0: none).")
    category: str | None = Field(None, max_length=1000, description="Only results in this category or below it (a filter).")

    @model_validator(mode="after")
    def _words(self) -> SearchRequest:
        if not self.query.strip():
            raise ValueError("the query is blank; give some words to search for")
        _check_utf8(self.query, self.category)
        return self


class SearchResult(BaseModel):
    id: str
    title: str
    category: str
    score: float = Field(description="Fused rank score, times 1 + boost x category_mass.")
    bm25_rank: int | None = Field(None, description="Rank among the full-text candidates.")
    vector_rank: int | None = Field(None, description="Rank among the embedding candidates.")
    category_mass: float | None = Field(None, description="The query's probability on this result's category (averaged over levels).")


class SearchResponse(BaseModel):
    model_version: str
    query: str
    query_category: QueryResult = Field(description="The query's predicted category (what boosts the results).")
    results: list[SearchResult]


class CategoryShare(BaseModel):
    category: str
    share: float


class UserProfileResponse(BaseModel):
    user: str
    events: int
    last_seen: int = Field(description="Unix seconds of the user's newest event.")
    categories: list[CategoryShare] = Field(description="Category affinity (decayed, event-weighted), strongest first.")
    recent_items: list[str]
    bought: list[str]


class RecommendationsResponse(BaseModel):
    user: str
    results: list[Recommendation] = Field(description="Items, best first; ``reason``: the term that contributed "
                                                    "most (category, similar or popular).")


class DemandEvent(_Body):
    category: str = Field(..., min_length=1, max_length=1000, description="The item's category (a path or an id).")
    event: str = Field("buy", max_length=32, description="buy / cart / fav / view (or purchase, add_to_cart, pv, ...).")
    # bounded: 10^13 ms is the year 2286; larger or negative numbers are not order dates
    timestamp: Annotated[int, Field(ge=0, le=10**13)] | str = Field(..., description="Unix seconds (or milliseconds), or an ISO date.")
    item: str = Field("", max_length=256)
    user: str = Field("", max_length=256)

    @model_validator(mode="after")
    def _utf8(self) -> DemandEvent:
        _check_utf8(self.category, self.event, self.item, self.user, str(self.timestamp))
        return self


class DemandRequest(_Body):
    events: list[DemandEvent] = Field(..., min_length=1, max_length=50_000, description="Orders / events to aggregate.")
    freq: Literal["D", "W"] = Field("D", description="Days or weeks.")
    horizon: int | None = Field(None, ge=1, le=365, description="Periods to forecast (default 7 days / 4 weeks).")
    origins: int = Field(3, ge=1, le=20, description="Backtest origins.")
    top: int = Field(10, ge=1, le=100, description="Categories to forecast, by volume.")
    event: Literal["buy", "cart", "fav", "view", "all"] = Field("buy", description="What counts as demand.")


class PeriodValue(BaseModel):
    period: str
    value: float


class CategoryDemand(BaseModel):
    category: str
    total: int
    chosen: str | None = Field(description="ets or seasonal_naive; null: too short to forecast.")
    errors: dict[str, dict[str, float | None]] = Field(description="Backtest sMAPE / MAPE per method, naive included.")
    beats_naive: bool | None
    forecast: list[PeriodValue]


class DemandResponse(BaseModel):
    verdict: str
    periods: int
    horizon: int
    categories: list[CategoryDemand]
