"""The human review queue (list, read, decide, photos), feedback, and the review page."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...images import (
    MAX_IMAGE_BYTES,
    ImageError,
    decode_image_base64,
    is_image_file,
    read_image_bytes,
    resolve_image_path,
)
from ...text import scrub_product
from ..deps import REVIEW_READ, WRITE, DeskDep, InferenceDep
from ..schemas import FeedbackRequest, ReviewDecision, ReviewItem

# review ids are SQLite integers: anything outside 1..2**63-1 is a 422, not an overflow in the driver
ReviewId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A review item id.")]

_IMAGE_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png", b"GIF87a": "image/gif",
                b"GIF89a": "image/gif"}

logger = logging.getLogger(__name__)

router = APIRouter()


@router.get("/v1/review", tags=["review"], response_model=list[ReviewItem], dependencies=[REVIEW_READ])
def review_list(desk: DeskDep, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0) -> list[dict[str, Any]]:
    """Pending items, most uncertain (smallest top-1 / top-2 margin) first."""
    return desk.review_store().pending(limit, offset)


def _found(item: dict[str, Any] | None, review_id: int) -> dict[str, Any]:
    """The review item a route looked up, or 404 when there is none with that id."""
    if item is None:
        raise HTTPException(404, f"no review item {review_id}")
    return item


@router.get("/v1/review/{review_id}", tags=["review"], response_model=ReviewItem, dependencies=[REVIEW_READ])
def review_get(desk: DeskDep, review_id: ReviewId) -> dict[str, Any]:
    """One review item: the product as sent (scrubbed), the prediction served, its status."""
    return _found(desk.review_store().get(review_id), review_id)


@router.get("/v1/review/{review_id}/image", tags=["review"], dependencies=[REVIEW_READ], response_class=Response)
def review_image(desk: DeskDep, review_id: ReviewId) -> Response:
    """The review item's photo (JPEG, PNG, GIF or WebP only, in a sandbox)."""
    product = _found(desk.review_store().get(review_id), review_id)["product"]
    try:
        if product.get("image_base64"):
            data = decode_image_base64(product["image_base64"], desk.settings.max_image_bytes)
        elif product.get("image"):
            path = resolve_image_path(product["image"], desk.settings.image_root)
            if not is_image_file(path):
                raise HTTPException(404, "the product's image file is gone")
            # within the size limit, and never a pipe or a device (the file may have changed since)
            data = read_image_bytes(product["image"], desk.settings.image_root, max_bytes=MAX_IMAGE_BYTES)[0]
        else:
            raise HTTPException(404, "this product has no image")
    except ImageError as e:
        raise HTTPException(400, str(e)) from None
    # the type is sniffed from the bytes, never taken from the file name: only raster types are served (an
    # SVG is a document that can run script in the reviewer's page), in a sandbox that allows nothing
    media = _raster_type(data)
    if media is None:
        raise HTTPException(415, "the stored file is not a JPEG, PNG, GIF or WebP image")
    return Response(data, media_type=media, headers={"X-Content-Type-Options": "nosniff",
                                                     "Content-Security-Policy": "sandbox; default-src 'none'"})


@router.post("/v1/review/{review_id}", tags=["review"], response_model=ReviewItem, dependencies=[WRITE])
def review_decide(desk: DeskDep, inference: InferenceDep, review_id: ReviewId, decision: ReviewDecision) -> dict[str, Any]:
    """Accept the suggestion (no category) or correct it -- the decision is recorded as feedback -- or dismiss
    the item (not a product, can't tell: no feedback)."""
    if decision.dismiss is not None:
        if decision.category:
            raise HTTPException(422, "give a category or dismiss the item, not both")
        item = desk.review_store().dismiss(review_id, decision.dismiss, decision.reviewer)
    else:
        category = inference.check_category(decision.category) if decision.category else None
        _check_attributes(decision.attributes or {})
        item = desk.review_store().decide(review_id, category, decision.reviewer, decision.attributes)
        if item is not None:
            desk.metrics.feedback.labels(source="review").inc()
    return _found(item, review_id)


def _check_attributes(values: dict[str, str]) -> None:
    """A reviewer's attribute corrections: known attributes, values their feed accepts (422 otherwise)."""
    from ...attributes import ATTRIBUTES

    for name, value in values.items():
        known = ATTRIBUTES.get(name)
        if known is None:
            raise HTTPException(422, f"expected attributes among {sorted(ATTRIBUTES)}, got {name!r}")
        if value and value not in known.values:
            raise HTTPException(422, f"expected a {name} among {list(known.values)} (or \"\" for none), got {value!r}")


@router.get("/v1/attributes", tags=["review"])
def attributes() -> dict[str, list[str]]:
    """The attributes taxonomist reads and the values each accepts (Merchant Center's; Shopify's colours)."""
    from ...attributes import ATTRIBUTES

    return {name: list(a.values) for name, a in ATTRIBUTES.items()}


@router.post("/v1/review/{review_id}/skip", tags=["review"], response_model=ReviewItem, dependencies=[WRITE])
def review_skip(desk: DeskDep, review_id: ReviewId) -> dict[str, Any]:
    """Put an item off: it moves behind the items skipped fewer times, for every reviewer."""
    return _found(desk.review_store().skip(review_id), review_id)


@router.post("/v1/review/{review_id}/undo", tags=["review"], response_model=ReviewItem, dependencies=[WRITE])
def review_undo(desk: DeskDep, review_id: ReviewId) -> dict[str, Any]:
    """Put a decided or dismissed item back in the queue; its feedback is withdrawn."""
    try:
        return _found(desk.review_store().undo(review_id), review_id)
    except ValueError as e:
        raise HTTPException(409, str(e)) from None


@router.post("/v1/feedback", tags=["review"], status_code=201, dependencies=[WRITE])
def feedback(desk: DeskDep, inference: InferenceDep, fb: FeedbackRequest) -> dict[str, Any]:
    """Record the correct category of any product (labelled data for ``taxonomist retrain``)."""
    inference.product_record(fb.product)  # (checked as a product to classify is)
    category = inference.check_category(fb.category)
    fid = desk.review_store().add_feedback(scrub_product(fb.product.model_dump(exclude_none=True)), category,
                                          inference.model.version)
    desk.metrics.feedback.labels(source="api").inc()
    return {"id": fid, "category": category}


@router.get("/v1/review-stats", tags=["review"], dependencies=[REVIEW_READ])
def review_stats(desk: DeskDep) -> dict[str, int]:
    """How many items are pending, accepted, corrected, dismissed; how much feedback is stored."""
    return desk.review_store().counts()


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/review")


@router.get("/review", include_in_schema=False, response_class=HTMLResponse)
def review_page() -> HTMLResponse:
    html = resources.files("taxonomist.serving").joinpath("static/review.html").read_text(encoding="utf-8")
    # frame-ancestors / X-Frame-Options: no other site may frame the page (clickjacking a reviewer)
    return HTMLResponse(html, headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                       "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
                                       "frame-ancestors 'none'", "X-Frame-Options": "DENY"})


def _raster_type(data: bytes) -> str | None:
    """The media type of a JPEG, PNG, GIF or WebP file from its first bytes; ``None`` for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((t for magic, t in _IMAGE_TYPES.items() if data.startswith(magic)), None)


